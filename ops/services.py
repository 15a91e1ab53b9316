"""The services that watch a daemon left alone, hung off its event stream (ops/events.py):
notifications (ops/notify.py), the daily summary, Prometheus metrics (ops/metrics.py), the
dashboard's live file, and the connectivity watch that says when the exchange or a stream
has been unreachable for a minute, and when it is back.

None of them calls into the strategy or the venue; each runs in its own task, so a slow
receiver or a scrape never holds a reaction up.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ops.events import DAILY, REACHABLE, START, STOP, UNREACHABLE, Event
from ops.history import replace_file
from messages import korean
from ops.notify import END, ErrorEvents, Notifier, quiet_apprise
from ops.records import SecretFilter
from status import pnl


UNREACHABLE_AFTER_S = 60.0
LIVE_EVERY_S = 5.0
# Freed heap pages are handed back to the system this often (glibc's malloc_trim; GM_TRIM_S
# overrides it: the month soak, whose clock runs 100 times faster, trims every 5 s).
TRIM_EVERY_S = 60.0
WATCH_EVERY_S = 1.0
STOP_SEND_S = 3.0               # at shutdown, queued messages get this long to go out


@dataclass
class ServiceSettings:
    notify_urls: list[str] = field(default_factory=list)
    notify_events: set[str] = field(default_factory=set)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    unreachable_after_s: float = UNREACHABLE_AFTER_S


class Connectivity:
    """Sources (the market / user streams, the exchange's REST) down since when; one
    `unreachable` event once any has been down a minute, one `reachable` when all are back."""

    def __init__(self, daemon: Any, after_s: float) -> None:
        self.d, self.after_s = daemon, after_s
        self.down: dict[str, tuple[float, str]] = {}
        self.notified_at: float | None = None

    def mark_down(self, source: str, what: str) -> None:
        self.down.setdefault(source, (time.monotonic(), what))

    def mark_up(self, source: str) -> None:
        self.down.pop(source, None)

    def check(self) -> None:
        now = time.monotonic()
        if self.down and self.notified_at is None:
            source, (since, what) = min(self.down.items(), key=lambda kv: kv[1][0])
            if now - since >= self.after_s:
                self.notified_at = since
                self.d.bus.publish(Event(UNREACHABLE, self.d.symbol, {"seconds": now - since,
                                                                       "what": f"{source}: {what}"[:200]}))
        elif not self.down and self.notified_at is not None:
            self.d.bus.publish(Event(REACHABLE, self.d.symbol, {"seconds": now - self.notified_at}))
            self.notified_at = None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (another C library, another system)."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class DayWatch:
    """The market's UTC day, read off the event times the daemon receives: when they pass
    00:00 UTC, each listener is called with the day that ended ("YYYY-MM-DD").  Live, event
    times are the wall clock's; in a demo they are the simulated market's, so a demo's
    simulated day ends with its own summary.  The daemon keeps `day` in its state, so a
    restart across midnight still ends the day it last saw."""

    def __init__(self) -> None:
        self.day: int | None = None
        self.listeners: list[Callable[[str], None]] = []

    MAX_DAYS_CAUGHT_UP = 7          # after a longer outage, the last week's summaries only

    def see(self, event_ms: int) -> None:
        if event_ms <= 0:
            return
        day = event_ms // 86_400_000
        if self.day is not None and day > self.day:
            # One summary per day that ended, also the days the daemon did not see end.
            for ended_day in range(max(self.day, day - self.MAX_DAYS_CAUGHT_UP), day):
                ended = datetime.fromtimestamp(ended_day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")
                for listener in self.listeners:
                    listener(ended)
        if self.day is None or day > self.day:
            self.day = day


class Services:
    def __init__(self, daemon: Any, settings: ServiceSettings, log: logging.Logger,
                 secrets: tuple[str, ...] = ()) -> None:
        self.d, self.s, self.log, self.secrets = daemon, settings, log, secrets
        self.tasks: list[asyncio.Task[Any]] = []
        self.notifier: Notifier | None = None
        self.metrics_port: int | None = None
        self._error_handler: ErrorEvents | None = None

    async def start(self) -> None:
        d = self.d
        if self.s.notify_urls:
            quiet_apprise()
            self.notifier = Notifier(self.s.notify_urls, self.s.notify_events, d.bus, self.log, korean())
            self.tasks.append(asyncio.create_task(self.notifier.run(), name="notifier"))
            d.notifications_pending = self.notifier.pending
            self._error_handler = ErrorEvents(d.bus, d.symbol)
            self._error_handler.addFilter(SecretFilter(*self.secrets))     # keys and tokens never in a message
            self.log.addHandler(self._error_handler)
            d.market_day.listeners.append(self._day_ended)
        if d.metrics is not None and self.s.metrics_port is not None:
            self.metrics_port = await d.metrics.serve(self.s.metrics_port, self.s.metrics_host)
            self.log.info("metrics: http://%s:%d/metrics", self.s.metrics_host, self.metrics_port)
        self.tasks.append(asyncio.create_task(self._live_file(), name="live-file"))
        self.tasks.append(asyncio.create_task(self._watch(), name="connectivity"))
        trim = _malloc_trim()
        if trim is not None:
            every = float(os.environ.get("GM_TRIM_S") or TRIM_EVERY_S)
            self.tasks.append(asyncio.create_task(self._trim_memory(trim, every), name="malloc-trim"))
        d.bus.publish(Event(START, d.symbol, {"direction": d.config.trade_direction,
                                              "mode": "demo" if d.demo else "live"}))

    async def stop(self) -> None:
        self.d.bus.publish(Event(STOP, self.d.symbol))
        self.d.bus.publish(Event(END, self.d.symbol))
        notifier = next((t for t in self.tasks if t.get_name() == "notifier"), None)
        if notifier is not None:
            # The stop message (and anything still queued) goes out before the process ends,
            # within a few seconds: a receiver that hangs does not hold the shutdown up.
            done, _ = await asyncio.wait([notifier], timeout=STOP_SEND_S)
            if not done:
                self.log.warning("notifications: %d message(s) not sent at shutdown", self.notifier.pending() if self.notifier else 0)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._error_handler is not None:
            self.log.removeHandler(self._error_handler)
        if self.d.metrics is not None:
            await self.d.metrics.stop()
        try:
            self.d.paths.live(self.d.short).unlink()
        except OSError:
            pass
        self.d.prices.write()           # the last candles seen; the file stays for the dashboard

    def _day_ended(self, day: str) -> None:
        # Called from the market tick's reaction: the CSV is read just after it, not in it.
        self.log.info("the market's day %s ended: its summary is sent", day)
        asyncio.get_running_loop().call_soon(
            lambda: self.d.bus.publish(Event(DAILY, self.d.symbol, self.daily(day))))

    def daily(self, yesterday: str) -> dict[str, Any]:
        """The day that just ended (UTC): realized PnL that day and in total, funding, position."""
        d = self.d
        day, total, _ = pnl(d.paths.trades(d.short), yesterday)
        st = d.strategy.state
        f = d.venue.filters
        p = st.position
        return {"day": yesterday, "pnl_today": day, "pnl_total": total, "funding_paid": d.funding.paid,
                "position_text": f"{f.fmt_qty(p.qty)} @ {f.fmt_price(p.avg_price)}" if p.qty else "0"}

    async def _live_file(self) -> None:
        """state/live_<sym>.json every few seconds: the dashboard's live price and wallet; and
        state/prices_<sym>.json when a candle closed since its last write."""
        d = self.d
        path = d.paths.live(d.short)
        while True:
            data = {"symbol": d.symbol, "price": d.last_price, "wallet": d.wallet, "reconnects": d.reconnects,
                    "demo": d.demo, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            try:
                replace_file(path, json.dumps(data))
            except OSError:
                pass
            d.prices.write()
            await asyncio.sleep(LIVE_EVERY_S)

    async def _trim_memory(self, trim: Callable[[int], int], every: float) -> None:
        """glibc keeps freed memory (a reconnect's compression buffers, a burst of messages) in
        its arenas: the resident size of a daemon left alone crept up by about half a MB a
        simulated day in the month soak while its Python heap stayed flat.  malloc_trim(0)
        returns the free pages; it takes about a millisecond."""
        while True:
            await asyncio.sleep(every)
            trim(0)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            self.d.connectivity.check()

