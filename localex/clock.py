"""The market clock: candles played along their SPEC §6 legs (manual or paced), lockstep holds, funding settlements at their times, housekeeping.

A part of `local_exchange.LocalExchange` (a mixin: it uses the attributes the façade sets up)."""
from __future__ import annotations
import asyncio
import time
from typing import Any, Iterator

from sim.fill_model import leg_volume_steps
from sim.replay import FILL, play_candle, play_leg
from market.data import MINUTE_MS
from localex.base import PlannedFault, _Live, _Series, log


class ClockMixin:
    """The market clock: candles played along their SPEC §6 legs (manual or paced), lockstep holds, funding settlements at their times, housekeeping."""

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
                end = self.sim.books[symbol].filters.to_ticks(float(price))
                await self._run_leg(symbol, play_leg(self.sim, symbol, end))
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
        """One candle of every symbol along its SPEC §6 path (market_replay.play_candle, as the
        backtest plays it), legs interleaved across symbols."""
        active = [s for s in self.series.values() if s.has_next()]
        if not active:
            return False
        self._faults_due(active[0].cursor)
        paths: dict[str, Iterator[int]] = {}
        for s in active:
            i = s.cursor
            steps = (leg_volume_steps(s.v[i], self.fill_share, self.sim.books[s.symbol].filters.step_size)
                     if self.fill_share is not None else None)
            paths[s.symbol] = play_candle(self.sim, s.symbol, *s.ticks[i], s.t[i], leg_steps=steps)
            next(paths[s.symbol])          # the open: a jump between candles fills nothing
            self._settle_funding_due(s.symbol, s.t[i])
            o = self.sim.books[s.symbol].price
            self.live[s.symbol] = _Live(s.t[i], o, o, o, o, s.v[i])
        await self._vertex(active, closed=False, paced=paced)
        for k in (1, 2, 3):
            for s in active:
                await self._run_leg(s.symbol, paths[s.symbol])
                self.live[s.symbol].legs = k
            if k == 3:
                for s in active:
                    self.sim.now_ms = self.live[s.symbol].t + MINUTE_MS - 1
            await self._vertex(active, closed=k == 3, paced=paced)
        for s in active:
            s.cursor += 1
            del self.live[s.symbol]
        return True

    # ------------------------------------------------------------------ faults on the clock
    def plan_fault(self, entry: PlannedFault) -> None:
        self.fault_plan.append(entry)
        self.fault_plan.sort(key=lambda p: p.at_minute)

    def _faults_due(self, minute: int) -> None:
        """Before candle `minute` plays: the plan's entries due by then, and the periodic drops
        (every ws_drop_every_min candles).  Simulated time, so a test sees the same faults at
        the same market instants on a busy machine as on an idle one."""
        while self.fault_plan and self.fault_plan[0].at_minute <= minute:
            entry = self.fault_plan.pop(0)
            if entry.faults:
                self.faults.update(entry.faults)
            done: dict[str, Any] = {"minute": minute, **entry.faults}
            if "ban_s" in entry.actions:
                self.ban(entry.actions["ban_s"])
                done["ban_s"] = entry.actions["ban_s"]
            if entry.actions.get("expire_listen_keys"):
                done["expire_listen_keys"] = self.expire_listen_keys()
            if entry.actions.get("ws_drop"):
                done["ws_drop"] = self.drop_websockets()
            log.info("fault plan at minute %d: %s", minute, done)
            self.fault_log.append(done)
        every = int(self.faults.ws_drop_every_min)
        if every > 0 and minute > 0 and minute % every == 0:
            log.info("fault: dropping %d websocket(s) at minute %d", self.drop_websockets(), minute)

    async def _run_leg(self, symbol: str, path: Iterator[int]) -> None:
        """Follow a path to its next vertex; after each fill, publish it and let the client react."""
        live = self.live.get(symbol)
        book = self.sim.books[symbol]
        for step in path:
            if step != FILL:
                break
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
            await (self._wait_client_done() if self.lockstep_client is not None else self._grace())
        else:
            await asyncio.sleep(0)  # let the sockets send before the path goes on
        if paced:
            await self._pace()

    async def _pace(self) -> None:
        """Four vertices per candle at `speed` candles/s; no burst to catch up after a pause."""
        if self.pause_on_retry_after:
            await self._stand_still_while_clients_wait()
        now = time.monotonic()
        self._pace_deadline = max(self._pace_deadline, now - 0.25 / self.speed) + 0.25 / self.speed
        if self._pace_deadline > now:
            await asyncio.sleep(self._pace_deadline - now)

    async def _stand_still_while_clients_wait(self) -> None:
        """Hold the market while any client is inside a Retry-After or a ban this exchange gave."""
        while not self._stopping:
            now = time.monotonic()
            until = max((max(s.ban_until, s.retry_until) for s in self._ips.values()), default=0.0)
            if until <= now:
                return
            await asyncio.sleep(until - now)

    async def _after_fill(self) -> None:
        if self.lockstep and self.lockstep_client is not None:
            await self._wait_client_done()
        elif self.lockstep:
            self._last_activity = max(self._last_activity, time.monotonic())
            await self._wait_quiet()
        else:
            await asyncio.sleep(0)

    def _queued_to_streams(self) -> int:
        """Messages accepted for the open market and user-stream connections since they opened."""
        return sum(c.queued for c in self._conns if c.category in ("market", "public", "private"))

    async def _wait_client_done(self) -> None:
        """Hold the path until the client in this process has taken every message sent on its
        streams, acted on all of them, and has no REST request in flight: an acknowledgement of
        what it did, not a guess of how long it takes (the demo's lockstep; see DECISIONS)."""
        give_up = time.monotonic() + self.max_hold_s
        spins = 0
        while not self._stopping:
            received, idle = self.lockstep_client()
            if idle and self._inflight == 0 and received >= self._queued_to_streams():
                return
            if time.monotonic() >= give_up:   # a stream dropped under the message: never freeze the market
                log.warning("lockstep: the client did not acknowledge within %.0f s; the path goes on",
                            self.max_hold_s)
                return
            spins += 1
            await asyncio.sleep(0 if spins < 64 else 0.0005)

    async def _grace(self) -> None:
        """After a vertex tick, for a client in another process (local_exchange.py --lockstep):
        hold only if it starts talking within the grace period.  Best effort: a client slower
        than grace_ms is not waited for; the demo's in-process client acknowledges instead."""
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

    async def _housekeeping(self) -> None:
        """listenKey expiry, periodic socket drops (wall-clock ones), a held clock's start."""
        while True:
            await asyncio.sleep(0.05)
            if self.hold_clock and not self.clock_started and self.streams_connected():
                log.info("a market and a user stream are open: the clock starts")
                self.start_clock()
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
