"""A month alone (issue 18): the daemon against the local exchange for N simulated days under
faults, restarts and a config edit a day, with notifications and metrics on, watched for growth.

Shared by bench/chaos_soak.py --days 30 (the month, figures in docs/RELIABILITY.md) and a
one-day run in the suite (tests/chaos/test_month.py) that keeps the machinery honest.

Every simulated day the run samples, from the daemon's own metrics page and its files:
resident memory, open file descriptors, asyncio tasks, threads, notifications still queued,
the state file's size, the log bytes written that day, CSV rows against the exchange's fills,
and the daily summaries the notification receiver got.  At the end: the settled invariants,
the exposure invariant along every fill, and a growth verdict per life of the process.
"""
from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from chaos_lib import (SYM, TIGHT_CONFIG, Report, _finish, _tear_down, count_planned_faults, make_daemon,
                       market_csv, settle_and_check, streams_up)
from harness import Exchange, free_port, wait_until, with_values

DAY = 1440


class NotifyReceiver:
    """A loopback endpoint for apprise's json:// (one POST per message), counting what came."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    outer.messages.append(json.loads(body))
                except ValueError:
                    outer.messages.append({"raw": body.decode("utf-8", "replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, *words: str) -> int:
        return sum(1 for m in self.messages if any(w in str(m.get("title", "")) for w in words))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def month_plan(days: int, seed: int) -> list[dict[str, Any]]:
    """The faults on the exchange's clock: a background of 5xx and unknown results from minute 1,
    and every day at seeded minutes a drop of every socket (Binance ends a connection after 24 h
    at the latest), a 429 burst, a -2019 and a -2022 wave and an early listenKey expiry; a 1 s
    ban every 5th day and 3 s of clock skew for an hour every 7th.

    A drop a day, not more: at 100 candles a second a drop every 8 simulated hours is one every
    5 s of real time, a link that flaps, and the daemon then rightly backs off (up to 60 s)."""
    rng = random.Random(seed)
    plan: list[dict[str, Any]] = [{"at_minute": 1, "http_5xx_rate": 0.02, "unknown_rate": 0.01,
                                   "unknown_placed": 0.5}]
    for d in range(days):
        base = d * DAY
        at = sorted(rng.sample(range(30, DAY - 90), 5))
        plan += [{"at_minute": base + at[0], "http_429_next": 2},
                 {"at_minute": base + at[1], "margin_next": 3},
                 {"at_minute": base + at[2], "reduce_only_next": 3},
                 {"at_minute": base + at[3], "expire_listen_keys": 1},
                 {"at_minute": base + at[4], "ws_drop": 1}]
        if d % 5 == 4:
            plan.append({"at_minute": base + DAY // 2, "ban_s": 1})
        if d % 7 == 6:
            plan += [{"at_minute": base + 600, "skew_ms": 3000}, {"at_minute": base + 660, "skew_ms": 0}]
    plan.append({"at_minute": days * DAY - 60, "http_5xx_rate": 0, "unknown_rate": 0,
                 "unknown_next": 0, "http_429_next": 0, "margin_next": 0, "reduce_only_next": 0, "skew_ms": 0})
    return plan


@dataclass
class DaySample:
    day: int
    life: int
    rss_mb: float
    fds: int
    tasks: int
    threads: int
    notify_pending: int
    state_bytes: int
    log_bytes_day: int
    csv_rows: int
    fills: int
    summaries: int
    wall_s: float

    HEADER = ("day life   RSS MB  fds tasks thr queued state B  log B/day  CSV rows  fills  summaries  wall s")

    def line(self) -> str:
        return (f"{self.day:>3} {self.life:>4} {self.rss_mb:>8.1f} {self.fds:>4} {self.tasks:>5} {self.threads:>3} "
                f"{self.notify_pending:>6} {self.state_bytes:>7} {self.log_bytes_day:>10} {self.csv_rows:>9} "
                f"{self.fills:>6} {self.summaries:>10} {self.wall_s:>7.0f}")


@dataclass
class MonthReport(Report):
    days: list[DaySample] = field(default_factory=list)
    restarts: list[tuple[int, str]] = field(default_factory=list)
    config_edits: int = 0
    summaries: int = 0              # daily summaries the receiver got, by the end
    notifications: int = 0          # every message it got
    log_files: int = 0
    growth: list[str] = field(default_factory=list)

    def figures(self) -> str:
        out = [DaySample.HEADER] + [s.line() for s in self.days]
        out.append(f"restarts (day, how)       {self.restarts}")
        out.append(f"config edits              {self.config_edits}")
        out.append(f"notifications received    {self.notifications} ({self.summaries} daily summaries)")
        out.append(f"log files                 {self.log_files} (one per UTC day of the wall clock)")
        out += [f"growth                    {g}" for g in self.growth]
        return "\n".join(out) + "\n" + super().figures()


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = float(m.group(3))
    return out


def _growth(samples: list[DaySample]) -> list[str]:
    """Per life of the process: the figures at its second day (the first has start-up noise)
    against its last; per-day figures (log bytes) compared between the first and last half."""
    out = []
    for life in sorted({s.life for s in samples}):
        ss = [s for s in samples if s.life == life and s.day > 0]
        if len(ss) < 3:
            continue
        a, b = ss[1], ss[-1]
        out.append(f"life {life} (days {ss[0].day}-{b.day}): RSS {a.rss_mb:.1f} -> {b.rss_mb:.1f} MB "
                   f"({b.rss_mb - a.rss_mb:+.1f}), fds {a.fds} -> {b.fds}, tasks {a.tasks} -> {b.tasks}, "
                   f"threads {a.threads} -> {b.threads}, state {a.state_bytes} -> {b.state_bytes} B")
    logs = [s.log_bytes_day for s in samples[2:]]       # day 1 carries the start's lines
    if len(logs) >= 4:
        h = len(logs) // 2
        out.append(f"log bytes per day: first half mean {sum(logs[:h]) / h:,.0f}, "
                   f"second half mean {sum(logs[h:]) / (len(logs) - h):,.0f}")
    return out


def run_month_soak(workdir: Path, keys: tuple[str, str], days: int = 30, speed: float = 100.0, seed: int = 1,
                   restart_days: tuple[int, ...] = (10, 20), on_day: Callable[[DaySample], None] | None = None
                   ) -> MonthReport:
    t0 = time.monotonic()
    minutes = days * DAY
    # A tail after the last day, so that a restart on the last day still sees the next one: at
    # least 10 hours, and at least 10 s of wall clock at this speed (the market runs on while
    # the daemon restarts; on a busy machine a restart has taken 4 s, and a market that ends
    # before the restarted daemon's streams are up shows it no midnight at all).
    tail = max(600, int(speed * 10))
    data = market_csv(workdir / "data" / f"{SYM}-month-{seed}.csv", minutes + tail, seed)
    receiver = NotifyReceiver()
    port = free_port()
    rep = MonthReport()
    ex = Exchange(workdir / "exchange", *keys, data=data, speed=speed, fault_plan=month_plan(days, seed),
                  hold_clock=True, pause_on_retry_after=True, fault_seed=seed)
    d = make_daemon(workdir / "root", ex, keys)
    d.extra_env = {"NOTIFY_URLS": receiver.url, "METRICS_PORT": str(port), "NOTIFY_EVENTS":
                   "start,stop,tp,be,sl,liquidation,deepest,unreachable,reachable,error,daily",
                   # Live trims every 60 s, 1,440 times a day; at 100 candles/s every 5 s is about
                   # three times a simulated day: the soak trims far less often than live does.
                   "GM_TRIM_S": "5"}
    state_path = d.root / "state" / f"state_{d.short}.json"
    log_dir = d.root / "logs"
    life, log_seen = 1, 0

    def sample(day: int) -> None:
        nonlocal log_seen
        m = wait_until(lambda: _try_metrics(port), 15, "the metrics page", d.diag)
        log_total = sum(p.stat().st_size for p in log_dir.glob("*.log"))
        s = DaySample(day, life, m.get("process_resident_memory_bytes", 0) / 2**20,
                      int(m.get("process_open_fds", 0)), int(m.get("gm_asyncio_tasks", 0)),
                      int(m.get("gm_threads", 0)), int(m.get("gm_notifications_pending", 0)),
                      state_path.stat().st_size, log_total - log_seen, len(d.trades()),
                      sum(1 for f in ex.state()["fills"] if f["symbol"] == SYM),
                      receiver.count("일일 요약", "daily summary"), time.monotonic() - t0)
        log_seen = log_total
        rep.days.append(s)
        if on_day is not None:
            on_day(s)
    try:
        d.start()
        wait_until(lambda: d.alive() and streams_up(ex), 30, "the daemon's streams", d.diag)
        wait_until(lambda: state_path.exists(), 15, "the state file", d.diag)
        sample(0)                                   # at the start
        for day in range(1, days + 1):
            wait_until(lambda: not d.alive() or ex.clock()["candleIndex"][SYM] >= day * DAY,
                       DAY / speed * 4 + 120, f"simulated day {day}", d.diag)
            if not d.alive():
                rep.violations.append(f"day {day}: the daemon died (exit {d.proc.returncode}):\n{d.diag()}")
                break
            sample(day)
            # A config edit a day: TP_PCT alternates between two valid values.
            tp = "0.0021" if day % 2 else "0.002"
            d.config.write_text(with_values(TIGHT_CONFIG, {"TP_PCT": tp}))
            rep.config_edits += 1
            if day in restart_days:
                how = "SIGKILL" if restart_days.index(day) % 2 else "SIGTERM"
                d.kill(signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
                d.start()
                life += 1
                rep.restarts.append((day, how))
                wait_until(lambda: _try_metrics(port), 30, "the restarted daemon's metrics", d.diag)
        if d.alive():
            wait_until(lambda: ex.clock()["finished"], 120, "the market to end", d.diag)
            wait_until(lambda: d.alive() and streams_up(ex), 30, "the daemon's streams at the end", d.diag)
            bad, n = settle_and_check(ex, d, timeout=90)
            rep.checks += n
            rep.violations += bad
        st = ex.state()
        _finish(rep, ex, d)
        count_planned_faults(rep, st)
        rep.faults["stream reconnects (daemon log)"] = d.log().count("websocket:")
        for code in ("503", "429", "418", "400"):
            rep.faults[f"HTTP {code} answered"] = int(rep.stats["responses"].get(code, 0))
        rep.log_files = len(list(log_dir.glob("*.log")))
        # One summary per UTC midnight the market crossed: fewer means the daemon was blind to
        # the market stream at a midnight, or lost the day over a restart.  The last one may be
        # seen just before the market ends (a midnight passed during a restart is summarised
        # at the next start, from the state): its delivery is waited for, not guessed.
        first = st["symbols"][SYM]["firstCandleTime"]
        midnights = (first + (minutes + tail) * 60_000) // 86_400_000 - first // 86_400_000
        deadline = time.monotonic() + 30
        while receiver.count("일일 요약", "daily summary") < midnights and time.monotonic() < deadline:
            time.sleep(0.05)
        rep.summaries = receiver.count("일일 요약", "daily summary")
        rep.notifications = len(receiver.messages)
        if rep.summaries != midnights:
            said = [str(m.get("message", m))[:90] for m in receiver.messages
                    if any(w in str(m.get("title", "")) for w in ("일일 요약", "daily summary"))]
            rep.violations.append(f"{rep.summaries} daily summaries for {midnights} simulated midnights: {said}")
        rep.growth = _growth(rep.days)
    finally:
        _tear_down(ex, d, workdir)
        receiver.stop()
    rep.seconds = time.monotonic() - t0
    return rep


def _try_metrics(port: int) -> dict[str, float] | None:
    try:
        m = _metrics(port)
    except OSError:
        return None
    return m if "process_resident_memory_bytes" in m else None
