"""Statistics that keep an optimizer report honest after hundreds of trials.

Formulas and their sources:

- Sharpe ratio standard error for non-normal i.i.d. returns,
  sqrt((1 - skew*SR + (kurtosis - 1)/4 * SR^2) / (n - 1)):
  E. Mertens (2002), "Comments on variance of the IID estimator in Lo (2002)", working
  paper, University of Basel; J. D. Opdyke (2007), "Comparing Sharpe ratios: so where are
  the p-values?", Journal of Asset Management 8(5), 308-336. For normal returns it reduces
  to A. W. Lo (2002), "The Statistics of Sharpe Ratios", Financial Analysts Journal 58(4),
  36-52: sqrt((1 + SR^2/2) / (n - 1)).
- Probabilistic Sharpe ratio (PSR) and minimum track record length (MinTRL):
  D. H. Bailey & M. López de Prado (2012), "The Sharpe Ratio Efficient Frontier",
  Journal of Risk 15(2), 3-44.
- Expected maximum Sharpe ratio of N unskilled trials (the Euler-Mascheroni approximation):
  D. H. Bailey, J. M. Borwein, M. López de Prado & Q. J. Zhu (2014), "Pseudo-Mathematics
  and Financial Charlatanism: The Effects of Backtest Overfitting on Out-of-Sample
  Performance", Notices of the AMS 61(5), 458-471; used as the benchmark of the
  deflated Sharpe ratio (DSR) in D. H. Bailey & M. López de Prado (2014), "The Deflated
  Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality",
  Journal of Portfolio Management 40(5), 94-107.
- Probability of backtest overfitting (PBO) by combinatorially symmetric cross-validation
  (CSCV): D. H. Bailey, J. M. Borwein, M. López de Prado & Q. J. Zhu (2017), "The
  Probability of Backtest Overfitting", Journal of Computational Finance 20(4), 39-69.
- Rank correlation: C. Spearman (1904), "The proof and measurement of association between
  two things", American Journal of Psychology 15(1), 72-101.

All Sharpe ratios here are per period (not annualised): annualise only for display.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Sequence

import numpy as np
from scipy.stats import kurtosis as scipy_kurtosis
from scipy.stats import norm, rankdata, spearmanr
from scipy.stats import skew as scipy_skew

NORMAL_SKEW = 0.0
NORMAL_KURTOSIS = 3.0


def _moment_term(sr: float, skew: float, kurtosis: float) -> float:
    """1 - skew*SR + (kurtosis - 1)/4 * SR^2: the variance of SR times (n - 1)."""
    return 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr


@dataclass(frozen=True)
class SharpeEstimate:
    sr: float          # per period, mean / std (ddof=1); 0.0 when n < 2 or std == 0
    se: float          # Mertens/Opdyke standard error; nan when n < 3
    n: int
    skew: float        # biased sample skewness (scipy default)
    kurtosis: float    # non-excess (normal = 3)

    @classmethod
    def from_moments(cls, sr: float, n: int, skew: float = NORMAL_SKEW,
                     kurtosis: float = NORMAL_KURTOSIS) -> SharpeEstimate:
        """An estimate from summary statistics (e.g. a paper's worked example)."""
        term = _moment_term(sr, skew, kurtosis)
        se = math.sqrt(term / (n - 1)) if n >= 3 and term >= 0 else math.nan
        return cls(sr=sr, se=se, n=n, skew=skew, kurtosis=kurtosis)

    def annualised(self, periods_per_year: float) -> tuple[float, float]:
        scale = math.sqrt(periods_per_year)
        return self.sr * scale, self.se * scale


def sharpe_estimate(returns: Sequence[float] | np.ndarray) -> SharpeEstimate:
    """Per-period Sharpe ratio of `returns` with its standard error and moments.

    A constant series (std 0) or one of fewer than 2 values has no defined skewness or
    kurtosis; they are reported as the normal's 0 and 3, which with SR = 0 leaves the
    standard error at Lo's sqrt(1 / (n - 1))."""
    values = np.asarray(returns, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {values.shape}")
    n = int(values.size)
    std = float(values.std(ddof=1)) if n >= 2 else 0.0
    if n < 2 or std == 0.0:
        return SharpeEstimate.from_moments(0.0, n)
    sr = float(values.mean()) / std
    skew = float(scipy_skew(values))
    kurt = float(scipy_kurtosis(values, fisher=False))
    return SharpeEstimate.from_moments(sr, n, skew, kurt)


def probabilistic_sharpe_ratio(est: SharpeEstimate, benchmark_sr: float = 0.0) -> float:
    """P(true SR > benchmark_sr) given the estimate (Bailey & López de Prado 2012); nan if n < 3."""
    term = _moment_term(est.sr, est.skew, est.kurtosis)
    if est.n < 3 or not term > 0:
        return math.nan
    z = (est.sr - benchmark_sr) * math.sqrt(est.n - 1) / math.sqrt(term)
    return float(norm.cdf(z))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """E[max of n_trials Sharpe ratios] when none has skill and their variance is
    sharpe_variance: sqrt(V) * ((1-γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))."""
    if n_trials <= 1:
        return 0.0
    if sharpe_variance < 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {sharpe_variance}")
    gamma = np.euler_gamma
    z = (1 - gamma) * norm.ppf(1 - 1 / n_trials) + gamma * norm.ppf(1 - 1 / (n_trials * math.e))
    return math.sqrt(sharpe_variance) * float(z)


@dataclass(frozen=True)
class DeflatedSharpe:
    dsr: float              # P(best trial's true SR > sr0)
    sr0: float              # expected max SR of n_trials unskilled trials (per period)
    n_trials: int
    sharpe_variance: float  # variance (ddof=1) of the trials' per-period Sharpe ratios


def deflated_sharpe_ratio(best: SharpeEstimate, trial_sharpes: Sequence[float],
                          n_trials: int | None = None) -> DeflatedSharpe:
    """The PSR of the best trial against the maximum Sharpe ratio luck alone would give
    (Bailey & López de Prado 2014). Non-finite trial Sharpe ratios (failed trials) are
    left out of the variance; fewer than 2 finite ones leave it nan."""
    sharpes = np.asarray(trial_sharpes, dtype=float)
    sharpes = sharpes[np.isfinite(sharpes)]
    trials = len(sharpes) if n_trials is None else n_trials
    if trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {trials}")
    variance = float(sharpes.var(ddof=1)) if sharpes.size >= 2 else math.nan
    sr0 = 0.0 if trials <= 1 else (math.nan if math.isnan(variance) else expected_max_sharpe(trials, variance))
    dsr = math.nan if math.isnan(sr0) else probabilistic_sharpe_ratio(best, sr0)
    return DeflatedSharpe(dsr=dsr, sr0=sr0, n_trials=trials, sharpe_variance=variance)


def min_track_record_length(est: SharpeEstimate, benchmark_sr: float = 0.0,
                            confidence: float = 0.95) -> float:
    """Periods of track record needed for PSR(benchmark_sr) to reach `confidence`, if the
    returns keep their moments (Bailey & López de Prado 2012); inf when sr <= benchmark."""
    if not est.sr > benchmark_sr:
        return math.inf if est.sr <= benchmark_sr else math.nan
    z = float(norm.ppf(confidence))
    return 1.0 + _moment_term(est.sr, est.skew, est.kurtosis) * (z / (est.sr - benchmark_sr)) ** 2


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields has no truth value
class Overfitting:
    pbo: float            # share of logits <= 0
    logits: np.ndarray    # λ = ln(ω / (1 - ω)), one per combination
    combinations: int
    blocks: int
    degradation: float    # least-squares slope of OOS on IS metric of the chosen; nan if undefined


def per_period_sharpes(block: np.ndarray) -> np.ndarray:
    """Sharpe ratio (ddof=1) of every column; 0 where std is 0 or there is under 2 rows."""
    if block.shape[0] < 2:
        return np.zeros(block.shape[1])
    std = block.std(axis=0, ddof=1)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, block.mean(axis=0) / safe, 0.0)


def _check_cscv_input(matrix: np.ndarray, blocks: int) -> None:
    if matrix.ndim != 2:
        raise ValueError(f"returns must be a T x N matrix, got shape {matrix.shape}")
    periods, configs = matrix.shape
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be an even number >= 2, got {blocks}")
    if periods < blocks:
        raise ValueError(f"need at least {blocks} periods for {blocks} blocks, got {periods}")
    if configs < 2:
        raise ValueError(f"need at least 2 configurations to compare, got {configs}")


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or float(np.ptp(x)) == 0.0:
        return math.nan
    dx = x - x.mean()
    return float(np.dot(dx, y - y.mean()) / np.dot(dx, dx))


def pbo_cscv(returns: np.ndarray, blocks: int = 8,
             metric: Callable[[np.ndarray], np.ndarray] | None = None) -> Overfitting:
    """Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2017).

    `returns` is T x N (T periods, N configurations). The first T mod `blocks` rows are
    dropped so that the rest splits into `blocks` equal contiguous blocks. For every choice
    of blocks/2 blocks as the training set (the rest is the test set), the configuration
    with the best training metric (first one on ties) is ranked among the test metrics
    (1 = worst, N = best, ties averaged); ω = rank / (N + 1) and λ = ln(ω / (1 - ω)).
    PBO is the share of λ <= 0: how often the in-sample winner is at or below the
    out-of-sample median. `metric` maps a rows x N block to N scores (default: per-period
    Sharpe ratio); a NaN score counts as the worst."""
    matrix = np.asarray(returns, dtype=float)
    _check_cscv_input(matrix, blocks)
    configs = matrix.shape[1]
    measure = metric if metric is not None else per_period_sharpes
    parts = np.split(matrix[matrix.shape[0] % blocks:], blocks)

    def score(chosen: Sequence[int]) -> np.ndarray:
        values = np.asarray(measure(np.concatenate([parts[i] for i in chosen])), dtype=float)
        return np.where(np.isnan(values), -np.inf, values)

    logits, in_sample, out_of_sample = [], [], []
    for train in combinations(range(blocks), blocks // 2):
        test = [b for b in range(blocks) if b not in train]
        train_scores, test_scores = score(train), score(test)
        best = int(np.argmax(train_scores))
        omega = float(rankdata(test_scores)[best]) / (configs + 1)
        logits.append(math.log(omega / (1.0 - omega)))
        in_sample.append(train_scores[best])
        out_of_sample.append(test_scores[best])
    lambdas = np.array(logits)
    return Overfitting(pbo=float(np.mean(lambdas <= 0)), logits=lambdas, combinations=len(logits),
                       blocks=blocks, degradation=_slope(np.array(in_sample), np.array(out_of_sample)))


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ over the pairs where both values are finite; nan when fewer than 3
    such pairs or either side is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"rank_correlation needs two equal-length sequences, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or float(np.ptp(x)) == 0.0 or float(np.ptp(y)) == 0.0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def percentile_of(value: float, population: Sequence[float]) -> float:
    """Mid-rank percentile (0..100) of `value` in the finite part of `population`: the
    share strictly below plus half the share equal; nan for an empty population or nan value."""
    values = np.asarray(population, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0 or math.isnan(value):
        return math.nan
    below = np.count_nonzero(values < value)
    ties = np.count_nonzero(values == value)
    return 100.0 * (below + 0.5 * ties) / values.size
