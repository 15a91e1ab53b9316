"""The market clock: candles played along their SPEC §6 legs (manual or paced), lockstep holds, funding settlements at their times, faults on the market's clock, housekeeping.

A part of `local_exchange.LocalExchange`: it moves the simulator's prices and publishes what
happens through the streams (`Feed`); it settles funding through the ledger, bans through the
gateway and stands still while a client waits out a ban (`ClientLimits`), and watches the
gateway's `RequestActivity` to hold the path in lockstep with a client."""
from __future__ import annotations
import asyncio
import time
from typing import Any, Callable, Coroutine, Iterator, Mapping, Protocol

from sim.exchange import SimulatedExchange
from sim.fill_model import FillModel
from sim.replay import FILL, play_candle, play_leg
from market.data import MINUTE_MS
from localex.base import Faults, Live, PlannedFault, RequestActivity, Series, log
from localex.funding import FundingLedger
from localex.settings import ExchangeSettings

LockstepClient = Callable[[], tuple[int, bool]]   # () -> (messages taken from its streams, nothing left to act on)
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Feed(Protocol):
    """What the clock needs of the streams: publish the engine's events and the market's ticks,
    the socket faults, and whether a client is listening."""

    def flush_events(self) -> None: ...

    def market_tick(self, symbol: str, kline: bool, closed: bool = False) -> None: ...

    def drop_websockets(self, kind: str = "all", mode: str = "abort") -> int: ...

    def expire_listen_keys(self) -> int: ...

    def expire_due_listen_keys(self) -> None: ...

    def drop_on_wall_clock(self) -> None: ...

    def streams_connected(self, clients: int = 1) -> bool: ...

    def queued_to_streams(self) -> int: ...


class ClientLimits(Protocol):
    """The gateway's bans, and when the last Retry-After or ban it gave ends."""

    def ban(self, seconds: float) -> None: ...

    def client_wait_until(self) -> float: ...


class Clock:
    """The market clock: candles played along their SPEC §6 legs (manual or paced), lockstep holds, funding settlements at their times, housekeeping."""

    def __init__(self, sim: SimulatedExchange, series: Mapping[str, Series], live: dict[str, Live],
                 funding: FundingLedger, faults: Faults, settings: ExchangeSettings, feed: Feed,
                 limits: ClientLimits, activity: RequestActivity, spawn: Spawn):
        self.sim = sim
        self.series = series
        self.live = live                  # the candle being played, per symbol (read by the market and streams)
        self.funding = funding
        self.faults = faults
        self.feed = feed
        self.limits = limits
        self.activity = activity
        self.spawn = spawn                # runs a task the exchange cancels when it stops
        self.speed = float(settings.speed)
        self.lockstep = settings.lockstep
        self.quiet_ms = float(settings.quiet_ms)
        self.grace_ms = float(settings.grace_ms)
        self.max_hold_s = float(settings.max_hold_s)
        self.hold_clock = settings.hold_clock
        # The running clock stands still while a client waits out a Retry-After (429) or a ban
        # (418) this exchange gave: at `speed` candles a second, one second of waiting would be
        # `speed` minutes of market, where on Binance it is one second.
        self.pause_on_retry_after = settings.pause_on_retry_after
        self.max_candles = settings.max_candles   # the running clock stops after this many candles
        self.fill_model: FillModel = settings.fill_model
        # Lockstep with the clients in this process (the demo's daemons).  Empty: the
        # grace/quiet heuristic.
        self.lockstep_clients: list[LockstepClient] = []
        # Faults on the market's clock (simulated minutes), applied as each candle begins.
        self.fault_plan: list[PlannedFault] = sorted(settings.fault_plan, key=lambda p: p.at_minute)
        self.fault_log: list[dict[str, Any]] = []   # what the plan did, at which minute
        self._lock = asyncio.Lock()
        self._pace_deadline = 0.0
        self.stopping = False
        self.finished = False           # the market data has run out (or max_candles were played)
        self.candles_played = 0         # by the running clock
        self.clock_started = False

    def stop(self) -> None:
        """The loops and holds end at their next turn."""
        self.stopping = True

    # ------------------------------------------------------------------ the clock
    async def step(self, n: int = 1) -> int:
        """Play the next `n` candles of every symbol (manual clock); returns how many were played."""
        played = 0
        async with self._lock:
            for _ in range(n):
                if not await self._play_candle(paced=False):
                    break
                played += 1
        return played

    async def set_price(self, symbol: str, price: float, fill: bool = True) -> None:
        """Move `symbol` to `price`: along a leg that fills what it crosses, or (fill=False) a jump."""
        self.sim.book(symbol)  # -1121 for an unknown symbol
        async with self._lock:
            if fill:
                end = self.sim.books[symbol].filters.to_ticks(float(price))
                await self._run_leg(symbol, play_leg(self.sim, symbol, end))
            else:
                self.sim.set_price(symbol, float(price))
                if symbol in self.live:
                    self.live[symbol].touch(float(price))
            self.feed.market_tick(symbol, kline=symbol in self.live)

    def start_clock(self) -> None:
        """Start replaying the market at `speed` (once; no-op on a manual clock)."""
        if self.speed > 0 and not self.clock_started:
            self.clock_started = True
            self.spawn(self._run())

    async def _run(self) -> None:
        self._pace_deadline = time.monotonic()
        while not self.stopping:
            if self.max_candles is not None and self.candles_played >= self.max_candles:
                log.info("%d candles played: the clock stops", self.candles_played)
                self.finished = True
                return
            async with self._lock:
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
            steps = self.fill_model.leg_steps(s.v[i], self.sim.books[s.symbol].filters.step_size)
            o, h, l, c = s.ticks[i]
            paths[s.symbol] = play_candle(self.sim, s.symbol, o, h, l, c, s.t[i], leg_steps=steps)
            next(paths[s.symbol])          # the open: a jump between candles fills nothing
            self._settle_funding_due(s.symbol, s.t[i])
            price = self.sim.books[s.symbol].price
            self.live[s.symbol] = Live(s.t[i], price, price, price, price, s.v[i])
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

    def _settle_funding_due(self, symbol: str, candle_t: int) -> None:
        """Settle every funding time in (last settled, candle_t] at this candle's open, each
        published as it settles."""
        while self.funding.settle_next_due(symbol, candle_t):
            self.feed.flush_events()

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
                self.limits.ban(entry.actions["ban_s"])
                done["ban_s"] = entry.actions["ban_s"]
            if entry.actions.get("expire_listen_keys"):
                done["expire_listen_keys"] = self.feed.expire_listen_keys()
            if entry.actions.get("ws_drop"):
                done["ws_drop"] = self.feed.drop_websockets()
            log.info("fault plan at minute %d: %s", minute, done)
            self.fault_log.append(done)
        every = int(self.faults.ws_drop_every_min)
        if every > 0 and minute > 0 and minute % every == 0:
            log.info("fault: dropping %d websocket(s) at minute %d", self.feed.drop_websockets(), minute)

    # ------------------------------------------------------------------ the path and its holds
    async def _run_leg(self, symbol: str, path: Iterator[int]) -> None:
        """Follow a path to its next vertex; after each fill, publish it and let the client react."""
        live = self.live.get(symbol)
        book = self.sim.books[symbol]
        feed = self.feed
        for step in path:
            if step != FILL:
                break
            if live is not None:
                live.touch(book.price)
            feed.flush_events()
            feed.market_tick(symbol, kline=False)
            await self._after_fill()
        if live is not None:
            live.touch(book.price)

    async def _vertex(self, active: list[Series], closed: bool, paced: bool) -> None:
        clients = self.lockstep_clients
        if self.lockstep and clients:
            # One symbol's tick at a time, each client done before the next: the daemons of one
            # account react in the symbols' order, as the portfolio backtest runs its legs, so
            # which of them takes the margin first (-2019) is decided, not raced.
            for s in active:
                self.feed.market_tick(s.symbol, kline=True, closed=closed)
                await self._wait_clients_done(clients)
        elif self.lockstep:
            for s in active:
                self.feed.market_tick(s.symbol, kline=True, closed=closed)
            await self._grace()
        else:
            for s in active:
                self.feed.market_tick(s.symbol, kline=True, closed=closed)
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
        while not self.stopping:
            now = time.monotonic()
            until = self.limits.client_wait_until()
            if until <= now:
                return
            await asyncio.sleep(until - now)

    async def _after_fill(self) -> None:
        clients = self.lockstep_clients
        if self.lockstep and clients:
            await self._wait_clients_done(clients)
        elif self.lockstep:
            self.activity.touch()
            await self._wait_quiet()
        else:
            await asyncio.sleep(0)

    async def _wait_clients_done(self, clients: list[LockstepClient]) -> None:
        """Hold the path until every client in this process has taken every message sent on
        its streams, acted on all of them, and no REST request is in flight: an
        acknowledgement of what they did, not a guess of how long it takes (the demo's
        lockstep; see DECISIONS).  Each client counts what it took from its own streams and
        the exchange what it queued on all of them, so the sums meet only when each has
        taken all of its own."""
        give_up = time.monotonic() + self.max_hold_s
        spins = 0
        while not self.stopping:
            received, idle = 0, True
            for client in clients:
                taken, done = client()
                received += taken
                idle = idle and done
            if idle and self.activity.inflight == 0 and received >= self.feed.queued_to_streams():
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
        seen = self.activity.seq
        await asyncio.sleep(self.grace_ms / 1000)
        if self.activity.seq != seen or self.activity.inflight:
            await self._wait_quiet()

    async def _wait_quiet(self) -> None:
        """Hold the path until no REST request is in flight and none arrived for quiet_ms."""
        quiet = self.quiet_ms / 1000
        give_up = time.monotonic() + self.max_hold_s
        activity = self.activity
        while not self.stopping:
            now = time.monotonic()
            idle = now - activity.last
            if activity.inflight == 0 and idle >= quiet:
                return
            if now >= give_up:  # a client polling faster than quiet_ms must not freeze the market
                log.warning("lockstep: client not quiet for %.0f ms within %.0f s; the path goes on",
                            self.quiet_ms, self.max_hold_s)
                return
            await asyncio.sleep(max(0.001, quiet - idle) if activity.inflight == 0 else 0.002)

    # ------------------------------------------------------------------ housekeeping
    async def housekeeping(self) -> None:
        """A held clock's start, listenKey expiry, periodic socket drops (wall-clock ones)."""
        while True:
            await asyncio.sleep(0.05)
            if self.hold_clock and not self.clock_started and self.feed.streams_connected():
                log.info("a market and a user stream are open: the clock starts")
                self.start_clock()
            self.feed.expire_due_listen_keys()
            self.feed.drop_on_wall_clock()
