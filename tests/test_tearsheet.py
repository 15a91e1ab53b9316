"""Tests for research/tearsheet.py: the series behind the panels (position path, distance to
liquidation, exposure, the joined walk-forward curve) checked against the fills and the
bracket formula, and the PNGs checked as PNGs with the expected axes (images are not compared).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtest import BacktestResult, run_backtest, summarize  # noqa: E402
from config import load_config  # noqa: E402
from exchange_api import SymbolFilters  # noqa: E402
from grid_strategy import FillRecord  # noqa: E402
from market.brackets import SHIPPED, liquidation_price  # noqa: E402
from market.data import Candles, load_klines, synthetic_klines  # noqa: E402
from research.tearsheet import (Segment, exposure, joined_equity, liquidation_distance, position_path,  # noqa: E402
                                tearsheet_figure, walk_forward_figure, write_tearsheet, write_walk_forward_png)

BTC = SymbolFilters("BTCUSDC", 0.1, 0.001, 0.001, 5.0)
CFG = load_config(ROOT / "config_btc.txt")
T0 = 1_704_067_200_000          # 2024-01-01T00:00:00Z
M = 60_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
BTC_MONTH = DATA_DIR / "binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv"


def candles(rows: list[tuple[float, float, float, float]]) -> Candles:
    a = np.asarray(rows, dtype=np.float64)
    n = len(rows)
    return Candles.from_arrays(T0 + M * np.arange(n, dtype=np.int64), a[:, 0], a[:, 1], a[:, 2], a[:, 3],
                               np.full(n, 1e6))


def fill(t: int, price: float, qty: float, after: float, avg: float) -> FillRecord:
    side = "BUY" if qty > 0 else "SELL"
    return FillRecord(t, "BTCUSDC", side, "ENTRY1", price, abs(qty), 0.0, 0.0, after, avg, "c", 1, 1)


def ladder_run(direction: str) -> BacktestResult:
    """Flat, one candle through the whole ladder (4 entries), flat with the position open,
    a bounce through BE and TP, flat again.  Maker fees make the wallet differ from the capital."""
    s = 1 if direction == "LONG" else -1
    c0, low = 50_000.0, 50_000.0 * (1 - s * 0.045)
    back = low * (1 + s * 0.02)
    rows = [(c0, c0, c0, c0)] * 2 + [(c0, max(c0, low), min(c0, low), low)] + [(low, low, low, low)] * 3
    rows += [(low, max(low, back), min(low, back), back)] + [(back, back, back, back)] * 2
    cfg = CFG.with_overrides(trade_direction=direction, leverage_long=20, leverage_short=20)
    return run_backtest(cfg, candles(rows), BTC, maker_fee=0.0002)


@pytest.fixture(scope="module")
def ten_days() -> BacktestResult:
    return run_backtest(CFG, synthetic_klines(10 * 1440, 3, start_price=50_000.0), BTC)


# ---------------------------------------------------------------- position path


def test_position_path_is_the_last_fill_stamped_at_or_before_each_close():
    c = candles([(50_000.0,) * 4] * 5)
    fills = [fill(T0 + 30_000, 50_000.0, 0.010, 0.010, 50_000.0),            # candle 0
             fill(T0 + M + 10_000, 49_500.0, 0.020, 0.030, 49_666.0),         # candle 1 ...
             fill(T0 + M + 40_000, 49_900.0, -0.030, 0.0, 0.0),               # ... closed in the same candle
             fill(T0 + 3 * M - 1, 49_000.0, 0.005, 0.005, 49_000.0),          # candle 2's close time exactly
             fill(T0 + 3 * M, 48_000.0, 0.010, 0.015, 48_333.0)]              # candle 3's open: not candle 2's
    res = dataclasses.replace(ladder_run("LONG"), candles=c, fills=fills, equity=np.full(5, 1000.0))
    p = position_path(res)
    assert p.qty.tolist() == [0.010, 0.0, 0.005, 0.015, 0.015]
    assert p.avg.tolist() == [50_000.0, 0.0, 49_000.0, 48_333.0, 48_333.0]
    flat = position_path(dataclasses.replace(res, fills=[]))
    assert flat.qty.tolist() == [0.0] * 5 and flat.avg.tolist() == [0.0] * 5


def test_position_path_values_the_engines_equity_at_every_close(ten_days):
    """equity = capital + Σ(realized − fee) of the fills so far + qty × (close − avg): the path
    from the fills is the position the engine valued at each close."""
    res = ten_days
    p = position_path(res)
    t = np.array([f.time_ms for f in res.fills])
    cash = np.cumsum([f.realized_pnl - f.fee for f in res.fills])
    k = np.searchsorted(t, res.candles.open_time + M - 1, side="right") - 1
    wallet = res.capital + np.where(k >= 0, cash[np.maximum(k, 0)], 0.0)
    assert len(res.fills) > 50 and not res.liquidations
    np.testing.assert_allclose(wallet + p.qty * (res.candles.close - p.avg), res.equity, rtol=0, atol=1e-6)
    assert p.qty[-1] == res.final_qty


# ---------------------------------------------------------------- distance to liquidation


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_liquidation_distance_is_the_bracket_formula_while_open_and_nan_while_flat(direction):
    res = ladder_run(direction)
    d = liquidation_distance(res)
    opened = [f for f in res.fills if f.role.startswith("ENTRY")]
    assert len(opened) == 4 and {f.time_ms // M for f in opened} == {T0 // M + 2}
    last = opened[-1]
    q, entry = last.position_after, last.avg_price_after
    wallet = res.capital - sum(f.fee for f in opened)
    assert wallet < res.capital
    # Hand check, candle 3 (the whole ladder open, flat candle): Binance's cross formula, first tier
    # (mmr 0.4 %, cum 0); the notional at that price is inside the tier.
    close = res.candles.close[3]
    lp = (wallet - q * entry) / (abs(q) * 0.004 - q)
    assert abs(q) * lp < 50_000
    assert lp == pytest.approx(liquidation_price(SHIPPED["BTCUSDC"], q, entry, wallet), rel=1e-12)
    want = (close - lp) / close if q > 0 else (lp - close) / close
    assert 0 < want < 0.1
    assert d[3] == pytest.approx(want, rel=1e-9)
    assert np.all(d[2:6] == d[3])                                       # nothing moved while it sat
    assert np.isnan(d[:2]).all() and np.isnan(d[6:]).all()              # flat before and after the TP
    assert np.isnan(liquidation_distance(dataclasses.replace(res, brackets=None))).all()


def test_a_long_the_wallet_covers_has_no_liquidation_distance():
    res = ladder_run("LONG")
    rich = dataclasses.replace(res, equity=res.equity + 1_000_000.0)     # the same position, a huge wallet
    assert np.isnan(liquidation_distance(rich)).all()


# ---------------------------------------------------------------- exposure


def test_exposure_is_the_position_at_each_close_and_its_peak_is_the_peak_fill_within_that_candle(ten_days):
    res = ten_days
    x = exposure(res)
    s = summarize(res)
    c = res.candles
    j_of = {id(f): int(np.searchsorted(c.open_time, f.time_ms, side="right")) - 1 for f in res.fills}
    last_of_candle = {j_of[id(f)]: f for f in res.fills}                 # the last fill of each fill candle
    # Exactly: at a fill candle, the last fill's position valued at the close.
    for j, f in last_of_candle.items():
        assert x[j] * res.capital == pytest.approx(abs(f.position_after) * c.close[j], rel=1e-12)
    # summarize values each fill's position at the fill price instead, which lies in its candle.
    peak = max(res.fills, key=lambda f: abs(f.position_after) * f.price)
    j = j_of[id(peak)]
    assert s["max_position_notional"] == pytest.approx(abs(peak.position_after) * peak.price, abs=1e-8)
    assert c.low[j] <= peak.price <= c.high[j]
    assert last_of_candle[j] is peak            # in this run the peak fill ends its candle, so:
    q = abs(peak.position_after)
    assert q * c.low[j] <= x[j] * res.capital <= q * c.high[j]
    assert x.max() >= x[j] and abs(x[j] * res.capital - s["max_position_notional"]) <= q * (c.high[j] - c.low[j])


def test_exposure_peak_equals_summarize_when_the_peak_fill_candle_closes_at_the_fill_price():
    res = ladder_run("LONG")
    assert res.candles.close[2] == res.fills[3].price                     # ENTRY4 at the candle's close
    assert exposure(res).max() == pytest.approx(summarize(res)["max_position_notional"] / res.capital, rel=1e-12)


# ---------------------------------------------------------------- walk-forward


def seg(name: str, t: list[int], eq: list[float], cap: float) -> Segment:
    return Segment(name, np.asarray(t, np.int64), np.asarray(eq, np.float64), cap)


def test_joined_equity_compounds_in_time_order_and_refuses_overlaps():
    a = seg("fold 1 test", [T0, T0 + M, T0 + 2 * M], [100.0, 104.0, 110.0], 100.0)     # +10 %
    b = seg("holdout", [T0 + 3 * M, T0 + 4 * M], [2_000.0, 1_800.0], 2_000.0)       # −10 %, other capital
    t, g = joined_equity([b, a])
    assert t.tolist() == [T0 + k * M for k in range(5)]
    assert g == pytest.approx([1.0, 1.04, 1.10, 1.10, 0.99])
    assert math.isclose(g[-1], 0.99)
    with pytest.raises(ValueError, match="overlap"):
        joined_equity([a, seg("late", [T0 + 2 * M, T0 + 3 * M], [1.0, 1.0], 1.0)])   # shares a minute
    with pytest.raises(ValueError, match="capital"):
        joined_equity([seg("bad", [T0], [1.0], 0.0)])


def test_walk_forward_png_names_each_segment(tmp_path):
    a = seg("fold 1 test", [T0, T0 + M], [100.0, 110.0], 100.0)
    b = seg("holdout", [T0 + 2 * M, T0 + 3 * M], [100.0, 90.0], 100.0)
    bench = [seg("fold 1 test", [T0, T0 + M], [1.0, 1.02], 1.0), seg("holdout", [T0 + 2 * M, T0 + 3 * M], [1.0, 1.01], 1.0)]
    fig = walk_forward_figure([a, b], "wf", benchmark=bench)
    [ax] = fig.axes
    assert {"fold 1 test", "holdout"} <= {t.get_text().strip() for t in ax.texts}
    assert ax.lines[0].get_ydata()[-1] == pytest.approx(0.99) and ax.lines[1].get_ydata()[-1] == pytest.approx(1.0302)
    out = write_walk_forward_png([a, b], tmp_path / "wf.png", "wf", benchmark=bench)
    assert out.read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------- tearsheet


def test_tearsheet_is_a_png_of_five_panels_with_daily_returns_under_two_months(tmp_path, ten_days):
    fig = tearsheet_figure(ten_days, "BTCUSDC LONG", "chosen by the optimizer")
    assert len(fig.axes) == 5
    assert "daily" in fig.axes[2].get_title() and "minimum" in fig.axes[3].get_title()
    assert any(t.get_text().startswith("peak") for t in fig.axes[4].texts)
    out = write_tearsheet(ten_days, tmp_path / "t.png", "BTCUSDC LONG", "chosen by the optimizer")
    assert out == tmp_path / "t.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000


def test_tearsheet_says_when_no_price_liquidates_and_uses_months_over_two():
    res = run_backtest(CFG, synthetic_klines(75 * 1440, 4, start_price=50_000.0), BTC)
    fig = tearsheet_figure(dataclasses.replace(res, brackets=None), "no brackets")
    assert len(fig.axes) == 5
    assert "monthly" in fig.axes[2].get_title()
    assert len(fig.axes[2].patches) == 3             # 75 days from mid-November: Nov, Dec, Jan
    assert [t.get_text() for t in fig.axes[3].texts] == ["no liquidation price (wallet covers the position)"]


@pytest.mark.skipif(not BTC_MONTH.is_file(), reason=f"real kline file {BTC_MONTH} is absent")
def test_tearsheet_of_a_real_month(tmp_path):
    filters = SymbolFilters("BTCUSDC", 0.01, 0.001, 0.001, 5.0)
    res = run_backtest(CFG, load_klines([BTC_MONTH]), filters)
    p = position_path(res)
    assert p.qty[-1] == res.final_qty and p.avg[-1] == res.final_avg
    out = write_tearsheet(res, tmp_path / "real.png", "real month")
    assert out.read_bytes()[:8] == PNG_MAGIC
