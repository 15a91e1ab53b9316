"""Notifications through apprise (Telegram, Discord, Slack, e-mail, ntfy, webhooks, …).

    NOTIFY_URLS=tgram://BOT_TOKEN/CHAT_ID  json://127.0.0.1:8000/hook     (.env or environment)
    NOTIFY_EVENTS=start,stop,tp,be,sl,liquidation,deepest,unreachable,reachable,error,daily,account_stop

The notifier reads the daemon's event stream (ops/events.py) in its own task: sending never
blocks or slows trading.  Each message goes to each URL with bounded retries (1, 2, 4, 8,
16 s apart: a receiver down for half a minute loses nothing); one still failing after them
is logged once (the URL's scheme only: tokens never reach a log or a message) and dropped.
Messages follow LOG_LANGUAGE (Korean by default).
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from errors import BadInput
from ops.events import (ACCOUNT_STOP, BE, DAILY, DEEPEST, ERROR, KINDS, LIQUIDATION, REACHABLE, SL, START, STOP, TP, UNREACHABLE,
                    Event, EventBus)

END = "_end"                     # published at shutdown: the notifier sends what came before, then ends
RETRIES = 5
BACKOFF_S = 1.0
SEND_TIMEOUT_S = 15.0
ERROR_REPEAT_S = 600.0           # the same error line is sent at most once in this time


class NotifyConfigError(BadInput):
    pass


def parse_urls(text: str | None) -> list[str]:
    return [u for u in re.split(r"[\s,]+", text or "") if u]


def parse_events(text: str | None) -> set[str]:
    if not text or not text.strip():
        return set(KINDS)
    chosen = {e.strip().lower() for e in re.split(r"[\s,]+", text) if e.strip()}
    unknown = sorted(chosen - set(KINDS))
    if unknown:
        raise NotifyConfigError(f"NOTIFY_EVENTS: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return chosen


def redact(url: str) -> str:
    """What may be shown of a notification URL: its scheme."""
    return url.split("://", 1)[0] + "://…" if "://" in url else "…"


def _money(x: float) -> str:
    return f"{x:+,.2f}"


def message(ev: Event, ko: bool) -> tuple[str, str]:
    """(title, body) of an event, in Korean or English."""
    d, sym = ev.data, ev.symbol
    when = datetime.fromtimestamp(ev.time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    price = d.get("price_text", "")
    qty = d.get("qty_text", "")
    texts: dict[str, tuple[str, str]] = {
        START: ("시작", f"{sym} {d.get('direction', '')} 데몬 시작 ({d.get('mode', 'live')})") if ko else
               ("started", f"{sym} {d.get('direction', '')} daemon started ({d.get('mode', 'live')})"),
        STOP: ("종료", f"{sym} 데몬 종료") if ko else ("stopped", f"{sym} daemon stopped"),
        TP: ("TP 체결", f"{sym} TP 체결 {price} × {qty}, 실현 PnL {_money(d.get('pnl', 0.0))}") if ko else
            ("TP filled", f"{sym} TP filled at {price} × {qty}, realized PnL {_money(d.get('pnl', 0.0))}"),
        BE: ("BE 체결", f"{sym} BE 체결 {price} × {qty}, 실현 PnL {_money(d.get('pnl', 0.0))}") if ko else
            ("BE filled", f"{sym} BE filled at {price} × {qty}, realized PnL {_money(d.get('pnl', 0.0))}"),
        SL: ("SL 체결", f"{sym} 손절(SL) {price} × {qty}, 실현 PnL {_money(d.get('pnl', 0.0))}") if ko else
            ("SL filled", f"{sym} stop-loss filled at {price} × {qty}, realized PnL {_money(d.get('pnl', 0.0))}"),
        LIQUIDATION: ("강제 청산", f"{sym} 거래소 강제 청산: {price} × {qty}") if ko else
                     ("LIQUIDATED", f"{sym} LIQUIDATED by the exchange at {price} × {qty}"),
        DEEPEST: ("최종 레벨 체결", f"{sym} Level {d.get('level')} 체결 {price} × {qty}, 평단가 {d.get('avg_text', '')}")
                 if ko else ("deepest level filled",
                             f"{sym} level {d.get('level')} filled at {price} × {qty}, average {d.get('avg_text', '')}"),
        UNREACHABLE: ("연결 끊김", f"{sym} 거래소/스트림에 {d.get('seconds', 0):.0f}초 이상 연결되지 않음: "
                                  f"{d.get('what', '')}") if ko else
                     ("unreachable", f"{sym}: exchange or stream unreachable for {d.get('seconds', 0):.0f} s: "
                                     f"{d.get('what', '')}"),
        REACHABLE: ("연결 복구", f"{sym} 연결 복구 ({d.get('seconds', 0):.0f}초 끊김)") if ko else
                   ("reachable again", f"{sym}: connected again after {d.get('seconds', 0):.0f} s"),
        ERROR: ("오류", f"{sym}: {d.get('text', '')}") if ko else ("error", f"{sym}: {d.get('text', '')}"),
        ACCOUNT_STOP: ("계좌 손실 한도 도달", f"계좌 평가액 {d.get('equity', 0.0):,.2f}이(가) 한도 {d.get('level', 0.0):,.2f} "
                                      f"아래로 하락 (고점 {d.get('peak', 0.0):,.2f}): {sym} 포지션 시장가 청산, 모든 주문 취소, "
                                      f"신규 그리드 중단") if ko else
                      ("ACCOUNT STOP", f"the account's equity {d.get('equity', 0.0):,.2f} fell below its stop "
                                       f"{d.get('level', 0.0):,.2f} (peak {d.get('peak', 0.0):,.2f}): {sym} closed at "
                                       f"market, every order cancelled, no new grid until the stop is cleared"),
        DAILY: ("일일 요약", f"{sym} {d.get('day', '')}: 실현 PnL 오늘 {_money(d.get('pnl_today', 0.0))}, "
                            f"누적 {_money(d.get('pnl_total', 0.0))}, 펀딩비 지불 {d.get('funding_paid', 0.0):+.4f}, "
                            f"포지션 {d.get('position_text', '')}") if ko else
               ("daily summary", f"{sym} {d.get('day', '')}: realized PnL today {_money(d.get('pnl_today', 0.0))}, "
                                 f"total {_money(d.get('pnl_total', 0.0))}, funding paid "
                                 f"{d.get('funding_paid', 0.0):+.4f}, position {d.get('position_text', '')}"),
    }
    title, body = texts[ev.kind]
    return f"grid-martingale {sym}: {title}", f"{body} — {when}"


class Notifier:
    """Consumes the bus in its own task and hands each message to one lane per URL (its own
    queue and task: a receiver that hangs holds up only its own messages); the blocking
    apprise call runs in a daemon thread."""

    def __init__(self, urls: Iterable[str], events: set[str], bus: EventBus, log: logging.Logger, ko: bool,
                 *, retries: int = RETRIES, backoff_s: float = BACKOFF_S,
                 sender: Callable[[str, str, str], bool] | None = None) -> None:
        self.urls, self.events, self.log, self.ko = list(urls), events, log, ko
        self.retries, self.backoff_s = retries, backoff_s
        self.queue = bus.subscribe()
        self.sender = sender or _apprise_send
        self.sent = 0
        self.dropped = 0
        self.lanes: dict[str, asyncio.Queue[tuple[str, str] | None]] = {u: asyncio.Queue(maxsize=1000)
                                                                         for u in self.urls}

    async def run(self) -> None:
        """Until the END marker: every lane sends what was published before it, then ends."""
        lanes = [asyncio.create_task(self._lane(u, q), name="notify-lane") for u, q in self.lanes.items()]
        try:
            while True:
                ev = await self.queue.get()
                if ev.kind == END:
                    for q in self.lanes.values():
                        q.put_nowait(None)
                    await asyncio.gather(*lanes)
                    return
                if ev.kind not in self.events:
                    continue
                msg = message(ev, self.ko)
                for q in self.lanes.values():
                    if q.full():
                        q.get_nowait()          # a lane that cannot keep up loses its oldest
                        self.dropped += 1
                    q.put_nowait(msg)
        finally:
            for t in lanes:
                t.cancel()

    def pending(self) -> int:
        return self.queue.qsize() + sum(q.qsize() for q in self.lanes.values())

    async def _lane(self, url: str, q: "asyncio.Queue[tuple[str, str] | None]") -> None:
        while True:
            item = await q.get()
            if item is None:
                return
            await self._deliver(url, *item)

    async def _deliver(self, url: str, title: str, body: str) -> None:
        for attempt in range(self.retries):
            try:
                ok = await asyncio.wait_for(_in_daemon_thread(self.sender, url, title, body), SEND_TIMEOUT_S)
            except Exception:       # noqa: BLE001 - whatever a notification service raises: retried
                ok = False
            if ok:
                self.sent += 1
                return
            if attempt < self.retries - 1:
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
        self.dropped += 1
        self.log.warning("notification to %s not delivered after %d tries: dropped", redact(url), self.retries)


def _in_daemon_thread(fn: Callable[..., bool], *args: Any) -> "asyncio.Future[bool]":
    """fn(*args) in a daemon thread: a send stuck on a receiver that never answers is left
    behind when the process ends (a thread pool's worker would be waited for at exit)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()

    def run() -> None:
        try:
            result: Any = fn(*args)
        except Exception as e:      # noqa: BLE001 - handed to the awaiting task
            result = e
        loop.call_soon_threadsafe(_settle, fut, result)
    threading.Thread(target=run, name="notify-send", daemon=True).start()
    return fut


def _settle(fut: "asyncio.Future[bool]", result: Any) -> None:
    if fut.done():
        return                      # timed out meanwhile
    if isinstance(result, Exception):
        fut.set_exception(result)
    else:
        fut.set_result(bool(result))


_APPRISE: dict[str, Any] = {}
_APPRISE_LOCK = threading.Lock()


def _apprise_send(url: str, title: str, body: str) -> bool:
    """One message to one URL; the URL is parsed once (apprise's parsing and plugin set-up
    cost milliseconds of CPU, taken from the trading thread through the GIL)."""
    import apprise
    with _APPRISE_LOCK:
        ap = _APPRISE.get(url)
        if ap is None:
            ap = apprise.Apprise()
            if not ap.add(url):
                return False
            _APPRISE[url] = ap
    return bool(ap.notify(title=title, body=body))


def quiet_apprise() -> None:
    """apprise logs its own failures with the URLs (tokens) in them: not into our logs."""
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 10)
    logging.getLogger("apprise").propagate = False


class ErrorEvents(logging.Handler):
    """ERROR log lines of the daemon as `error` events (the same line at most once in 10 min)."""

    def __init__(self, bus: EventBus, symbol: str) -> None:
        super().__init__(level=logging.ERROR)
        self.bus, self.symbol = bus, symbol
        self._last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) if self.formatter else record.getMessage()
        except Exception:       # noqa: BLE001 - a bad log call must not break the daemon
            return
        now = time.monotonic()
        if now - self._last.get(text, -1e9) < ERROR_REPEAT_S:
            return
        self._last[text] = now
        self.bus.publish(Event(ERROR, self.symbol, {"text": text[:500]}))


def settings_from(env: dict[str, str | None]) -> tuple[list[str], set[str]]:
    """(urls, events) from NOTIFY_URLS / NOTIFY_EVENTS; NotifyConfigError names a bad one."""
    urls = parse_urls(env.get("NOTIFY_URLS"))
    events = parse_events(env.get("NOTIFY_EVENTS"))
    bad = [u for u in urls if "://" not in u]
    if bad:
        raise NotifyConfigError(f"NOTIFY_URLS: {redact(bad[0])} is not an apprise URL (scheme://…)")
    return urls, events

