"""Issue 8 (b): the orderings a market faster than the daemon produces.

The strategy runs over the simulator, and the simulator moves *between* the
strategy's requests (a venue wrapper moves the price at the moment a cancel or
a placement is on the wire), or its events are handed over late: the fill
events of a grid behind a stale price tick, an old entry filling during the
cancels of a TP reaction, a fill before the placement's answer.  After each,
the position stays within the ladder of the grid in force and no grid is
placed on top of a fill.  The daemon's stream order (user events before market
ticks, coalesced and stale ticks) is tested on `StreamDispatcher` itself.
"""
from __future__ import annotations

import asyncio
from typing import Callable

import pytest

from exchange_api import OrderUpdate, run_sync
from sim.exchange import SimVenue
from live.stream_dispatch import StreamDispatcher
from test_strategy import LONG_LEVELS, SHORT_LEVELS, make

LADDER = {"LONG": sum(q for _, _, q in LONG_LEVELS), "SHORT": sum(q for _, _, q in SHORT_LEVELS)}
S = {"LONG": 1, "SHORT": -1}


class RacingVenue(SimVenue):
    """SimVenue whose market moves while a request is on the wire: `before_cancel` /
    `before_place` run once, just before the next confirmed cancel / batch placement."""

    def __init__(self, base: SimVenue) -> None:
        super().__init__(base.exchange, base.symbol)
        self.before_cancel: Callable[[], None] | None = None
        self.after_place: Callable[[], None] | None = None

    async def cancel_orders_confirmed(self, client_ids):
        if self.before_cancel is not None:
            hook, self.before_cancel = self.before_cancel, None
            hook()
        return await super().cancel_orders_confirmed(client_ids)

    async def place_limits(self, orders):
        out = await super().place_limits(orders)
        if self.after_place is not None:
            hook, self.after_place = self.after_place, None
            hook()                      # the market moves before the answer reaches us
        return out


def racing(direction: str):
    h = make(direction)
    v = RacingVenue(h.strategy.venue)
    h.strategy.venue = v
    return h, v


def run_leg(h, price: float) -> None:
    """The market moves along a leg; its events wait (the daemon is busy)."""
    while h.sim.advance(h.symbol, price):
        pass


def max_position(h) -> float:
    return max((abs(t.position_after) for t in h.sim.trades), default=0.0)


def entry_levels(h) -> list[int]:
    return [lvl for lvl, _, _ in h.entries()]


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_stale_tick_after_an_unseen_fill_does_not_regrid(direction):
    """The grid's level 1 fills, but its event is still queued when a stale price tick from
    beyond the range band is handled: the state says "flat and unfilled".  The range exit's
    cancels report the fill, so the exit is abandoned: same centre, no new grid on top; when
    the fill's event arrives it is level 1 (TP), and the other levels go back at the old centre."""
    h, v = racing(direction)
    s = S[direction]
    run_leg(h, 100_000.0 * (1 - s * 0.006))                 # through level 1 only; event not handled
    assert h.sim.position(h.symbol).qty != 0
    run_sync(h.strategy.on_price(100_000.0 * (1 + s * 0.03)))   # the stale tick, beyond the band
    assert h.strategy.state.grid_center == 100_000.0
    assert h.entries() == []                                # nothing placed on top of the fill
    h.deliver()                                             # the fill's event, late
    levels = LONG_LEVELS if s > 0 else SHORT_LEVELS
    assert h.entries() == [x for x in levels if x[0] >= 2]  # the old grid's levels 2-4, same prices
    assert [r for r, _, _ in h.exits()] == ["TP"] and h.stops() == []
    assert h.strategy.state.position.deepest_level == 1
    run_leg(h, 100_000.0 * (1 - s * 0.0455))                # the whole ladder fills
    h.deliver()
    assert max_position(h) <= LADDER[direction] + 1e-9


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_old_entry_filling_during_the_cancels_of_a_tp_reaction(direction):
    """Level 1 fills and its TP fills; while the TP reaction's cancels are on the wire the
    market turns and level 2 of the old grid fills.  The cancel's own result shows it: no new
    grid is placed until that fill is acted on; then it counts as level 2 (BE), and only the
    deeper levels are placed — the position never exceeds one ladder."""
    h, v = racing(direction)
    s = S[direction]
    h.move(100_000.0 * (1 - s * 0.006))                      # level 1 → TP
    tp = h.exits()[0][1]
    run_leg(h, tp + s * 10)                                 # the TP fills; its event waits
    v.before_cancel = lambda: run_leg(h, 100_000.0 * (1 - s * 0.0105))   # old level 2 fills now
    h.deliver()
    st = h.strategy.state
    assert st.pending_level == 0, "held levels must be placed once the raced fill was acted on"
    roles = [f.role for f in h.fills]
    assert roles[:3] == ["ENTRY1", "TP", "ENTRY2"], roles
    assert st.position.deepest_level == 2 and [r for r, _, _ in h.exits()] == ["BE"]
    assert entry_levels(h) == [3, 4]                         # levels 1-2 held by the fill
    run_leg(h, 100_000.0 * (1 - s * 0.08))                   # a crash through everything
    h.deliver()
    assert max_position(h) <= LADDER[direction] * 1.01


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_fill_before_the_placement_answer(direction):
    """The new grid's level 1 fills before the batch placement's answer is back: the fill's
    event names an order registered under its client id before it was sent, so it is level 1
    (a TP), not a stranger; the answer that follows does not bring the order back."""
    h, v = racing(direction)
    s = S[direction]
    h.move(100_000.0 * (1 - s * 0.006))                      # level 1 → TP
    tp = h.exits()[0][1]
    # The TP fills; the new grid is placed; before the answer the market drops through its level 1.
    run_leg(h, tp + s * 10)                                 # the TP fills; its event waits
    v.after_place = lambda: run_leg(h, tp * (1 - s * 0.006))
    h.deliver()
    st = h.strategy.state
    assert [f.role for f in h.fills] == ["ENTRY1", "TP", "ENTRY1"]
    assert st.position.deepest_level == 1 and [r for r, _, _ in h.exits()] == ["TP"]
    assert entry_levels(h) == [2, 3, 4]
    assert not any(o.level == 1 for o in st.orders.values() if o.is_entry)
    assert max_position(h) <= LADDER[direction] * 1.01


def test_marketable_entry_is_refused_not_taken():
    """A reaction that would place an entry the market has already passed (the daemon lagged
    it) sends it post-only: it is refused, nothing fills as taker, and the level is given up."""
    h, v = racing("LONG")
    h.move(99_400.0)                                          # level 1 → TP at 99997.5
    # The TP fills; before the new grid goes out the price is already below its level 1.
    st = h.strategy.state

    def crash_before_grid():
        h.sim.set_price(h.symbol, 99_000.0)                 # a jump: fills nothing on its own

    orig = v.place_limits

    async def place(orders):
        crash_before_grid()
        return await orig(orders)

    v.place_limits = place
    h.move(100_000.0)
    assert [f.role for f in h.fills] == ["ENTRY1", "TP"]      # no taker fill of the new level 1
    assert all(t.maker for t in h.sim.trades if t.client_id.split("-")[-1].startswith("E"))
    assert 1 not in entry_levels(h) and st.position.qty == 0


# ---------------------------------------------------------------------------- the daemon's stream order


def kline(e_ms: int, close: float, closed: bool = False) -> dict:
    return {"e": "kline", "E": e_ms, "k": {"c": str(close), "x": closed}}


def order_event(e_ms: int, cid: str) -> dict:
    return {"e": "ORDER_TRADE_UPDATE", "E": e_ms, "o": {"c": cid}}


def recording_dispatcher():
    seen: list[tuple] = []

    async def on_user(msg):
        seen.append(("user", msg["o"]["c"]))

    async def on_market(msg, closed):
        seen.append(("tick", float(msg["k"]["c"]), closed))

    return StreamDispatcher(on_user, on_market), seen


async def test_user_events_go_before_queued_ticks_and_ticks_coalesce():
    d, seen = recording_dispatcher()
    d.put_market(kline(1000, 100.0))
    d.put_market(kline(1001, 101.0, closed=True))
    d.put_market(kline(1002, 102.0))
    d.put_user(order_event(1000, "fill-1"))
    await d.drain()
    assert seen == [("user", "fill-1"), ("tick", 102.0, 101.0)]
    assert d.ticks_coalesced == 2


async def test_tick_older_than_the_last_order_event_is_not_acted_on():
    d, seen = recording_dispatcher()
    d.put_user(order_event(5000, "fill-1"))
    d.put_market(kline(4999, 90.0))                  # sent before the fill: stale
    await d.drain()
    assert seen == [("user", "fill-1")] and d.ticks_stale == 1
    d.put_market(kline(5000, 91.0))
    await d.drain()
    assert seen[-1] == ("tick", 91.0, None)


async def test_fill_arriving_while_a_tick_is_handled_goes_before_the_next_tick():
    """A reaction is on the wire when a fill and newer ticks arrive: the fill is handled first."""
    d = None
    seen: list[tuple] = []

    async def on_user(msg):
        seen.append(("user", msg["o"]["c"]))

    async def on_market(msg, closed):
        seen.append(("tick", float(msg["k"]["c"])))
        if len(seen) == 1:                     # the first reaction: the market moves meanwhile
            d.put_market(kline(2001, 98.0))
            d.put_user(order_event(2000, "fill-2"))
            await asyncio.sleep(0)

    d = StreamDispatcher(on_user, on_market)
    d.put_market(kline(1000, 99.0))
    await d.drain()
    assert seen == [("tick", 99.0), ("user", "fill-2"), ("tick", 98.0)]


async def test_pumps_get_the_loop_before_a_tick_is_handled():
    """A fill that reached its socket with the tick (still in a pump's hands) goes first."""
    d, seen = recording_dispatcher()
    d.put_market(kline(1000, 100.0))

    async def pump():
        d.put_user(order_event(1000, "fill-3"))

    task = asyncio.ensure_future(pump())        # runs at the dispatcher's first yield
    await d.drain()
    await task
    assert seen == [("user", "fill-3"), ("tick", 100.0, None)]


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_two_raced_fills_hold_the_grid_until_both_are_acted_on(direction):
    """Old levels 2 and 3 both fill while the TP reaction's cancels are on the wire.  The
    held levels stay held after the first late event (a level placed then could fill beside
    the second); after both, only level 4 goes out, and a crash stays within one ladder."""
    h, v = racing(direction)
    s = S[direction]
    h.move(100_000.0 * (1 - s * 0.006))                      # level 1 → TP
    tp = h.exits()[0][1]
    run_leg(h, tp + s * 10)                                 # the TP fills; its event waits
    v.before_cancel = lambda: run_leg(h, (96_000.0 - 0.5) if s > 0 else 104_000.5)   # old L2 and L3
    events = [e for e in h.sim.drain_events() if isinstance(e, OrderUpdate)]
    run_sync(h.strategy.on_order_update(events[0]))          # the TP's event only
    late = [e for e in h.sim.drain_events() + events[1:] if isinstance(e, OrderUpdate) and e.is_fill]
    assert [e.client_id[-2:] for e in late] == ["E2", "E3"]
    st = h.strategy.state
    run_sync(h.strategy.on_order_update(late[0]))
    assert h.entries() == [] and st.pending_level and set(st.raced) == {late[1].client_id}
    run_sync(h.strategy.on_order_update(late[1]))
    h.deliver()
    assert entry_levels(h) == [4] and not st.raced and not st.pending_level
    assert st.position.deepest_level == 3 and [r for r, _, _ in h.exits()] == ["BE"]
    run_leg(h, 100_000.0 * (1 - s * 0.08))
    h.deliver()
    assert max_position(h) <= LADDER[direction] * 1.01


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_no_range_exit_while_levels_are_held(direction):
    """Levels are held for a raced fill whose event is late (a stalled stream): the state
    looks flat, but a tick beyond the band must not place a fresh grid on top of that fill."""
    h, v = racing(direction)
    s = S[direction]
    st = h.strategy.state
    h.move(100_000.0 * (1 - s * 0.006))
    tp = h.exits()[0][1]
    run_leg(h, tp + s * 10)
    v.before_cancel = lambda: run_leg(h, 100_000.0 * (1 - s * 0.0105))     # old L2 races
    events = [e for e in h.sim.drain_events() if isinstance(e, OrderUpdate)]
    run_sync(h.strategy.on_order_update(events[0]))          # L2's event does not come
    assert st.pending_level == 1
    centre = st.grid_center
    band = centre * (1 + s * 0.021)
    run_leg(h, band)
    run_sync(h.strategy.on_price(band))
    assert h.entries() == [] and st.pending_level == 1 and st.grid_center == centre
    assert not h.strategy.is_flat_and_unfilled()


# ---------------------------------------------------------------------------- one rule for what rests


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_desired_orders_is_what_the_reactions_place_and_mend_restores_it(direction):
    """desired_orders() after level 1, level 2 and level 4 equals what rests on the exchange;
    with the exits and the stop removed behind the strategy's back, mend() puts back exactly
    that (the reconciliation's path), and a second mend() changes nothing."""
    h = make(direction)
    s = S[direction]
    strat = h.strategy

    def resting():
        book = sorted((r, round(p, 1), q) for r, p, q in h.exits())
        return book + [("SL", p, 0.0) for p in h.stops()]

    def desired():
        out = [(i.role, round(i.price, 1), round(i.qty, 6)) for i in strat.desired_orders() if i.level == 0]
        return sorted(x for x in out if x[0] != "SL") + [x for x in out if x[0] == "SL"]

    for depth in (0.006, 0.0105, 0.0455):                     # level 1, level 2, level 4
        h.move(100_000.0 * (1 - s * depth))
        assert desired() == resting(), depth
        want_entries = sorted((i.level, round(i.price, 2), round(i.qty, 6)) for i in strat.desired_orders()
                              if i.level)
        assert want_entries == h.entries()
    h.sim.cancel_all_orders(h.symbol)                         # someone cancels the exits, and the stop
    h.sim.cancel_all_algo_orders(h.symbol)
    h.sim.drain_events()
    for o in [o for o in strat.state.orders.values() if not o.is_entry]:
        del strat.state.orders[o.client_id]                   # as the reconciliation drops vanished orders
    run_sync(strat.mend())
    h.deliver()
    assert desired() == resting() and len(h.stops()) == 1 and [r for r, _, _ in h.exits()] == ["BE"]
    placed = len(h.sim.orders) + len(h.sim.algo_orders)
    run_sync(strat.mend())
    assert len(h.sim.orders) + len(h.sim.algo_orders) == placed   # nothing to do: nothing placed


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_a_grid_the_market_passed_whole_is_placed_again_at_the_market(direction):
    """The market ran through every level of a new grid before it went out: all four are
    refused (post-only), nothing rests, nothing filled.  The next price tick places a grid
    at the market instead of waiting for a price that may never come back."""
    h, v = racing(direction)
    s = S[direction]
    h.move(100_000.0 * (1 - s * 0.006))                       # level 1 → TP
    tp = h.exits()[0][1]
    far = tp * (1 - s * 0.06)                                 # beyond the new grid's level 4
    orig = v.place_limits

    async def place(orders):
        h.sim.set_price(h.symbol, far)                        # the jump happens while we send
        return await orig(orders)

    v.place_limits = place
    h.move(tp + s * 10)
    v.place_limits = orig
    assert h.entries() == [] and h.strategy.grid_refused and h.sim.position(h.symbol).qty == 0
    run_sync(h.strategy.on_price(far))
    h.deliver()
    st = h.strategy.state
    assert st.grid_center == far and entry_levels(h) == [1, 2, 3, 4]
    assert not h.strategy.grid_refused
