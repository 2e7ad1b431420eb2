"""classp.stats on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classp import stats


def test_t_interval_of_a_known_sample():
    # mean 3, std sqrt(2.5), n 5: t(0.975, 4) = 2.776445; half-width 2.776445 * sqrt(2.5/5)
    low, high = stats.t_interval([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5 / 5)
    assert low == pytest.approx(3 - half, abs=1e-9) and high == pytest.approx(3 + half, abs=1e-9)


def test_summary_text_says_what_the_spread_is():
    s = stats.summarize([1, 2, 3, 4, 5], interval="t")
    assert (s.mean, s.n) == (3.0, 5) and s.std == pytest.approx(math.sqrt(2.5))
    assert s.text() == "3.00 ± 1.58 (mean ± std, n=5; 95% CI [1.04, 4.96])"
    assert stats.summarize([7.0]).text() == "7.00 (one run, n=1: no spread, no interval)"
    assert stats.summarize([]).text() == "no runs"


def test_bootstrap_interval_stays_within_the_bounds_of_accuracies():
    values = [0.0, 0.0, 0.0, 100.0, 2.0]  # a t-interval goes below 0 here
    t_low, _ = stats.t_interval(values)
    assert t_low < 0
    s = stats.summarize(values)  # bootstrap by default
    assert 0.0 <= s.low <= s.mean <= s.high <= 100.0
    # seeded: the same values give the same interval
    assert stats.summarize(values) == s


def test_bootstrap_interval_of_a_large_sample_is_close_to_the_t_interval():
    values = [50 + 10 * math.sin(i) for i in range(200)]
    b_low, b_high = stats.bootstrap_interval(values)
    t_low, t_high = stats.t_interval(values)
    assert b_low == pytest.approx(t_low, abs=0.2) and b_high == pytest.approx(t_high, abs=0.2)


def test_paired_difference_uses_shared_seeds_only():
    a = {0: 90.0, 1: 92.0, 2: 88.0, 3: 91.0, 9: 10.0}
    b = {0: 80.0, 1: 83.0, 2: 77.0, 3: 82.0, 5: 99.0}
    p = stats.paired_difference(a, b, "classp", "ewc")
    assert p.seeds == (0, 1, 2, 3)
    assert p.difference.mean == pytest.approx(9.75)  # (10 + 9 + 11 + 9) / 4
    from scipy.stats import ttest_rel

    assert p.p_value == pytest.approx(ttest_rel([90, 92, 88, 91], [80, 83, 77, 82]).pvalue)
    assert p.detectable
    assert stats.verdict(p).startswith("classp keeps old tasks better than ewc by 9.75 points "
                                       "(classp - ewc: 95% CI +8.23 to +11.27, 4 paired seeds")


def test_a_difference_whose_interval_holds_zero_is_no_verdict():
    a = {0: 50.0, 1: 60.0, 2: 40.0}
    b = {0: 52.0, 1: 55.0, 2: 45.0}
    p = stats.paired_difference(a, b, "classp", "ewc")
    assert not p.detectable
    assert stats.verdict(p).startswith("No difference between classp and ewc detectable with 3 seeds")


def test_the_loser_is_named_second():
    p = stats.paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 11.0, 1: 12.5, 2: 13.0}, "classp", "ewc")
    assert stats.verdict(p).startswith("ewc keeps old tasks better than classp by 10.17 points")


def test_fewer_than_two_shared_seeds_give_no_interval():
    p = stats.paired_difference({0: 1.0}, {0: 2.0, 1: 3.0}, "a", "b")
    assert p.n == 1 and math.isnan(p.difference.low)
    assert "at least 2 are needed" in stats.verdict(p)


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        stats.summarize([1.0, float("nan")])


def test_the_welch_interval_is_scipy_s_for_two_independent_samples():
    from scipy import stats as sp

    from classp.stats import summarize, welch_interval

    a = [92.1, 90.3, 89.3, 94.3, 92.6, 89.1, 89.5, 94.9, 94.2, 91.8]
    b = [93.0, 95.1, 91.2, 96.4, 92.8, 94.0]
    want = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    low, high = welch_interval(summarize(a), float(np.mean(b)), float(np.std(b, ddof=1)), len(b))
    assert (low, high) == pytest.approx((want.low, want.high))


def test_a_published_std_over_n_becomes_a_sample_std():
    from classp.literature import HSU2018_SPLIT_MNIST

    runs = [1.0, 2.0, 4.0, 7.0, 1.0, 2.0, 4.0, 7.0, 3.0, 9.0]
    assert HSU2018_SPLIT_MNIST.runs == len(runs) and HSU2018_SPLIT_MNIST.std_ddof == 0
    assert HSU2018_SPLIT_MNIST.sample_std(float(np.std(runs))) == pytest.approx(np.std(runs, ddof=1))


# The arithmetic is scipy's: our wrappers give exactly what scipy.stats gives on fixed data.
ACCURACIES = [75.10, 80.45, 63.45, 87.80, 70.31, 91.20, 66.52]
OTHERS = [63.45, 75.77, 60.67, 85.29, 70.36, 84.74, 55.88]


def test_the_bootstrap_is_scipy_s_percentile_bootstrap_of_the_mean():
    from scipy import stats as scipy_stats

    found = scipy_stats.bootstrap((np.array(ACCURACIES),), np.mean, n_resamples=10_000,
                                  method="percentile", confidence_level=0.95,
                                  rng=np.random.default_rng(0), vectorized=True)
    assert stats.bootstrap_interval(ACCURACIES) == (found.confidence_interval.low,
                                                    found.confidence_interval.high)
    assert stats.bootstrap_interval([4.0, 4.0, 4.0]) == (4.0, 4.0)  # no spread, no warning


def test_the_t_interval_is_scipy_s_one_sample_t_test_interval():
    from scipy import stats as scipy_stats

    low, high = scipy_stats.ttest_1samp(ACCURACIES, 0.0).confidence_interval(0.95)
    assert stats.t_interval(ACCURACIES) == pytest.approx((low, high), rel=1e-12)


def test_the_paired_difference_is_scipy_s_paired_t_test():
    from scipy import stats as scipy_stats

    test = scipy_stats.ttest_rel(ACCURACIES, OTHERS)
    paired = stats.paired_difference(dict(enumerate(ACCURACIES)), dict(enumerate(OTHERS)))
    low, high = test.confidence_interval(0.95)
    assert (paired.difference.low, paired.difference.high) == (low, high)
    assert paired.p_value == test.pvalue
    assert paired.difference.mean == pytest.approx(np.mean(np.subtract(ACCURACIES, OTHERS)))
