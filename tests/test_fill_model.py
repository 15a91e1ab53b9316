"""Tests for the SPEC §6 fill model: candle paths, next_trigger, the
TriggerScanner fast path, the model as the simulated exchange applies it
(gaps, several levels in one candle, an entry and its exit in one candle,
stop gaps), and the FillModel setting.  Expected numbers are worked out by hand in each test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from exchange_api import SymbolFilters
from sim.fill_model import (
    FULL, NO_DOWN, NO_UP, FillModel, TriggerScanner, candle_path, leg_volume_steps, next_trigger,
)
from sim.exchange import SimulatedExchange

SYM = "BTCUSDC"
BTC = SymbolFilters(SYM, tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0)
MAKER = 0.0002
TAKER = 0.0005


@dataclass
class R:
    """A resting order as fill_model sees it."""

    name: str
    trigger: float
    fires_below: bool
    is_stop: bool = False
    seq: int = 0


def buy(name, px, seq):
    return R(name, px, True, False, seq)


def sell(name, px, seq):
    return R(name, px, False, False, seq)


def sell_stop(name, px, seq):
    return R(name, px, True, True, seq)


def buy_stop(name, px, seq):
    return R(name, px, False, True, seq)


def drain_leg(cur, end, resting):
    """Run a leg to its end as the exchange does: one fill at a time, the
    filled order removed.  Returns [(name, fill price, price after)]."""
    resting = list(resting)
    out = []
    while True:
        hit = next_trigger(cur, end, resting)
        if hit is None:
            return out
        r, px, cur = hit
        out.append((r.name, px, cur))
        resting.remove(r)


# ---------------------------------------------------------------- candle_path


def test_candle_path_up_candle_goes_low_first():
    assert candle_path(100.0, 110.0, 90.0, 105.0) == (100.0, 90.0, 110.0, 105.0)


def test_candle_path_flat_candle_counts_as_up():
    assert candle_path(100.0, 110.0, 90.0, 100.0) == (100.0, 90.0, 110.0, 100.0)


def test_candle_path_down_candle_goes_high_first():
    assert candle_path(100.0, 110.0, 90.0, 95.0) == (100.0, 110.0, 90.0, 95.0)


# ---------------------------------------------------------------- next_trigger


def test_down_leg_triggers_in_price_order_not_placement_order():
    resting = [buy("b95", 95.0, 1), buy("b98", 98.0, 2), buy("b92", 92.0, 3),
               sell_stop("s97", 97.0, 4), sell("above", 105.0, 5), buy("below_end", 89.0, 6)]
    assert drain_leg(100.0, 90.0, resting) == [
        ("b98", 98.0, 98.0), ("s97", 97.0, 97.0), ("b95", 95.0, 95.0), ("b92", 92.0, 92.0)]


def test_up_leg_triggers_in_price_order():
    resting = [sell("s103", 103.0, 1), sell("s101", 101.0, 2), buy_stop("bs101.5", 101.5, 3),
               sell("s102", 102.0, 4), buy("b99", 99.0, 5), sell("beyond", 104.1, 6)]
    assert drain_leg(100.0, 104.0, resting) == [
        ("s101", 101.0, 101.0), ("bs101.5", 101.5, 101.5), ("s102", 102.0, 102.0), ("s103", 103.0, 103.0)]


def test_equal_prices_break_ties_by_seq():
    resting = [buy("late", 95.0, 7), buy("early", 95.0, 2), buy("mid", 95.0, 5)]
    assert [n for n, _, _ in drain_leg(100.0, 90.0, resting)] == ["early", "mid", "late"]


def test_gap_limit_fills_at_limit_price_stop_at_leg_start():
    # The leg starts at 90, already below a buy limit at 95 and a sell stop at 93.
    hit = next_trigger(90.0, 85.0, [buy("b95", 95.0, 1)])
    assert hit is not None and hit[0].name == "b95"
    assert hit[1] == 95.0 and hit[2] == 90.0
    hit = next_trigger(90.0, 85.0, [sell_stop("s93", 93.0, 1)])
    assert hit is not None and hit[1] == 90.0 and hit[2] == 90.0
    # Upward gap: the leg starts at 110 above a sell limit at 105 and a buy stop at 107.
    hit = next_trigger(110.0, 115.0, [sell("s105", 105.0, 1)])
    assert hit[1] == 105.0 and hit[2] == 110.0
    hit = next_trigger(110.0, 115.0, [buy_stop("bs107", 107.0, 1)])
    assert hit[1] == 110.0 and hit[2] == 110.0
    # A gapped order fills even when the leg then moves away from it.
    hit = next_trigger(90.0, 99.0, [buy("b95", 95.0, 1)])
    assert hit[1] == 95.0 and hit[2] == 90.0


def test_gapped_orders_fill_from_the_top_before_those_the_leg_reaches():
    # Placement order scrambled on purpose: the leg jumped down through
    # 99, 98 and 97 (best bid first), then reaches 89 on its way to 85.
    resting = [buy("b97", 97.0, 1), buy("b89", 89.0, 2), buy("b99", 99.0, 3), buy("b98", 98.0, 4)]
    assert drain_leg(90.0, 85.0, resting) == [
        ("b99", 99.0, 90.0), ("b98", 98.0, 90.0), ("b97", 97.0, 90.0), ("b89", 89.0, 89.0)]


def test_limit_buy_fills_on_an_exact_touch():
    hit = next_trigger(100.0, 95.0, [buy("b95", 95.0, 1)])
    assert hit is not None and hit[1] == 95.0 and hit[2] == 95.0
    hit = next_trigger(100.0, 105.0, [sell("s105", 105.0, 1)])
    assert hit is not None and hit[1] == 105.0 and hit[2] == 105.0
    # A zero-length leg standing on the order fills it too.
    hit = next_trigger(95.0, 95.0, [buy("b95", 95.0, 1)])
    assert hit is not None and hit[1] == 95.0


def test_nothing_fires_when_the_leg_falls_short():
    assert next_trigger(100.0, 95.1, [buy("b95", 95.0, 1), sell_stop("s95", 95.0, 2)]) is None
    assert next_trigger(100.0, 104.9, [sell("s105", 105.0, 1), buy_stop("bs105", 105.0, 2)]) is None
    # Orders on the far side of the start are never reached by a leg moving away.
    assert next_trigger(100.0, 110.0, [buy("b95", 95.0, 1), sell_stop("s99", 99.0, 2)]) is None
    assert next_trigger(100.0, 90.0, [sell("s105", 105.0, 1), buy_stop("bs101", 101.0, 2)]) is None
    assert next_trigger(100.0, 90.0, []) is None


# ---------------------------------------------------------------- through the exchange


def make_ex(price=100.0, balance=10_000.0):
    ex = SimulatedExchange([BTC], balance=balance, maker_fee=MAKER, taker_fee=TAKER)
    ex.set_price(SYM, price)
    return ex


def run_candle(ex, o, h, l, c, on_fill=None):
    """The backtest's driver: jump to the open, then the three legs."""
    ex.set_price(SYM, o)
    for end in candle_path(o, h, l, c)[1:]:
        while ex.advance(SYM, end):
            if on_fill is not None:
                on_fill(ex)


def limit(ex, cid, side, px, qty, reduce_only=False):
    return ex.new_order(SYM, side, "LIMIT", quantity=qty, price=px, timeInForce="GTC",
                        reduceOnly=reduce_only, newClientOrderId=cid)


def test_set_price_is_a_jump_that_fills_nothing():
    ex = make_ex(100.0)
    o = limit(ex, "b99", "BUY", 99.0, 0.1)
    ex.set_price(SYM, 90.0)
    assert o.status == "NEW" and ex.trades == [] and ex.position(SYM).qty == 0.0


def test_gap_through_three_buys_fills_all_at_limit_prices_from_the_top():
    ex = make_ex(100.0)
    for cid, px in (("b97", 97.0), ("b99", 99.0), ("b98", 98.0)):   # placed out of price order
        limit(ex, cid, "BUY", px, 0.1)
    seen = []
    # opens at 95, below all three; high 95.5, low 94, close 94.5 (down candle)
    run_candle(ex, 95.0, 95.5, 94.0, 94.5, on_fill=lambda e: seen.append(e.books[SYM].price))
    assert [(t.client_id, t.price) for t in ex.trades] == [("b99", 99.0), ("b98", 98.0), ("b97", 97.0)]
    assert seen == [95.0, 95.0, 95.0]          # all at the open, before the leg moves
    p = ex.position(SYM)
    assert p.qty == pytest.approx(0.3, abs=1e-12)
    assert p.entry_price == pytest.approx(98.0, abs=1e-9)     # (99+98+97)/3
    assert all(t.maker for t in ex.trades)
    # maker fee: (99 + 98 + 97) * 0.1 * 0.0002 = 0.00588
    assert ex.total_fees == pytest.approx(0.00588, abs=1e-12)
    assert ex.books[SYM].price == 94.5


def test_two_levels_in_one_candle():
    ex = make_ex(100.0)
    limit(ex, "b99", "BUY", 99.0, 0.1)
    limit(ex, "b98", "BUY", 98.0, 0.1)
    limit(ex, "b97", "BUY", 97.0, 0.1)        # below the low: stays
    run_candle(ex, 100.0, 100.5, 97.5, 99.5)
    assert [(t.client_id, t.price) for t in ex.trades] == [("b99", 99.0), ("b98", 98.0)]
    p = ex.position(SYM)
    assert p.qty == pytest.approx(0.2, abs=1e-12)
    assert p.entry_price == pytest.approx(98.5, abs=1e-9)
    # (99 + 98) * 0.1 * 0.0002
    assert ex.total_fees == pytest.approx(0.00394, abs=1e-12)
    assert ex.wallet == pytest.approx(10_000 - 0.00394, abs=1e-9)
    assert [o.client_id for o in ex.open_orders(SYM)] == ["b97"]
    # uPnL at the close 99.5: 0.2 * (99.5 - 98.5)
    assert ex.unrealized() == pytest.approx(0.2, abs=1e-9)


def test_entry_and_exit_in_one_candle():
    ex = make_ex(100.0)
    limit(ex, "E1", "BUY", 99.0, 0.1)

    def react(e):
        if e.position(SYM).qty > 0 and not e.open_orders(SYM):
            limit(e, "TP1", "SELL", 101.0, 0.1, reduce_only=True)

    # up candle: 100 → 98 → 102 → 101
    run_candle(ex, 100.0, 102.0, 98.0, 101.0, on_fill=react)
    assert [(t.client_id, t.side, t.price) for t in ex.trades] == [("E1", "BUY", 99.0), ("TP1", "SELL", 101.0)]
    assert ex.trades[1].realized_pnl == pytest.approx(0.2, abs=1e-12)      # 0.1 * (101 - 99)
    assert ex.position(SYM).qty == 0.0
    # fees 99*0.1*0.0002 + 101*0.1*0.0002 = 0.00198 + 0.00202
    assert ex.total_fees == pytest.approx(0.004, abs=1e-12)
    assert ex.wallet == pytest.approx(10_000 + 0.2 - 0.004, abs=1e-9)


def test_order_placed_after_a_fill_is_live_on_the_rest_of_the_leg():
    ex = make_ex(100.0)
    limit(ex, "b99", "BUY", 99.0, 0.1)
    assert ex.advance(SYM, 95.0) is True and ex.books[SYM].price == 99.0
    limit(ex, "b98.5", "BUY", 98.5, 0.1)
    assert ex.advance(SYM, 95.0) is True and ex.books[SYM].price == 98.5
    assert ex.advance(SYM, 95.0) is False and ex.books[SYM].price == 95.0
    assert [t.price for t in ex.trades] == [99.0, 98.5]


def test_stop_gap_fills_at_leg_start_with_taker_fee():
    ex = make_ex(100.0)
    limit(ex, "E1", "BUY", 99.0, 0.1)
    assert ex.advance(SYM, 99.0) is True
    ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice=95.0, closePosition=True, clientAlgoId="SL1")
    # next candle opens at 93, already below the trigger
    run_candle(ex, 93.0, 93.5, 92.0, 92.5)
    t = ex.trades[-1]
    assert (t.client_id, t.side, t.price, t.maker) == ("SL1", "SELL", 93.0, False)
    assert t.qty == pytest.approx(0.1, abs=1e-12)
    assert t.realized_pnl == pytest.approx(-0.6, abs=1e-12)      # 0.1 * (93 - 99)
    assert t.commission == pytest.approx(0.00465, abs=1e-12)     # 93 * 0.1 * 0.0005
    assert ex.position(SYM).qty == 0.0
    # 10000 - 0.00198 (entry maker fee) - 0.6 - 0.00465
    assert ex.wallet == pytest.approx(9999.39337, abs=1e-9)
    (a,) = ex.algo_orders.values()
    assert a.status == "FINISHED" and a.actual_price == 93.0 and a.actual_order_id == t.order_id


def test_stop_reached_inside_a_leg_fills_at_its_trigger():
    ex = make_ex(100.0)
    limit(ex, "E1", "BUY", 99.0, 0.1)
    ex.advance(SYM, 99.0)
    ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice=95.0, closePosition=True, clientAlgoId="SL1")
    run_candle(ex, 98.0, 98.5, 94.0, 94.5)
    t = ex.trades[-1]
    assert (t.client_id, t.price, t.maker) == ("SL1", 95.0, False)
    assert t.commission == pytest.approx(95 * 0.1 * TAKER, abs=1e-12)   # 0.00475
    assert t.realized_pnl == pytest.approx(-0.4, abs=1e-12)


# ---------------------------------------------------------------- TriggerScanner


def brute_find(high: list[float], low: list[float], start: int, up: float, down: float) -> int:
    for i in range(start, len(high)):
        if high[i] >= up or low[i] <= down:
            return i
    return -1


@pytest.mark.parametrize("n,block,seed", [(1500, 256, 1), (1000, 7, 2), (777, 16, 3), (64, 64, 4), (1, 256, 5)])
def test_trigger_scanner_matches_brute_force(n, block, seed):
    # Prices in integer ticks (of 0.001), as the engine scans them.
    rng = np.random.default_rng(seed)
    close = np.rint((100.0 + np.cumsum(rng.normal(0.0, 0.5, n))) * 1000).astype(np.int64)
    high = close + np.rint(rng.exponential(300, n)).astype(np.int64)
    low = close - np.rint(rng.exponential(300, n)).astype(np.int64)
    sc = TriggerScanner(high, low, block=block)
    hl, ll = high.tolist(), low.tolist()
    lo_all, hi_all = int(low.min()), int(high.max())
    queries = 1200
    hits = misses = 0
    for q in range(queries):
        start = int(rng.integers(0, n + 1))          # includes start == n
        kind = q % 6
        if kind == 0:                                # never reached
            up, down = hi_all + 1, lo_all - 1
        elif kind == 1:                              # exactly a value in the data (>= / <=)
            j = int(rng.integers(0, n))
            up, down = (hl[j], NO_DOWN) if q % 12 == 1 else (NO_UP, ll[j])
        elif kind == 2:
            up, down = int(rng.choice([NO_UP, NO_DOWN])), int(rng.choice([NO_UP, NO_DOWN]))
        else:                                        # around the price at start
            ref = int(close[min(start, n - 1)])
            up = ref + int(rng.exponential(3000))
            down = ref - int(rng.exponential(3000))
            if q % 7 == 0:
                up = NO_UP
            if q % 11 == 0:
                down = NO_DOWN
        got = sc.find(start, up, down)
        want = brute_find(hl, ll, start, up, down)
        assert got == want, (start, up, down)
        hits += want >= 0
        misses += want < 0
    if n > 1:
        assert hits > 100 and misses > 100


def test_trigger_scanner_hand_cases():
    high = np.array([10, 11, 12, 13, 14])
    low = np.array([9, 8, 7, 6, 5])
    sc = TriggerScanner(high, low, block=2)
    assert sc.find(0, 13, NO_DOWN) == 3
    assert sc.find(0, NO_UP, 7) == 2
    assert sc.find(3, 11, 0) == 3              # already above at start
    assert sc.find(0, 15, 4) == -1
    assert sc.find(5, NO_DOWN, NO_UP) == -1    # start at the end
    assert sc.find(4, NO_DOWN, NO_UP) == 4


@pytest.mark.parametrize("block", [256, 16, 5])
def test_trigger_scanner_single_spike_at_block_edges(block):
    n = 4 * block + 3
    for idx in sorted({0, 1, block - 1, block, 2 * block - 1, 2 * block, 3 * block + 1, n - 1}):
        high = np.full(n, 1010)
        low = np.full(n, 990)
        high[idx] = 1050
        low[(idx + 7) % n] = 950            # a dip somewhere else
        sc = TriggerScanner(high, low, block=block)
        dip = (idx + 7) % n
        assert sc.find(0, 1050, NO_DOWN) == idx
        assert sc.find(idx, 1049, 900) == idx
        assert sc.find(idx + 1, 1050, NO_DOWN) == -1
        assert sc.find(0, NO_UP, 950) == dip
        assert sc.find(0, 1050, 950) == min(idx, dip)
        assert sc.find(0, 1051, 949) == -1


def test_fill_model_object_full_by_default_volume_from_the_cli_values():
    assert FillModel() == FULL and FULL.is_full and FULL.leg_steps(1234.5, 0.001) is None
    assert FillModel.from_cli("full", 7.0) is FULL                   # the share counts only with volume
    vol = FillModel.from_cli("volume", 0.1)
    assert vol == FillModel.by_volume(0.1) and not vol.is_full
    assert vol.leg_steps(30.0, 0.001) == leg_volume_steps(30.0, 0.1, 0.001) == 1000
    assert vol.leg_steps_of(np.array([30.0, 3.0]), 0.001) == [1000, 100]
    assert FULL.leg_steps_of(np.array([30.0]), 0.001) is None
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"--fill-share must be in \(0, 1\]"):
            FillModel.from_cli("volume", share)
        with pytest.raises(ValueError):
            FillModel.by_volume(share)


def test_the_simulator_and_its_parts_make_no_reference_cycle():
    """The account and the algo orders hold their engine weakly: a finished run is freed at
    once, without the cyclic collector (off during a backtest)."""
    import gc
    gc.collect()
    was_on = gc.isenabled()
    gc.disable()
    try:
        ex = SimulatedExchange([BTC])
        ex.set_price(SYM, 100.0)
        ex.new_order(SYM, "BUY", "LIMIT", quantity="0.1", price="99.0", timeInForce="GTC")
        ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice="90.0", closePosition=True)
        del ex
        # What the collector would free, kept to be looked at: none of it the simulator's (other
        # threads of the process, a test runner's own, may leave cycles of their own meanwhile).
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage
                if type(o).__module__.split(".")[0] in ("sim", "exchange_api", "market", "localex")]
        assert not ours, ours
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_on:
            gc.enable()
