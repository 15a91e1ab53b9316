"""The order in which the daemon hears its two streams.

The market stream (kline updates) and the user stream (fills, cancels,
algo updates) arrive on separate sockets and are read while the daemon is
busy with a reaction.  Handled in arrival order, a queue of stale price
ticks can run ahead of the fills of the grid just placed, and a decision
made on such a tick (a range exit, a new grid) is made on a state the
exchange has already left.  So:

- every user-stream message waiting is handled before any market tick;
- before a tick is handled, the pumps get the loop once more, so a fill
  that reached the socket together with the tick goes first;
- market ticks are coalesced: only the newest kline update is handled (and
  the newest closed candle, for the first centre);
- a tick whose event time is older than the newest order event handled is
  not acted on (the exchange had moved on when it was sent).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable

ORDER_EVENTS = ("ORDER_TRADE_UPDATE", "ALGO_UPDATE")
PUMP_TURNS = 3          # loop turns a received frame needs to pass python-binance's queue and our pump

UserHandler = Callable[[dict[str, Any]], Awaitable[None]]
MarketHandler = Callable[[dict[str, Any], float | None], Awaitable[None]]


class StreamDispatcher:
    """User events first, the newest market tick next, stale ticks never."""

    def __init__(self, on_user: UserHandler, on_market: MarketHandler) -> None:
        self._on_user = on_user
        self._on_market = on_market
        self._user: deque[dict[str, Any]] = deque()
        self._tick: dict[str, Any] | None = None      # newest kline update not yet handled
        self._closed: float | None = None             # close of the newest closed candle not yet handled
        self._wake = asyncio.Event()
        self.last_order_event_ms = 0
        self.ticks_coalesced = 0
        self.ticks_stale = 0
        self._draining = False

    def put_user(self, msg: dict[str, Any]) -> None:
        self._user.append(msg)
        self._wake.set()

    def put_market(self, msg: dict[str, Any]) -> None:
        if msg.get("e") != "kline":
            return
        if self._tick is not None:
            self.ticks_coalesced += 1
        self._tick = msg
        if msg["k"].get("x"):
            self._closed = float(msg["k"]["c"])
        self._wake.set()

    def is_stale(self, msg: dict[str, Any]) -> bool:
        return int(msg.get("E", 0) or 0) < self.last_order_event_ms

    def idle(self) -> bool:
        """Nothing waiting and no handler running."""
        return not (self._draining or self._user or self._tick is not None)

    async def run(self) -> None:
        """Hand messages to the handlers until cancelled; a handler's exception ends it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._draining = True
            try:
                await self.drain()
            finally:
                self._draining = False

    async def drain(self) -> None:
        """Handle everything waiting, in the order above."""
        while True:
            if self._user:
                msg = self._user.popleft()
                if msg.get("e") in ORDER_EVENTS:
                    self.last_order_event_ms = max(self.last_order_event_ms, int(msg.get("E", 0) or 0))
                await self._on_user(msg)
                continue
            if self._tick is None:
                return
            for _ in range(PUMP_TURNS):       # the pumps hand over what the sockets already hold
                await asyncio.sleep(0)
            if self._user:
                continue
            tick, closed = self._tick, self._closed
            self._tick = self._closed = None
            if self.is_stale(tick):
                self.ticks_stale += 1
                continue
            await self._on_market(tick, closed)
