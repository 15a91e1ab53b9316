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
import logging
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict
from typing import Any, Coroutine, Sequence
from aiohttp import web
from market.funding import BASELINE_RATE, FundingSeries, load_funding
from market.data import SYNTHETIC_CORRELATION, load_klines
from sim.model import generic_filters, infer_filters
from sim.exchange import DEFAULT_FILTERS, DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE, SimulatedExchange
from sim.fill_model import FillModel
from localex.wire import algo_json, order_json, trade_json
from localex.wire import f8 as _f8
from localex.base import (DEFAULT_API_KEY, DEFAULT_API_SECRET, Faults, IpState, ListenKeys, Live, MSG_UNKNOWN,
    PlannedFault, RequestActivity, Series, Conn, assign_data_files, load_fault_plan, log, parse_faults,
    parse_plan_entry, synthetic_series)
from localex.settings import DataFiles, ExchangeSettings
from localex.funding import FundingLedger
from localex.market_api import MarketApi
from localex.account_api import AccountApi
from localex.preflight_api import PreflightApi
from localex.routes import rest_routes
from localex.streams import Streams
from localex.gateway import Gateway
from localex.ws_api import WsApi
from localex.clock import Clock, LockstepClient
from localex.admin import AdminApi

__all__ = ["LocalExchange", "ExchangeSettings", "DEFAULT_API_KEY", "DEFAULT_API_SECRET", "Faults", "MSG_UNKNOWN",
           "PlannedFault", "assign_data_files", "load_fault_plan", "parse_faults", "parse_plan_entry"]


class LocalExchange:
    """SimulatedExchange behind Binance USDⓈ-M REST + WebSocket on one loopback port.

    The composition root of its parts: it builds the simulator, the market series and the
    funding ledger, then the parts, each holding its own state — `market` (market-data
    endpoints and views), `account` (account, order and listenKey endpoints), `preflight`,
    `streams` (WebSocket streams), `gateway` (REST routes, auth, limits, HTTP faults),
    `ws_api`, `clock` (the market's clock, lockstep, planned faults) and `admin` (/_sim) —
    wires them, and owns the server's start and stop.  What callers use is here, delegated."""

    def __init__(self, settings: ExchangeSettings | None = None):
        cfg = settings if settings is not None else ExchangeSettings()
        self.symbols = tuple(cfg.symbols)
        self.sim = _simulator(cfg)
        self.faults = Faults.of(cfg.faults)
        self.sim.own_triggered_ids = True               # linked by `ai`, not by client id
        self.sim.trigger_fault = self.faults.take_stop_trigger
        self.series = _load_series(self.symbols, cfg.data, cfg.synthetic_seed, self.sim, cfg.synthetic_correlation)
        self.live: dict[str, Live] = {}                 # the candle being played, per symbol
        for s in self.series.values():
            self.sim.set_price_ticks(s.symbol, s.ticks[0][0])
        self.sim.now_ms = self.series[self.symbols[0]].t[0]
        self.funding = FundingLedger(self.sim, self.symbols, self.series, cfg.funding, cfg.funding_rate)
        self.listen_keys = ListenKeys()
        activity = RequestActivity()
        self.market = MarketApi(self.sim, self.symbols, self.series, self.live, self.funding, cfg.limits,
                                self.server_time)
        self.account = AccountApi(self.sim, self.market, self.faults, self.listen_keys)
        self.preflight = PreflightApi(self.sim, self.account, self.faults, self.server_time)
        self.streams = Streams(self.sim, self.symbols, self.live, self.market, self.funding, self.faults,
                               self.listen_keys, self.server_time, cfg.strict_user_stream)
        routes = rest_routes(self.sim, self.market, self.account, self.preflight, self.server_time)
        self.gateway = Gateway(routes, cfg.limits, cfg.api_key, cfg.api_secret, self.faults, cfg.fault_seed,
                               self.streams, activity, self.server_time)
        self.ws_api = WsApi(self.gateway, self.streams)
        self.clock = Clock(self.sim, self.series, self.live, self.funding, self.faults, cfg, self.streams,
                           self.gateway, activity, self._spawn)
        self.admin = AdminApi(self, self.market)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._host = "127.0.0.1"

    def __repr__(self) -> str:
        return f"LocalExchange(symbols={self.symbols}, url={self.rest_url if self._port else None!r}, api_key={self.api_key!r})"

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0, clock: bool = True) -> LocalExchange:
        """Serve on host:port; with clock=False the market waits for start_clock()."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self._host = host
        self._port = self._runner.addresses[0][1]
        self._spawn(self.clock.housekeeping())
        if clock and not self.clock.hold_clock:      # a held clock starts once a client listens
            self.start_clock()
        log.info("local exchange on %s (ws %s)", self.rest_url, self.ws_url)
        return self

    def _app(self) -> web.Application:
        """Every route, in the order they are matched: admin, WebSocket, REST, then the catch-all."""
        app = web.Application()
        self.admin.add_routes(app)
        r = app.router
        r.add_get("/{category:market|public}/stream", self.streams.ws_market)
        r.add_get("/{category:market|public}/ws/{stream:[^/]+}", self.streams.ws_market)
        r.add_get("/private/ws", self.streams.ws_user)
        r.add_get("/private/stream", self.streams.ws_user_stream)
        r.add_get("/ws-fapi/v1", self.ws_api.handle)
        r.add_get("/private/ws/{key:[^/]+}", self.streams.ws_user)
        self.gateway.add_routes(app)
        return app

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a task of the exchange's (the clock, housekeeping); stop() cancels it."""
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def start_clock(self) -> None:
        """Start replaying the market at `speed` (once; no-op on a manual clock)."""
        self.clock.start_clock()

    def streams_connected(self, clients: int = 1) -> bool:
        """`clients` market streams and as many user streams are open (each client listens)."""
        return self.streams.streams_connected(clients)

    async def stop(self) -> None:
        self.clock.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for c in list(self.streams.conns):
            try:
                await asyncio.wait_for(c.ws.close(code=1001, message=b"server shutdown"), 0.5)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                c.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LocalExchange:
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

    def server_time(self) -> int:
        return int(time.time() * 1000) + int(self.faults.skew_ms)

    # ------------------------------------------------------------------ the clock (delegated)
    async def step(self, n: int = 1) -> int:
        """Play the next `n` candles of every symbol (manual clock); returns how many were played."""
        return await self.clock.step(n)

    async def set_price(self, symbol: str, price: float, fill: bool = True) -> None:
        """Move `symbol` to `price`: along a leg that fills what it crosses, or (fill=False) a jump."""
        await self.clock.set_price(symbol, price, fill)

    def plan_fault(self, entry: PlannedFault) -> None:
        self.clock.plan_fault(entry)

    @property
    def clock_started(self) -> bool:
        return self.clock.clock_started

    @property
    def finished(self) -> bool:
        """The market data has run out (or max_candles were played)."""
        return self.clock.finished

    @property
    def candles_played(self) -> int:
        return self.clock.candles_played

    @property
    def lockstep(self) -> bool:
        return self.clock.lockstep

    @property
    def lockstep_clients(self) -> list[LockstepClient]:
        """Lockstep with the clients in this process (the demo's daemons, one per symbol of
        its account): each () -> (messages it has taken from its streams since they opened,
        nothing left to act on); the market goes on once every one has acted.  Empty: the
        grace/quiet heuristic."""
        return self.clock.lockstep_clients

    @lockstep_clients.setter
    def lockstep_clients(self, clients: Sequence[LockstepClient]) -> None:
        self.clock.lockstep_clients = list(clients)

    @property
    def fill_model(self) -> FillModel:
        """Full fills (SPEC §6) or the volume model, as backtest.py --fill-model."""
        return self.clock.fill_model

    @fill_model.setter
    def fill_model(self, model: FillModel) -> None:
        self.clock.fill_model = model

    @property
    def fault_plan(self) -> list[PlannedFault]:
        return self.clock.fault_plan

    @property
    def fault_log(self) -> list[dict[str, Any]]:
        """What the fault plan did, at which minute."""
        return self.clock.fault_log

    @property
    def funding_history(self) -> dict[str, list[tuple[int, float, float]]]:
        """Funding settled, per symbol: (time, rate, mark)."""
        return self.funding.history

    @property
    def funding_series(self) -> dict[str, FundingSeries | None]:
        return self.funding.series

    # ------------------------------------------------------------------ streams, gateway (delegated)
    @property
    def strict_user_stream(self) -> bool:
        """A user stream naming no `events` gets nothing (False: everything, --lenient-user-stream)."""
        return self.streams.strict_user_stream

    @strict_user_stream.setter
    def strict_user_stream(self, strict: bool) -> None:
        self.streams.strict_user_stream = strict

    def expire_listen_keys(self) -> int:
        """Send listenKeyExpired on every user stream and invalidate the keys (early expiry fault)."""
        return self.streams.expire_listen_keys()

    def drop_websockets(self, kind: str = "all", mode: str = "abort") -> int:
        """Drop WebSocket connections (kind: all / user / market); abort = no close frame."""
        return self.streams.drop_websockets(kind, mode)

    def ban(self, seconds: float, ip: str = "127.0.0.1", bucket: str = "fapi", now: float | None = None) -> None:
        """Ban an IP for `seconds` (418, "banned until <ms>", until then)."""
        self.gateway.ban(seconds, ip, bucket, now)

    @property
    def ban_s(self) -> float:
        return self.gateway.limits.ban_s

    @property
    def api_key(self) -> str:
        return self.gateway.api_key

    @property
    def requests(self) -> Counter[str]:
        """REST (and WebSocket API) requests served, per endpoint."""
        return self.gateway.requests

    @property
    def responses(self) -> Counter[int]:
        """REST answers, per HTTP status."""
        return self.gateway.responses

    @property
    def not_found(self) -> Counter[str]:
        """Requests for paths the exchange does not serve."""
        return self.gateway.not_found

    # The parts' own state under the names tests inspect.
    @property
    def _conns(self) -> set[Conn]:
        return self.streams.conns

    @property
    def _listen_keys(self) -> dict[str, float]:
        return self.listen_keys.expiry

    @property
    def _ips(self) -> dict[tuple[str, str], IpState]:
        return self.gateway.ips

    # ------------------------------------------------------------------ reports
    def state(self) -> dict[str, Any]:
        """The whole exchange as JSON: account, positions, every order and algo order, every fill."""
        sim, t = self.sim, self.account.totals()
        filters = self.market.filters
        symbols = {}
        for sym, b in sim.books.items():
            n = self.account.position_numbers(b)
            symbols[sym] = {"price": filters(sym).fmt_price(b.price), "candleIndex": self.series[sym].cursor,
                            "firstCandleTime": self.series[sym].t[0],
                            "leverage": b.position.leverage, "marginType": b.position.margin_type,
                            "position": {"positionAmt": b.filters.fmt_qty(n["qty"]), "entryPrice": _f8(n["entry"]),
                                         "unRealizedProfit": _f8(n["upnl"]), "realizedCum": _f8(b.realized_cum)}}
        fills = []
        for tr in sim.trades:
            d = trade_json(tr, filters(tr.symbol), sim.asset)
            d.update({"clientOrderId": tr.client_id, "positionAfter": tr.position_after, "entryAfter": tr.entry_after,
                      "lastOrderId": tr.last_order_id})
            fills.append(d)
        now = time.monotonic()
        return {
            "serverTime": self.server_time(), "simTime": sim.now_ms, "balance": self.account.asset_json(t),
            "totalFees": _f8(sim.total_fees), "symbols": symbols,
            "openOrders": [order_json(o, filters(o.symbol), query=True) for o in sim.open_orders()],
            "openAlgoOrders": [algo_json(a, filters(a.symbol), query=True) for a in sim.open_algo_orders()],
            "orders": [order_json(o, filters(o.symbol), query=True) for o in sim.orders.values()],
            "algoOrders": [algo_json(a, filters(a.symbol), query=True) for a in sim.algo_orders.values()],
            "fills": fills,
            "listenKeys": [{"listenKey": k, "expiresInS": round(exp - now, 3)}
                           for k, exp in self.listen_keys.expiry.items()],
            "faults": asdict(self.faults),
            "faultLog": list(self.fault_log),
            "faultPlanLeft": [asdict(p) for p in self.fault_plan],
        }

    def stats(self) -> dict[str, Any]:
        """Request counts per endpoint, status counts, current and peak weight and order counts."""
        now = time.monotonic()
        gw, conns = self.gateway, self.streams.conns
        fapi = [s for (ip, b), s in gw.ips.items() if b == "fapi"]
        return {
            "requests": dict(sorted(gw.requests.items())), "responses": {str(k): v for k, v in gw.responses.items()},
            "usedWeight1m": max((s.weight.used(now) for s in fapi), default=0),
            "peakWeight1m": max((s.weight.peak for s in fapi), default=0), "weightLimit": gw.limits.weight_limit,
            "orderCount10s": gw.orders_10s.used(now), "peakOrderCount10s": gw.orders_10s.peak,
            "orderCount1m": gw.orders_1m.used(now), "peakOrderCount1m": gw.orders_1m.peak,
            "orderLimit10s": gw.limits.order_limit_10s, "orderLimit1m": gw.limits.order_limit_1m,
            "websockets": {"user": sum(c.category == "private" for c in conns),
                           "market": sum(c.category != "private" for c in conns)},
            "websocketMessagesSent": self.streams.ws_counter["sent"],
            "notFound": dict(sorted(gw.not_found.items())),
            "wsApiConnections": self.ws_api.connected,
        }


def _simulator(cfg: ExchangeSettings) -> SimulatedExchange:
    """The engine and account, with every symbol's filters and brackets."""
    known = dict(DEFAULT_FILTERS, **(cfg.filters or {}))
    # Any other symbol: filters read off its data (the finest tick and step its prices and
    # volumes use), or generic ones for the synthetic market (which starts at 100).
    files = assign_data_files(cfg.symbols, cfg.data) if cfg.data else {}
    for sym in cfg.symbols:
        if sym not in known:
            known[sym] = infer_filters(sym, load_klines(files[sym])) if sym in files else generic_filters(sym)
    sim = SimulatedExchange([known[s] for s in cfg.symbols], balance=cfg.balance, maker_fee=cfg.maker_fee,
                            taker_fee=cfg.taker_fee, leverage=cfg.leverage)
    for sym, table in (cfg.brackets or {}).items():
        sim.book(sym).brackets = table
    return sim


def _load_series(symbols: Sequence[str], data: DataFiles | None, seed: int | None,
                 sim: SimulatedExchange, correlation: float | None = None) -> dict[str, Series]:
    """Each symbol's candles: its CSVs, or the seeded synthetic market (correlated across the
    symbols with `correlation`)."""
    files = assign_data_files(symbols, data) if data else {}
    out: dict[str, Series] = {}
    for sym in symbols:
        if sym in files:
            out[sym] = Series(sym, load_klines(files[sym]), tick=sim.books[sym].filters.tick_size)
        else:
            out[sym] = synthetic_series(sym, seed or 0, sim.books[sym].filters.tick_size, correlation)
        if not out[sym].t:
            raise ValueError(f"{sym}: no candles")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="local_exchange.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", nargs="+", metavar="CSV", help="Binance kline CSVs to replay (named after the symbol, "
                     "or given to the first symbol without data)")
    src.add_argument("--synthetic", type=int, metavar="SEED", help="seeded synthetic market (default seed 0)")
    p.add_argument("--correlation", type=float, metavar="RHO",
                   help="synthetic market: the symbols share this part of one market's shocks, and its jumps "
                        f"(e.g. {SYNTHETIC_CORRELATION}, the demo's); default: each symbol its own path")
    p.add_argument("--symbols", default="BTCUSDC,ETHUSDC")
    p.add_argument("--speed", type=float, default=0.0, help="candles per second (0 = manual clock: POST /_sim/step)")
    p.add_argument("--balance", type=float, default=10_000.0, help="USDC wallet")
    p.add_argument("--collateral", metavar="ASSET", help="the asset holding the wallet (default: the symbols' margin "
                   "asset; BNFCR = the EU credits mode; USDT with multi-assets mode switched on)")
    p.add_argument("--lenient-user-stream", action="store_true",
                   help="deliver every user event on a connection that names no `events` (default: nothing, "
                        "the strict reading of Binance's documented forms)")
    p.add_argument("--api-key", default=DEFAULT_API_KEY)
    p.add_argument("--api-secret", default=os.environ.get("LOCAL_EXCHANGE_API_SECRET", DEFAULT_API_SECRET),
                   help="HMAC secret (or env LOCAL_EXCHANGE_API_SECRET, which keeps it out of `ps`)")
    p.add_argument("--faults", default="", metavar="SPEC", help="e.g. ws_drop_every=30,http_5xx_rate=0.05,delay_ms=50")
    p.add_argument("--fault-plan", metavar="FILE", help="JSON list of faults on the market's clock: "
                   '[{"at_minute": 48, "http_429_next": 6}, {"at_minute": 72, "ban_s": 3}, '
                   '{"at_minute": 90, "expire_listen_keys": 1}, {"at_minute": 95, "ws_drop": 1}]')
    p.add_argument("--fault-seed", type=int, help="seed of the rate faults' dice (http_5xx_rate, unknown_rate)")
    p.add_argument("--hold-clock", action="store_true",
                   help="the running clock starts once a market and a user stream are open")
    p.add_argument("--pause-on-retry-after", action="store_true",
                   help="the running clock stands still while a client waits out a 429's Retry-After or a ban")
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
    source = f"{len(args.data)} CSV file(s)" if args.data else f"synthetic, seed {args.synthetic or 0}" + (
        f", the symbols correlated ({args.correlation:g})" if args.correlation is not None else "")
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


def _settings(args: argparse.Namespace) -> ExchangeSettings:
    """The exchange the command line asks for."""
    first_symbol = args.symbols.split(",")[0].strip().upper()
    return ExchangeSettings(
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        balance=args.balance, data=args.data, synthetic_seed=args.synthetic, speed=args.speed,
        synthetic_correlation=args.correlation,
        lockstep=args.lockstep, quiet_ms=args.quiet_ms, api_key=args.api_key, api_secret=args.api_secret,
        faults=args.faults or None, maker_fee=args.maker_fee, taker_fee=args.taker_fee,
        weight_limit=args.weight_limit,
        funding={first_symbol: load_funding(args.funding)} if args.funding else None,
        funding_rate=args.funding_rate, fill_model=FillModel.from_cli(args.fill_model, args.fill_share),
        fault_plan=load_fault_plan(args.fault_plan) if args.fault_plan else (), hold_clock=args.hold_clock,
        fault_seed=args.fault_seed, pause_on_retry_after=args.pause_on_retry_after,
        strict_user_stream=not args.lenient_user_stream)


async def _serve(args: argparse.Namespace) -> int:
    ex = LocalExchange(_settings(args))
    if args.collateral:
        ex.sim.collateral = args.collateral.upper()
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
        if args.fault_plan:
            load_fault_plan(args.fault_plan)
        return asyncio.run(_serve(args))
    except (ValueError, OSError) as e:
        print(f"local_exchange.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
