"""The optimizer's choice rule and figures (issue 21): the rule picks by in-sample PSR under
the drawdown cap, not the highest return; warnings when everything loses or nothing is
feasible; Sortino is defined when no day lost; no yearly ratio on a window under 30 days;
the ratio arithmetic agrees with empyrical-reloaded's."""
from __future__ import annotations

import math
import os
from pathlib import Path

import empyrical
import numpy as np
import optuna
import pytest

from research.scoring import MIN_ANNUAL_DAYS, Score, sortino_per_day
from research.selection import choose

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
MONTH = DATA_DIR / "binance-futures-um-NEARUSDT-1m-2024-09.csv"
DIST = {"x": optuna.distributions.FloatDistribution(0, 1)}


def trial(number: int, ret: float, dd: float, daily: list[float], *, liquidations: int = 0, cap: float = 30.0):
    s = Score(return_pct=ret, max_drawdown_pct=dd, return_over_dd=ret / dd, sharpe_day=0.0, sharpe_day_se=0.0,
              sortino_day=0.0, sharpe=math.nan, sharpe_se=math.nan, sortino=math.nan, calmar=math.nan,
              annual_return_pct=math.nan, annual_vol_pct=math.nan, round_trips=10, liquidations=liquidations,
              fills=40, days=len(daily), funding_paid=0.0, max_position_notional=1.0)
    t = optuna.trial.create_trial(values=[ret, dd], params={"x": number / 100}, distributions=DIST,
                                  user_attrs={"score": s.as_dict(), "daily": ",".join(map(str, daily))},
                                  constraints={"rules": 0.0, "liq": float(liquidations), "trips": -7.0,
                                               "cap": dd - cap})
    t.number = number
    return t


STEADY = [0.004, 0.005, 0.003, 0.004, 0.006, 0.004, 0.005, 0.003, 0.004, 0.005]     # +4.3 %, never a losing day
LUMPY = [0.20, -0.08, 0.15, -0.10, 0.12, -0.07, 0.09, -0.05, 0.02, -0.03]           # more return, wild


def test_the_rule_picks_the_steadiest_record_not_the_highest_return():
    trials = [trial(0, 4.3, 2.0, STEADY), trial(1, 24.0, 25.0, LUMPY), trial(2, 1.0, 1.0, [0.001, -0.001] * 5)]
    c = choose(trials, single=False, max_drawdown=30.0)
    assert [t.number for t in c.front] == [0, 1, 2]           # the whole front, in the rule's order
    assert c.chosen.number == 0 and c.psr[0] > c.psr[1] > c.psr[2]
    assert c.warnings == []


def test_the_cap_keeps_deep_drawdowns_out_and_says_so():
    trials = [trial(0, 4.3, 2.0, STEADY), trial(1, 60.0, 45.0, LUMPY)]
    c = choose(trials, single=False, max_drawdown=30.0)
    assert [t.number for t in c.front] == [0]
    assert any("over the 30 % cap (up to 45.0 %)" in w for w in c.warnings), c.warnings


def test_a_study_where_every_configuration_loses_is_warned():
    losing = [-0.01, 0.002, -0.004, -0.003, 0.001, -0.002, -0.001, 0.0, -0.002, -0.001]
    c = choose([trial(0, -2.0, 3.0, losing), trial(1, -5.0, 6.0, losing[::-1])], single=False, max_drawdown=30.0)
    assert c.chosen is not None
    assert any(w.startswith("every feasible configuration (2) lost money in-sample") for w in c.warnings), c.warnings


def test_nothing_feasible_chooses_nothing_and_says_why():
    c = choose([trial(0, 10.0, 40.0, LUMPY), trial(1, 5.0, 50.0, LUMPY)], single=False, max_drawdown=30.0)
    assert c.chosen is None and c.front == []
    assert c.warnings and "2 of 2 scored ones exceeded the 30 % drawdown cap" in c.warnings[0]


def test_sortino_is_defined_when_no_day_lost_and_ranks_the_steadiest_first():
    steady = np.array(STEADY)
    one_small_loss = np.array(STEADY[:-1] + [-0.0001])
    assert sortino_per_day(steady) == math.inf
    assert sortino_per_day(one_small_loss) < sortino_per_day(steady)
    assert sortino_per_day(np.zeros(10)) == 0.0                 # a run that never moved
    # With a losing day it is empyrical-reloaded's figure.
    lumpy = np.array(LUMPY)
    assert sortino_per_day(lumpy) == pytest.approx(float(empyrical.sortino_ratio(lumpy, annualization=1)))


@pytest.mark.skipif(not MONTH.is_file(), reason=f"real kline month {MONTH} is absent")
def test_yearly_ratios_only_from_30_days_and_they_agree_with_empyrical():
    import optimize
    from config import load_config
    from research.scoring import daily_returns, score
    plan = optimize.make_plan(optimize.build_parser().parse_args(
        ["--config", str(ROOT / "config_btc.txt"), "--space", str(ROOT / "optimize_space.txt"), "--data", str(MONTH),
         "--symbol", "NEARUSDT", "--tick-size", "0.001", "--step-size", "0.1", "--holdout", "0"]))
    base = load_config(ROOT / "config_btc.txt")
    month = plan.final.train
    assert (month.end - month.start) / 1440 >= MIN_ANNUAL_DAYS
    res = plan.objective.backtest(base, month)
    s, daily = score(res), daily_returns(res)
    assert len(daily) == 30 and s.yearly
    assert s.sharpe == pytest.approx(float(empyrical.sharpe_ratio(daily, annualization=365)))
    assert s.annual_return_pct == pytest.approx(float(empyrical.annual_return(daily, annualization=365)) * 100)
    assert math.isfinite(s.sharpe_se) and s.sharpe_se > 0 and math.isfinite(s.calmar)
    week = optimize.Window("week", 0, 7 * 1440)
    w = score(plan.objective.backtest(base, week))
    assert not w.yearly and all(math.isnan(x) for x in (w.sharpe, w.sharpe_se, w.sortino, w.calmar,
                                                        w.annual_return_pct, w.annual_vol_pct))
    assert math.isfinite(w.sharpe_day) and math.isfinite(w.sharpe_day_se) and math.isfinite(w.return_over_dd)
