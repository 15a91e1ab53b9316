#!/usr/bin/env python3
"""A local Binance USDⓈ-M futures exchange on 127.0.0.1.

`SimulatedExchange` (the matching engine and account of the backtest) behind
Binance's own REST and WebSocket protocol, so that the unmodified
python-binance `AsyncClient` and `BinanceSocketManager`, pointed at it by
base URL, trade against it exactly as against Binance:

    class LocalClient(AsyncClient):
        API_URL = "http://127.0.0.1:PORT/api"       # create() pings /api/v3/ping and /api/v3/time
        FUTURES_URL = "http://127.0.0.1:PORT/fapi"
    client = await LocalClient.create(API_KEY, API_SECRET)
    bsm = BinanceSocketManager(client); bsm.FSTREAM_URL = "ws://127.0.0.1:PORT/"

One port serves REST (/api, /fapi), the 2026 WebSocket routes (/market,
/public, /private) and a loopback-only admin API (/_sim/...).  The market
replays kline CSVs or a seeded synthetic market along the SPEC §6 candle
path, on a manual clock (`await ex.step(n)`, `POST /_sim/step`) or at a
speed in candles per second; fills reach user streams at once.  Faults
(dropped sockets, delays, 5xx, unknown-status 503, 429/418, clock skew,
-2019/-2022, listenKey expiry) are injected by `--faults` or `/_sim/faults`.

    python local_exchange.py --port 8080 --synthetic 7 --speed 20

Decisions where Binance's behaviour is not pinned down (see the reference §7):
- Server time (REST, signing, listenKey life, bans) is the wall clock plus
  `skew_ms`; event and order times (`E`, `T`, `time`, klines) are the
  simulated clock: each candle's open_time, + 20 s per leg as backtest.py.
- Before the first step the price is candle 0's open and /klines is empty;
  step n plays candle n-1 (its closed kline arrives with `x: true`).
- Requests refused with 429/418 add no weight, so obeying Retry-After
  always works; after `ban_after_429s` refusals in a row the IP is banned
  (418) for `ban_s`, doubling per ban.  Order counts apply to POST order,
  batchOrders (5/1) and algoOrder.
- newOrderRespType defaults to ACK as on Binance: a marketable order then
  reads NEW with nothing executed; RESULT shows the fill.
- /fapi/v3/positionRisk and /fapi/v3/account list only symbols with a
  position (or, for positionRisk, open orders); v2 lists every symbol.
- A user stream connecting with an unknown or expired listenKey is refused
  (HTTP 400, -1125); after listenKeyExpired an open connection stays up but
  carries nothing more.
- bookTicker is served on /public only and everything else on /market only
  (the 2026 routing); a stream on the wrong route is accepted but silent.
- PERCENT_PRICE is published, not enforced.  Funding settles on the clock
  (a series per symbol, else Binance's baseline 0.01 % per 8 h) and
  liquidation follows the cross-margin rule of the simulator; the mark price
  is the last price.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import secrets
import signal
import string
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from exchange_api import ExchangeError, SymbolFilters
from brackets import BracketTable
from fill_model import candle_legs, candle_ticks, leg_volume_steps
from funding import BASELINE_RATE, FundingSeries, constant_funding, load_funding
from local_ws_api import WsApi
from market_data import MINUTE_MS, Candles, load_klines, synthetic_klines
from sim_exchange import DEFAULT_FILTERS, DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE, MAX_BATCH_ORDERS, SimulatedExchange, SymbolBook
from wire import algo_json, kline_row, order_json, to_binance_event, trade_json
from wire import f8 as _f8, fmt_avg as _avg, fmt_rate as _rate, symbol_info as _symbol_info

log = logging.getLogger("local_exchange")

DEFAULT_API_KEY = "local-exchange-api-key"
DEFAULT_API_SECRET = "local-exchange-api-secret"
SYNTHETIC_START = {"BTCUSDC": 60_000.0, "ETHUSDC": 3_000.0}
SYNTHETIC_SEED_OFFSET = {"BTCUSDC": 0, "ETHUSDC": 1}
SYNTHETIC_CHUNK = 30 * 1440           # candles generated at a time (30 days, ~20 ms)
LISTEN_KEY_TTL_S = 3600.0
MAX_CONNECTION_S = 24 * 3600.0
WS_PING_S = 180.0                     # Binance pings every 3 minutes
SPOT_WEIGHT_LIMIT = 6000
MAX_BAN_S = 3 * 24 * 3600.0
JSON_SEP = (",", ":")
TRADES_DEFAULT_WINDOW_MS = 7 * 24 * 3600 * 1000   # userTrades without startTime / fromId
MAX_WS_BACKLOG = 10_000               # a consumer this far behind is dropped, as Binance drops slow clients

MSG_UNKNOWN = "Unknown error, please check your request or try again later."
MSG_UNAVAILABLE = "Service Unavailable."
MSG_BAD_KEY = "Invalid API-key, IP, or permissions for action."
MSG_NO_LISTEN_KEY = "This listenKey does not exist."


def _mandatory(name: str) -> ExchangeError:
    return ExchangeError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


# ---------------------------------------------------------------------------- faults


@dataclass
class Faults:
    """Injected faults; every field can be set by `--faults k=v,...` or POST /_sim/faults."""

    ws_drop_every: float = 0.0       # seconds between forced drops of every WebSocket (0 = never)
    delay_ms: float = 0.0            # added to every REST response (the request is processed first)
    http_5xx_rate: float = 0.0       # share of /fapi requests answered 503 "Service Unavailable." (not executed)
    unknown_rate: float = 0.0        # share of order placements answered 503 "Unknown error, ..."
    unknown_next: int = 0            # the next N order placements get that answer
    unknown_placed: float = 1.0      # probability the order was placed behind it (true = 1, false = 0)
    http_429_next: int = 0           # the next N REST requests get 429 -1003
    skew_ms: int = 0                 # server clock offset: timestamps drift → -1021
    margin_next: int = 0             # the next N opening orders get -2019
    reduce_only_next: int = 0        # the next N reduce-only orders get -2022
    listen_key_ttl_s: float = LISTEN_KEY_TTL_S  # shorter = early listenKey expiry

    def update(self, values: Mapping[str, Any]) -> None:
        kinds = {f.name: f.type for f in fields(self)}
        for k, v in values.items():
            if k not in kinds:
                raise ValueError(f"unknown fault {k!r}; known: {', '.join(kinds)}")
            setattr(self, k, _coerce_fault(kinds[k], v))


def _coerce_fault(kind: Any, v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        v = 1 if v.strip().lower() == "true" else 0
    return int(float(v)) if kind in (int, "int") else float(v)


def parse_faults(spec: str) -> dict[str, str]:
    """`ws_drop_every=30,http_5xx_rate=0.05,delay_ms=50` → {name: value}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault {part!r} is not NAME=VALUE")
        out[name.strip()] = value.strip()
    Faults().update(out)  # validate names and values now, not at first use
    return out


# ---------------------------------------------------------------------------- rate limits


class _Window:
    """Sum of weights over a rolling window of `span` seconds."""

    __slots__ = ("span", "q", "total", "peak")

    def __init__(self, span: float):
        self.span = span
        self.q: deque[tuple[float, int]] = deque()
        self.total = 0
        self.peak = 0

    def used(self, now: float) -> int:
        q = self.q
        while q and q[0][0] <= now - self.span:
            self.total -= q.popleft()[1]
        return self.total

    def add(self, now: float, w: int) -> None:
        if w:
            self.q.append((now, w))
            self.total += w
            self.peak = max(self.peak, self.total)

    def retry_after(self, now: float, need: int, limit: int) -> int:
        """Whole seconds until `need` more fits under `limit`."""
        excess = self.used(now) + need - limit
        for t, w in self.q:
            excess -= w
            if excess <= 0:
                return max(1, math.ceil(t + self.span - now))
        return max(1, math.ceil(self.span))


@dataclass
class _IpState:
    weight: _Window
    strikes: int = 0        # 429s answered since the client was last under the limit
    bans: int = 0
    ban_until: float = 0.0  # monotonic


class _Reply(Exception):
    """A complete HTTP answer decided before the handler runs (429, 418, 503)."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


# ---------------------------------------------------------------------------- market data


class _Series:
    """One symbol's candles (as Python lists: the engine reads them one by one) and the replay cursor."""

    def __init__(self, symbol: str, candles: Candles, extend: Callable[["_Series"], Candles] | None = None,
                 tick: float = 0.1):
        self.symbol = symbol
        self.tick = tick
        self.ticks: list[tuple[int, int, int, int]] = []   # (o, h, l, c) in integer ticks: what is played
        self.t: list[int] = []
        self.o: list[float] = []
        self.h: list[float] = []
        self.l: list[float] = []
        self.c: list[float] = []
        self.v: list[float] = []
        self._extend = extend
        self.cursor = 0          # index of the next candle to play; candles before it are closed
        self._append(candles)

    def _append(self, c: Candles) -> None:
        self.t += c.open_time.tolist()
        self.o += c.open.tolist()
        self.h += c.high.tolist()
        self.l += c.low.tolist()
        self.c += c.close.tolist()
        self.v += c.volume.tolist()
        self.ticks += list(zip(*(a.tolist() for a in candle_ticks(c.open, c.high, c.low, c.close, self.tick))))

    def has_next(self) -> bool:
        if self.cursor >= len(self.t) and self._extend is not None:
            self._append(self._extend(self))
        return self.cursor < len(self.t)


@dataclass
class _Live:
    """The candle being played: its running OHLC."""

    t: int
    o: float
    h: float
    l: float
    c: float
    v: float
    legs: int = 0

    def touch(self, p: float) -> None:
        self.c = p
        if p > self.h:
            self.h = p
        if p < self.l:
            self.l = p


def _synthetic_series(symbol: str, seed: int, tick: float) -> _Series:
    base = SYNTHETIC_START.get(symbol, 100.0)
    sym_seed = seed + SYNTHETIC_SEED_OFFSET.get(symbol, 2 + sum(map(ord, symbol)))
    chunks = [0]

    def extend(s: _Series) -> Candles:
        # Later chunks continue from the last close with their own derived seed: deterministic.
        chunks[0] += 1
        return synthetic_klines(SYNTHETIC_CHUNK, (sym_seed * 1_000_003 + chunks[0]) % 2**63,
                                start_price=s.c[-1], start_time_ms=s.t[-1] + MINUTE_MS, tick=tick)

    return _Series(symbol, synthetic_klines(SYNTHETIC_CHUNK, sym_seed, start_price=base, tick=tick), extend, tick)


def assign_data_files(symbols: Sequence[str], data: Sequence[str | Path] | Mapping[str, Sequence[str | Path]]
                      ) -> dict[str, list[Path]]:
    """Which CSVs each symbol replays: files named after a symbol go to it; the others to the first symbol without any."""
    if isinstance(data, Mapping):
        return {s: [Path(p) for p in v] for s, v in data.items()}
    out: dict[str, list[Path]] = {s: [] for s in symbols}
    loose: list[Path] = []
    for p in map(Path, data):
        match = next((s for s in symbols if s in p.name.upper()), None)
        (out[match] if match else loose).append(p)
    if loose:
        target = next((s for s in symbols if not out[s]), None)
        if target is None:
            raise ValueError(f"{loose[0]}: every symbol already has data; put the symbol in the file name")
        out[target] = loose
    return {s: v for s, v in out.items() if v}


# ---------------------------------------------------------------------------- Binance JSON


def _limit(p: Mapping[str, str], default: int, cap: int) -> int:
    try:
        n = int(p.get("limit") or default)
    except ValueError:
        raise _Reply(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.") from None
    return max(1, min(n, cap))


def _opt_int(p: Mapping[str, str], name: str) -> int | None:
    v = p.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise _Reply(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                     "'^[0-9]{1,20}$'.") from None


# ---------------------------------------------------------------------------- connections


@dataclass(eq=False)
class _Conn:
    """One WebSocket client; messages go through a queue so the engine never waits on a socket."""

    ws: web.WebSocketResponse
    transport: Any
    category: str                      # market / public / private
    combined: bool = False
    streams: set[str] = field(default_factory=set)
    listen_key: str | None = None
    events: frozenset[str] | None = None
    keys: set[str] = field(default_factory=set)   # /private/stream: the listenKeys subscribed
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    counter: Counter = field(default_factory=Counter)   # shared: messages sent by all connections

    def send(self, text: str) -> None:
        if self.queue.qsize() >= MAX_WS_BACKLOG:
            self.abort()
            return
        self.queue.put_nowait(text)

    async def pump(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                await self.ws.send_str(text)
                self.counter["sent"] += 1
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the client sees 1006)."""
        if self.transport is not None:
            self.transport.abort()


def _norm_stream(name: str) -> str:
    """Stream names are case-sensitive except the symbol, which Binance lower-cases."""
    head, sep, tail = name.partition("@")
    if head.startswith("!"):
        return name             # an all-market stream (!markPrice@arr, !miniTicker@arr): no symbol
    return head.lower() + sep + tail


def _stream_category(name: str) -> str:
    return "public" if "bookTicker" in name or "@depth" in name else "market"


@dataclass
class _Route:
    method: str
    path: str
    handler: Callable[[dict[str, str]], Any]
    security: str = "NONE"                                # NONE, KEY (api key only), SIGNED
    weight: int | Callable[[dict[str, str]], int] = 1
    orders: tuple[int, int] | None = None                 # (10 s, 1 min) order-count cost
    placement: bool = False                               # subject to the unknown-status 503 fault


# ---------------------------------------------------------------------------- the exchange


class LocalExchange:
    """SimulatedExchange behind Binance USDⓈ-M REST + WebSocket on one loopback port."""

    def __init__(self, symbols: Sequence[str] = ("BTCUSDC", "ETHUSDC"), balance: float = 10_000.0,
                 data: Sequence[str | Path] | Mapping[str, Sequence[str | Path]] | None = None,
                 synthetic_seed: int | None = None, speed: float = 0.0, lockstep: bool = False,
                 quiet_ms: float = 100.0, api_key: str = DEFAULT_API_KEY, api_secret: str = DEFAULT_API_SECRET,
                 faults: Faults | Mapping[str, Any] | str | None = None, maker_fee: float = DEFAULT_MAKER_FEE,
                 taker_fee: float = DEFAULT_TAKER_FEE, *, leverage: int = 20, grace_ms: float = 5.0,
                 weight_limit: int = 2400, order_limit_10s: int = 300, order_limit_1m: int = 1200,
                 ban_after_429s: int = 3, ban_s: float = 120.0, max_hold_s: float = 10.0,
                 filters: Mapping[str, SymbolFilters] | None = None, max_candles: int | None = None,
                 funding: FundingSeries | Mapping[str, FundingSeries] | None = None,
                 funding_rate: float = BASELINE_RATE, brackets: Mapping[str, BracketTable] | None = None,
                 fill_share: float | None = None):
        known = dict(DEFAULT_FILTERS, **(filters or {}))
        missing = [s for s in symbols if s not in known]
        if missing:
            raise ValueError(f"no filters for {', '.join(missing)}; known: {', '.join(known)}")
        self.symbols = tuple(symbols)
        self.sim = SimulatedExchange([known[s] for s in symbols], balance=balance, maker_fee=maker_fee,
                                     taker_fee=taker_fee, leverage=leverage)
        for sym, table in (brackets or {}).items():
            self.sim.book(sym).brackets = table
        # Funding: a series per symbol, or a constant rate per 8 h (Binance's baseline by default).
        self._funding_given = funding if isinstance(funding, Mapping) else {s: funding for s in symbols} \
            if funding is not None else {}
        self.funding_rate = float(funding_rate)
        # The volume fill model (as backtest.py --fill-model volume): None = full fills (SPEC §6).
        self.fill_share = fill_share
        self._funding_done: dict[str, int] = {}       # last funding time settled, per symbol
        self.funding_history: dict[str, list[tuple[int, float, float]]] = {s: [] for s in symbols}
        self.speed = float(speed)
        self.lockstep = lockstep
        self.quiet_ms = float(quiet_ms)
        self.grace_ms = float(grace_ms)
        self.max_hold_s = float(max_hold_s)
        self.api_key = api_key
        self._secret = api_secret.encode()       # never logged, never printed, not in repr
        self.faults = faults if isinstance(faults, Faults) else Faults()
        if isinstance(faults, str):
            self.faults.update(parse_faults(faults))
        elif isinstance(faults, Mapping):
            self.faults.update(faults)
        self.weight_limit = weight_limit
        self.order_limit_10s = order_limit_10s
        self.order_limit_1m = order_limit_1m
        self.ban_after_429s = ban_after_429s
        self.ban_s = ban_s
        self.series = self._load_series(data, synthetic_seed)
        self.funding_series: dict[str, FundingSeries | None] = {}
        for sym, ser in self.series.items():
            given = self._funding_given.get(sym)
            self.funding_series[sym] = given if given is not None else (
                constant_funding(self.funding_rate, ser.t[0], ser.t[0] + 10 * 365 * 86_400_000)
                if self.funding_rate else None)
            self._funding_done[sym] = ser.t[0] - 1
        self.live: dict[str, _Live] = {}
        for s in self.series.values():
            self.sim.set_price_ticks(s.symbol, s.ticks[0][0])
        self.sim.now_ms = self.series[self.symbols[0]].t[0]

        self._ips: dict[tuple[str, str], _IpState] = {}
        self._orders_10s = _Window(10.0)
        self._orders_1m = _Window(60.0)
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self._ws_counter: Counter[str] = Counter()
        self._conns: set[_Conn] = set()
        self._subs: dict[str, set[_Conn]] = {}
        self._listen_keys: dict[str, float] = {}   # key -> monotonic expiry
        self._trade_seq = 0
        self._book_seq = 0
        self.not_found: Counter[str] = Counter()     # requests for paths the exchange does not serve
        # lockstep bookkeeping: REST requests in flight, their count, last activity
        self._inflight = 0
        self._request_seq = 0
        self._last_activity = 0.0
        self._clock_lock = asyncio.Lock()
        self._pace_deadline = 0.0
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._host = "127.0.0.1"
        self._stopping = False
        self.finished = False           # the market data has run out (or max_candles were played)
        self.max_candles = max_candles  # the running clock stops after this many candles
        self.candles_played = 0         # by the running clock
        self.clock_started = False
        self._next_ws_drop = 0.0
        self._routes = self._route_table()
        self.ws_api = WsApi(self)

    def __repr__(self) -> str:
        return f"LocalExchange(symbols={self.symbols}, url={self.rest_url if self._port else None!r}, api_key={self.api_key!r})"

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0, clock: bool = True) -> "LocalExchange":
        """Serve on host:port; with clock=False the market waits for start_clock()."""
        app = web.Application()
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self._host = host
        self._port = self._runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._housekeeping()))
        if clock:
            self.start_clock()
        log.info("local exchange on %s (ws %s)", self.rest_url, self.ws_url)
        return self

    def start_clock(self) -> None:
        """Start replaying the market at `speed` (once; no-op on a manual clock)."""
        if self.speed > 0 and not self.clock_started:
            self.clock_started = True
            self._tasks.append(asyncio.get_running_loop().create_task(self._run_clock()))

    def streams_connected(self) -> bool:
        """A market and a user stream are open (a client is listening)."""
        return any(c.category == "private" for c in self._conns) and \
            any(c.category != "private" for c in self._conns)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for c in list(self._conns):
            try:
                await asyncio.wait_for(c.ws.close(code=1001, message=b"server shutdown"), 0.5)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                c.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "LocalExchange":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def _netloc(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self._netloc}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._netloc}/"

    def _load_series(self, data: Any, seed: int | None) -> dict[str, _Series]:
        files = assign_data_files(self.symbols, data) if data else {}
        out: dict[str, _Series] = {}
        for sym in self.symbols:
            if sym in files:
                out[sym] = _Series(sym, load_klines(files[sym]), tick=self.sim.books[sym].filters.tick_size)
            else:
                out[sym] = _synthetic_series(sym, seed or 0, self.sim.books[sym].filters.tick_size)
            if not out[sym].t:
                raise ValueError(f"{sym}: no candles")
        return out

    def server_time(self) -> int:
        return int(time.time() * 1000) + int(self.faults.skew_ms)

    # ------------------------------------------------------------------ the clock
    async def step(self, n: int = 1) -> int:
        """Play the next `n` candles of every symbol (manual clock); returns how many were played."""
        played = 0
        async with self._clock_lock:
            for _ in range(n):
                if not await self._play_candle(paced=False):
                    break
                played += 1
        return played

    async def set_price(self, symbol: str, price: float, fill: bool = True) -> None:
        """Move `symbol` to `price`: along a leg that fills what it crosses, or (fill=False) a jump."""
        self.sim.book(symbol)  # -1121 for an unknown symbol
        async with self._clock_lock:
            if fill:
                await self._run_leg(symbol, self.sim.books[symbol].filters.to_ticks(float(price)))
            else:
                self.sim.set_price(symbol, float(price))
                if symbol in self.live:
                    self.live[symbol].touch(float(price))
            self._market_tick(symbol, kline=symbol in self.live)

    async def _run_clock(self) -> None:
        self._pace_deadline = time.monotonic()
        while not self._stopping:
            if self.max_candles is not None and self.candles_played >= self.max_candles:
                log.info("%d candles played: the clock stops", self.candles_played)
                self.finished = True
                return
            async with self._clock_lock:
                more = await self._play_candle(paced=True)
            if not more:
                log.info("market data exhausted: the clock stops")
                self.finished = True
                return
            self.candles_played += 1
            await asyncio.sleep(0)

    async def _play_candle(self, paced: bool) -> bool:
        """One candle of every symbol along its SPEC §6 path, legs interleaved across symbols."""
        active = [s for s in self.series.values() if s.has_next()]
        if not active:
            return False
        legs: dict[str, tuple[tuple[int, int], ...]] = {}
        for s in active:
            i = s.cursor
            legs[s.symbol] = candle_legs(*s.ticks[i], s.t[i])
            self.sim.now_ms = s.t[i]
            self.sim.set_price_ticks(s.symbol, s.ticks[i][0])  # a jump between candles fills nothing (as the backtest)
            self._settle_funding_due(s.symbol, s.t[i])
            o = self.sim.books[s.symbol].price
            self.live[s.symbol] = _Live(s.t[i], o, o, o, o, s.v[i])
        await self._vertex(active, closed=False, paced=paced)
        for k in (1, 2, 3):
            for s in active:
                live = self.live[s.symbol]
                end, self.sim.now_ms = legs[s.symbol][k - 1]
                if self.fill_share is not None:
                    self.sim.set_leg_volume(s.symbol, leg_volume_steps(
                        live.v, self.fill_share, self.sim.books[s.symbol].filters.step_size))
                await self._run_leg(s.symbol, end)
                live.legs = k
            if k == 3:
                for s in active:
                    self.sim.now_ms = self.live[s.symbol].t + MINUTE_MS - 1
            await self._vertex(active, closed=k == 3, paced=paced)
        for s in active:
            s.cursor += 1
            del self.live[s.symbol]
        return True

    async def _run_leg(self, symbol: str, end: int) -> None:
        """Advance along a monotone leg (to `end` ticks); after each fill, publish it and let the
        client react."""
        live = self.live.get(symbol)
        book = self.sim.books[symbol]
        while self.sim.advance_ticks(symbol, end):
            if live is not None:
                live.touch(book.price)
            self._flush_events()
            self._market_tick(symbol, kline=False)
            await self._after_fill()
        if live is not None:
            live.touch(book.price)

    async def _vertex(self, active: list[_Series], closed: bool, paced: bool) -> None:
        for s in active:
            self._market_tick(s.symbol, kline=True, closed=closed)
        if self.lockstep:
            await self._grace()
        else:
            await asyncio.sleep(0)  # let the sockets send before the path goes on
        if paced:
            await self._pace()

    async def _pace(self) -> None:
        """Four vertices per candle at `speed` candles/s; no burst to catch up after a pause."""
        now = time.monotonic()
        self._pace_deadline = max(self._pace_deadline, now - 0.25 / self.speed) + 0.25 / self.speed
        if self._pace_deadline > now:
            await asyncio.sleep(self._pace_deadline - now)

    async def _after_fill(self) -> None:
        if self.lockstep:
            self._last_activity = max(self._last_activity, time.monotonic())
            await self._wait_quiet()
        else:
            await asyncio.sleep(0)

    async def _grace(self) -> None:
        """After a vertex tick: hold only if the client starts talking within the grace period."""
        seen = self._request_seq
        await asyncio.sleep(self.grace_ms / 1000)
        if self._request_seq != seen or self._inflight:
            await self._wait_quiet()

    async def _wait_quiet(self) -> None:
        """Hold the path until no REST request is in flight and none arrived for quiet_ms."""
        quiet = self.quiet_ms / 1000
        give_up = time.monotonic() + self.max_hold_s
        while not self._stopping:
            now = time.monotonic()
            idle = now - self._last_activity
            if self._inflight == 0 and idle >= quiet:
                return
            if now >= give_up:  # a client polling faster than quiet_ms must not freeze the market
                log.warning("lockstep: client not quiet for %.0f ms within %.0f s; the path goes on",
                            self.quiet_ms, self.max_hold_s)
                return
            await asyncio.sleep(max(0.001, quiet - idle) if self._inflight == 0 else 0.002)

    # ------------------------------------------------------------------ streams out
    def _flush_events(self) -> None:
        """Publish the simulator's queued events on every user stream whose listenKey is valid."""
        events = self.sim.drain_events()
        if not events:
            return
        now = time.monotonic()
        conns = [c for c in self._conns if c.listen_key is not None
                 and self._listen_keys.get(c.listen_key, 0.0) > now]
        combined = [(c, [k for k in c.keys if self._listen_keys.get(k, 0.0) > now]) for c in self._conns if c.keys]
        if not conns and not combined:
            return
        for ev in events:
            payload = to_binance_event(ev, self.sim.books[ev.symbol].filters)
            text = json.dumps(payload, separators=JSON_SEP)
            etype = payload["e"]
            for c in conns:
                if c.events is None or etype in c.events:
                    c.send(text)
            for c, keys in combined:
                if c.events is None or etype in c.events:
                    for k in keys:
                        c.send(json.dumps({"stream": k, "data": payload}, separators=JSON_SEP))

    def _market_tick(self, symbol: str, kline: bool, closed: bool = False) -> None:
        """markPrice / aggTrade / bookTicker at the current price (and the kline at vertices)."""
        if not self._subs:
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
                conns = self._subs.get(name)
                if not conns:
                    continue
                payload = payload if payload is not None else build()
                self._publish(name, payload, conns)

    def _publish(self, name: str, payload: Any, conns: Iterable[_Conn]) -> None:
        raw = wrapped = None
        want = _stream_category(name)
        for c in conns:
            if c.category != want:
                continue  # 2026 routing: /public carries book data only, /market the rest
            if c.combined:
                wrapped = wrapped or json.dumps({"stream": name, "data": payload}, separators=JSON_SEP)
                c.send(wrapped)
            else:
                raw = raw or json.dumps(payload, separators=JSON_SEP)
                c.send(raw)

    def _settle_funding_due(self, symbol: str, candle_t: int) -> None:
        """Settle every funding time T in (last settled, candle_t] at this candle's open (the
        position held at T: nothing has traded since the previous candle closed)."""
        ser = self.funding_series.get(symbol)
        if ser is None:
            return
        while True:
            nxt = ser.next_after(self._funding_done[symbol])
            if nxt is None or nxt[0] > candle_t:
                return
            t, rate = nxt
            self._funding_done[symbol] = t
            mark = self.sim.mark_of(self.sim.books[symbol])
            now = self.sim.now_ms
            self.sim.now_ms = t
            self.sim.settle_funding(symbol, rate, mark)
            self.sim.now_ms = now
            self.funding_history[symbol].append((t, rate, mark))
            self._flush_events()

    def _next_funding(self, symbol: str | None = None) -> tuple[int, float]:
        """(next funding time, its rate) of a symbol."""
        sym = symbol or self.symbols[0]
        ser = self.funding_series.get(sym)
        nxt = ser.next_after(self._funding_done.get(sym, self.sim.now_ms)) if ser is not None else None
        if nxt is not None:
            return nxt
        period = 8 * 3600 * 1000
        return (self.sim.now_ms // period + 1) * period, 0.0

    def _mark_payload(self, symbol: str) -> dict[str, Any]:
        p = _f8(self.sim.mark_of(self.sim.books[symbol]))
        t, rate = self._next_funding(symbol)
        return {"e": "markPriceUpdate", "E": self.sim.now_ms, "s": symbol, "p": p, "ap": p, "i": p, "P": p,
                "r": _f8(rate), "T": t}

    def _agg_payload(self, symbol: str) -> dict[str, Any]:
        b = self.sim.books[symbol]
        self._trade_seq += 1
        q = b.filters.fmt_qty(b.filters.step_size)
        return {"e": "aggTrade", "E": self.sim.now_ms, "a": self._trade_seq, "s": symbol,
                "p": _avg(b.filters, b.price), "q": q, "nq": q, "f": self._trade_seq, "l": self._trade_seq,
                "T": self.sim.now_ms, "m": False}

    def _mini_ticker_payload(self, symbol: str) -> dict[str, Any]:
        t = self._ticker_json(symbol)
        return {"e": "24hrMiniTicker", "E": self.sim.now_ms, "s": symbol, "c": t["lastPrice"], "o": t["openPrice"],
                "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"]}

    def _ticker_payload(self, symbol: str) -> dict[str, Any]:
        t = self._ticker_json(symbol)
        return {"e": "24hrTicker", "E": self.sim.now_ms, "s": symbol, "p": t["priceChange"],
                "P": t["priceChangePercent"], "w": t["weightedAvgPrice"], "c": t["lastPrice"], "Q": t["lastQty"],
                "o": t["openPrice"], "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
                "O": t["openTime"], "C": t["closeTime"], "F": t["firstId"], "L": t["lastId"], "n": t["count"]}

    def _depth5_payload(self, symbol: str) -> dict[str, Any]:
        bids, asks = self._levels(symbol, 5)
        self._book_seq += 1
        return {"e": "depthUpdate", "E": self.sim.now_ms, "T": self.sim.now_ms, "s": symbol,
                "U": self._book_seq, "u": self._book_seq, "pu": self._book_seq - 1, "b": bids, "a": asks}

    def _book_payload(self, symbol: str) -> dict[str, Any]:
        b = self.sim.books[symbol]
        f = b.filters
        self._book_seq += 1
        bid = f.price_down(b.price)
        return {"e": "bookTicker", "u": self._book_seq, "E": self.sim.now_ms, "T": self.sim.now_ms, "s": symbol,
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
    def _active_listen_key(self) -> str | None:
        now = time.monotonic()
        return next((k for k, exp in self._listen_keys.items() if exp > now), None)

    def expire_listen_keys(self) -> int:
        """Send listenKeyExpired on every user stream and invalidate the keys (early expiry fault)."""
        keys = list(self._listen_keys)
        for k in keys:
            self._expire(k)
        return len(keys)

    def _expire(self, key: str) -> None:
        self._listen_keys.pop(key, None)
        text = json.dumps({"e": "listenKeyExpired", "E": str(self.server_time()), "listenKey": key},
                          separators=JSON_SEP)
        for c in self._conns:
            if c.listen_key == key:
                c.send(text)
            elif key in c.keys:
                c.send(json.dumps({"stream": key, "data": json.loads(text)}, separators=JSON_SEP))
                c.keys.discard(key)

    def drop_websockets(self, kind: str = "all", mode: str = "abort") -> int:
        """Drop WebSocket connections (kind: all / user / market); abort = no close frame."""
        victims = [c for c in self._conns if kind == "all" or (c.category == "private") == (kind == "user")]
        for c in victims:
            if mode == "close":
                asyncio.ensure_future(c.ws.close(code=1001, message=b"dropped"))
            else:
                c.abort()
        return len(victims)

    async def _housekeeping(self) -> None:
        """listenKey expiry and periodic socket drops."""
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for k, exp in list(self._listen_keys.items()):
                if exp <= now:
                    log.info("listenKey expired")
                    self._expire(k)
            every = self.faults.ws_drop_every
            if every > 0:
                if self._next_ws_drop == 0.0:
                    self._next_ws_drop = now + every
                elif now >= self._next_ws_drop:
                    self._next_ws_drop = now + every
                    log.info("fault: dropping %d websocket(s)", self.drop_websockets())
            else:
                self._next_ws_drop = 0.0

    # ------------------------------------------------------------------ HTTP plumbing
    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        for path, handler in (("/_sim/state", self._admin_state), ("/_sim/stats", self._admin_stats),
                              ("/_sim/faults", self._admin_faults)):
            r.add_route("GET", path, handler)
        for path, handler in (("/_sim/step", self._admin_step), ("/_sim/price", self._admin_price),
                              ("/_sim/faults", self._admin_faults), ("/_sim/ws_drop", self._admin_ws_drop),
                              ("/_sim/listen_key/expire", self._admin_expire), ("/_sim/ban", self._admin_ban)):
            r.add_route("POST", path, handler)
        r.add_get("/{category:market|public}/stream", self._ws_market)
        r.add_get("/{category:market|public}/ws/{stream:[^/]+}", self._ws_market)
        r.add_get("/private/ws", self._ws_user)
        r.add_get("/private/stream", self._ws_user_stream)
        r.add_get("/ws-fapi/v1", self.ws_api.handle)
        r.add_get("/private/ws/{key:[^/]+}", self._ws_user)
        for route in self._routes:
            r.add_route(route.method, route.path, self._endpoint(route))
        r.add_route("*", "/{tail:.*}", self._not_found)

    async def _not_found(self, request: web.Request) -> web.Response:
        # Counted, so a client asking for what the exchange lacks shows up in /_sim/stats.
        self.not_found[f"{request.method} {request.path}"] += 1
        self.responses[404] += 1
        return web.json_response({"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"},
                                 status=404)

    def _endpoint(self, route: _Route) -> Callable[[web.Request], Any]:
        key = f"{route.method} {route.path}"
        bucket = "api" if route.path.startswith("/api/") else "fapi"

        async def handle(request: web.Request) -> web.Response:
            self._inflight += 1
            self._request_seq += 1
            self._last_activity = time.monotonic()
            try:
                self.requests[key] += 1
                raw_qs = request.raw_path.partition("?")[2]
                body = (await request.read()).decode("utf-8", "replace") if request.body_exists else ""
                params = dict(parse_qsl(body, keep_blank_values=True))
                params.update(parse_qsl(raw_qs, keep_blank_values=True))  # the query string wins
                status, payload, headers = self._serve(route, bucket, request, params, raw_qs, body)
                if self.faults.delay_ms > 0:
                    await asyncio.sleep(self.faults.delay_ms / 1000)
            finally:
                self._inflight -= 1
                self._last_activity = time.monotonic()
            self.responses[status] += 1
            return web.Response(text=json.dumps(payload, separators=JSON_SEP), status=status, headers=headers,
                                content_type="application/json")

        return handle

    def _serve(self, route: _Route, bucket: str, request: web.Request, params: dict[str, str], raw_qs: str,
               body: str) -> tuple[int, Any, dict[str, str]]:
        ip = request.remote or "127.0.0.1"
        state = self._ip_state(ip, bucket)
        headers: dict[str, str] = {}
        try:
            try:
                self._check_weight(state, ip, bucket, route, params)
                if bucket == "fapi" and self.faults.http_5xx_rate > 0 and random.random() < self.faults.http_5xx_rate:
                    raise _Reply(503, -1001, MSG_UNAVAILABLE)
                if route.security != "NONE":
                    self._check_auth(request, params, raw_qs, body, route.security == "SIGNED")
                if route.orders:
                    self._check_order_rate(route.orders, headers)
                placed_unknown = self._unknown_fault(route)
                result = route.handler(params)
                if placed_unknown is not None:
                    raise placed_unknown
                return 200, result, headers
            except ExchangeError as e:
                return e.http_status, {"code": e.code, "msg": e.msg}, headers
            except _Reply as r:
                headers.update(r.headers)
                return r.status, {"code": r.code, "msg": r.msg}, headers
            except (ValueError, TypeError, KeyError):
                return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}, headers
            except Exception:  # a bug here must not look like a network failure to the client
                log.exception("%s %s failed", route.method, route.path)
                return 500, {"code": -1000, "msg": "An unknown error occured while processing the request."}, headers
        finally:
            self._flush_events()
            headers["X-MBX-USED-WEIGHT-1M"] = str(state.weight.used(time.monotonic()))
            if route.orders:
                now = time.monotonic()
                headers["X-MBX-ORDER-COUNT-10S"] = str(self._orders_10s.used(now))
                headers["X-MBX-ORDER-COUNT-1M"] = str(self._orders_1m.used(now))

    def _ip_state(self, ip: str, bucket: str) -> _IpState:
        state = self._ips.get((ip, bucket))
        if state is None:
            state = self._ips[(ip, bucket)] = _IpState(_Window(60.0))
        return state

    def _check_weight(self, state: _IpState, ip: str, bucket: str, route: _Route, params: dict[str, str]) -> None:
        """Binance's IP weight limit: 429 past it, 418 (a ban, escalating) when the client keeps going."""
        now = time.monotonic()
        if state.ban_until > now:
            raise self._ban_reply(state, ip, now)
        if bucket == "fapi" and self.faults.http_429_next > 0:
            self.faults.http_429_next -= 1
            raise _Reply(429, -1003, self._too_many_msg(ip), {"Retry-After": "1"})
        w = route.weight(params) if callable(route.weight) else route.weight
        limit = self.weight_limit if bucket == "fapi" else SPOT_WEIGHT_LIMIT
        if state.weight.used(now) + w > limit:
            state.strikes += 1
            if state.strikes > self.ban_after_429s:
                self.ban(self.ban_s * 2 ** state.bans, ip, bucket, now=now)  # escalates: 2 min, 4, 8, ...
                raise self._ban_reply(state, ip, now)
            raise _Reply(429, -1003, self._too_many_msg(ip),
                         {"Retry-After": str(state.weight.retry_after(now, w, limit))})
        state.strikes = 0
        state.weight.add(now, w)

    def _too_many_msg(self, ip: str) -> str:
        return (f"Too many requests; current limit of IP({ip}) is {self.weight_limit} requests per minute. "
                "Please use the websocket for live updates to avoid polling the API.")

    def _ban_reply(self, state: _IpState, ip: str, now: float) -> _Reply:
        until_ms = self.server_time() + int((state.ban_until - now) * 1000)
        return _Reply(418, -1003, f"Way too many requests; IP({ip}) banned until {until_ms}. "
                      "Please use the websocket for live updates to avoid bans.",
                      {"Retry-After": str(max(1, round(state.ban_until - now)))})  # whole seconds, no jitter

    def ban(self, seconds: float, ip: str = "127.0.0.1", bucket: str = "fapi", now: float | None = None) -> None:
        """Ban an IP for `seconds` (418 with Retry-After until then)."""
        state = self._ips.setdefault((ip, bucket), _IpState(_Window(60.0)))
        state.ban_until = (time.monotonic() if now is None else now) + min(seconds, MAX_BAN_S)
        state.bans += 1
        state.strikes = 0

    def _check_auth(self, request: web.Request, params: dict[str, str], raw_qs: str, body: str, signed: bool) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ExchangeError(-2015, MSG_BAD_KEY, 401)
        if not signed:
            return
        if not params.get("timestamp"):
            raise _mandatory("timestamp")
        qs_payload, qs_sig = _split_signature(raw_qs)
        body_payload, body_sig = _split_signature(body)
        sig = qs_sig or body_sig
        if not sig:
            raise _mandatory("signature")
        expected = hmac.new(self._secret, (qs_payload + body_payload).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            raise ExchangeError(-1022, "Signature for this request is not valid.")
        self._check_timestamp(params)

    def _check_timestamp(self, params: Mapping[str, str]) -> None:
        """A signed request's timestamp against the server clock and its recvWindow."""
        if not params.get("timestamp"):
            raise _mandatory("timestamp")
        ts, recv = int(params["timestamp"]), int(params.get("recvWindow") or 5000)
        if recv > 60_000:
            raise ExchangeError(-1131, "recvWindow must be less than 60000")
        now = self.server_time()
        if ts >= now + 1000:
            raise ExchangeError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > recv:
            raise ExchangeError(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _check_order_rate(self, cost: tuple[int, int], headers: dict[str, str]) -> None:
        now = time.monotonic()
        if self._orders_10s.used(now) + cost[0] > self.order_limit_10s:
            raise _Reply(429, -1015, f"Too many new orders; current limit is {self.order_limit_10s} orders per TEN_SECONDS.",
                         {"Retry-After": str(self._orders_10s.retry_after(now, cost[0], self.order_limit_10s))})
        if self._orders_1m.used(now) + cost[1] > self.order_limit_1m:
            raise _Reply(429, -1015, f"Too many new orders; current limit is {self.order_limit_1m} orders per MINUTE.",
                         {"Retry-After": str(self._orders_1m.retry_after(now, cost[1], self.order_limit_1m))})
        self._orders_10s.add(now, cost[0])
        self._orders_1m.add(now, cost[1])

    def _unknown_fault(self, route: _Route) -> _Reply | None:
        """503 "Unknown error": raised now (not placed) or returned to raise after placing."""
        if not route.placement:
            return None
        fl = self.faults
        hit = fl.unknown_next > 0 or (fl.unknown_rate > 0 and random.random() < fl.unknown_rate)
        if not hit:
            return None
        if fl.unknown_next > 0:
            fl.unknown_next -= 1
        reply = _Reply(503, -1000, MSG_UNKNOWN)
        if random.random() >= fl.unknown_placed:
            raise reply
        return reply

    # ------------------------------------------------------------------ routes
    def _route_table(self) -> list[_Route]:
        def per_symbol(with_sym: int, without: int) -> Callable[[dict[str, str]], int]:
            return lambda p: with_sym if p.get("symbol") else without

        def depth_weight(p: dict[str, str]) -> int:
            n = int(p.get("limit") or 500) if str(p.get("limit") or "500").isdigit() else 500
            return 2 if n <= 50 else 5 if n <= 100 else 10 if n <= 500 else 20

        def klines_weight(p: dict[str, str]) -> int:
            n = int(p.get("limit") or 500)
            return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10

        R = _Route
        return [
            R("GET", "/api/v3/ping", lambda p: {}),
            R("GET", "/api/v3/time", lambda p: {"serverTime": self.server_time()}),
            R("GET", "/fapi/v1/ping", lambda p: {}),
            R("GET", "/fapi/v1/time", lambda p: {"serverTime": self.server_time()}),
            R("GET", "/fapi/v1/exchangeInfo", self._exchange_info),
            R("GET", "/fapi/v1/klines", self._klines, weight=klines_weight),
            R("GET", "/fapi/v1/ticker/price", self._ticker_price, weight=per_symbol(1, 2)),
            R("GET", "/fapi/v2/ticker/price", self._ticker_price, weight=per_symbol(1, 2)),
            R("GET", "/fapi/v1/premiumIndex", self._premium_index, weight=per_symbol(1, 10)),
            R("GET", "/fapi/v1/ticker/24hr", self._ticker_24hr, weight=per_symbol(1, 40)),
            R("GET", "/fapi/v1/ticker/bookTicker", self._book_ticker, weight=per_symbol(2, 5)),
            R("GET", "/fapi/v1/depth", self._depth, weight=depth_weight),
            R("GET", "/fapi/v1/multiAssetsMargin", lambda p: {"multiAssetsMargin": False}, "SIGNED", 30),
            R("GET", "/fapi/v1/fundingRate", self._funding_rate_history),
            R("GET", "/fapi/v1/income", self._income, "SIGNED", 30),
            R("GET", "/fapi/v1/leverageBracket", self._leverage_bracket, "SIGNED", 1),
            R("GET", "/fapi/v2/balance", self._balance, "SIGNED", 5),
            R("GET", "/fapi/v3/balance", self._balance, "SIGNED", 5),
            R("GET", "/fapi/v2/account", lambda p: self._account(2), "SIGNED", 5),
            R("GET", "/fapi/v3/account", lambda p: self._account(3), "SIGNED", 5),
            R("GET", "/fapi/v2/positionRisk", lambda p: self._position_risk(p, 2), "SIGNED", 5),
            R("GET", "/fapi/v3/positionRisk", lambda p: self._position_risk(p, 3), "SIGNED", 5),
            R("POST", "/fapi/v1/leverage", self._leverage, "SIGNED"),
            R("POST", "/fapi/v1/marginType", self._margin_type, "SIGNED"),
            R("GET", "/fapi/v1/positionSide/dual", lambda p: {"dualSidePosition": self.sim.dual_side}, "SIGNED", 30),
            R("POST", "/fapi/v1/positionSide/dual", self._position_mode, "SIGNED"),
            R("GET", "/fapi/v1/commissionRate", self._commission, "SIGNED", 20),
            R("POST", "/fapi/v1/order", self._new_order, "SIGNED", 0, (1, 1), True),
            R("GET", "/fapi/v1/order", self._get_order, "SIGNED"),
            R("DELETE", "/fapi/v1/order", self._cancel_order, "SIGNED"),
            R("PUT", "/fapi/v1/order", self._modify_order, "SIGNED", 1, (1, 1)),
            R("POST", "/fapi/v1/batchOrders", self._batch_orders, "SIGNED", 5, (5, 1), True),
            R("DELETE", "/fapi/v1/allOpenOrders", self._cancel_all, "SIGNED"),
            R("GET", "/fapi/v1/openOrders", self._open_orders, "SIGNED", per_symbol(1, 40)),
            R("GET", "/fapi/v1/allOrders", self._all_orders, "SIGNED", 5),
            R("GET", "/fapi/v1/userTrades", self._user_trades, "SIGNED", 5),
            R("POST", "/fapi/v1/algoOrder", self._new_algo, "SIGNED", 0, (1, 1), True),
            R("GET", "/fapi/v1/algoOrder", self._get_algo, "SIGNED"),
            R("DELETE", "/fapi/v1/algoOrder", self._cancel_algo, "SIGNED"),
            R("GET", "/fapi/v1/openAlgoOrders", self._open_algos, "SIGNED", per_symbol(1, 40)),
            R("GET", "/fapi/v1/allAlgoOrders", self._all_algos, "SIGNED", 5),
            R("DELETE", "/fapi/v1/algoOpenOrders", self._cancel_all_algos, "SIGNED"),
            R("POST", "/fapi/v1/listenKey", self._listen_key_new, "KEY"),
            R("PUT", "/fapi/v1/listenKey", self._listen_key_keepalive, "KEY"),
            R("DELETE", "/fapi/v1/listenKey", self._listen_key_close, "KEY"),
        ]

    # ------------------------------------------------------------------ market data endpoints
    def _symbol(self, p: Mapping[str, str], required: bool = True) -> str | None:
        sym = p.get("symbol")
        if not sym:
            if required:
                raise _mandatory("symbol")
            return None
        sym = sym.upper()
        if sym not in self.sim.books:
            raise ExchangeError(-1121, "Invalid symbol.")
        return sym

    def _symbols(self, p: Mapping[str, str]) -> list[str]:
        sym = self._symbol(p, required=False)
        return [sym] if sym else list(self.symbols)

    def _filters(self, sym: str) -> SymbolFilters:
        return self.sim.books[sym].filters

    def _exchange_info(self, p: Mapping[str, str]) -> dict[str, Any]:
        asset = self.sim.asset
        return {
            "timezone": "UTC", "serverTime": self.server_time(), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.order_limit_1m},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.order_limit_10s},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "0"}
                       for a in dict.fromkeys(("USDT", asset, "BTC"))],
            "symbols": [_symbol_info(self._filters(s), asset) for s in self.symbols],
        }

    def _klines(self, p: Mapping[str, str]) -> list[list[Any]]:
        sym = self._symbol(p)
        if not p.get("interval"):
            raise _mandatory("interval")
        if p["interval"] != "1m":
            raise ExchangeError(-1120, "Invalid interval.")
        limit = max(1, min(1500, int(p.get("limit") or 500)))
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
        s, f, live = self.series[sym], self._filters(sym), self.live.get(sym)
        lo = bisect.bisect_left(s.t, start, 0, s.cursor) if start is not None else 0
        hi = bisect.bisect_right(s.t, end, 0, s.cursor) if end is not None else s.cursor
        rows = [kline_row(f, s.t[i], s.o[i], s.h[i], s.l[i], s.c[i], s.v[i]) for i in range(lo, hi)]
        if live and (start is None or live.t >= start) and (end is None or live.t <= end):
            rows.append(kline_row(f, live.t, live.o, live.h, live.l, live.c, live.v * live.legs / 3))
        return rows[:limit] if start is not None else rows[-limit:]

    def _ticker_price(self, p: Mapping[str, str]) -> Any:
        out = [{"symbol": s, "price": self._filters(s).fmt_price(self.sim.books[s].price), "time": self.sim.now_ms}
               for s in self._symbols(p)]
        return out[0] if p.get("symbol") else out

    def _window_24h(self, sym: str) -> dict[str, Any]:
        """Open, high, low, last, volumes and times of the last 24 h of played candles."""
        s, live = self.series[sym], self.live.get(sym)
        now = self.sim.now_ms
        lo = bisect.bisect_left(s.t, now - 86_400_000 + 1, 0, s.cursor)
        idx = range(lo, s.cursor)
        o = [s.o[i] for i in idx] + ([live.o] if live else [])
        h = [s.h[i] for i in idx] + ([live.h] if live else [])
        l = [s.l[i] for i in idx] + ([live.l] if live else [])
        v = [s.v[i] for i in idx] + ([live.v * live.legs / 3] if live else [])
        c = [s.c[i] for i in idx] + ([live.c] if live else [])
        last = self.sim.books[sym].price
        if not o:
            o, h, l, c, v = [last], [last], [last], [last], [0.0]
        quote = sum(vi * (hi + li + ci) / 3 for vi, hi, li, ci in zip(v, h, l, c))
        first_t = s.t[lo] if lo < s.cursor else (live.t if live else now)
        return {"open": o[0], "high": max(h), "low": min(l), "last": last, "volume": sum(v), "quote": quote,
                "openTime": first_t, "closeTime": now, "count": len(o)}

    def _ticker_json(self, sym: str) -> dict[str, Any]:
        w, f = self._window_24h(sym), self._filters(sym)
        change = w["last"] - w["open"]
        vol = w["volume"]
        return {"symbol": sym, "priceChange": f.fmt_price(change) if change >= 0 else "-" + f.fmt_price(-change),
                "priceChangePercent": f"{change / w['open'] * 100:.3f}" if w["open"] else "0.000",
                "weightedAvgPrice": _avg(f, w["quote"] / vol if vol else w["last"]),
                "lastPrice": f.fmt_price(w["last"]), "lastQty": f.fmt_qty(f.step_size),
                "openPrice": _avg(f, w["open"]), "highPrice": _avg(f, w["high"]), "lowPrice": _avg(f, w["low"]),
                "volume": f.fmt_qty(vol), "quoteVolume": f"{w['quote']:.2f}", "openTime": w["openTime"],
                "closeTime": w["closeTime"], "firstId": 1, "lastId": max(1, self._trade_seq),
                "count": max(1, self._trade_seq)}

    def _ticker_24hr(self, p: Mapping[str, str]) -> Any:
        """GET /fapi/v1/ticker/24hr: rolling 24 h statistics of the played candles."""
        out = [self._ticker_json(s) for s in self._symbols(p)]
        return out[0] if p.get("symbol") else out

    def _best_bid_ask(self, sym: str) -> tuple[str, str]:
        """A one-tick spread around the last price: the bid at it (rounded down), the ask a tick above."""
        f = self._filters(sym)
        bid_t = f.ticks_down(self.sim.books[sym].price)
        return f.fmt_ticks(bid_t), f.fmt_ticks(bid_t + 1)

    def _book_ticker(self, p: Mapping[str, str]) -> Any:
        out = []
        for sym in self._symbols(p):
            bid, ask = self._best_bid_ask(sym)
            q = self._filters(sym).fmt_qty(1)
            out.append({"symbol": sym, "bidPrice": bid, "bidQty": q, "askPrice": ask, "askQty": q,
                        "time": self.sim.now_ms, "lastUpdateId": self._book_seq})
        return out[0] if p.get("symbol") else out

    def _levels(self, sym: str, n: int) -> tuple[list[list[str]], list[list[str]]]:
        """`n` levels a side, a tick apart from the one-tick spread, 1 unit each (a thin, honest book:
        the simulator fills at the path's prices, not against this depth)."""
        f = self._filters(sym)
        bid_t = f.ticks_down(self.sim.books[sym].price)
        q = f.fmt_qty(1)
        bids = [[f.fmt_ticks(bid_t - k), q] for k in range(n) if bid_t - k > 0]
        asks = [[f.fmt_ticks(bid_t + 1 + k), q] for k in range(n)]
        return bids, asks

    def _depth(self, p: Mapping[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/depth (limit 5, 10, 20, 50, 100, 500 or 1000; default 500)."""
        sym = self._symbol(p)
        limit = p.get("limit") or "500"
        if limit not in ("5", "10", "20", "50", "100", "500", "1000"):
            raise ExchangeError(-1130, "Data sent for parameter 'limit' is not valid.")
        bids, asks = self._levels(sym, int(limit))
        self._book_seq += 1
        return {"lastUpdateId": self._book_seq, "E": self.sim.now_ms, "T": self.sim.now_ms, "bids": bids,
                "asks": asks}

    def _premium_index(self, p: Mapping[str, str]) -> Any:
        out = []
        for s in self._symbols(p):
            mark = _f8(self.sim.mark_of(self.sim.books[s]))
            t, rate = self._next_funding(s)
            out.append({"symbol": s, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                        "lastFundingRate": _f8(rate), "interestRate": "0.00010000",
                        "nextFundingTime": t, "time": self.sim.now_ms})
        return out[0] if p.get("symbol") else out

    def _funding_rate_history(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/fundingRate: settled funding times, oldest first (limit 100, max 1000)."""
        limit = _limit(p, 100, 1000)
        start, end = _opt_int(p, "startTime"), _opt_int(p, "endTime")
        out = []
        for sym in self._symbols(p):
            f = self._filters(sym)
            for t, rate, mark in self.funding_history[sym]:
                if (start is None or t >= start) and (end is None or t <= end):
                    out.append({"symbol": sym, "fundingTime": t, "fundingRate": _f8(rate),
                                "markPrice": f"{mark:.{f.price_decimals}f}"})
        out.sort(key=lambda d: d["fundingTime"])
        return out[:limit] if start is not None else out[-limit:]

    def _income(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/income: FUNDING_FEE, INSURANCE_CLEAR, REALIZED_PNL and COMMISSION records,
        oldest first; without startTime/endTime the last 7 days (limit 100, max 1000)."""
        sym = self._symbol(p, required=False)
        kind = (p.get("incomeType") or "").upper() or None
        limit = _limit(p, 100, 1000)
        start, end = _opt_int(p, "startTime"), _opt_int(p, "endTime")
        if start is None and end is None:
            start = self.sim.now_ms - 7 * 86_400_000
        recs = [(i.time, i.tran_id, i.symbol, i.income_type, i.income, i.info, "") for i in self.sim.income]
        for t in self.sim.trades:
            if t.realized_pnl:
                recs.append((t.time, 10**9 + 2 * t.id, t.symbol, "REALIZED_PNL", t.realized_pnl, "", str(t.id)))
            if t.commission:
                recs.append((t.time, 10**9 + 2 * t.id + 1, t.symbol, "COMMISSION", -t.commission, "", str(t.id)))
        out = [{"symbol": s, "incomeType": k, "income": _f8(v), "asset": self.sim.asset, "info": info, "time": t,
                "tranId": tid, "tradeId": trade}
               for t, tid, s, k, v, info, trade in sorted(recs)
               if (sym is None or s == sym) and (kind is None or k == kind)
               and (start is None or t >= start) and (end is None or t <= end)]
        return out[:limit]

    def _leverage_bracket(self, p: Mapping[str, str]) -> Any:
        out = [self.sim.books[s].brackets.to_binance() for s in self._symbols(p) if self.sim.books[s].brackets]
        return out[0] if p.get("symbol") else out

    # ------------------------------------------------------------------ account endpoints
    def _position_numbers(self, b: SymbolBook) -> dict[str, float]:
        pos = b.position
        qty = pos.qty + 0.0
        notional = qty * b.price
        im = abs(notional) / pos.leverage
        oim = self.sim._open_order_margin(b)
        return {"qty": qty, "entry": pos.entry_price if qty else 0.0, "notional": notional,
                "upnl": qty * (b.price - pos.entry_price) if qty else 0.0, "im": im, "oim": oim,
                "mm": self.sim.maint_margin(b), "liq": b.liq_price if qty else 0.0}

    def _totals(self) -> dict[str, float]:
        nums = [self._position_numbers(b) for b in self.sim.books.values()]
        wallet = self.sim.wallet
        upnl = sum(n["upnl"] for n in nums)
        avail = self.sim.available_balance()
        return {"wallet": wallet, "upnl": upnl, "pim": sum(n["im"] for n in nums),
                "oim": sum(n["oim"] for n in nums), "mm": sum(n["mm"] for n in nums), "avail": avail,
                "withdraw": max(0.0, min(avail, wallet))}

    def _asset_json(self, t: dict[str, float]) -> dict[str, Any]:
        return {"asset": self.sim.asset, "walletBalance": _f8(t["wallet"]), "unrealizedProfit": _f8(t["upnl"]),
                "marginBalance": _f8(t["wallet"] + t["upnl"]), "maintMargin": _f8(t["mm"]),
                "initialMargin": _f8(t["pim"] + t["oim"]), "positionInitialMargin": _f8(t["pim"]),
                "openOrderInitialMargin": _f8(t["oim"]), "crossWalletBalance": _f8(t["wallet"]),
                "crossUnPnl": _f8(t["upnl"]), "availableBalance": _f8(t["avail"]),
                "maxWithdrawAmount": _f8(t["withdraw"]), "marginAvailable": True, "updateTime": self.sim.now_ms}

    def _balance(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        t = self._totals()
        zero = _f8(0.0)
        out = []
        for asset in dict.fromkeys(("USDT", self.sim.asset, "BNB")):  # real accounts list several assets
            mine = asset == self.sim.asset
            out.append({"accountAlias": "SgsRmYFzAuTiXqFz", "asset": asset,
                        "balance": _f8(t["wallet"]) if mine else zero,
                        "crossWalletBalance": _f8(t["wallet"]) if mine else zero,
                        "crossUnPnl": _f8(t["upnl"]) if mine else zero,
                        "availableBalance": _f8(t["avail"]) if mine else zero,
                        "maxWithdrawAmount": _f8(t["withdraw"]) if mine else zero,
                        "marginAvailable": True, "updateTime": self.sim.now_ms if mine else 0})
        return out

    def _account(self, version: int) -> dict[str, Any]:
        t = self._totals()
        d: dict[str, Any] = {}
        if version == 2:
            d.update({"feeTier": 0, "feeBurn": True, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                      "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1})
        d.update({"totalInitialMargin": _f8(t["pim"] + t["oim"]), "totalMaintMargin": _f8(t["mm"]),
                  "totalWalletBalance": _f8(t["wallet"]), "totalUnrealizedProfit": _f8(t["upnl"]),
                  "totalMarginBalance": _f8(t["wallet"] + t["upnl"]), "totalPositionInitialMargin": _f8(t["pim"]),
                  "totalOpenOrderInitialMargin": _f8(t["oim"]), "totalCrossWalletBalance": _f8(t["wallet"]),
                  "totalCrossUnPnl": _f8(t["upnl"]), "availableBalance": _f8(t["avail"]),
                  "maxWithdrawAmount": _f8(t["withdraw"]), "assets": [self._asset_json(t)]})
        positions = []
        for sym, b in self.sim.books.items():
            n, f = self._position_numbers(b), b.filters
            common = {"symbol": sym, "positionSide": "BOTH", "positionAmt": f.fmt_qty(n["qty"]),
                      "unrealizedProfit": _f8(n["upnl"]), "initialMargin": _f8(n["im"] + n["oim"]),
                      "maintMargin": _f8(n["mm"]), "updateTime": b.position.update_time}
            if version == 2:
                common.update({"positionInitialMargin": _f8(n["im"]), "openOrderInitialMargin": _f8(n["oim"]),
                               "leverage": str(b.position.leverage), "isolated": False,
                               "entryPrice": _f8(n["entry"]), "breakEvenPrice": _f8(n["entry"]),
                               "maxNotional": "1000000", "bidNotional": "0", "askNotional": "0"})
            elif n["qty"]:
                common.update({"isolatedMargin": "0", "notional": _f8(n["notional"]), "isolatedWallet": "0"})
            else:
                continue  # v3 lists active positions only
            positions.append(common)
        d["positions"] = positions
        return d

    def _position_risk(self, p: Mapping[str, str], version: int) -> list[dict[str, Any]]:
        out = []
        for sym in self._symbols(p):
            b = self.sim.books[sym]
            n, f = self._position_numbers(b), b.filters
            if version == 3 and not n["qty"] and not b.open_by_client and not b.algo_by_client:
                continue  # v3: only symbols with a position or open orders
            d = {"symbol": sym, "positionSide": "BOTH", "positionAmt": f.fmt_qty(n["qty"]),
                 "entryPrice": _f8(n["entry"]), "breakEvenPrice": _f8(n["entry"]), "markPrice": _f8(b.price),
                 "unRealizedProfit": _f8(n["upnl"]), "liquidationPrice": _f8(n["liq"]), "isolatedMargin": _f8(0.0),
                 "notional": _f8(n["notional"]), "isolatedWallet": "0", "updateTime": b.position.update_time}
            if version == 3:
                d.update({"marginAsset": self.sim.asset, "initialMargin": _f8(n["im"] + n["oim"]),
                          "maintMargin": _f8(n["mm"]), "positionInitialMargin": _f8(n["im"]),
                          "openOrderInitialMargin": _f8(n["oim"]), "adl": 0, "bidNotional": "0",
                          "askNotional": "0"})
            else:
                d.update({"marginType": "cross", "isAutoAddMargin": "false", "leverage": str(b.position.leverage),
                          "maxNotionalValue": "1000000"})
            out.append(d)
        return out

    def _leverage(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        if not p.get("leverage"):
            raise _mandatory("leverage")
        return self.sim.change_leverage(sym, int(p["leverage"]))

    def _margin_type(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        if not p.get("marginType"):
            raise _mandatory("marginType")
        return self.sim.change_margin_type(sym, p["marginType"])

    def _position_mode(self, p: Mapping[str, str]) -> dict[str, Any]:
        value = (p.get("dualSidePosition") or "").lower()
        if value not in ("true", "false"):
            raise _mandatory("dualSidePosition")
        return self.sim.change_position_mode(value == "true")

    def _commission(self, p: Mapping[str, str]) -> dict[str, Any]:
        return {"symbol": self._symbol(p), "makerCommissionRate": _rate(self.sim.maker_fee),
                "takerCommissionRate": _rate(self.sim.taker_fee), "rpiCommissionRate": _rate(self.sim.maker_fee)}

    # ------------------------------------------------------------------ order endpoints
    _AUTH_PARAMS = ("timestamp", "recvWindow", "signature")

    def _order_params(self, p: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in p.items() if k not in self._AUTH_PARAMS}
        for name in ("symbol", "side", "type"):
            if not out.get(name):
                raise _mandatory(name)
        out["symbol"] = self._symbol(out)
        return out

    def _place(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """One order (single or batch element): faults, the simulator, Binance's JSON."""
        params = self._order_params(p)
        resp_type = str(params.pop("newOrderRespType", "ACK")).upper()
        reduce_only = str(params.get("reduceOnly", "false")).lower() == "true"
        fl = self.faults
        if reduce_only and fl.reduce_only_next > 0:
            fl.reduce_only_next -= 1
            raise ExchangeError(-2022, "ReduceOnly Order is rejected.")
        if not reduce_only and fl.margin_next > 0 and str(params.get("type")).upper() in ("LIMIT", "MARKET"):
            fl.margin_next -= 1
            raise ExchangeError(-2019, "Margin is insufficient.")
        o = self.sim.new_order(**params)
        return order_json(o, self._filters(o.symbol), ack=resp_type != "RESULT")

    def _new_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        return self._place(p)

    def _batch_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        try:
            items = json.loads(p.get("batchOrders") or "")
        except ValueError:
            items = None
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH_ORDERS \
                or not all(isinstance(x, dict) for x in items):
            raise ExchangeError(-1130, "Data sent for parameter 'batchOrders' is not valid.")
        out: list[dict[str, Any]] = []
        for item in items:
            try:
                out.append(self._place({k: v if isinstance(v, str) else json.dumps(v) for k, v in item.items()}))
            except ExchangeError as e:
                out.append({"code": e.code, "msg": e.msg})
            except (TypeError, ValueError):
                out.append({"code": -1102, "msg": "Mandatory parameter was not sent, was empty/null, or malformed."})
        return out

    def _order_ref(self, p: Mapping[str, str]) -> tuple[str, Any, str | None]:
        sym = self._symbol(p)
        oid, cid = p.get("orderId") or None, p.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise _mandatory("orderId")
        return sym, (int(oid) if oid is not None else None), cid

    def _get_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym, oid, cid = self._order_ref(p)
        o = self.sim.get_order(sym, orderId=oid, origClientOrderId=cid)
        return order_json(o, self._filters(sym), query=True)

    def _cancel_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym, oid, cid = self._order_ref(p)
        o = self.sim.cancel_order(sym, orderId=oid, origClientOrderId=cid)
        return order_json(o, self._filters(sym))

    def _modify_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym, oid, cid = self._order_ref(p)
        o = self.sim.modify_order(sym, p.get("side", ""), p.get("quantity"), p.get("price"), orderId=oid,
                                  origClientOrderId=cid)
        return order_json(o, self._filters(sym))

    def _cancel_all(self, p: Mapping[str, str]) -> dict[str, Any]:
        self.sim.cancel_all_orders(self._symbol(p))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _open_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(p, required=False)
        return [order_json(o, self._filters(o.symbol), query=True) for o in self.sim.open_orders(sym)]

    def _all_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(p)
        limit = max(1, min(1000, int(p.get("limit") or 500)))
        rows = [o for o in self.sim.orders.values() if o.symbol == sym]
        return [order_json(o, self._filters(sym), query=True) for o in rows[-limit:]]

    def _user_trades(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(p)
        oid = int(p["orderId"]) if p.get("orderId") else None
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
        from_id = int(p["fromId"]) if p.get("fromId") else None
        limit = max(1, min(1000, int(p.get("limit") or 500)))
        if start is None and end is None and from_id is None:
            start = self.sim.now_ms - TRADES_DEFAULT_WINDOW_MS     # Binance: the last 7 days
        rows = [t for t in self.sim.trades if t.symbol == sym and (oid is None or t.order_id == oid)
                and (start is None or t.time >= start) and (end is None or t.time <= end)
                and (from_id is None or t.id >= from_id)]
        rows = rows[:limit] if from_id is not None or p.get("startTime") else rows[-limit:]
        return [trade_json(t, self._filters(sym), self.sim.asset) for t in rows]

    def _new_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        params = self._order_params(p)
        a = self.sim.new_algo_order(**params)
        return algo_json(a, self._filters(a.symbol))

    def _algo_ref(self, p: Mapping[str, str]) -> tuple[Any, str | None]:
        aid, cid = p.get("algoId") or None, p.get("clientAlgoId") or None
        if aid is None and cid is None:
            raise _mandatory("algoId")
        return (int(aid) if aid is not None else None), cid

    def _get_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        a = self.sim.get_algo_order(*self._algo_ref(p))
        return algo_json(a, self._filters(a.symbol), query=True)

    def _cancel_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        a = self.sim.cancel_algo_order(*self._algo_ref(p))
        return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}

    def _open_algos(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(p, required=False)
        aid = int(p["algoId"]) if p.get("algoId") else None
        return [algo_json(a, self._filters(a.symbol), query=True) for a in self.sim.open_algo_orders(sym)
                if aid is None or a.algo_id == aid]

    def _all_algos(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self._symbol(p)
        return [algo_json(a, self._filters(sym), query=True) for a in self.sim.algo_orders.values() if a.symbol == sym]

    def _cancel_all_algos(self, p: Mapping[str, str]) -> dict[str, Any]:
        self.sim.cancel_all_algo_orders(self._symbol(p))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ------------------------------------------------------------------ listenKey endpoints
    def _listen_key_new(self, p: Mapping[str, str]) -> dict[str, str]:
        """POST: the active key (extended) if there is one, else a new one."""
        key = self._active_listen_key()
        if key is None:
            alphabet = string.ascii_letters + string.digits
            key = "".join(secrets.choice(alphabet) for _ in range(64))
        self._listen_keys[key] = time.monotonic() + self.faults.listen_key_ttl_s
        return {"listenKey": key}

    def _listen_key_keepalive(self, p: Mapping[str, str]) -> dict[str, str]:
        key = p.get("listenKey") or self._active_listen_key()
        if not key or self._listen_keys.get(key, 0.0) <= time.monotonic():
            raise ExchangeError(-1125, MSG_NO_LISTEN_KEY)
        self._listen_keys[key] = time.monotonic() + self.faults.listen_key_ttl_s
        return {"listenKey": key}

    def _listen_key_close(self, p: Mapping[str, str]) -> dict[str, Any]:
        key = p.get("listenKey") or self._active_listen_key()
        if key:
            self._listen_keys.pop(key, None)
        return {}

    # ------------------------------------------------------------------ WebSocket endpoints
    async def _ws_session(self, request: web.Request, conn_args: dict[str, Any]) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=WS_PING_S, autoping=True)
        conn = _Conn(ws=ws, transport=request.transport, counter=self._ws_counter, **conn_args)
        # Registered before the handshake completes: nothing published once the client is connected is lost.
        self._conns.add(conn)
        for name in conn.streams:
            self._subs.setdefault(name, set()).add(conn)
        loop = asyncio.get_running_loop()
        pump: asyncio.Task | None = None
        expiry = loop.call_later(MAX_CONNECTION_S, conn.abort)  # Binance: 24 h at most
        try:
            await ws.prepare(request)
            pump = loop.create_task(conn.pump())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if conn.category != "private":
                        self._ws_command(conn, msg.data)
                    elif conn.combined:
                        self._ws_private_command(conn, msg.data)
        finally:
            expiry.cancel()
            if pump is not None:
                pump.cancel()
            self._conns.discard(conn)
            for name in conn.streams:
                self._subs.get(name, set()).discard(conn)
        return ws

    async def _ws_market(self, request: web.Request) -> web.StreamResponse:
        category = request.match_info["category"]
        if "stream" in request.match_info:
            names, combined = [request.match_info["stream"]], False
        else:
            names, combined = request.query.get("streams", "").split("/"), True
        streams = {_norm_stream(n) for n in names if n}
        for n in streams:
            if _stream_category(n) != category:
                log.warning("stream %s subscribed on /%s: Binance routes it to /%s only", n, category,
                            _stream_category(n))
        return await self._ws_session(request, {"category": category, "combined": combined, "streams": streams})

    async def _ws_user(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        if self._listen_keys.get(key, 0.0) <= time.monotonic():
            return web.json_response({"code": -1125, "msg": MSG_NO_LISTEN_KEY}, status=400)
        events = request.query.get("events")
        allow = frozenset(filter(None, re.split(r"[/,]", events))) if events else None
        return await self._ws_session(request, {"category": "private", "listen_key": key, "events": allow})

    async def _ws_user_stream(self, request: web.Request) -> web.StreamResponse:
        """/private/stream: user data in the combined envelope {"stream": <listenKey>, "data": …},
        for the listenKeys given (`listenKey=` or `streams=K1/K2`) or SUBSCRIBEd on the socket."""
        given = request.query.get("listenKey") or request.query.get("streams") or ""
        keys = {k for k in given.split("/") if k}
        now = time.monotonic()
        bad = [k for k in keys if self._listen_keys.get(k, 0.0) <= now]
        if bad:
            return web.json_response({"code": -1125, "msg": MSG_NO_LISTEN_KEY}, status=400)
        events = request.query.get("events")
        allow = frozenset(filter(None, re.split(r"[/,]", events))) if events else None
        return await self._ws_session(request, {"category": "private", "combined": True, "keys": keys,
                                                "events": allow})

    def _ws_private_command(self, conn: _Conn, text: str) -> None:
        """SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS of listenKeys on /private/stream."""
        try:
            msg = json.loads(text)
            method, params, rid = msg.get("method"), msg.get("params") or [], msg.get("id")
        except (ValueError, AttributeError):
            conn.send(json.dumps({"code": 2, "msg": "Invalid request"}))
            return
        if method == "SUBSCRIBE":
            now = time.monotonic()
            bad = [k for k in params if self._listen_keys.get(k, 0.0) <= now]
            if bad:
                conn.send(json.dumps({"code": -1125, "msg": MSG_NO_LISTEN_KEY, "id": rid}))
                return
            conn.keys.update(params)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "UNSUBSCRIBE":
            conn.keys.difference_update(params)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send(json.dumps({"result": sorted(conn.keys), "id": rid}))
        else:
            conn.send(json.dumps({"code": 2, "msg": f"Invalid request: unknown method {method}", "id": rid}))

    def _ws_command(self, conn: _Conn, text: str) -> None:
        """Live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS on a market connection."""
        try:
            msg = json.loads(text)
            method, params, rid = msg.get("method"), msg.get("params") or [], msg.get("id")
        except (ValueError, AttributeError):
            conn.send(json.dumps({"code": 2, "msg": "Invalid request"}))
            return
        if method == "SUBSCRIBE":
            for n in map(_norm_stream, params):
                conn.streams.add(n)
                self._subs.setdefault(n, set()).add(conn)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "UNSUBSCRIBE":
            for n in map(_norm_stream, params):
                conn.streams.discard(n)
                self._subs.get(n, set()).discard(conn)
            conn.send(json.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send(json.dumps({"result": sorted(conn.streams), "id": rid}))
        else:
            conn.send(json.dumps({"code": 2, "msg": f"Invalid request: unknown method {method}", "id": rid}))

    # ------------------------------------------------------------------ admin API (loopback only, no auth)
    @staticmethod
    async def _admin_params(request: web.Request) -> dict[str, str]:
        if request.remote not in ("127.0.0.1", "::1"):
            raise web.HTTPForbidden(text="admin API is loopback only")
        params = dict(parse_qsl((await request.read()).decode())) if request.body_exists else {}
        params.update(request.query)
        return params

    async def _admin_state(self, request: web.Request) -> web.Response:
        await self._admin_params(request)
        return web.json_response(self.state())

    async def _admin_stats(self, request: web.Request) -> web.Response:
        await self._admin_params(request)
        return web.json_response(self.stats())

    async def _admin_step(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        played = await self.step(int(p.get("candles", 1)))
        return web.json_response({"played": played, "prices": self._prices(), "simTime": self.sim.now_ms})

    async def _admin_price(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        try:
            sym = self._symbol(p)
            await self.set_price(sym, float(p["price"]), fill=p.get("fill", "true").lower() != "false")
        except (ExchangeError, KeyError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"prices": self._prices()})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        if request.method == "POST":
            try:
                self.faults.update(p)
            except ValueError as e:
                return web.json_response({"error": str(e)}, status=400)
        return web.json_response(asdict(self.faults))

    async def _admin_ws_drop(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        return web.json_response({"dropped": self.drop_websockets(p.get("kind", "all"), p.get("mode", "abort"))})

    async def _admin_expire(self, request: web.Request) -> web.Response:
        await self._admin_params(request)
        return web.json_response({"expired": self.expire_listen_keys()})

    async def _admin_ban(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        self.ban(float(p.get("seconds", self.ban_s)), p.get("ip", "127.0.0.1"))
        return web.json_response({"banned": True})

    def _prices(self) -> dict[str, str]:
        return {s: self._filters(s).fmt_price(self.sim.books[s].price) for s in self.symbols}

    def state(self) -> dict[str, Any]:
        """The whole exchange as JSON: account, positions, every order and algo order, every fill."""
        sim, t = self.sim, self._totals()
        symbols = {}
        for sym, b in sim.books.items():
            n = self._position_numbers(b)
            symbols[sym] = {"price": self._filters(sym).fmt_price(b.price), "candleIndex": self.series[sym].cursor,
                            "leverage": b.position.leverage, "marginType": b.position.margin_type,
                            "position": {"positionAmt": b.filters.fmt_qty(n["qty"]), "entryPrice": _f8(n["entry"]),
                                         "unRealizedProfit": _f8(n["upnl"]), "realizedCum": _f8(b.realized_cum)}}
        fills = []
        for tr in sim.trades:
            d = trade_json(tr, self._filters(tr.symbol), sim.asset)
            d.update({"clientOrderId": tr.client_id, "positionAfter": tr.position_after, "entryAfter": tr.entry_after,
                      "lastOrderId": tr.last_order_id})
            fills.append(d)
        now = time.monotonic()
        return {
            "serverTime": self.server_time(), "simTime": sim.now_ms, "balance": self._asset_json(t),
            "totalFees": _f8(sim.total_fees), "symbols": symbols,
            "openOrders": [order_json(o, self._filters(o.symbol), query=True) for o in sim.open_orders()],
            "openAlgoOrders": [algo_json(a, self._filters(a.symbol), query=True) for a in sim.open_algo_orders()],
            "orders": [order_json(o, self._filters(o.symbol), query=True) for o in sim.orders.values()],
            "algoOrders": [algo_json(a, self._filters(a.symbol), query=True) for a in sim.algo_orders.values()],
            "fills": fills,
            "listenKeys": [{"listenKey": k, "expiresInS": round(exp - now, 3)} for k, exp in self._listen_keys.items()],
            "faults": asdict(self.faults),
        }

    def stats(self) -> dict[str, Any]:
        """Request counts per endpoint, status counts, current and peak weight and order counts."""
        now = time.monotonic()
        fapi = [s for (ip, b), s in self._ips.items() if b == "fapi"]
        return {
            "requests": dict(sorted(self.requests.items())), "responses": {str(k): v for k, v in self.responses.items()},
            "usedWeight1m": max((s.weight.used(now) for s in fapi), default=0),
            "peakWeight1m": max((s.weight.peak for s in fapi), default=0), "weightLimit": self.weight_limit,
            "orderCount10s": self._orders_10s.used(now), "peakOrderCount10s": self._orders_10s.peak,
            "orderCount1m": self._orders_1m.used(now), "peakOrderCount1m": self._orders_1m.peak,
            "orderLimit10s": self.order_limit_10s, "orderLimit1m": self.order_limit_1m,
            "websockets": {"user": sum(c.category == "private" for c in self._conns),
                           "market": sum(c.category != "private" for c in self._conns)},
            "websocketMessagesSent": self._ws_counter["sent"],
            "notFound": dict(sorted(self.not_found.items())),
            "wsApiConnections": self.ws_api.connected,
        }


def _split_signature(s: str) -> tuple[str, str | None]:
    """(the signed payload, the signature) of a raw query string or body."""
    i = s.rfind("signature=")
    if i < 0 or (i > 0 and s[i - 1] != "&"):
        return s, None
    j = s.find("&", i)
    sig = s[i + 10: j if j >= 0 else len(s)]
    head = s[: max(0, i - 1)] if i > 0 else ""
    tail = s[j:] if j >= 0 else ""
    return head + tail, sig


# ---------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="local_exchange.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", nargs="+", metavar="CSV", help="Binance kline CSVs to replay (named after the symbol, "
                     "or given to the first symbol without data)")
    src.add_argument("--synthetic", type=int, metavar="SEED", help="seeded synthetic market (default seed 0)")
    p.add_argument("--symbols", default="BTCUSDC,ETHUSDC")
    p.add_argument("--speed", type=float, default=0.0, help="candles per second (0 = manual clock: POST /_sim/step)")
    p.add_argument("--balance", type=float, default=10_000.0, help="USDC wallet")
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--api-secret", default=os.environ.get("LOCAL_EXCHANGE_API_SECRET", DEFAULT_API_SECRET),
                   help="HMAC secret (or env LOCAL_EXCHANGE_API_SECRET, which keeps it out of `ps`)")
    p.add_argument("--faults", default="", metavar="SPEC", help="e.g. ws_drop_every=30,http_5xx_rate=0.05,delay_ms=50")
    p.add_argument("--lockstep", action="store_true", help="pause the price path after fills until the client is quiet")
    p.add_argument("--quiet-ms", type=float, default=100.0)
    p.add_argument("--maker-fee", type=float, default=DEFAULT_MAKER_FEE)
    p.add_argument("--taker-fee", type=float, default=DEFAULT_TAKER_FEE)
    p.add_argument("--weight-limit", type=int, default=2400)
    p.add_argument("--funding", nargs="+", metavar="FILE", help="funding rates (Binance dump CSV or REST JSON) "
                   "for the first symbol; default a constant --funding-rate for every symbol")
    p.add_argument("--funding-rate", type=float, default=BASELINE_RATE,
                   help=f"constant rate per 8 h (default {BASELINE_RATE}; 0: no funding)")
    p.add_argument("--fill-model", choices=["full", "volume"], default="full",
                   help="full: a touched limit fills whole (default); volume: at most --fill-share of each leg's volume")
    p.add_argument("--fill-share", type=float, default=0.1)
    p.add_argument("--log-level", default="INFO")
    return p


def _banner(ex: LocalExchange, args: argparse.Namespace) -> str:
    rest, wsu = ex.rest_url, ex.ws_url
    clock = f"{args.speed:g} candles/s" if args.speed > 0 else f"manual: curl -X POST '{rest}/_sim/step?candles=1'"
    source = f"{len(args.data)} CSV file(s)" if args.data else f"synthetic, seed {args.synthetic or 0}"
    secret = "the default (local_exchange.DEFAULT_API_SECRET)" if args.api_secret == DEFAULT_API_SECRET \
        else "as given by --api-secret"
    return "\n".join([
        f"local Binance USDⓈ-M exchange: {', '.join(ex.symbols)}; market {source}; clock {clock}",
        f"REST      {rest}",
        f"WebSocket {wsu}",
        "python-binance:",
        f"  class LocalClient(AsyncClient): API_URL = \"{rest}/api\"; FUTURES_URL = \"{rest}/fapi\"",
        "  client = await LocalClient.create(API_KEY, API_SECRET)",
        f"  bsm = BinanceSocketManager(client); bsm.FSTREAM_URL = \"{wsu}\"",
        f"API key   {ex.api_key}   (secret: {secret}; not shown)",
        f"admin     {rest}/_sim/state  /_sim/stats  /_sim/faults  (loopback only)",
        "Ctrl-C or SIGTERM stops it.",
    ])


async def _serve(args: argparse.Namespace) -> int:
    ex = LocalExchange(symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
                       balance=args.balance, data=args.data, synthetic_seed=args.synthetic, speed=args.speed,
                       lockstep=args.lockstep, quiet_ms=args.quiet_ms, api_key=args.api_key,
                       api_secret=args.api_secret, faults=args.faults or None, maker_fee=args.maker_fee,
                       taker_fee=args.taker_fee, weight_limit=args.weight_limit,
                       funding={args.symbols.split(",")[0].strip().upper(): load_funding(args.funding)}
                       if args.funding else None, funding_rate=args.funding_rate,
                       fill_share=args.fill_share if args.fill_model == "volume" else None)
    await ex.start(args.host, args.port)
    print(_banner(ex, args), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await ex.stop()
    print("stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.faults:
            parse_faults(args.faults)
        return asyncio.run(_serve(args))
    except (ValueError, OSError) as e:
        print(f"local_exchange.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
