"""research/overfitting.py against published worked examples and hand-computed cases.

Sources of the published numbers:

[DSR] D. H. Bailey & M. López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for
      Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio
      Management 40(5), 94-107 (SSRN 2460551), section "A numerical example": N = 100
      trials, annualised variance of the trials' Sharpe ratios 1/2, T = 1250 daily
      observations, best annualised SR 2.5, skewness -3, kurtosis 10, 250 days a year ->
      SR0 ~ 0.1132 per period and DSR ~ 0.9004. The same inputs and 0.9004 are restated in
      a published design review (find_string "0.9003968344493902" in the code index), and
      "~0.1132 ... from the example formula" in the review of
      https://github.com/jameschch/LeanOptimization/pull/23.
[SEF] D. H. Bailey & M. López de Prado (2012), "The Sharpe Ratio Efficient Frontier",
      Journal of Risk 15(2), 3-44 (SSRN 1821643). Its PSR and MinTRL examples as
      transcribed in the "paper_examples" tests of
      https://github.com/rubenbriones/Probabilistic-Sharpe-Ratio
      (tests/test_sharpe_ratio_stats.py):
      * 24 monthly returns, SR 0.458: PSR(0) = 0.982 if normal; 0.913 with skewness
        -2.448 and kurtosis 10.164.
      * 134 monthly returns, SR 0.7079, skewness -0.2250, kurtosis 2.9570:
        SE(SR) = 0.1028, MinTRL(0, 95%) = 0.7152 years;
        SR 0.8183, skewness -1.4455, kurtosis 7.0497: SE = 0.1550, MinTRL = 1.1593 years.
      (I could not open the paper's own pages here, only these transcriptions.)
Everything else is hand arithmetic written next to the assertion, or a seeded simulation.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from research.overfitting import (
    SharpeEstimate,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    pbo_cscv,
    percentile_of,
    probabilistic_sharpe_ratio,
    rank_correlation,
    sharpe_estimate,
)


def column_means(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=0)


# --- Sharpe ratio and its standard error -------------------------------------------

def test_sharpe_estimate_of_a_tiny_series_by_hand():
    # 1,2,3,4: mean 2.5, std(ddof=1) = sqrt(5/3) -> SR = 2.5 / 1.29099 = 1.93649, SR^2 = 3.75.
    # Symmetric -> skew 0. Biased m2 = 1.25, m4 = (2*1.5^4 + 2*0.5^4)/4 = 2.5625 -> kurtosis 1.64.
    # SE = sqrt((1 - 0 + (1.64 - 1)/4 * 3.75) / 3) = sqrt(1.6 / 3) = 0.730297.
    est = sharpe_estimate([1.0, 2.0, 3.0, 4.0])
    assert est.n == 4
    assert est.sr == pytest.approx(2.5 / math.sqrt(5 / 3))
    assert est.skew == pytest.approx(0.0, abs=1e-12)
    assert est.kurtosis == pytest.approx(1.64)
    assert est.se == pytest.approx(math.sqrt(1.6 / 3))
    assert est.annualised(4) == pytest.approx((2 * est.sr, 2 * est.se))


def test_degenerate_series():
    assert sharpe_estimate([]).sr == 0.0
    assert sharpe_estimate([0.01]).sr == 0.0
    two = sharpe_estimate([0.01, 0.03])
    assert two.sr == pytest.approx(0.02 / math.sqrt(2e-4)) and math.isnan(two.se)   # n < 3
    flat = sharpe_estimate([0.0] * 10)                 # a configuration that never traded
    assert flat.sr == 0.0
    assert flat.se == pytest.approx(math.sqrt(1 / 9))  # SR 0: Lo's sqrt(1 / (n - 1))
    with pytest.raises(ValueError, match="one-dimensional"):
        sharpe_estimate(np.zeros((3, 2)))


@pytest.mark.parametrize("sr, n", [(0.1, 250), (0.458, 24), (-0.3, 60)])
def test_se_reduces_to_lo_2002_for_normal_moments(sr, n):
    # Lo (2002), Financial Analysts Journal 58(4): SE = sqrt((1 + SR^2/2) / (n - 1)).
    est = SharpeEstimate.from_moments(sr, n, skew=0.0, kurtosis=3.0)
    assert est.se == pytest.approx(math.sqrt((1 + sr * sr / 2) / (n - 1)), rel=1e-12)


def test_se_matches_the_spread_of_sharpe_ratios_of_normal_samples():
    rng = np.random.default_rng(11)
    big = sharpe_estimate(rng.normal(0.05, 1.0, 200_000))
    assert big.skew == pytest.approx(0.0, abs=0.03) and big.kurtosis == pytest.approx(3.0, abs=0.06)
    lo = math.sqrt((1 + big.sr ** 2 / 2) / (big.n - 1))
    assert big.se == pytest.approx(lo, rel=0.01)
    # 4000 samples of 250 returns with true SR 0.1: the standard deviation of their Sharpe
    # ratios is the standard error; Lo's formula gives sqrt(1.005 / 249) = 0.06353.
    samples = rng.normal(0.1, 1.0, (4000, 250))
    sharpes = samples.mean(axis=1) / samples.std(axis=1, ddof=1)
    assert float(sharpes.std(ddof=1)) == pytest.approx(math.sqrt(1.005 / 249), rel=0.05)


def test_se_tracks_skewed_returns_where_lo_does_not():
    # Exponential(1) - 1 + 0.1: SR 0.1, skewness 2, kurtosis 9. Mertens/Opdyke:
    # sqrt((1 - 2*0.1 + (9 - 1)/4 * 0.01) / 249) = sqrt(0.82 / 249) = 0.05739; Lo's 0.06353 is 10% too wide.
    rng = np.random.default_rng(7)
    samples = rng.exponential(size=(4000, 250)) - 1.0 + 0.1
    empirical = float((samples.mean(axis=1) / samples.std(axis=1, ddof=1)).std(ddof=1))
    mertens = SharpeEstimate.from_moments(0.1, 250, skew=2.0, kurtosis=9.0).se
    assert mertens == pytest.approx(math.sqrt(0.82 / 249))
    assert empirical == pytest.approx(mertens, rel=0.04)
    assert empirical < 0.95 * math.sqrt(1.005 / 249)


# --- PSR and MinTRL: [SEF] ----------------------------------------------------------

def test_psr_sef_example_normal_and_fat_tailed():
    normal = SharpeEstimate.from_moments(0.458, 24, skew=0.0, kurtosis=3.0)
    fat = SharpeEstimate.from_moments(0.458, 24, skew=-2.448, kurtosis=10.164)
    assert round(probabilistic_sharpe_ratio(normal, 0.0), 3) == 0.982
    assert round(probabilistic_sharpe_ratio(fat, 0.0), 3) == 0.913


@pytest.mark.parametrize("sr, skew, kurt, se, years", [
    (0.7079, -0.2250, 2.9570, 0.1028, 0.7152),
    (0.8183, -1.4455, 7.0497, 0.1550, 1.1593),
])
def test_se_and_min_track_record_sef_examples(sr, skew, kurt, se, years):
    est = SharpeEstimate.from_moments(sr, 134, skew=skew, kurtosis=kurt)
    assert round(est.se, 4) == se
    assert round(min_track_record_length(est, 0.0, 0.95) / 12, 4) == years   # months -> years


def test_min_track_record_by_hand_and_as_the_inverse_of_psr():
    # Normal returns, SR 0.1, benchmark 0, 95%: 1 + (1 + 0.01/2) * (1.644854 / 0.1)^2 = 272.911.
    est = SharpeEstimate.from_moments(0.1, 500)
    trl = min_track_record_length(est)
    assert trl == pytest.approx(1 + 1.005 * (1.6448536269514722 / 0.1) ** 2)
    # PSR reaches the confidence exactly at n = MinTRL: just below it at floor, above at ceil.
    assert probabilistic_sharpe_ratio(SharpeEstimate.from_moments(0.1, math.floor(trl))) < 0.95
    assert probabilistic_sharpe_ratio(SharpeEstimate.from_moments(0.1, math.ceil(trl))) > 0.95
    assert min_track_record_length(est, benchmark_sr=0.1) == math.inf
    assert min_track_record_length(SharpeEstimate.from_moments(-0.2, 500)) == math.inf


def test_psr_by_hand_and_undefined_cases():
    # SR 0.2, n 101, normal: z = 0.2 * 10 / sqrt(1.02) = 1.980295 -> Phi = 0.976165.
    est = SharpeEstimate.from_moments(0.2, 101)
    assert probabilistic_sharpe_ratio(est) == pytest.approx(0.976165, abs=1e-6)
    assert probabilistic_sharpe_ratio(est, benchmark_sr=0.2) == pytest.approx(0.5)
    assert math.isnan(probabilistic_sharpe_ratio(sharpe_estimate([0.01, 0.02])))


# --- Expected maximum Sharpe and DSR: [DSR] -----------------------------------------

def test_dsr_paper_numerical_example():
    periods = 250
    variance = 0.5 / periods                                 # per-period variance of trial SRs
    sr0 = expected_max_sharpe(100, variance)
    assert round(sr0, 4) == 0.1132
    assert sr0 * math.sqrt(periods) == pytest.approx(1.79, abs=0.005)
    # 100 trial Sharpe ratios whose variance (ddof=1) is exactly the example's.
    trials = np.random.default_rng(3).normal(size=100)
    trials = (trials - trials.mean()) * math.sqrt(variance / trials.var(ddof=1))
    best = SharpeEstimate.from_moments(2.5 / math.sqrt(periods), 1250, skew=-3.0, kurtosis=10.0)
    result = deflated_sharpe_ratio(best, trials)
    assert result.n_trials == 100
    assert result.sharpe_variance == pytest.approx(variance)
    assert result.sr0 == pytest.approx(sr0)
    assert round(result.dsr, 4) == 0.9004


def test_expected_max_sharpe_grows_with_trials_and_matches_simulation():
    values = [expected_max_sharpe(n, 1.0) for n in (1, 2, 10, 100, 1000, 10_000)]
    assert values[0] == 0.0
    assert all(b > a for a, b in zip(values, values[1:]))
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * values[3])   # scales with sqrt(V)
    # The approximation against the simulated mean maximum of 100 standard normals (~2.508).
    simulated = float(np.random.default_rng(5).normal(size=(20_000, 100)).max(axis=1).mean())
    assert values[3] == pytest.approx(simulated, rel=0.02)
    with pytest.raises(ValueError, match="sharpe_variance"):
        expected_max_sharpe(10, -1.0)


def test_dsr_with_explicit_trial_count_and_failed_trials():
    best = SharpeEstimate.from_moments(0.15, 1000)
    one = deflated_sharpe_ratio(best, [0.15], n_trials=1)
    assert one.sr0 == 0.0 and one.dsr == pytest.approx(probabilistic_sharpe_ratio(best))
    many = deflated_sharpe_ratio(best, [0.15, 0.05, float("nan"), -0.05], n_trials=500)
    assert many.sharpe_variance == pytest.approx(0.01)     # nan dropped: var(0.15, 0.05, -0.05)
    assert many.sr0 == pytest.approx(expected_max_sharpe(500, 0.01))
    assert many.dsr < probabilistic_sharpe_ratio(best)
    assert math.isnan(deflated_sharpe_ratio(best, [0.15], n_trials=50).dsr)   # variance unknown


# --- PBO by CSCV -----------------------------------------------------------------------

def test_one_column_best_in_every_block_gives_pbo_zero():
    rng = np.random.default_rng(2)
    returns = rng.normal(0.0, 1.0, (80, 5))
    returns[:, 0] = 1.0 + rng.normal(0.0, 0.1, 80)     # SR ~10 in every block, the rest ~0
    result = pbo_cscv(returns, blocks=8)
    assert result.pbo == 0.0
    assert result.combinations == 70
    # Always ranked N = 5 of 5 out of sample: omega = 5/6, logit = ln(5).
    assert np.allclose(result.logits, math.log(5))


def test_alternating_pair_in_sample_winner_always_loses_out_of_sample():
    # Block 1 (rows 0-1): A = 2, 0 (SR 0.707); B = -2, 0 (SR -0.707). Block 2 swaps them.
    # Combinations of 2 blocks taken 1: {1} picks A, which ranks 1 of 2 in block 2;
    # {2} picks B, which ranks 1 of 2 in block 1. omega = 1/3, logit = ln(1/2). PBO = 2/2.
    returns = np.array([[2.0, -2.0], [0.0, 0.0], [-2.0, 2.0], [0.0, 0.0]])
    result = pbo_cscv(returns, blocks=2)
    assert result.combinations == 2
    assert result.pbo == 1.0
    assert np.allclose(result.logits, math.log(0.5))
    assert math.isnan(result.degradation)     # the chosen IS Sharpe is 0.707 both times: no slope


def test_three_strategies_hand_enumerated_pbo_one():
    # One row per block, metric = mean (sums below). Columns A, B, C.
    returns = np.array([[8.0, 0.0, 3.0],
                        [0.0, 6.0, 2.0],
                        [0.0, 0.0, 3.0],
                        [1.0, 2.0, 0.0]])
    # train  IS sums (A,B,C)  pick  test  OOS sums (A,B,C)  rank of pick
    # {1,2}  8, 6, 5          A     {3,4} 1, 2, 3           1
    # {1,3}  8, 0, 6          A     {2,4} 1, 8, 2           1
    # {1,4}  9, 2, 3          A     {2,3} 0, 6, 5           1
    # {2,3}  0, 6, 5          B     {1,4} 9, 2, 3           1
    # {2,4}  1, 8, 2          B     {1,3} 8, 0, 6           1
    # {3,4}  1, 2, 3          C     {1,2} 8, 6, 5           1
    # omega = 1/4 each time -> logit ln(1/3); PBO = 6/6.
    result = pbo_cscv(returns, blocks=4, metric=column_means)
    assert result.combinations == 6
    assert result.pbo == 1.0
    assert np.allclose(result.logits, math.log(1 / 3))


def test_three_strategies_hand_enumerated_fraction_and_degradation():
    returns = np.array([[3.0, 1.0, 0.0],
                        [3.0, 4.0, 4.0],
                        [0.0, 5.0, 4.0],
                        [5.0, 5.0, 0.0]])
    # train  IS sums   pick  test  OOS sums  rank  omega  logit
    # {1,2}  6, 5, 4   A     {3,4} 5,10, 4   2     2/4    0       (counts: <= 0)
    # {1,3}  3, 6, 4   B     {2,4} 8, 9, 4   3     3/4    ln 3
    # {1,4}  8, 6, 0   A     {2,3} 3, 9, 8   1     1/4   -ln 3
    # {2,3}  3, 9, 8   B     {1,4} 8, 6, 0   2     2/4    0
    # {2,4}  8, 9, 4   B     {1,3} 3, 6, 4   3     3/4    ln 3
    # {3,4}  5,10, 4   B     {1,2} 6, 5, 4   2     2/4    0
    # PBO = 4/6. Means of the pick (IS, OOS): (3,2.5) (3,4.5) (4,1.5) (4.5,3) (4.5,3) (5,2.5);
    # x mean 4, y mean 17/6; sum dx*dy = -1.5, sum dx^2 = 3.5 -> slope -3/7.
    result = pbo_cscv(returns, blocks=4, metric=column_means)
    assert result.pbo == pytest.approx(4 / 6)
    assert np.allclose(result.logits, [0, math.log(3), -math.log(3), 0, math.log(3), 0])
    assert result.degradation == pytest.approx(-3 / 7)


def test_pure_noise_gives_pbo_near_one_half():
    returns = np.random.default_rng(0).normal(0.0, 0.01, (400, 50))
    result = pbo_cscv(returns, blocks=8)
    assert result.combinations == 70
    assert 0.3 <= result.pbo <= 0.7


@pytest.mark.parametrize("blocks", [2, 4, 6, 8, 10])
def test_combination_count_is_blocks_choose_half(blocks):
    returns = np.random.default_rng(blocks).normal(size=(60, 3))
    result = pbo_cscv(returns, blocks=blocks)
    assert result.combinations == len(list(combinations(range(blocks), blocks // 2))) == math.comb(blocks, blocks // 2)
    assert result.logits.shape == (result.combinations,) and result.blocks == blocks


def test_leading_remainder_rows_are_dropped():
    rng = np.random.default_rng(9)
    body = rng.normal(size=(80, 4))
    junk = np.full((3, 4), 1e6)
    junk[:, 1] = -1e6                     # would dominate every block if it were kept
    with_junk = pbo_cscv(np.vstack([junk, body]), blocks=8)
    assert np.array_equal(with_junk.logits, pbo_cscv(body, blocks=8).logits)


@pytest.mark.parametrize("shape, blocks, message", [
    ((40, 3), 3, "even number"),
    ((40, 3), 0, "even number"),
    ((6, 3), 8, "at least 8 periods"),
    ((40, 1), 4, "at least 2 configurations"),
    ((40,), 4, "T x N matrix"),
])
def test_bad_input_is_one_line(shape, blocks, message):
    with pytest.raises(ValueError, match=message) as info:
        pbo_cscv(np.zeros(shape), blocks=blocks)
    assert "\n" not in str(info.value)


# --- rank correlation and percentile --------------------------------------------------

def test_rank_correlation_tiny_cases():
    # Ranks 1,2,3,4 vs 1,3,2,4: d^2 sums to 2 -> rho = 1 - 6*2 / (4*(16-1)) = 0.8.
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert rank_correlation([1, 2, float("nan"), 3, 4], [10, 30, 99, 20, 40]) == pytest.approx(0.8)
    assert rank_correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1, 2], [1, 2]))
    assert math.isnan(rank_correlation([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="equal-length"):
        rank_correlation([1, 2, 3], [1, 2])


def test_percentile_of_tiny_cases():
    assert percentile_of(3, [1, 2, 3, 4]) == pytest.approx(62.5)   # (2 below + 1/2 tie) / 4
    assert percentile_of(0, [1, 2, 3, 4]) == 0.0
    assert percentile_of(5, [1, 2, 3, 4]) == 100.0
    assert percentile_of(2, [2, 2, 2, 2]) == 50.0
    assert percentile_of(2.5, [1, 2, float("nan"), 3, 4]) == 50.0   # nan left out
    assert math.isnan(percentile_of(1, []))
