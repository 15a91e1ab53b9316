"""Integer ticks: a touch fills, exactly, at prices that are inexact in binary.

SPEC §6: a limit fills when the path touches it, a stop triggers when the
path reaches it.  Levels like 3.816 (3816 × 0.001 = 3.8160000000000003 as a
raw float product) must fill on a candle whose high is written "3.816" — the
engine compares integer ticks, so the binary noise of either side cannot
make a touch miss.  Every role, LONG and SHORT, through the backtest (numpy
scan + simulator), and every candle price of the real data files round-trips
exactly through the tick grid.
"""
from __future__ import annotations

import csv
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtest import run_backtest  # noqa: E402
from config import load_config  # noqa: E402
from exchange_api import SymbolFilters, apply_fill  # noqa: E402
from grid_strategy import GridMartingaleStrategy  # noqa: E402
from market.data import Candles, load_klines  # noqa: E402
from sim.exchange import SimulatedExchange, SimVenue  # noqa: E402
from test_backtest import DATA_FILES, NO_DATA, filters_for  # noqa: E402

F = SymbolFilters("DOTUSDT", 0.001, 0.1, 0.1, 5.0)
CFG = load_config(ROOT / "config_btc.txt")


def noisy(price: float) -> bool:
    """The raw product n × tick differs from the decimal's own float (the old engine's level)."""
    return F.to_ticks(price) * F.tick_size != float(F.fmt_price(price))


class Plan:
    """The prices the strategy will use for a grid centred at `center` (computed by the strategy)."""

    def __init__(self, direction: str, center: float):
        self.cfg = CFG.with_overrides(trade_direction=direction)
        sim = SimulatedExchange([F], balance=self.cfg.initial_capital)
        st = GridMartingaleStrategy(self.cfg, SimVenue(sim, F.symbol), capital=self.cfg.initial_capital)
        st.state.grid_center = center
        self.s = st.s
        self.center = center
        self.levels = [st.level_price(center, k) for k in range(1, 5)]
        self.qtys = [st.level_qty(p, k) for k, p in enumerate(self.levels, 1)]
        s, f = self.s, F
        self.tp = f.price_toward_profit(self.levels[0] * (1 + s * self.cfg.tp_pct), s)
        _, avg, _ = apply_fill(self.qtys[0] * s, self.levels[0], self.qtys[1] * s, self.levels[1])
        self.be = f.price_toward_profit(avg * (1 + s * self.cfg.be_pct), s)
        self.sl = st.stop_price()

    def back(self, price: float, ticks: int) -> float:
        """`ticks` ticks from `price` toward the centre."""
        return F.from_ticks(F.to_ticks(price) + self.s * ticks)


def as_written(x: float) -> float:
    """The float a CSV line carries for this price: its decimal string, parsed."""
    return float(F.fmt_price(x))


def candles(rows: list[tuple[float, float, float, float]]) -> Candles:
    """(open, adverse extreme, favourable extreme, close) rows → candles; the first row is the centre."""
    o, h, l, c = [], [], [], []
    for opn, adverse, favourable, close in rows:
        hi, lo = max(adverse, favourable, opn, close), min(adverse, favourable, opn, close)
        o.append(as_written(opn)), h.append(as_written(hi)), l.append(as_written(lo)), c.append(as_written(close))
    n = len(rows)
    t = 1_730_678_400_000 + 60_000 * np.arange(n, dtype=np.int64)
    return Candles.from_arrays(t, np.array(o), np.array(h), np.array(l), np.array(c), np.ones(n))


def run(plan: Plan, rows: list[tuple[float, float, float, float]]):
    return run_backtest(plan.cfg, candles([(plan.center,) * 4] + rows), F)


def roles(res) -> list[tuple[str, str]]:
    return [(f.role, F.fmt_price(f.price)) for f in res.fills]


CENTERS = {"LONG": [6.350 + 0.001 * k for k in range(0, 40)], "SHORT": [3.797 + 0.001 * k for k in range(0, 40)]}


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_entry_and_tp_fill_on_an_exact_touch(direction):
    noisy_seen = 0
    for center in CENTERS[direction]:
        p = Plan(direction, round(center, 3))
        l1, tp = p.levels[0], p.tp
        noisy_seen += noisy(l1) + noisy(tp)
        res = run(p, [(p.center, l1, p.center, p.back(l1, 2)),        # touches level 1 exactly
                      (p.back(l1, 2), p.back(l1, 2), tp, p.back(tp, 1))])  # touches the TP exactly
        assert roles(res)[:2] == [("ENTRY1", F.fmt_price(l1)), ("TP", F.fmt_price(tp))], (center, roles(res))
        # One tick short of the level: nothing fills.
        short = run(p, [(p.center, p.back(l1, 1), p.center, p.back(l1, 2))])
        assert short.fills == [], (center, roles(short))
    assert noisy_seen >= 10, "the centres must put levels on prices whose raw n × tick float is noisy"


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_be_fills_on_an_exact_touch(direction):
    noisy_seen = 0
    for center in CENTERS[direction][:20]:
        p = Plan(direction, round(center, 3))
        l1, l2, be = p.levels[0], p.levels[1], p.be
        noisy_seen += noisy(l2) + noisy(be)
        res = run(p, [(p.center, l2, p.center, p.back(l2, 1)),         # level 1, then level 2 exactly
                      (p.back(l2, 1), p.back(l2, 1), be, p.back(be, 1))])  # touches the BE exactly
        assert roles(res)[:3] == [("ENTRY1", F.fmt_price(l1)), ("ENTRY2", F.fmt_price(l2)),
                                  ("BE", F.fmt_price(be))], (center, roles(res))
    assert noisy_seen >= 3


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_stop_triggers_on_an_exact_touch(direction):
    noisy_seen = 0
    for center in CENTERS[direction]:
        p = Plan(direction, round(center, 3))
        noisy_seen += noisy(p.sl)
        res = run(p, [(p.center, p.sl, p.center, p.back(p.sl, 1))])
        got = roles(res)
        assert [r for r, _ in got[:5]] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4", "SL"], (center, got)
        assert got[4][1] == F.fmt_price(p.sl), (center, got)      # a stop fills at its trigger
        assert res.final_qty == 0
        # One tick short of the trigger: all four levels, no stop.
        short = run(p, [(p.center, p.back(p.sl, 1), p.center, p.back(p.sl, 2))])
        assert [r for r, _ in roles(short)] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4"], (center, roles(short))
    assert noisy_seen >= 2


def test_filters_round_and_format_from_integers():
    assert F.price_up(3.8155) == 3.816 and F.from_ticks(3816) == 3.816 and F.fmt_ticks(3816) == "3.816"
    assert 3816 * 0.001 != 3.816              # what the engine no longer produces
    assert F.ticks_of_decimal("3.816") == 3816 and F.ticks_of_decimal("3.8165") is None
    btc = SymbolFilters("BTCUSDC", 0.1, 0.001, 0.001, 5.0)
    for t in range(999_000, 1_001_000):       # every BTC price from 99,900.0 to 100,099.9
        x = btc.from_ticks(t)
        assert btc.to_ticks(x) == t and float(btc.fmt_ticks(t)) == x and btc.fmt_price(x) == btc.fmt_ticks(t)
    assert btc.fmt_steps(btc.to_steps(0.1 + 0.2)) == "0.300" and btc.qty_round(0.1 + 0.2) == 0.3


@pytest.mark.parametrize("path", DATA_FILES or [None], ids=lambda p: p.name if p else "no-data")
def test_every_real_candle_price_round_trips(path):
    if path is None:
        pytest.skip(NO_DATA)
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and r[0][:1].isdigit()]
    texts = [r[k] for r in rows for k in (1, 2, 3, 4)]
    decimals = max(len(t.split(".", 1)[1]) if "." in t else 0 for t in texts)
    exact = SymbolFilters("X", 10.0 ** -decimals, 1.0, 1.0, 0.0)    # the file's own resolution
    real = filters_for(path)                                        # the symbol's tick size
    c = load_klines([path])
    loaded = np.column_stack([c.open, c.high, c.low, c.close]).ravel().tolist()
    assert len(loaded) == len(texts)
    for text, x in zip(texts, loaded):
        t = exact.to_ticks(x)
        assert Decimal(exact.fmt_ticks(t)) == Decimal(text) and exact.from_ticks(t) == x == float(text), text
        assert real.ticks_of_decimal(text) is not None, f"{path.name}: {text} is off the {real.tick_size} tick"
        assert Decimal(real.fmt_ticks(real.to_ticks(x))) == Decimal(text), text
