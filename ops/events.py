"""The daemon's small typed event stream (DESIGN §7): services such as notifications hang
off it, never call into the strategy or the venue, and never block trading.

`EventBus.publish` is synchronous and O(subscribers): each subscriber has its own bounded
queue; a subscriber that falls behind loses its oldest events (counted), never the
daemon's time.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

# The kinds a service can ask for (ops/notify.py's NOTIFY_EVENTS names).
START, STOP = "start", "stop"
TP, BE, SL, LIQUIDATION = "tp", "be", "sl", "liquidation"
DEEPEST = "deepest"                  # the last entry level filled (level 4 with the seed's config)
UNREACHABLE, REACHABLE = "unreachable", "reachable"
ERROR = "error"
DAILY = "daily"
ACCOUNT_STOP = "account_stop"        # ACCOUNT_STOP_DRAWDOWN fired: every position closed, no new grid
KINDS = (START, STOP, TP, BE, SL, LIQUIDATION, DEEPEST, UNREACHABLE, REACHABLE, ERROR, DAILY, ACCOUNT_STOP)
QUEUE_SIZE = 1000


@dataclass(frozen=True)
class Event:
    kind: str
    symbol: str
    data: dict[str, Any] = field(default_factory=dict)
    time_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class EventBus:
    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[Event]] = []
        self.dropped = 0

    def subscribe(self, size: int = QUEUE_SIZE) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self._queues.append(q)
        return q

    def publish(self, event: Event) -> None:
        for q in self._queues:
            if q.full():
                q.get_nowait()          # the oldest goes: a slow service never holds trading up
                self.dropped += 1
            q.put_nowait(event)
