"""The volume fill model (issue 10, part 2): a resting limit takes at most a share of each
leg's traded volume, in price-time order, the rest stays open; a market order sweeps a thin
book in several trades.  The default stays SPEC §6's full fill."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtest import run_backtest  # noqa: E402
from config import load_config  # noqa: E402
from exchange_api import SymbolFilters  # noqa: E402
from market.data import synthetic_klines  # noqa: E402
from sim.exchange import SimulatedExchange  # noqa: E402
from sim.fill_model import FULL, FillModel  # noqa: E402

F = SymbolFilters("BTCUSDC", 0.1, 0.001, 0.001, 5.0)
SYM = "BTCUSDC"


def sim_at(price: float) -> SimulatedExchange:
    ex = SimulatedExchange([F], balance=100_000.0, taker_fee=0.0)
    ex.set_price(SYM, price)
    return ex


def test_a_limit_fills_in_parts_leg_by_leg_and_the_rest_stays_open():
    ex = sim_at(100.0)
    o = ex.new_order(SYM, "BUY", "LIMIT", quantity="1.000", price="99.0", timeInForce="GTC",
                     newClientOrderId="E1")
    # A leg that starts beyond the limit (below a buy) trades at it at once: the price is there.
    for leg, (end, want) in enumerate([(98.0, 0.3), (100.0, 0.6), (98.5, 0.9), (98.0, 1.0), (97.0, 1.0)]):
        ex.set_leg_volume(SYM, 300)                      # 0.300 a leg
        while ex.advance(SYM, end):
            pass
        assert o.executed_qty == pytest.approx(want), leg
    assert o.status == "FILLED" and ex.position(SYM).qty == pytest.approx(1.0)
    fills = [t for t in ex.trades if t.client_id == "E1"]
    assert [t.qty for t in fills] == pytest.approx([0.3, 0.3, 0.3, 0.1]) and all(t.maker for t in fills)
    assert [t.price for t in fills] == [99.0] * 4        # at its limit, whatever leg
    assert [e.status for e in ex.events if getattr(e, "exec_type", "") == "TRADE"] == \
        ["PARTIALLY_FILLED"] * 3 + ["FILLED"]


def test_price_time_order_shares_one_legs_volume_and_stops_still_trigger():
    ex = sim_at(100.0)
    ex.new_order(SYM, "BUY", "MARKET", quantity="2.000")
    first = ex.new_order(SYM, "SELL", "LIMIT", quantity="0.200", price="101.0", timeInForce="GTC",
                         reduceOnly=True, newClientOrderId="TP")
    later = ex.new_order(SYM, "SELL", "LIMIT", quantity="0.200", price="101.0", timeInForce="GTC",
                         reduceOnly=True, newClientOrderId="TP2")
    ex.set_leg_volume(SYM, 300)
    while ex.advance(SYM, 102.0):
        pass
    assert (first.executed_qty, later.executed_qty) == pytest.approx((0.2, 0.1))     # time priority
    ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice="99.0", closePosition=True, clientAlgoId="SL")
    ex.set_leg_volume(SYM, 0)                            # a leg with no volume for limits ...
    while ex.advance(SYM, 98.0):
        pass
    assert ex.position(SYM).qty == 0                     # ... the stop still closes everything


def test_a_market_close_sweeps_a_thin_book_in_several_trades():
    ex = sim_at(100.0)
    ex.new_order(SYM, "BUY", "MARKET", quantity="1.000")
    ex.set_leg_volume(SYM, 400)
    o = ex.new_order(SYM, "SELL", "MARKET", quantity="1.000", reduceOnly=True, newClientOrderId="CLOSE")
    fills = [t for t in ex.trades if t.client_id == "CLOSE"]
    assert [t.qty for t in fills] == pytest.approx([0.4, 0.4, 0.2])
    assert [t.price for t in fills] == [100.0, 99.9, 99.8] and o.status == "FILLED"
    assert ex.position(SYM).qty == 0


def test_backtest_volume_model_partial_fills_keep_the_ledger_and_the_default_is_untouched():
    cfg = load_config(ROOT / "config_btc.txt")
    candles = synthetic_klines(3000, 11, start_price=60_000.0, tick=0.1)
    full = run_backtest(cfg, candles, F)
    again = run_backtest(cfg, candles, F, fill_model=FULL)
    assert again.fills == full.fills                     # the default is SPEC §6's full fill
    part = run_backtest(cfg, candles, F, fill_model=FillModel.by_volume(0.02))
    per_order = Counter(f.client_id for f in part.fills)
    assert max(per_order.values()) > 1, "no order filled in parts: the test proves nothing"
    roles = {f.role for f in part.fills if per_order[f.client_id] > 1}
    assert roles & {"ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4"} and roles & {"TP", "BE"}, roles
    pos = 0.0
    for f in part.fills:                                 # one row per trade; the ledger adds up
        pos += f.qty if f.side == "BUY" else -f.qty
        assert f.position_after == pytest.approx(pos, abs=1e-9)
    wallet = part.capital + sum(f.realized_pnl - f.fee for f in part.fills)
    assert part.final_wallet == pytest.approx(wallet, abs=1e-6)
    assert float(np.min(part.equity_worst)) >= 0
