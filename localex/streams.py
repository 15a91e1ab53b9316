"""WebSocket streams: market payloads (markPrice, aggTrade, tickers, depth, klines), user events on /private/ws and /private/stream, subscriptions, listenKey expiry and drops.

A part of `local_exchange.LocalExchange`: it owns the WebSocket connections and their
subscriptions; it publishes the simulator's events and the market part's views (`MarketView`),
and checks the listenKeys the account part hands out."""
from __future__ import annotations
import asyncio
import json
import re
import time
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence
from aiohttp import WSMsgType, web
from exchange_api import BinanceError
from market.data import MINUTE_MS
from sim.account import mark_of
from sim.exchange import SimulatedExchange
from localex.wire import kline_row, to_binance_event
from localex.wire import f8 as _f8, fmt_avg as _avg
from localex.base import (JSON_SEP, MAX_CONNECTION_S, MSG_NO_LISTEN_KEY, WS_PING_S, Conn, Faults, ListenKeys, Live,
    ServerTime, norm_stream, stream_category, log)
from localex.funding import FundingLedger

_INVALID_LISTEN_KEY = {"code": BinanceError.INVALID_LISTEN_KEY, "msg": MSG_NO_LISTEN_KEY}


class MarketView(Protocol):
    """The market's views the streams publish, and its update ids (the market part)."""

    def ticker_json(self, sym: str) -> dict[str, Any]: ...

    def levels(self, sym: str, n: int) -> tuple[list[list[str]], list[list[str]]]: ...

    def next_trade_id(self) -> int: ...

    def next_book_id(self) -> int: ...


class Streams:
    """WebSocket streams: market payloads (markPrice, aggTrade, tickers, depth, klines), user events on /private/ws and /private/stream, subscriptions, listenKey expiry and drops."""

    def __init__(self, sim: SimulatedExchange, symbols: Sequence[str], live: Mapping[str, Live], market: MarketView,
                 funding: FundingLedger, faults: Faults, listen_keys: ListenKeys, server_time: ServerTime,
                 strict_user_stream: bool = True):
        self.sim = sim
        self.symbols = tuple(symbols)
        self.live = live                  # the candle being played, per symbol (the clock's)
        self.market = market
        self.funding = funding
        self.faults = faults
        self.listen_keys = listen_keys
        self.server_time = server_time
        self.strict_user_stream = strict_user_stream   # no `events` named: nothing (see `_wants`)
        self.conns: set[Conn] = set()
        self.subs: dict[str, set[Conn]] = {}           # stream name -> its subscribers
        self.ws_counter: Counter[str] = Counter()      # messages sent, by every connection
        self._next_ws_drop = 0.0                       # the next wall-clock drop (ws_drop_every)

    def streams_connected(self, clients: int = 1) -> bool:
        """`clients` market streams and as many user streams are open (each client listens)."""
        user = sum(1 for c in self.conns if c.category == "private")
        return user >= clients and len(self.conns) - user >= clients

    def queued_to_streams(self) -> int:
        """Messages accepted for the open market and user-stream connections since they opened."""
        return sum(c.queued for c in self.conns if c.category in ("market", "public", "private"))

    # ------------------------------------------------------------------ streams out
    def flush_events(self) -> None:
        """Publish the simulator's queued events on every user stream whose listenKey is valid."""
        events = self.sim.drain_events()
        if not events:
            return
        now = time.monotonic()
        valid = self.listen_keys.valid
        conns = [c for c in self.conns if c.listen_key is not None and valid(c.listen_key, now)]
        combined = [(c, [k for k in c.keys if valid(k, now)]) for c in self.conns if c.keys]
        if not conns and not combined:
            return
        for ev in events:
            payload = to_binance_event(ev, self.sim.books[ev.symbol].filters)
            text = json.dumps(payload, separators=JSON_SEP)
            etype = payload["e"]
            for c in conns:
                if self._wants(c, etype):
                    c.send(text)
            for c, keys in combined:
                if self._wants(c, etype):
                    for k in keys:
                        c.send(json.dumps({"stream": k, "data": payload}, separators=JSON_SEP))

    def _wants(self, c: Conn, etype: str) -> bool:
        """Whether a user-stream connection gets events of this type.  Binance documents the
        private route only with an `events` list (Important-WebSocket-Change-Notice:
        `/private/ws?listenKey=K&events=A/B`), and a client library reports production withheld
        events without it (unicorn-binance-websocket-api #445): in strict mode (the default) a
        connection that names none receives nothing, so a client that relies on the
        undocumented form fails its tests here, not its user live."""
        if c.events is None:
            return not self.strict_user_stream
        return etype in c.events

    def market_tick(self, symbol: str, kline: bool, closed: bool = False) -> None:
        """markPrice / aggTrade / bookTicker at the current price (and the kline at vertices)."""
        if not self.subs:
            return
        s = symbol.lower()
        builders: list[tuple[tuple[str, ...], Callable[[], Any]]] = [
            ((f"{s}@markPrice", f"{s}@markPrice@1s"), lambda: self._mark_payload(symbol)),
            ((f"{s}@aggTrade",), lambda: self._agg_payload(symbol)),
            ((f"{s}@bookTicker", "!bookTicker"), lambda: self._book_payload(symbol)),
            (("!markPrice@arr", "!markPrice@arr@1s"), lambda: [self._mark_payload(x) for x in self.symbols]),
            ((f"{s}@miniTicker",), lambda: self._mini_ticker_payload(symbol)),
            ((f"{s}@ticker",), lambda: self._ticker_payload(symbol)),
            (("!miniTicker@arr",), lambda: [self._mini_ticker_payload(x) for x in self.symbols]),
            ((f"{s}@depth5", f"{s}@depth5@100ms", f"{s}@depth5@500ms"), lambda: self._depth5_payload(symbol)),
        ]
        if kline and symbol in self.live:
            builders.append(((f"{s}@kline_1m",), lambda: self._kline_payload(symbol, closed)))
            builders.append(((f"{s}_perpetual@continuousKline_1m",),
                             lambda: self._ckline_payload(symbol, closed)))
        for names, build in builders:
            payload = None
            for name in names:
                conns = self.subs.get(name)
                if not conns:
                    continue
                payload = payload if payload is not None else build()
                self._publish(name, payload, conns)

    def _publish(self, name: str, payload: Any, conns: Iterable[Conn]) -> None:
        if self.faults.market_silent:
            return   # connected, subscribed, fed nothing: how a wrongly routed stream looks
        raw = wrapped = None
        want = stream_category(name)
        for c in conns:
            if c.category != want:
                continue  # 2026 routing: /public carries book data only, /market the rest
            if c.combined:
                wrapped = wrapped or json.dumps({"stream": name, "data": payload}, separators=JSON_SEP)
                c.send(wrapped)
            else:
                raw = raw or json.dumps(payload, separators=JSON_SEP)
                c.send(raw)

    def _mark_payload(self, symbol: str) -> dict[str, Any]:
        p = _f8(mark_of(self.sim.books[symbol]))
        t, rate = self.funding.next_funding(symbol)
        return {"e": "markPriceUpdate", "E": self.sim.now_ms, "s": symbol, "p": p, "ap": p, "i": p, "P": p,
                "r": _f8(rate), "T": t}

    def _agg_payload(self, symbol: str) -> dict[str, Any]:
        b = self.sim.books[symbol]
        trade_id = self.market.next_trade_id()
        q = b.filters.fmt_qty(b.filters.step_size)
        return {"e": "aggTrade", "E": self.sim.now_ms, "a": trade_id, "s": symbol,
                "p": _avg(b.filters, b.price), "q": q, "nq": q, "f": trade_id, "l": trade_id,
                "T": self.sim.now_ms, "m": False}

    def _mini_ticker_payload(self, symbol: str) -> dict[str, Any]:
        t = self.market.ticker_json(symbol)
        return {"e": "24hrMiniTicker", "E": self.sim.now_ms, "s": symbol, "c": t["lastPrice"], "o": t["openPrice"],
                "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"]}

    def _ticker_payload(self, symbol: str) -> dict[str, Any]:
        t = self.market.ticker_json(symbol)
        return {"e": "24hrTicker", "E": self.sim.now_ms, "s": symbol, "p": t["priceChange"],
                "P": t["priceChangePercent"], "w": t["weightedAvgPrice"], "c": t["lastPrice"], "Q": t["lastQty"],
                "o": t["openPrice"], "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
                "O": t["openTime"], "C": t["closeTime"], "F": t["firstId"], "L": t["lastId"], "n": t["count"]}

    def _depth5_payload(self, symbol: str) -> dict[str, Any]:
        bids, asks = self.market.levels(symbol, 5)
        book_id = self.market.next_book_id()
        return {"e": "depthUpdate", "E": self.sim.now_ms, "T": self.sim.now_ms, "s": symbol,
                "U": book_id, "u": book_id, "pu": book_id - 1, "b": bids, "a": asks}

    def _book_payload(self, symbol: str) -> dict[str, Any]:
        b = self.sim.books[symbol]
        f = b.filters
        book_id = self.market.next_book_id()
        bid = f.price_down(b.price)
        return {"e": "bookTicker", "u": book_id, "E": self.sim.now_ms, "T": self.sim.now_ms, "s": symbol,
                "b": f.fmt_price(bid), "B": f.fmt_qty(1), "a": f.fmt_price(bid + f.tick_size), "A": f.fmt_qty(1)}

    def _kline_body(self, symbol: str, closed: bool) -> dict[str, Any]:
        k = self.live[symbol]
        f = self.sim.books[symbol].filters
        row = kline_row(f, k.t, k.o, k.h, k.l, k.c, k.v * (k.legs / 3))
        return {"t": k.t, "T": k.t + MINUTE_MS - 1, "s": symbol, "i": "1m", "f": 0, "L": 0, "o": row[1],
                "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8], "x": closed, "q": row[7],
                "V": row[9], "Q": row[10], "B": "0"}

    def _kline_payload(self, symbol: str, closed: bool) -> dict[str, Any]:
        return {"e": "kline", "E": self.sim.now_ms, "s": symbol, "k": self._kline_body(symbol, closed)}

    def _ckline_payload(self, symbol: str, closed: bool) -> dict[str, Any]:
        k = self._kline_body(symbol, closed)
        del k["s"]
        return {"e": "continuous_kline", "E": self.sim.now_ms, "ps": symbol, "ct": "PERPETUAL", "k": k}

    # ------------------------------------------------------------------ listen keys, drops
    def expire_listen_keys(self) -> int:
        """Send listenKeyExpired on every user stream and invalidate the keys (early expiry fault)."""
        keys = list(self.listen_keys.expiry)
        for k in keys:
            self._expire(k)
        return len(keys)

    def expire_due_listen_keys(self) -> None:
        """The keys whose life ran out: listenKeyExpired, as Binance sends it."""
        for k in self.listen_keys.expired(time.monotonic()):
            log.info("listenKey expired")
            self._expire(k)

    def _expire(self, key: str) -> None:
        self.listen_keys.drop(key)
        # E is an integer (Event-User-Data-Stream-Expired, USDⓈ-M); margin's page shows a string.
        text = json.dumps({"e": "listenKeyExpired", "E": self.server_time(), "listenKey": key},
                          separators=JSON_SEP)
        for c in self.conns:
            if not self._wants(c, "listenKeyExpired"):
                continue
            if c.listen_key == key:
                c.send(text)
            elif key in c.keys:
                c.send(json.dumps({"stream": key, "data": json.loads(text)}, separators=JSON_SEP))
                c.keys.discard(key)

    def drop_websockets(self, kind: str = "all", mode: str = "abort") -> int:
        """Drop WebSocket connections (kind: all / user / market); abort = no close frame."""
        victims = [c for c in self.conns if kind == "all" or (c.category == "private") == (kind == "user")]
        for c in victims:
            if mode == "close":
                asyncio.ensure_future(c.ws.close(code=1001, message=b"dropped"))
            else:
                c.abort()
        return len(victims)

    def drop_on_wall_clock(self) -> None:
        """The ws_drop_every fault: every socket dropped each `ws_drop_every` seconds."""
        every = self.faults.ws_drop_every
        if every <= 0:
            self._next_ws_drop = 0.0
            return
        now = time.monotonic()
        if self._next_ws_drop == 0.0:
            self._next_ws_drop = now + every
        elif now >= self._next_ws_drop:
            self._next_ws_drop = now + every
            log.info("fault: dropping %d websocket(s)", self.drop_websockets())

    # ------------------------------------------------------------------ WebSocket endpoints
    async def _ws_session(self, request: web.Request, conn_args: dict[str, Any]) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=WS_PING_S, autoping=True)
        conn = Conn(ws=ws, transport=request.transport, counter=self.ws_counter, **conn_args)
        # Registered before the handshake completes: nothing published once the client is connected is lost.
        self.conns.add(conn)
        for name in conn.streams:
            self.subs.setdefault(name, set()).add(conn)
        loop = asyncio.get_running_loop()
        pump: asyncio.Task | None = None
        expiry = loop.call_later(MAX_CONNECTION_S, conn.abort)  # Binance: 24 h at most
        try:
            await ws.prepare(request)
            pump = loop.create_task(conn.pump())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and (conn.category != "private" or conn.combined):
                    self._ws_command(conn, msg.data)   # /private/ws takes no commands
        finally:
            expiry.cancel()
            if pump is not None:
                pump.cancel()
            self.conns.discard(conn)
            for name in conn.streams:
                self.subs.get(name, set()).discard(conn)
        return ws

    async def ws_market(self, request: web.Request) -> web.StreamResponse:
        category = request.match_info["category"]
        if "stream" in request.match_info:
            names, combined = [request.match_info["stream"]], False
        else:
            names, combined = request.query.get("streams", "").split("/"), True
        streams = {norm_stream(n) for n in names if n}
        for n in streams:
            if stream_category(n) != category:
                log.warning("stream %s subscribed on /%s: Binance routes it to /%s only", n, category,
                            stream_category(n))
        return await self._ws_session(request, {"category": category, "combined": combined, "streams": streams})

    async def ws_user(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        if not self.listen_keys.valid(key, time.monotonic()):
            return web.json_response(_INVALID_LISTEN_KEY, status=400)
        events = request.query.get("events")
        allow = frozenset(filter(None, re.split(r"[/,]", events))) if events else None
        return await self._ws_session(request, {"category": "private", "listen_key": key, "events": allow})

    async def ws_user_stream(self, request: web.Request) -> web.StreamResponse:
        """/private/stream: user data in the combined envelope {"stream": <listenKey>, "data": …},
        for the listenKeys given (`listenKey=` or `streams=K1/K2`) or SUBSCRIBEd on the socket."""
        given = request.query.get("listenKey") or request.query.get("streams") or ""
        keys = {k for k in given.split("/") if k}
        now = time.monotonic()
        bad = [k for k in keys if not self.listen_keys.valid(k, now)]
        if bad:
            return web.json_response(_INVALID_LISTEN_KEY, status=400)
        events = request.query.get("events")
        allow = frozenset(filter(None, re.split(r"[/,]", events))) if events else None
        return await self._ws_session(request, {"category": "private", "combined": True, "keys": keys,
                                                "events": allow})

    def _ws_command(self, conn: Conn, text: str) -> None:
        """Live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS: of streams on a market connection,
        of listenKeys on /private/stream."""
        try:
            msg = json.loads(text)
            method, params, rid = msg.get("method"), msg.get("params") or [], msg.get("id")
        except (ValueError, AttributeError):
            conn.send(json.dumps({"code": 2, "msg": "Invalid request"}))
            return
        private = conn.category == "private"
        if method == "SUBSCRIBE":
            if private:
                now = time.monotonic()
                if any(not self.listen_keys.valid(k, now) for k in params):
                    conn.send(json.dumps({**_INVALID_LISTEN_KEY, "id": rid}))
                    return
                conn.keys.update(params)
            else:
                for n in map(norm_stream, params):
                    conn.streams.add(n)
                    self.subs.setdefault(n, set()).add(conn)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "UNSUBSCRIBE":
            if private:
                conn.keys.difference_update(params)
            else:
                for n in map(norm_stream, params):
                    conn.streams.discard(n)
                    self.subs.get(n, set()).discard(conn)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send(json.dumps({"result": sorted(conn.keys if private else conn.streams), "id": rid}))
        else:
            conn.send(json.dumps({"code": 2, "msg": f"Invalid request: unknown method {method}", "id": rid}))
