"""What a backtest scored, for the optimizer: return, drawdown (as backtest.py's summary
computes them), Calmar, Sharpe and Sortino on daily equity, round trips, liquidations."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from backtest import BacktestResult, summarize

DAY_MS = 86_400_000
MIN_DRAWDOWN_PCT = 0.01         # Calmar's divisor floor: a run with no drawdown is not infinitely good


@dataclass(frozen=True)
class Score:
    return_pct: float
    max_drawdown_pct: float
    calmar: float
    sharpe: float
    sortino: float
    round_trips: int
    liquidations: int
    fills: int
    days: float
    funding_paid: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(res: BacktestResult) -> Score:
    s = summarize(res)
    days = max(len(res.equity) / 1440.0, 1 / 1440.0)
    daily = daily_returns(res)
    # Calmar: the return per year (scaled linearly: compounding a month to a year gives
    # absurd figures) over the max drawdown.
    annual = float(s["return_pct"]) * 365.0 / days
    dd = float(s["max_drawdown_pct"])
    return Score(
        return_pct=float(s["return_pct"]), max_drawdown_pct=dd,
        calmar=annual / max(dd, MIN_DRAWDOWN_PCT),
        sharpe=_ratio(daily, np.std(daily)), sortino=_ratio(daily, math.sqrt(float(np.mean(np.minimum(daily, 0) ** 2)))
                                                            if len(daily) else 0.0),
        round_trips=res.round_trips, liquidations=len(res.liquidations), fills=len(res.fills), days=days,
        funding_paid=float(s["funding_paid"]))


def daily_returns(res: BacktestResult) -> np.ndarray:
    """Returns of the equity at each UTC day's last candle (the first day against the capital)."""
    t = np.asarray(res.candles.open_time)
    if len(t) == 0:
        return np.zeros(0)
    day = t // DAY_MS
    last_of_day = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    eq = np.concatenate(([res.capital], np.asarray(res.equity)[last_of_day]))
    prev = eq[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, np.diff(eq) / np.where(prev > 0, prev, 1.0), -1.0)
    return r


def _ratio(daily: np.ndarray, spread: float) -> float:
    """Annualised mean daily return over a spread (0 when the spread is 0 or there is no day)."""
    if len(daily) < 2 or not spread or not math.isfinite(spread):
        return 0.0
    return float(np.mean(daily)) / spread * math.sqrt(365.0)
