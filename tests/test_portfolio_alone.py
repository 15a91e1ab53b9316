"""A portfolio's stretches where the account provably cannot matter are played as single-
symbol runs play them (backtest._Solo: each symbol from event to event, no margin check,
no account-wide step).  They must give exactly what the minute-by-minute play gives: the
same fills, funding, liquidations and curves, bit for bit, on markets where the stretches
run long, end at a funding or a fill, and give way to margin refusals and liquidation."""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_funding_liquidation import falling  # noqa: E402  (the synthetic falling market)

from backtest import PortfolioLeg, PortfolioResult, _Portfolio, _Solo, run_portfolio  # noqa: E402
from config import GridConfig, load_config  # noqa: E402
from market.data import Candles, load_klines, synthetic_klines  # noqa: E402
from market.funding import constant_funding  # noqa: E402
from sim.exchange import DEFAULT_FILTERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
PAIR = [DATA_DIR / "binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv", DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"]
BASE = load_config(ROOT / "config_btc.txt")
FA = DEFAULT_FILTERS["BTCUSDC"]


def both_ways(legs: list[PortfolioLeg], wallet: float | None = None,
              monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[PortfolioResult, PortfolioResult]:
    """The portfolio minute by minute throughout, then with stretches played alone."""
    assert monkeypatch is not None
    out = []
    for alone in (False, True):
        monkeypatch.setattr(_Portfolio, "solo", alone)
        out.append(run_portfolio(legs, wallet))
    return out[0], out[1]


def assert_identical(a: PortfolioResult, b: PortfolioResult) -> None:
    for x, y in zip(a.symbols, b.symbols):
        assert [dataclasses.astuple(f) for f in x.fills] == [dataclasses.astuple(f) for f in y.fills]
        assert [dataclasses.astuple(f) for f in x.funding] == [dataclasses.astuple(f) for f in y.funding]
        assert np.array_equal(x.equity, y.equity) and np.array_equal(x.equity_worst, y.equity_worst)
        assert (x.final_qty, x.final_wallet) == (y.final_qty, y.final_wallet)
    assert [dataclasses.astuple(x) for x in a.liquidations] == [dataclasses.astuple(x) for x in b.liquidations]
    assert np.array_equal(a.equity, b.equity) and np.array_equal(a.equity_worst, b.equity_worst)
    assert a.final_equity == b.final_equity
    assert a.minutes_alone == 0 and a.stretches == 0


def correlated(k: int, days: float, seed: int, capital_ratio: float, mark: bool = False) -> list[PortfolioLeg]:
    """k symbols of one synthetic market (shared shocks and jumps), funding every 8 h, and
    (mark=True) a mark price a few ticks off the last price."""
    legs = []
    for i in range(k):
        c = synthetic_klines(int(days * 1440), seed=seed + i, market_seed=seed * 7, start_price=30_000.0 * (1 + 0.1 * i))
        m = None
        if mark:
            off = lambda x: np.round(x * 1.0003, 1)  # noqa: E731
            m = Candles.from_arrays(c.open_time, off(c.open), off(c.high), off(c.low), off(c.close), c.volume)
        legs.append(PortfolioLeg(BASE.with_overrides(capital_ratio=capital_ratio), c,
                                 dataclasses.replace(FA, symbol=f"S{i}USDC"),
                                 constant_funding(0.0001, int(c.open_time[0]), int(c.open_time[-1])), m))
    return legs


def falling_pair(cfg: GridConfig, n: int, step: float) -> list[PortfolioLeg]:
    """Two symbols on one market falling `step` a minute from 50,000 for n minutes, funding
    0.05 % every 8 h."""
    m = falling(n, 50_000.0, step)
    fs = constant_funding(0.0005, int(m.open_time[0]), int(m.open_time[-1]))
    return [PortfolioLeg(cfg, m, dataclasses.replace(FA, symbol=s), fs) for s in ("AUSDC", "BUSDC")]


@pytest.mark.skipif(not all(p.is_file() for p in PAIR), reason=f"the March 2023 BTC pair is absent from {DATA_DIR}")
def test_the_real_pair_where_margin_never_binds_is_played_alone_and_gives_the_same_results(monkeypatch):
    cfg = BASE.with_overrides(capital_ratio=0.05)
    legs = []
    for path, f in zip(PAIR, (FA, dataclasses.replace(FA, symbol="BTCUSD"))):
        c = load_klines([path])
        legs.append(PortfolioLeg(cfg, c, f, constant_funding(0.0001, int(c.open_time[0]), int(c.open_time[-1]))))
    by_minute, alone = both_ways(legs, monkeypatch=monkeypatch)
    assert_identical(by_minute, alone)
    played = sum(r.replayed_candles for r in alone.symbols)
    assert sum(len(r.fills) for r in alone.symbols) > 900
    assert alone.minutes_alone > 0.9 * len({f.time_ms // 60_000 for r in alone.symbols for f in r.fills})
    assert played > 0 and any(r.funding for r in alone.symbols)


@pytest.mark.parametrize("k,mark", [(3, False), (2, True)])
def test_a_correlated_market_of_several_symbols_with_funding_and_marks_gives_the_same_results(monkeypatch, k, mark):
    by_minute, alone = both_ways(correlated(k, 10, 11, 0.05, mark=mark), monkeypatch=monkeypatch)
    assert_identical(by_minute, alone)
    assert alone.minutes_alone > 100
    assert all(len(r.fills) > 50 and r.funding for r in alone.symbols)


@pytest.mark.parametrize("wide", [0.0, 0.3, 3.0])
def test_the_wide_range_of_the_allowance_check_changes_its_cost_not_the_results(monkeypatch, wide):
    """How wide a range the allowance's term is taken over (kept while the symbol's bands
    stay inside it) trades computing it again against fitting the allowance; any width
    gives the minute-by-minute results: 0 (the exact range, one ladder more), the default,
    and a range too wide to fit (the exact term after every event)."""
    monkeypatch.setattr(_Solo, "WIDE", wide)
    by_minute, alone = both_ways(correlated(3, 5, 23, 0.05), monkeypatch=monkeypatch)
    assert_identical(by_minute, alone)
    assert alone.minutes_alone > 50
    # two symbols falling together 58 % in a day: the stretch must end as the price leaves
    # the range its term was taken over (a term kept beyond it misses the liquidation)
    cfg = BASE.with_overrides(capital_ratio=0.1, leverage_long=20, sl_distance=0.5)
    by_minute, alone = both_ways(falling_pair(cfg, 1440, 20.0), monkeypatch=monkeypatch)
    assert_identical(by_minute, alone)
    assert alone.stretches >= 1 and len(alone.liquidations) == 2


def test_stretches_end_where_the_positions_grow_and_the_account_is_then_liquidated_as_before(monkeypatch):
    """Two symbols fall together at leverage 50: the first minutes are played alone, the
    growing ladders end the stretches, and the combined loss liquidates the account."""
    cfg = BASE.with_overrides(capital_ratio=0.1, leverage_long=50, sl_distance=0.30)
    by_minute, alone = both_ways(falling_pair(cfg, 720, 10.0), monkeypatch=monkeypatch)
    assert_identical(by_minute, alone)
    assert alone.stretches >= 1 and alone.minutes_alone >= 1
    assert len(alone.liquidations) == 2


def test_where_margin_binds_nothing_is_played_alone_and_the_refusals_are_the_same(monkeypatch):
    """Two capitals of 70 % each: the second symbol's ladder is refused (-2019) for the
    first's margin; no stretch can start, and the minute-by-minute play decides it."""
    cfg = BASE.with_overrides(sl_distance=0.30, capital_ratio=0.7, leverage_long=5)
    m = falling(400, 50_000.0, 10.0)
    legs = [PortfolioLeg(cfg, m, FA), PortfolioLeg(cfg, m, dataclasses.replace(FA, symbol="BTCUSD"))]
    by_minute, alone = both_ways(legs, wallet=2000.0, monkeypatch=monkeypatch)
    assert_identical(by_minute, alone)
    assert alone.minutes_alone == 0
    entries = [[f.role for f in r.fills if f.role.startswith("ENTRY")] for r in alone.symbols]
    assert entries[0] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4"] and "ENTRY4" not in entries[1]


def path_candles(prices: list[float], t0: int = 1_704_067_200_000) -> Candles:
    """One candle a minute from each price to the next (open, close; the range between)."""
    p = np.asarray(prices, float)
    o, c = p[:-1], p[1:]
    t = t0 + 60_000 * np.arange(len(o), dtype=np.int64)
    return Candles.from_arrays(t, np.round(o, 1), np.round(np.maximum(o, c), 1), np.round(np.minimum(o, c), 1),
                               np.round(c, 1), np.ones(len(o)))


def test_a_flat_symbol_passes_the_settlements_of_a_stretch_by_when_it_ends(monkeypatch):
    """A and B rise for a day and dip into two levels; F stays flat through every settlement
    of the stretch; C's stop ends the stretch with A and B holding.  F's passed settlements
    must not send the others back to their prices of hours before (where the account, judged
    there, would be liquidated: the minute-by-minute play never is)."""
    rise = list(100.0 * (3.0 ** (np.arange(1401) / 1400)))
    ab = path_candles([100.0] * 50 + rise + [300.0] * 100 + list(np.linspace(300.0, 293.0, 5)) + [293.0] * 300)
    n = len(ab)
    flat = path_candles([100.0] * (n + 1))
    crash = path_candles([100.0] * 1700 + list(np.linspace(100.0, 90.0, 50)) + [90.0] * (n - 1749))
    fs = constant_funding(0.0001, int(ab.open_time[0]), int(ab.open_time[-1]))
    grow = BASE.with_overrides(capital_ratio=0.1, leverage_long=20, entry_ratios=(0.4, 0.3, 0.2, 0.1))
    legs = [PortfolioLeg(grow, ab, dataclasses.replace(FA, symbol="AUSDC"), fs),
            PortfolioLeg(grow, ab, dataclasses.replace(FA, symbol="BUSDC"), fs),
            PortfolioLeg(BASE.with_overrides(capital_ratio=0.05), flat, dataclasses.replace(FA, symbol="FUSDC"), fs),
            PortfolioLeg(BASE.with_overrides(capital_ratio=0.03, leverage_long=50), crash,
                         dataclasses.replace(FA, symbol="CUSDC"), fs)]
    by_minute, alone = both_ways(legs, wallet=10_000.0, monkeypatch=monkeypatch)
    assert alone.minutes_alone > 0
    assert by_minute.liquidations == [] and alone.liquidations == []
    assert_identical(by_minute, alone)
    assert alone.symbols[0].final_qty > 0 and alone.symbols[2].fills == []


def test_the_volume_fill_model_is_played_minute_by_minute(monkeypatch):
    """A market stop may sweep a thin book beyond the candle's range: the bound's ranges do
    not hold there, so no stretch is played alone (and the results are the same)."""
    from sim.fill_model import FillModel
    legs = correlated(2, 3, 5, 0.05)
    out = []
    for solo in (False, True):
        monkeypatch.setattr(_Portfolio, "solo", solo)
        out.append(run_portfolio(legs, fill_model=FillModel.by_volume(0.1)))
    assert_identical(*out)
    assert out[1].minutes_alone == 0 and sum(len(r.fills) for r in out[1].symbols) > 20
