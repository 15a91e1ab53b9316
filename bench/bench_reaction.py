#!/usr/bin/env python3
"""Reaction latency of the daemon: prints figures, asserts nothing.

"From the fill event's arrival to the next order request leaving the
process, p50 / p99 in ms excluding the network; the grid placed with one
batch request."

Everything runs in one process and one event loop, on one clock
(time.perf_counter): the local exchange on a manual clock (speed 0) and the
daemon's unchanged `Daemon` class, pointed at it by base URL.  Nothing in
the daemon is changed; the bench only observes:

- arrival: python-binance's `ReconnectingWebsocket._handle_message` (the
  first in-process code a WebSocket frame reaches) for every
  ORDER_TRADE_UPDATE with execution type TRADE, and the entry of the
  daemon's `_on_user` handler for the same message;
- departure: an aiohttp TraceConfig added to the client's session:
  request start, request headers written to the socket ("leaves the
  process"), and response headers received.

Each cycle moves the price through entry level 1 (reaction: read the
position, place the take-profit) and then through the take-profit
(reaction: cancel all, read the position, place the new grid with one
batchOrders request); the bench waits for the daemon to settle before the
next move, so every request after a fill belongs to that fill's reaction.

Reported per reaction:

- fill → first request: the first request of any kind (after a level-1 fill
  that is the position read, after a TP fill the cancel-all);
- fill → next order placement, excluding the network: the first
  POST order / batchOrders / algoOrder, minus the time the requests before
  it were on the wire or at the exchange (headers sent → response headers
  received);
- the same including those loopback round trips, for reference.

Rate limits of the exchange are lifted (hundreds of orders in seconds would
otherwise meet the 300 orders / 10 s limit, and the daemon's weight
throttle); state, trades and logs go to a temporary folder (the daemon's
INFO log file is written, as in production).

    python bench/bench_reaction.py [--cycles 120]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from binance.ws.reconnecting_websocket import ReconnectingWebsocket  # noqa: E402

from live.daemon import Daemon, DaemonSettings  # noqa: E402
from paths import Paths  # noqa: E402
from exchange_api import IdTag, parse_client_order_id  # noqa: E402
from local_exchange import ExchangeSettings, LocalExchange  # noqa: E402
from ops.records import setup_logging  # noqa: E402

SYM = "BTCUSDC"
KEY = "bench-reaction-key-0123456789"
SECRET = "bench-reaction-secret-0123456789abcdef"
PLACE = {("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/batchOrders"), ("POST", "/fapi/v1/algoOrder")}
SETTLE_TIMEOUT_S = 5.0


@dataclass
class Req:
    method: str
    path: str
    t_start: float
    t_sent: float = math.nan
    t_end: float = math.nan


@dataclass
class Arrival:
    t_ws: float                 # frame reached python-binance
    client_id: str
    status: str
    t_handler: float = math.nan  # daemon's _on_user entered


class Probe:
    """The observations: TRADE arrivals and outgoing requests, on one clock."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.requests: list[Req] = []
        self.inflight = 0
        self.disk: list[tuple[float, float]] = []    # state saves and trades-CSV writes (fsync)
        self._orig_handle = None

    # -- arrival, at the socket
    def install_ws(self) -> None:
        orig = ReconnectingWebsocket._handle_message
        probe = self

        def handle(ws_self, evt):
            t = time.perf_counter()
            res = orig(ws_self, evt)
            if isinstance(res, dict) and res.get("e") == "ORDER_TRADE_UPDATE":
                o = res.get("o", {})
                if o.get("x") == "TRADE":
                    probe.arrivals.append(Arrival(t, o.get("c", ""), o.get("X", "")))
            return res

        self._orig_handle = orig
        ReconnectingWebsocket._handle_message = handle

    def uninstall_ws(self) -> None:
        if self._orig_handle is not None:
            ReconnectingWebsocket._handle_message = self._orig_handle
            self._orig_handle = None

    # -- arrival, at the daemon's handler
    def wrap_handler(self, d: Daemon) -> None:
        orig = d._on_user
        probe = self

        async def on_user(msg):
            if msg.get("e") == "ORDER_TRADE_UPDATE" and msg.get("o", {}).get("x") == "TRADE":
                t = time.perf_counter()
                cid = msg["o"].get("c", "")
                for a in reversed(probe.arrivals):
                    if a.client_id == cid and math.isnan(a.t_handler):
                        a.t_handler = t
                        break
            return await orig(msg)

        d._on_user = on_user  # type: ignore[method-assign]  # observed, not changed: wrapped in place

    # -- departure
    def trace_config(self) -> aiohttp.TraceConfig:
        tc = aiohttp.TraceConfig(trace_config_ctx_factory=SimpleNamespace)
        probe = self

        async def on_start(session, ctx, params):
            ctx.req = Req(params.method.upper(), params.url.path, time.perf_counter())
            probe.requests.append(ctx.req)
            probe.inflight += 1

        async def on_headers_sent(session, ctx, params):
            ctx.req.t_sent = time.perf_counter()

        async def on_end(session, ctx, params):
            ctx.req.t_end = time.perf_counter()
            probe.inflight -= 1

        async def on_exc(session, ctx, params):
            ctx.req.t_end = time.perf_counter()
            probe.inflight -= 1

        tc.on_request_start.append(on_start)
        tc.on_request_headers_sent.append(on_headers_sent)
        tc.on_request_end.append(on_end)
        tc.on_request_exception.append(on_exc)
        tc.freeze()
        return tc

    def wrap_disk(self, d: Daemon) -> None:
        probe = self

        def timed(fn):
            def inner(*a, **kw):
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    probe.disk.append((t, time.perf_counter()))
            return inner

        # Observed, not changed: the daemon's own objects, wrapped in place.
        d.state_mgr.save = timed(d.state_mgr.save)  # type: ignore[method-assign]
        d.recorder.flush = timed(d.recorder.flush)  # type: ignore[method-assign]

    def disk_between(self, t0: float, t1: float) -> float:
        return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in self.disk)

    def wrap_connect(self, d: Daemon) -> None:
        venue = d.venue
        orig = venue.connect
        tc = self.trace_config()

        async def connect():
            await orig()
            assert venue.client is not None        # connect() created it
            venue.client.session.trace_configs.append(tc)

        venue.connect = connect  # type: ignore[method-assign]  # observed, not changed: wrapped in place


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def line(name: str, xs: list[float]) -> str:
    if not xs:
        return f"  {name:<46} (no samples)"
    ms = [x * 1000 for x in xs]
    return (f"  {name:<46} n={len(ms):4d}  p50 {pct(ms, 0.50):7.3f}  p99 {pct(ms, 0.99):7.3f}  "
            f"max {max(ms):7.3f} ms")


async def settle(d: Daemon, probe: Probe, pred, what: str) -> None:
    """Wait until `pred()` holds, the daemon holds no lock and no request is in flight."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        if pred() and not d.lock.locked() and probe.inflight == 0:
            await asyncio.sleep(0.002)      # let trailing NEW/ACCOUNT_UPDATE events be handled
            if pred() and not d.lock.locked() and probe.inflight == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"daemon did not settle: {what}")
        await asyncio.sleep(0.0005)


def open_orders(ex: LocalExchange):
    return ex.sim.open_orders(SYM)


async def hanging_receiver() -> tuple[str, Any]:
    """A webhook on 127.0.0.1 that accepts every notification and never answers."""
    from aiohttp import web

    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hang)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"json://127.0.0.1:{runner.addresses[0][1]}/hook", runner


async def notifications_to_a_hanging_receiver(d: Any) -> tuple[Any, Any]:
    from ops.events import KINDS
    from ops.services import ServiceSettings, Services
    url, receiver = await hanging_receiver()
    services = Services(d, ServiceSettings([url], set(KINDS)), logging.getLogger("grid"))
    await services.start()
    print(f"notifications on, every event, to a receiver that never answers ({url})")
    return services, receiver


async def run(cycles: int, tmp: Path, notify_hanging: bool = False) -> None:
    probe = Probe()
    probe.install_ws()
    setup_logging("btc", tmp / "logs", (KEY, SECRET), console=False)
    config = tmp / "config_btc.txt"
    shutil.copy(ROOT / "config_btc.txt", config)
    ex = await LocalExchange(ExchangeSettings(symbols=(SYM,), balance=10_000.0, synthetic_seed=7, speed=0.0,
                                              api_key=KEY, api_secret=SECRET, weight_limit=10**9,
                                              order_limit_10s=10**9, order_limit_1m=10**9)).start()
    d = Daemon(DaemonSettings(SYM, config, Paths(tmp), base_url=ex.rest_url, ws_url=ex.ws_url, testnet=False,
                              capital_override=1000.0, sync_interval=3600.0, config_interval=3600.0), KEY, SECRET)
    probe.wrap_connect(d)
    probe.wrap_handler(d)
    probe.wrap_disk(d)
    runner: asyncio.Task | None = None
    t0 = time.perf_counter()
    services = receiver = None
    try:
        await d.start()
        if notify_hanging:
            services, receiver = await notifications_to_a_hanging_receiver(d)
        runner = asyncio.create_task(d.run())
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:     # both streams up and the post-connect reconcile done
            ws = ex.stats()["websockets"]
            # _streams_up_at is set once the post-connect reconcile and income read are done.
            if ws["user"] >= 1 and ws["market"] >= 1 and d.reconnects == 0 and probe.inflight == 0 \
                    and not d.lock.locked() and d._streams_up_at is not None:
                break
            if runner.done():
                runner.result()
            if time.monotonic() > deadline:
                raise TimeoutError(f"streams did not come up (last requests: {[r.path for r in probe.requests[-6:]]}, ws {ws}, reconnects {d.reconnects})")
            await asyncio.sleep(0.005)

        # The first grid: one closed candle sets the centre.
        before = dict(ex.requests)
        await ex.step(1)
        await settle(d, probe, lambda: len(open_orders(ex)) == 4, "first grid")
        delta = {k: v - before.get(k, 0) for k, v in ex.requests.items() if v != before.get(k, 0)}
        n_batch = delta.get("POST /fapi/v1/batchOrders", 0)
        n_single = delta.get("POST /fapi/v1/order", 0)
        levels = len(open_orders(ex))
        print(f"grid placed with {n_batch} batchOrders request(s) for {levels} levels"
              f" (+{n_single} single POST /fapi/v1/order)")
        first_arrival = len(probe.arrivals)
        first_request = len(probe.requests)
        req_before_loop = dict(ex.requests)

        tick = ex.sim.books[SYM].filters.tick_size
        for i in range(cycles):
            entries = {o.level: o for o in d.strategy.state.orders.values() if o.is_entry}
            l1, l2 = entries[1].price, entries[2].price
            await ex.set_price(SYM, max(l2 + tick, l1 * (1 - 0.001)))
            await settle(d, probe, lambda: any(o.reduce_only for o in open_orders(ex)), f"TP after level 1 ({i})")
            tp = next(o.price for o in open_orders(ex) if o.reduce_only)
            await ex.set_price(SYM, tp * (1 + 0.0005))
            await settle(d, probe, lambda: len(open_orders(ex)) == 4 and not any(o.reduce_only for o in open_orders(ex))
                         and not ex.sim.open_algo_orders(), f"new grid after TP ({i})")
        elapsed = time.perf_counter() - t0
    finally:
        if runner is not None:
            d.stopping.set()
            try:
                await asyncio.wait_for(runner, 10)
            except Exception as e:   # noqa: BLE001 - report, then clean up
                print(f"daemon run ended with {type(e).__name__}: {e}", file=sys.stderr)
        if services is not None:
            await services.stop()
        if receiver is not None:
            await receiver.cleanup()
        await d.shutdown()
        await ex.stop()
        probe.uninstall_ws()

    # ------------------------------------------------------------------ analysis
    arrivals = probe.arrivals[first_arrival:]
    reqs = [r for r in probe.requests[first_request:]]
    first_any: list[float] = []
    place_excl: dict[str, list[float]] = {"ENTRY": [], "TP": []}
    place_raw: dict[str, list[float]] = {"ENTRY": [], "TP": []}
    dispatch: list[float] = []
    handler_to_first: list[float] = []
    disk: list[float] = []
    unmatched = 0
    for k, a in enumerate(arrivals):
        t_next = arrivals[k + 1].t_ws if k + 1 < len(arrivals) else math.inf
        mine = [r for r in reqs if a.t_ws <= r.t_start < t_next]
        if not mine:
            unmatched += 1
            continue
        parsed = parse_client_order_id(a.client_id)
        kind = "TP" if parsed and parsed[2] == IdTag.TP else "ENTRY"
        first_any.append(mine[0].t_sent - a.t_ws)
        if not math.isnan(a.t_handler):
            dispatch.append(a.t_handler - a.t_ws)
            handler_to_first.append(mine[0].t_sent - a.t_handler)
        wire = 0.0
        for r in mine:
            if (r.method, r.path) in PLACE:
                place_raw[kind].append(r.t_sent - a.t_ws)
                place_excl[kind].append(r.t_sent - a.t_ws - wire)
                disk.append(probe.disk_between(a.t_ws, r.t_sent))
                break
            wire += r.t_end - r.t_sent
        else:
            unmatched += 1

    total = dict(ex.requests)
    loop_delta = {k: v - req_before_loop.get(k, 0) for k, v in total.items()}
    print(f"{cycles} cycles, {len(arrivals)} fill events, {len(reqs)} requests in {elapsed:.1f} s "
          f"(in-process exchange, manual clock; temp root {tmp})")
    print(f"re-grids in the loop: {loop_delta.get('POST /fapi/v1/batchOrders', 0)} batchOrders requests, "
          f"{loop_delta.get('POST /fapi/v1/order', 0)} single orders (one TP per cycle expected: {cycles})")
    print("reaction latency (perf_counter, one process):")
    print(line("fill → first request leaves (any endpoint)", first_any))
    allx = place_excl["ENTRY"] + place_excl["TP"]
    print(line("fill → next order request, excl. network", allx))
    print(line("  level-1 fill → TP order (excl. network)", place_excl["ENTRY"]))
    print(line("  TP fill → grid batchOrders (excl. network)", place_excl["TP"]))
    print(line("fill → next order request, incl. loopback RTTs", place_raw["ENTRY"] + place_raw["TP"]))
    print(line("  of which socket → daemon handler", dispatch))
    print(line("  of which handler → first request", handler_to_first))
    print(line("  of which state/CSV file writes (fsync)", disk))
    if unmatched:
        print(f"  ({unmatched} fill event(s) without a following order request)")
    print("requests by endpoint (whole run): " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=150, help="level-1 fill + TP fill cycles (2 reactions each)")
    p.add_argument("--keep", action="store_true", help="keep the temporary state/log folder")
    p.add_argument("--notify-hanging", action="store_true",
                   help="with notifications of every event to a receiver that never answers")
    args = p.parse_args(argv)
    os.environ.setdefault("LOG_LANGUAGE", "en")
    tmp = Path(tempfile.mkdtemp(prefix="bench_reaction_"))
    try:
        asyncio.run(asyncio.wait_for(run(args.cycles, tmp, args.notify_hanging), 55))
    finally:
        logging.shutdown()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
