"""SPEC §3 transitions, LONG and SHORT, with exact prices, on the simulated exchange."""
from __future__ import annotations

from pathlib import Path

import pytest

from config import load_config
from exchange_api import OrderUpdate, SymbolFilters, parse_client_order_id, run_sync
from grid_strategy import GridMartingaleStrategy
from sim.exchange import SimulatedExchange, SimVenue

ROOT = Path(__file__).resolve().parents[1]
BTC = SymbolFilters("BTCUSDC", tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0)


class Harness:
    """The strategy over a simulator, with prices moved by hand along monotone legs."""

    def __init__(self, direction: str = "LONG", filters: SymbolFilters = BTC, capital: float = 1000.0,
                 balance: float = 100_000.0, **overrides):
        cfg = load_config(ROOT / "config_btc.txt").with_overrides(trade_direction=direction, **overrides)
        self.cfg = cfg
        self.sim = SimulatedExchange([filters], balance=balance, maker_fee=0.0, taker_fee=0.0004,
                                     leverage=cfg.leverage)
        self.symbol = filters.symbol
        self.fills = []
        self.strategy = GridMartingaleStrategy(cfg, SimVenue(self.sim, self.symbol), capital=capital,
                                               on_fill=self.fills.append)

    def deliver(self) -> None:
        while self.sim.events:
            for ev in self.sim.drain_events():
                if isinstance(ev, OrderUpdate):
                    run_sync(self.strategy.on_order_update(ev))

    def start(self, close: float) -> None:
        self.sim.set_price(self.symbol, close)
        run_sync(self.strategy.on_candle_closed(close))
        self.deliver()

    def move(self, price: float) -> None:
        """One monotone leg from the current price to `price`, reacting to every fill."""
        while self.sim.advance(self.symbol, price):
            self.deliver()
        run_sync(self.strategy.on_price(price))
        self.deliver()

    def entries(self) -> list[tuple[int, float, float]]:
        out = []
        for o in self.sim.open_orders(self.symbol):
            parsed = parse_client_order_id(o.client_id)
            if parsed and parsed[2] == "E":
                out.append((parsed[3], round(o.price, 2), round(o.qty, 6)))
        return sorted(out)

    def exits(self) -> list[tuple[str, float, float]]:
        out = []
        for o in self.sim.open_orders(self.symbol):
            parsed = parse_client_order_id(o.client_id)
            if parsed and parsed[2] in ("TP", "BE"):
                out.append((parsed[2], round(o.price, 2), round(o.qty, 6)))
        return sorted(out)

    def stops(self) -> list[float]:
        return [round(a.trigger_price, 2) for a in self.sim.open_algo_orders(self.symbol)]

    def position(self) -> tuple[float, float]:
        p = self.sim.position(self.symbol)
        return round(p.qty, 6), round(p.entry_price, 6)


# Hand-computed expectations: C = 100000, capital 1000, leverage 20, tick 0.1, step 0.001.
LONG_LEVELS = [(1, 99500.0, 0.010), (2, 99000.0, 0.040), (3, 96000.0, 0.052), (4, 95500.0, 0.104)]
SHORT_LEVELS = [(1, 100500.0, 0.009), (2, 101000.0, 0.039), (3, 104000.0, 0.048), (4, 104500.0, 0.095)]


def make(direction: str) -> Harness:
    # Same leverage both ways so the two directions mirror each other.
    h = Harness(direction, leverage_short=20)
    h.start(100_000.0)
    return h


@pytest.mark.parametrize("direction,levels", [("LONG", LONG_LEVELS), ("SHORT", SHORT_LEVELS)])
def test_start_places_all_levels_from_first_close(direction, levels):
    h = make(direction)
    assert h.strategy.state.grid_center == 100_000.0
    assert h.entries() == levels
    assert h.exits() == [] and h.stops() == []
    side = "BUY" if direction == "LONG" else "SELL"
    assert {o.side for o in h.sim.open_orders(h.symbol)} == {side}


def test_second_candle_does_not_move_an_existing_grid():
    h = make("LONG")
    run_sync(h.strategy.on_candle_closed(100_700.0))
    assert h.strategy.state.grid_center == 100_000.0
    assert h.entries() == LONG_LEVELS


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_level1_fill_sets_one_tp_for_whole_position(direction):
    h = make(direction)
    h.move(99_400.0 if direction == "LONG" else 100_600.0)
    if direction == "LONG":
        assert h.position() == (0.010, 99500.0)
        assert h.exits() == [("TP", 99997.5, 0.010)]      # 99500 × 1.005, rounded up
    else:
        assert h.position() == (-0.009, 100500.0)
        assert h.exits() == [("TP", 99997.5, 0.009)]      # 100500 × 0.995, rounded down
    assert h.stops() == []
    assert [f.role for f in h.fills] == ["ENTRY1"]


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_tp_fill_recentres_at_exit_and_replaces_all_levels(direction):
    h = make(direction)
    h.move(99_400.0 if direction == "LONG" else 100_600.0)
    h.move(100_000.0 if direction == "LONG" else 99_990.0)  # through the TP at 99997.5
    assert h.position() == (0.0, 0.0)
    assert [f.role for f in h.fills] == ["ENTRY1", "TP"]
    tp = h.fills[-1]
    assert tp.price == 99997.5 and tp.position_after == 0.0
    assert h.strategy.state.grid_center == 99997.5
    if direction == "LONG":
        assert tp.realized_pnl == pytest.approx(0.010 * (99997.5 - 99500.0))
        # 99997.5 × (1 − d), rounded down
        assert [p for _, p, _ in h.entries()] == [99497.5, 98997.5, 95997.6, 95497.6]
    else:
        assert tp.realized_pnl == pytest.approx(0.009 * (100500.0 - 99997.5))
        # 99997.5 × (1 + d), rounded up
        assert [p for _, p, _ in h.entries()] == [100497.5, 100997.5, 103997.4, 104497.4]
    assert h.exits() == [] and len(h.entries()) == 4


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_level2_fill_cancels_tp_and_sets_be_keeping_level1(direction):
    h = make(direction)
    h.move(98_900.0 if direction == "LONG" else 101_100.0)  # levels 1 and 2 in one leg
    if direction == "LONG":
        assert h.position() == (0.050, 99100.0)
        assert h.exits() == [("BE", 99199.1, 0.040)]       # 99100 × 1.001 rounded up; Q − q1
    else:
        assert h.position() == (-0.048, 100906.25)
        assert h.exits() == [("BE", 100805.3, 0.039)]      # 100906.25 × 0.999 rounded down
    assert [f.role for f in h.fills] == ["ENTRY1", "ENTRY2"]
    assert h.stops() == []


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_be_fill_keeps_level1_recentres_on_average_and_sets_tp(direction):
    h = make(direction)
    h.move(98_900.0 if direction == "LONG" else 101_100.0)
    h.move(99_300.0 if direction == "LONG" else 100_700.0)  # through the BE
    assert [f.role for f in h.fills] == ["ENTRY1", "ENTRY2", "BE"]
    st = h.strategy.state
    if direction == "LONG":
        assert h.position() == (0.010, 99100.0)            # level-1 quantity at the unchanged A
        assert st.grid_center == pytest.approx(99100.0 / 0.995)
        assert h.entries() == [(2, 98602.0, 0.040), (3, 95614.0, 0.052), (4, 95116.0, 0.105)]
        assert h.exits() == [("TP", 99595.5, 0.010)]
    else:
        assert h.position() == (-0.009, 100906.25)
        assert st.grid_center == pytest.approx(100906.25 / 1.005)
        assert h.entries() == [(2, 101408.3, 0.039), (3, 104420.4, 0.047), (4, 104922.5, 0.095)]
        assert h.exits() == [("TP", 100401.7, 0.009)]
    assert st.position.deepest_level == 1
    assert st.position.level_filled[0] == pytest.approx(abs(h.position()[0]))


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_deepest_level_adds_stop_through_algo_api_and_stop_fill_recentres(direction):
    h = make(direction)
    deep = 95_400.0 if direction == "LONG" else 104_600.0
    h.move(deep)
    assert [f.role for f in h.fills] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4"]
    assert h.stops() == [95000.0 if direction == "LONG" else 105000.0]
    algo = h.sim.open_algo_orders(h.symbol)[0]
    assert algo.close_position and algo.order_type == "STOP_MARKET"
    assert algo.side == ("SELL" if direction == "LONG" else "BUY")
    be = h.exits()
    assert len(be) == 1 and be[0][0] == "BE"
    q1 = 0.010 if direction == "LONG" else 0.009
    assert be[0][2] == pytest.approx(abs(h.position()[0]) - q1)
    h.move(94_900.0 if direction == "LONG" else 105_100.0)   # through the stop, short of the new level 1
    sl = h.fills[-1]
    assert sl.role == "SL" and sl.price == (95000.0 if direction == "LONG" else 105000.0)
    assert sl.position_after == 0.0 and sl.fee > 0            # taker fee on the stop
    st = h.strategy.state
    assert st.grid_center == sl.price
    assert h.stops() == [] and h.exits() == []
    # The new grid sits around the exit price.
    assert [p for _, p, _ in h.entries()] == (
        [94525.0, 94050.0, 91200.0, 90725.0] if direction == "LONG" else [105525.0, 106050.0, 109200.0, 109725.0])
    # Orders placed at the stop are live on the rest of the leg: going on fills the new level 1.
    h.move(94_500.0 if direction == "LONG" else 105_600.0)
    assert h.fills[-1].role == "ENTRY1" and h.fills[-1].price == (94525.0 if direction == "LONG" else 105525.0)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_range_exit_recentres_band_by_band_only_when_flat(direction):
    h = make(direction)
    s = 1 if direction == "LONG" else -1
    h.move(100_000.0 + s * 1_900.0)                     # inside ±2 %: nothing
    assert h.strategy.state.grid_center == 100_000.0
    h.move(100_000.0 + s * 5_000.0)                     # two bands crossed on one leg
    expected = 100_000.0 * (1 + s * 0.02) ** 2
    assert h.strategy.state.grid_center == pytest.approx(expected)
    assert h.entries()[0][1] == (103519.8 if direction == "LONG" else 96520.2)  # centre × (1 ∓ 0.005), away from the market
    assert h.fills == []


def test_range_exit_ignored_with_a_position():
    h = make("LONG")
    h.move(99_400.0)                                    # level 1 filled
    run_sync(h.strategy.on_price(120_000.0))            # far beyond the band, but not flat
    h.deliver()
    assert h.strategy.state.grid_center == 100_000.0


def test_seed_log_case_be_then_regrid_exact_prices():
    """The seed's log: average 90625.59 after level 2 → BE 90716.21, centre 91080.99,
    levels 2–4 at 90170.18 / 87437.75 / 86982.34, TP 91078.72 (tick 0.01)."""
    f = SymbolFilters("BTCUSDC", tick_size=0.01, step_size=0.000001, min_qty=0.000001, min_notional=5.0)
    h = Harness("LONG", filters=f)
    st = h.strategy.state
    st.grid_center = 91_000.0
    h.sim.set_position("BTCUSDC", 0.021, 90625.59)
    h.sim.set_price("BTCUSDC", 90_500.0)
    st.position.qty, st.position.avg_price = 0.021, 90625.59
    st.position.level_filled = [0.004, 0.017, 0.0, 0.0]
    st.position.level1_qty, st.position.deepest_level = 0.004, 2
    run_sync(h.strategy._set_be_order())
    h.deliver()
    [(role, be_price, be_qty)] = h.exits()
    assert role == "BE" and be_qty == pytest.approx(0.017)
    assert abs(be_price - 90716.21) <= 0.01 + 1e-9        # toward profit: 90716.22
    h.move(90_800.0)                                      # the BE fills
    assert h.position() == (0.004, 90625.59)
    assert round(st.grid_center, 2) == 91080.99
    entries = h.entries()
    assert [lvl for lvl, _, _ in entries] == [2, 3, 4]
    for (_, got, _), want in zip(entries, [90170.18, 87437.75, 86982.34]):
        assert abs(got - want) <= 0.01 + 1e-9
    [(role, tp_price, tp_qty)] = h.exits()
    assert role == "TP" and abs(tp_price - 91078.72) <= 0.01 + 1e-9 and tp_qty == pytest.approx(0.004)


def test_entry_and_exit_in_one_candle_and_gap_through_levels():
    h = make("LONG")
    # A gap: the price jumps below levels 1–3 (a candle opening there); the leg starts beyond them.
    h.sim.set_price(h.symbol, 95_800.0)
    h.move(95_700.0)
    assert [f.role for f in h.fills] == ["ENTRY1", "ENTRY2", "ENTRY3"]
    assert [f.price for f in h.fills] == [99500.0, 99000.0, 96000.0]   # limits fill at their prices
    # ... then the same candle runs up through the BE.
    be = h.exits()[0]
    h.move(be[1] + 10)
    assert h.fills[-1].role == "BE" and h.position()[0] == pytest.approx(0.010)


def test_capital_too_small_skips_levels_with_warning(caplog):
    h = Harness("LONG", capital=5.0)
    with caplog.at_level("WARNING"):
        h.start(100_000.0)
    # 5 × 20 × ratio / price < minQty for every level but the last two.
    assert [lvl for lvl, _, _ in h.entries()] == [3, 4] or len(h.entries()) < 4
    assert any("Level 1" in r.getMessage() for r in caplog.records)


def test_stop_placed_when_deeper_levels_could_not_be_placed():
    # Balance too small for level 4: the deepest level that exists is 3, so its fill
    # gets the stop (SPEC's stop at MAX_ENTRY_LEVEL would otherwise never come).
    h = Harness("LONG", balance=600.0)
    h.start(100_000.0)
    placed = [lvl for lvl, _, _ in h.entries()]
    assert placed[:3] == [1, 2, 3]
    if 4 not in placed:
        h.move(95_900.0)
        assert h.stops() == [95000.0]


def test_config_reload_applies_at_next_grid():
    h = make("LONG")
    new = h.cfg.with_overrides(level_distances=(0.01, 0.02, 0.04, 0.045), tp_pct=0.01, leverage_short=20)
    h.strategy.update_config(new)
    assert h.entries() == LONG_LEVELS                    # resting orders unchanged
    h.move(99_400.0)
    assert h.exits() == [("TP", 100495.0, 0.010)]        # new TP % for the new exit order
    h.move(100_600.0)                                    # TP fills → new grid uses new distances
    assert [p for _, p, _ in h.entries()][:2] == [99490.0, 98485.1]  # centre 100495 × (1 − 0.01 / 0.02)


def test_an_entry_filled_while_the_tp_reaction_cancels_counts_as_its_level():
    """A race of live trading: the TP fills, and before its event is handled an entry of the
    old grid fills too (our cancel came too late).  The TP's reaction reads the position with
    that fill in it: it must still see the TP as a full close (new centre, new grid), and the
    late fill, whose order the state has dropped, as an entry of its level: BE, the new grid's
    levels up to it cancelled, records with the position after each fill."""
    h = make("LONG")
    h.move(99_400.0)                                       # level 1, TP at 99997.5
    while h.sim.advance(h.symbol, 100_000.0):              # the TP fills; its event waits
        pass
    h.sim.new_order(h.symbol, "BUY", "LIMIT", quantity="0.100", price="100010.0", timeInForce="GTC",
                    newClientOrderId="GM-BTCUSDC-0-E3")    # an old level 3, filled at once
    assert h.position() == (0.1, 100000.0)
    h.deliver()
    assert [(f.role, f.position_after) for f in h.fills] == [("ENTRY1", 0.01), ("TP", 0.0), ("ENTRY3", 0.1)]
    st = h.strategy.state
    assert st.grid_center == 99997.5 and st.position.deepest_level == 3 and st.position.qty == pytest.approx(0.1)
    assert [lvl for lvl, _, _ in h.entries()] == [4]       # levels 1-3 of the new grid: held by the fill
    assert h.exits() == [("BE", 100100.0, 0.1)] and h.stops() == []


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
@pytest.mark.parametrize("back", [False, True])
def test_a_stop_that_failed_when_it_triggered_is_replaced_or_closed_at_market(direction, back):
    """ALGO_UPDATE REJECTED / EXPIRED (issue 19): the position is unprotected.  Price beyond the
    stop: closed at market as the stop would have (an SL fill, a new grid).  Price back inside:
    the stop is placed again."""
    h = make(direction)
    h.move(95_400.0 if direction == "LONG" else 104_600.0)          # all four levels
    stop_id = next(c for c, o in h.strategy.state.orders.items() if o.role == "SL")
    failures = [("EXPIRED", "Reduce Only reject")]
    h.sim.trigger_fault = lambda: failures.pop() if failures else None
    h.move(94_900.0 if direction == "LONG" else 105_100.0)           # through the stop: it fails
    assert h.sim.position(h.symbol).qty != 0 and h.stops() == []     # unprotected
    if back:
        h.move(95_300.0 if direction == "LONG" else 104_700.0)       # back inside before the reaction
    done = run_sync(h.strategy.on_stop_failed(stop_id))
    h.deliver()
    if back:
        assert done == "replaced"
        assert h.stops() == [95000.0 if direction == "LONG" else 105000.0]
        assert h.sim.position(h.symbol).qty != 0
    else:
        assert done == "closed at market"
        assert h.sim.position(h.symbol).qty == 0 and h.fills[-1].role == "SL"
        assert h.strategy.state.grid_center == h.fills[-1].price and len(h.entries()) == 4
    assert run_sync(h.strategy.on_stop_failed("GM-BTCUSDC-9-SL9")) == ""   # not ours: nothing done
