"""What a backtest scored, for the optimizer: return and drawdown (as backtest.py's summary
computes them), the window's daily returns, Sharpe (with its standard error) and Sortino,
round trips, liquidations.  `score` reads one symbol's backtest, `score_account` an account
of several symbols on one wallet (backtest.run_portfolio, SPEC §7) with the same arithmetic.

Two kinds of figure, never mixed (issue 21):
- **the window's own**: return, max drawdown, return over drawdown, Sharpe and Sortino per
  day.  These rank the trials of one study (every trial has the same window) and are what
  the report shows for a window under `MIN_ANNUAL_DAYS` days;
- **yearly**: annualised Sharpe, Sortino, return, volatility and Calmar, only for windows
  of at least `MIN_ANNUAL_DAYS` days (NaN otherwise: a week's Sharpe × √365 is noise).

The ratio arithmetic is empyrical-reloaded's (ddof=1, Sortino against a 0 % daily target,
compounded annual return); the drawdown is the backtest's own (intraminute, at each
candle's worst price), which daily equity would understate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from backtest import BacktestResult, PortfolioResult, account_figures, summarize

DAY_MS = 86_400_000
MIN_ANNUAL_DAYS = 30            # no yearly-scaled ratio on a shorter window
DAYS_PER_YEAR = 365             # crypto trades every day
MIN_DRAWDOWN_PCT = 0.01         # return over drawdown's divisor floor (a run with no drawdown is not infinitely good)


@dataclass(frozen=True)
class Score:
    return_pct: float
    max_drawdown_pct: float
    return_over_dd: float       # the window's return % / max drawdown % (not scaled to a year)
    sharpe_day: float           # mean / std of daily returns (ddof=1); 0 when under 2 days or no spread
    sharpe_day_se: float        # its standard error (Mertens 2002); NaN under 3 days
    sortino_day: float          # mean / downside deviation (0 % target); +inf when no day lost and the mean is > 0
    sharpe: float               # yearly (× √365); NaN under MIN_ANNUAL_DAYS days
    sharpe_se: float
    sortino: float
    calmar: float               # compounded annual return / max drawdown
    annual_return_pct: float
    annual_vol_pct: float
    round_trips: int
    liquidations: int
    fills: int
    days: float
    funding_paid: float
    max_position_notional: float

    @property
    def yearly(self) -> bool:
        return self.days >= MIN_ANNUAL_DAYS

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Score:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})   # type: ignore[arg-type]


def score(res: BacktestResult) -> Score:
    s = summarize(res)
    return _score(float(s["return_pct"]), float(s["max_drawdown_pct"]), daily_returns(res), len(res.equity),
                  round_trips=res.round_trips, liquidations=len(res.liquidations), fills=len(res.fills),
                  funding_paid=float(s["funding_paid"]), max_position_notional=float(s["max_position_notional"]))


def score_account(res: PortfolioResult) -> Score:
    """The account's score: return and max drawdown of its equity against the wallet (as
    backtest.py --symbols's summary computes them), the daily returns of its equity, the
    symbols' round trips summed, one liquidation per moment the account was liquidated."""
    a = account_figures(res.equity, res.equity_worst, res.wallet, res.final_equity, [])
    fills = [f for r in res.symbols for f in r.fills]
    return _score(float(a["return_pct"]), float(a["max_drawdown_pct"]), account_daily_returns(res), len(res.equity),
                  round_trips=sum(r.round_trips for r in res.symbols),
                  liquidations=len({x.time for x in res.liquidations}), fills=len(fills),
                  funding_paid=sum(x.amount for r in res.symbols for x in r.funding),
                  # the largest one symbol held (the symbols' peaks need not coincide)
                  max_position_notional=max((abs(f.position_after) * f.price for f in fills), default=0.0))


def _score(ret: float, dd: float, daily: np.ndarray, minutes: int, *, round_trips: int, liquidations: int,
           fills: int, funding_paid: float, max_position_notional: float) -> Score:
    from research.overfitting import sharpe_estimate       # scipy: imported on first use
    days = max(minutes / 1440.0, 1 / 1440.0)
    est = sharpe_estimate(daily)
    yearly = days >= MIN_ANNUAL_DAYS
    annual_sr, annual_se = est.annualised(DAYS_PER_YEAR) if yearly else (math.nan, math.nan)
    annual_ret = _annual_return(daily) if yearly else math.nan
    return Score(
        return_pct=ret, max_drawdown_pct=dd, return_over_dd=ret / max(dd, MIN_DRAWDOWN_PCT),
        sharpe_day=est.sr, sharpe_day_se=est.se, sortino_day=sortino_per_day(daily),
        sharpe=annual_sr, sharpe_se=annual_se,
        sortino=sortino_per_day(daily) * math.sqrt(DAYS_PER_YEAR) if yearly else math.nan,
        calmar=annual_ret / max(dd, MIN_DRAWDOWN_PCT) if yearly else math.nan,
        annual_return_pct=annual_ret, annual_vol_pct=_annual_vol(daily) if yearly else math.nan,
        round_trips=round_trips, liquidations=liquidations, fills=fills, days=days,
        funding_paid=funding_paid, max_position_notional=max_position_notional)


def day_ends(open_time: np.ndarray) -> np.ndarray:
    """Index of the last candle closing by each whole 24 h mark counted from the first
    candle's open (a last part-day is left out, so every day spans the same time)."""
    t = np.asarray(open_time)
    if len(t) == 0:
        return np.zeros(0, np.int64)
    closes = t + 60_000                                     # each candle's close time
    n_days = int((closes[-1] - t[0]) // DAY_MS)
    marks = t[0] + DAY_MS * np.arange(1, n_days + 1)
    return np.searchsorted(closes, marks, side="right") - 1


def daily_returns(res: BacktestResult) -> np.ndarray:
    """The equity's return over each whole day of the window (the first against the capital)."""
    return _daily(res.candles.open_time, res.equity, res.capital)


def account_daily_returns(res: PortfolioResult) -> np.ndarray:
    """The account's equity's return over each whole day (the first against the wallet)."""
    return _daily(res.times, res.equity, res.wallet)


def _daily(open_time: np.ndarray, equity: np.ndarray, start: float) -> np.ndarray:
    eq = np.concatenate(([start], np.asarray(equity)[day_ends(open_time)]))
    prev = eq[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, np.diff(eq) / np.where(prev > 0, prev, 1.0), -1.0)


def sortino_per_day(daily: np.ndarray) -> float:
    """empyrical's Sortino (0 % target) per day.  With no losing day its downside deviation
    is 0: +inf when the mean is positive (the steadiest run ranks first, not last), 0 when
    the equity never moved."""
    import empyrical
    if len(daily) < 2:
        return 0.0
    if not (daily < 0).any():
        return math.inf if float(np.mean(daily)) > 0 else 0.0
    return float(empyrical.sortino_ratio(daily, required_return=0.0, annualization=1))


def _annual_return(daily: np.ndarray) -> float:
    import empyrical
    return float(empyrical.annual_return(daily, annualization=DAYS_PER_YEAR)) * 100


def _annual_vol(daily: np.ndarray) -> float:
    import empyrical
    return float(empyrical.annual_volatility(daily, annualization=DAYS_PER_YEAR)) * 100
