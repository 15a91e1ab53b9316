"""Prometheus metrics of one daemon (prometheus_client), on 127.0.0.1 unless told otherwise.

Gauges are read from the daemon's state when Prometheus scrapes (a collector: nothing on
the trading path); fills by role and the reaction latency are counted where they happen
(an increment, an observe).  No key, token or URL is ever a label.  The account's gauges
(gm_account_*) come from the account object of the state (its last read of the account,
the same object the state file carries), labelled with the symbol of the daemon that read it.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from exchange_api import EXIT_ROLES, Role, role_kind


VERSION = "0.13"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class DaemonMetrics:
    def __init__(self, daemon: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.fills = Counter("gm_fills", "Fills recorded since start, by role", ["symbol", "role"],
                             registry=self.registry)
        self.reaction = Histogram("gm_reaction_seconds", "User-stream event received → the strategy's reaction "
                                  "done (orders sent)", ["symbol"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(daemon))
        # process_resident_memory_bytes, process_open_fds, ...: a daemon left alone for weeks
        # is watched for growth (bench/chaos_soak.py --days 30 reads them).
        ProcessCollector(registry=self.registry)
        self._runner: Any = None

    async def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """GET /metrics on the daemon's own event loop (a scrape reads the state between two
        reactions, never during one); returns the port."""
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        async def page(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
        app = web.Application()
        app.router.add_get("/metrics", page)
        app.router.add_get("/", page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(self._runner.addresses[0][1])      # the port bound (0 asks for a free one)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class _StateCollector(Collector):
    def __init__(self, daemon: Any) -> None:
        self.d = daemon

    def collect(self) -> Iterator[Any]:
        d, sym = self.d, self.d.symbol
        info = InfoMetricFamily("gm", "The daemon", labels=["symbol"])
        info.add_metric([sym], {"version": VERSION, "mode": "demo" if d.demo else "live",
                                "direction": d.config.trade_direction})
        yield info
        st = d.strategy.state if d.started else None

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["symbol"])
            g.add_metric([sym], float(value))
            return g
        now = time.monotonic()
        yield gauge("gm_reconnects", "Stream reconnects since start", d.reconnects)
        yield gauge("gm_asyncio_tasks", "asyncio tasks alive in the daemon", len(asyncio.all_tasks()))
        yield gauge("gm_threads", "Threads alive in the daemon", threading.active_count())
        pending = getattr(d, "notifications_pending", None)
        yield gauge("gm_notifications_pending", "Notifications queued, not yet sent",
                    pending() if pending is not None else 0)
        yield gauge("gm_request_weight_used", "Request weight used this minute (the exchange's count)",
                    d.venue.used_weight)
        yield gauge("gm_request_weight_limit", "Request weight per minute", d.venue.weight_limit)
        used = GaugeMetricFamily("gm_order_count_used", "Our orders in each of Binance's order windows",
                                 labels=["symbol", "window"])
        limit = GaugeMetricFamily("gm_order_count_limit", "Binance's order limit of each window",
                                  labels=["symbol", "window"])
        for key, b in d.venue.order_budgets.items():
            used.add_metric([sym, key], float(sum(1 for t in b.times if t > now - b.window_s)))
            limit.add_metric([sym, key], float(b.limit))
        yield used
        yield limit
        for name, doc, last in (("gm_seconds_since_market_event", "Seconds since the last market event",
                                 d.last_market_at),
                                ("gm_seconds_since_user_event", "Seconds since the last user-stream event",
                                 d.last_user_at)):
            yield gauge(name, doc, now - last if last else -1.0)
        if st is None:
            return
        p = st.position
        mark = st.mark_price or d.last_price
        yield gauge("gm_position_qty", "Position quantity (signed: short < 0)", p.qty * d.config.side_sign)
        yield gauge("gm_position_avg_price", "Average entry price", p.avg_price)
        yield gauge("gm_mark_price", "Mark price (last read), else the last price", mark)
        yield gauge("gm_unrealized_pnl", "Unrealized PnL at the mark",
                    (mark - p.avg_price) * p.qty * d.config.side_sign if p.qty and mark else 0.0)
        yield gauge("gm_wallet_balance", "Wallet balance of the margin asset (last known)", d.wallet)
        liq = st.liquidation_price
        yield gauge("gm_liquidation_distance_ratio", "|mark − liquidation price| / mark (−1: none)",
                    abs(mark - liq) / mark if liq and mark else -1.0)
        yield gauge("gm_deepest_level", "Deepest entry level filled", p.deepest_level)
        yield gauge("gm_funding_paid", "Funding paid in total (USDC; negative: received)", d.funding.paid)
        by_role = GaugeMetricFamily("gm_open_orders", "Open orders the daemon keeps, by role",
                                    labels=["symbol", "role"])
        counts: dict[str, int] = {}
        for o in st.orders.values():
            role = role_kind(o.role)
            counts[role] = counts.get(role, 0) + 1
        for role in (Role.ENTRY, *EXIT_ROLES):
            by_role.add_metric([sym, role], float(counts.get(role, 0)))
        yield by_role
        yield from account_gauges(sym, getattr(st, "account", None))


# (name, help, key of the state's account object); the account stop's two only while it is on
ACCOUNT_GAUGES = (
    ("gm_account_wallet", "The account's wallet balance (USDC), at the last account read", "wallet"),
    ("gm_account_equity", "The account's equity: margin balance = wallet + unrealised PnL of every symbol",
     "equity"),
    ("gm_account_maint_margin", "Maintenance margin of every position of the account (liquidated when the "
     "equity reaches it)", "maint_margin"),
    ("gm_account_margin_ratio", "Maintenance margin / equity (1: the account is liquidated)", "margin_ratio"),
)
STOP_GAUGES = (
    ("gm_account_peak_equity", "The account's peak equity (ACCOUNT_STOP_DRAWDOWN)", "peak_equity"),
    ("gm_account_stop_equity", "Equity below which the account stop fires", "stop_equity"),
)


def account_gauges(symbol: str, account: Any) -> Iterator[GaugeMetricFamily]:
    """The account's gauges from a state's account object; none until the account was read
    (an absent or malformed field is left out, never shown as 0)."""
    if not isinstance(account, dict):
        return
    stop_on = _finite(account.get("stop_equity")) not in (None, 0.0)
    for name, doc, key in ACCOUNT_GAUGES + (STOP_GAUGES if stop_on else ()):
        value = _finite(account.get(key))
        if value is not None:
            g = GaugeMetricFamily(name, doc, labels=["symbol"])
            g.add_metric([symbol], value)
            yield g
    if "stopped_at" in account:
        g = GaugeMetricFamily("gm_account_stopped", "1 once the account stop has fired, else 0", labels=["symbol"])
        g.add_metric([symbol], 1.0 if account.get("stopped_at") else 0.0)
        yield g


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)
