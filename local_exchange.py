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
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from aiohttp import web
from exchange_api import SymbolFilters
from market.brackets import BracketTable
from market.funding import BASELINE_RATE, FundingSeries, constant_funding, load_funding
from localex.ws_api import WsApi
from market.data import load_klines
from sim.model import generic_filters, infer_filters
from sim.exchange import DEFAULT_FILTERS, DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE, SimulatedExchange
from localex.wire import algo_json, order_json, trade_json
from localex.wire import f8 as _f8
from localex.base import (DEFAULT_API_KEY, DEFAULT_API_SECRET, Faults, MSG_UNKNOWN, PlannedFault, _Conn, _IpState,
    _Live, _Series, _Window, _synthetic_series, assign_data_files, load_fault_plan, log, parse_faults,
    parse_plan_entry)
from localex.clock import ClockMixin
from localex.streams import StreamsMixin
from localex.gateway import GatewayMixin
from localex.market_api import MarketApiMixin
from localex.account_api import AccountApiMixin
from localex.preflight_api import PreflightApiMixin

__all__ = ["LocalExchange", "DEFAULT_API_KEY", "DEFAULT_API_SECRET", "Faults", "MSG_UNKNOWN", "PlannedFault",
           "assign_data_files", "load_fault_plan", "parse_faults", "parse_plan_entry"]

class LocalExchange(ClockMixin, StreamsMixin, GatewayMixin, MarketApiMixin, PreflightApiMixin, AccountApiMixin):
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
                 fill_share: float | None = None, fault_plan: Sequence[PlannedFault] = (),
                 hold_clock: bool = False, fault_seed: int | None = None, pause_on_retry_after: bool = False,
                 strict_user_stream: bool = True):
        known = dict(DEFAULT_FILTERS, **(filters or {}))
        # Any other symbol: filters read off its data (the finest tick and step its prices and
        # volumes use), or generic ones for the synthetic market (which starts at 100).
        files = assign_data_files(symbols, data) if data else {}
        for sym in symbols:
            if sym not in known:
                known[sym] = infer_filters(sym, load_klines(files[sym])) if sym in files else generic_filters(sym)
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
        # Lockstep with a client in this process (the demo): () -> (messages it has taken from its
        # streams since they opened, nothing left to act on).  None: the grace/quiet heuristic.
        self.lockstep_client: Callable[[], tuple[int, bool]] | None = None
        self.strict_user_stream = strict_user_stream   # no `events` named: nothing (local_streams._wants)
        self.sim.own_triggered_ids = True               # linked by `ai`, not by client id
        self.sim.trigger_fault = self._stop_trigger_fault
        self.api_key = api_key
        self._secret = api_secret.encode()       # never logged, never printed, not in repr
        self.faults = faults if isinstance(faults, Faults) else Faults()
        if isinstance(faults, str):
            self.faults.update(parse_faults(faults))
        elif isinstance(faults, Mapping):
            self.faults.update(faults)
        # Faults on the market's clock (simulated minutes), applied as each candle begins.
        self.fault_plan: list[PlannedFault] = sorted(fault_plan, key=lambda p: p.at_minute)
        self.fault_log: list[dict[str, Any]] = []   # what the plan did, at which minute
        self._fault_rng = random.Random(fault_seed)  # the dice of the rate faults (5xx, unknown)
        # The running clock waits for a market and a user stream to be open (a client listening).
        self.hold_clock = hold_clock
        # The running clock stands still while a client waits out a Retry-After (429) or a ban
        # (418) this exchange gave: at `speed` candles a second, one second of waiting would be
        # `speed` minutes of market, where on Binance it is one second.
        self.pause_on_retry_after = pause_on_retry_after
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
        if clock and not self.hold_clock:      # a held clock starts once a client listens
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

    def _stop_trigger_fault(self) -> tuple[str, str] | None:
        """The stop_reject_next / stop_expire_next faults, taken as a stop triggers."""
        fl = self.faults
        if fl.stop_reject_next > 0:
            fl.stop_reject_next -= 1
            return "REJECTED", "Reduce Only reject"
        if fl.stop_expire_next > 0:
            fl.stop_expire_next -= 1
            return "EXPIRED", "Order would immediately trigger"
        return None

    def _prices(self) -> dict[str, str]:
        return {s: self._filters(s).fmt_price(self.sim.books[s].price) for s in self.symbols}

    def state(self) -> dict[str, Any]:
        """The whole exchange as JSON: account, positions, every order and algo order, every fill."""
        sim, t = self.sim, self._totals()
        symbols = {}
        for sym, b in sim.books.items():
            n = self._position_numbers(b)
            symbols[sym] = {"price": self._filters(sym).fmt_price(b.price), "candleIndex": self.series[sym].cursor,
                            "firstCandleTime": self.series[sym].t[0],
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
            "faultLog": list(self.fault_log),
            "faultPlanLeft": [asdict(p) for p in self.fault_plan],
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
                       fill_share=args.fill_share if args.fill_model == "volume" else None,
                       fault_plan=load_fault_plan(args.fault_plan) if args.fault_plan else (),
                       hold_clock=args.hold_clock, fault_seed=args.fault_seed,
                       pause_on_retry_after=args.pause_on_retry_after)
    if args.collateral:
        ex.sim.collateral = args.collateral.upper()
    ex.strict_user_stream = not args.lenient_user_stream
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
