"""Issue 17's new statistics against scipy or the hand formula: effect sizes, binned Mann-Whitney,
one-sided McNemar, the ceiling tests (fixed and anytime), the HAR paired test, PSI and chi-square extras."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from rollouts.stats import chi2_test, mcnemar_test, psi
from rollouts.stats.compare import mann_whitney_binned, rate_above_test
from rollouts.stats.effect import cohens_h, jensen_shannon, normalised_wasserstein
from rollouts.stats.mmd import mmd_test, permutation_undecided, permutations_needed
from rollouts.stats.sequential import sequential_mann_whitney_binned, sequential_rate_above_test
from rollouts.stats.timeseries import ewc_terms, long_run_variance, paired_difference_test


# ---------------------------------------------------------------- effect sizes
def test_normalised_wasserstein_is_the_shift_in_reference_sds(rng: np.random.Generator) -> None:
    ref = rng.normal(10.0, 3.0, 50_000)
    effect, scaled = normalised_wasserstein(ref, ref + 0.6)  # 0.2 sd
    assert effect == pytest.approx(0.2, rel=0.01)
    assert scaled["wasserstein"] == pytest.approx(0.6, rel=1e-9)
    assert scaled["scaled_by"] == "reference standard deviation"


@pytest.mark.parametrize("sizes", [(3000, 3000), (3000, 1777), (5, 9)])
def test_wasserstein_of_sorted_samples_is_scipys(rng: np.random.Generator, sizes: tuple[int, int]) -> None:
    ref, cand = np.sort(rng.lognormal(size=sizes[0])), np.sort(rng.normal(1.0, 2.0, size=sizes[1]))
    ties = np.sort(rng.integers(0, 5, size=sizes[1]).astype(float))
    for other in (cand, ties):
        assert normalised_wasserstein(ref, other, presorted=True)[1]["wasserstein"] == pytest.approx(
            stats.wasserstein_distance(ref, other), rel=1e-12, abs=1e-15)


def test_normalised_wasserstein_of_constants() -> None:
    effect, scaled = normalised_wasserstein(np.full(100, 5.0), np.full(100, 6.0))
    # W1 = 1; pooled sd of 100 fives and 100 sixes = 0.5025: a large, finite effect
    assert effect == pytest.approx(1.0 / np.concatenate([np.full(100, 5.0), np.full(100, 6.0)]).std(ddof=1))
    assert "pooled" in scaled["scaled_by"]
    assert normalised_wasserstein(np.full(10, 5.0), np.full(10, 5.0))[0] == 0.0


def test_jensen_shannon_in_bits_against_the_formula() -> None:
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)  # noqa: E731
    want = math.sqrt((kl(p, m) + kl(q, m)) / 2)
    got = jensen_shannon(Counter({"a": 2, "b": 2}), Counter({"a": 1, "b": 1, "c": 2}))
    assert got == pytest.approx(want, abs=1e-12)
    assert jensen_shannon(Counter({"a": 5}), Counter({"b": 5})) == pytest.approx(1.0)
    assert jensen_shannon(Counter({"a": 5}), Counter({"a": 9})) == 0.0


def test_cohens_h_and_its_js_counterpart() -> None:
    assert cohens_h(0.5, 0.5) == 0.0
    assert cohens_h(0.55, 0.5) == pytest.approx(2 * math.asin(math.sqrt(0.55)) - 2 * math.asin(math.sqrt(0.5)))
    # the categorical default 0.04 is about Cohen's h 0.1 / 2.355 (module docstring of rollouts.stats.effect)
    js = jensen_shannon(Counter({True: 50, False: 50}), Counter({True: 55, False: 45}))
    assert js == pytest.approx(cohens_h(0.55, 0.5) / 2.355, rel=0.02)
    with pytest.raises(ValueError):
        cohens_h(1.5, 0.1)


# ---------------------------------------------------------------- binned Mann-Whitney
@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_binned_mann_whitney_is_scipy_on_the_expanded_values(rng: np.random.Generator, alternative: str) -> None:
    bins = np.arange(8)
    cand = rng.integers(0, 60, 8).astype(float)
    ref = rng.integers(0, 400, 8).astype(float)
    got = mann_whitney_binned(cand, ref, alternative=alternative)
    want = stats.mannwhitneyu(np.repeat(bins, cand.astype(int)), np.repeat(bins, ref.astype(int)),
                              alternative=alternative, use_continuity=True, method="asymptotic")
    assert got.p_value == pytest.approx(want.pvalue, abs=1e-12)
    assert got.details["u"] == pytest.approx(want.statistic)


def test_binned_mann_whitney_with_all_values_in_one_bin_is_deterministic() -> None:
    same = mann_whitney_binned([0, 500, 0], [0, 4500, 0])
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    apart = mann_whitney_binned([0, 0, 500], [4500, 0, 0])  # every canary request in a slower bucket
    assert apart.p_value < 1e-100 and apart.details["prob_superiority"] == 1.0
    seq = sequential_mann_whitney_binned([0, 500, 0], [0, 4500, 0])
    assert seq.p_value == 1.0
    with pytest.raises(ValueError, match="whole numbers"):
        mann_whitney_binned([0.5, 1], [1, 1])


# ---------------------------------------------------------------- McNemar, one-sided
def test_mcnemar_one_sided_is_the_mid_p_binomial() -> None:
    ref = [True] * 12 + [False] * 3 + [True] * 50
    cand = [False] * 12 + [True] * 3 + [True] * 50  # b = 12, c = 3
    got = mcnemar_test(ref, cand, alternative="greater")
    assert got.details["test"] == "mid-p-binomial" and got.statistic == 12
    exact = stats.binomtest(12, 15, 0.5, alternative="greater").pvalue  # P(B >= 12)
    assert got.p_value == pytest.approx(exact - 0.5 * stats.binom.pmf(12, 15, 0.5), abs=1e-15)
    assert got.p_value < exact < mcnemar_test(ref, cand).p_value  # two-sided: size alpha/2 for this question
    less = mcnemar_test(ref, cand, alternative="less")
    assert less.p_value == pytest.approx(1 - got.p_value, abs=1e-12)  # mid-p: the two tails add up to 1


# ---------------------------------------------------------------- ceilings
def test_two_errors_in_a_hundred_are_not_above_a_one_percent_ceiling() -> None:
    got = rate_above_test(2, 100, 0.01, alpha=0.001)
    assert got.p_value == pytest.approx(1 - stats.binom.cdf(1, 100, 0.01))  # 0.264
    assert got.p_value > 0.2 and got.details["lower_bound"] < 0.01
    assert sequential_rate_above_test(2, 100, 0.01, alpha=0.001).p_value == 1.0


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_clopper_pearson_bound_and_test_agree(alpha: float) -> None:
    for x in (1, 5, 30, 120):
        got = rate_above_test(x, 5000, 0.01, alpha=alpha)
        lower = stats.binomtest(x, 5000).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert got.details["lower_bound"] == pytest.approx(lower, rel=1e-9)
        assert (got.p_value < alpha) == (got.details["lower_bound"] > 0.01)


def test_anytime_ceiling_bound_and_test_agree() -> None:
    for x in (0, 10, 60, 75, 90, 130):
        got = sequential_rate_above_test(x, 5000, 0.01, alpha=0.001)
        assert (got.p_value < 0.001) == (got.details["lower_bound"] > 0.01), x
        fixed = rate_above_test(x, 5000, 0.01, alpha=0.001)
        assert got.details["lower_bound"] <= fixed.details["lower_bound"] + 1e-12  # anytime costs width
    assert sequential_rate_above_test(100, 5000, 0.01, alpha=0.001).p_value < 1e-6  # 2 % against 1 %


# ---------------------------------------------------------------- HAR paired test
def test_ewc_variance_is_the_cosine_formula(rng: np.random.Generator) -> None:
    d = rng.normal(size=40)
    terms = ewc_terms(40)
    assert terms == 3
    t = np.arange(1, 41)
    want = np.mean([(math.sqrt(2 / 40) * np.sum(np.cos(math.pi * j * (t - 0.5) / 40) * d)) ** 2
                    for j in range(1, terms + 1)])
    assert long_run_variance(d, terms=terms) == pytest.approx(want, rel=1e-12)
    got = paired_difference_test(d + 0.3, alternative="greater")
    assert got.statistic == pytest.approx((d.mean() + 0.3) / math.sqrt(want / 40), rel=1e-12)
    assert got.p_value == pytest.approx(stats.t.sf(got.statistic, terms), rel=1e-12)


@pytest.mark.parametrize("mode", ["fixed", "anytime"])
def test_constant_differences_are_decided_without_a_variance(mode: str) -> None:
    slower = paired_difference_test(np.full(30, 1.0), mode=mode)  # every interval 1 s slower
    assert slower.p_value == 0.0
    # float rounding (2.0 - 1.0 computed in different ways) must not flip the answer
    noisy = np.array([2.0 - 1.0, 1.0000000000000002, 0.9999999999999998] * 10)
    assert paired_difference_test(noisy, mode=mode).p_value == 0.0
    assert paired_difference_test(np.zeros(30), mode=mode).p_value == 1.0
    assert paired_difference_test(np.full(30, -1.0), mode=mode).p_value == 1.0  # faster is not "greater"
    assert paired_difference_test(np.full(30, -1.0), alternative="two-sided", mode=mode).p_value == 0.0


# ---------------------------------------------------------------- PSI, chi-square extras
def test_psi_against_a_constant_reference_sees_a_moved_candidate() -> None:
    got = psi(np.full(200, 1.0), np.full(200, 2.0))
    assert got.statistic > 5.0  # was 0: a single bin held both
    assert got.details["outside_reference_range"] == {"below": 0.0, "above": 1.0}
    assert psi(np.full(200, 1.0), np.full(200, 1.0)).statistic == pytest.approx(0.0, abs=1e-15)


def test_psi_reports_its_expectation_without_drift(rng: np.random.Generator) -> None:
    values = [psi(rng.normal(size=100), rng.normal(size=100)) for _ in range(400)]
    expected = values[0].details["expected_without_drift"]
    assert expected == pytest.approx(9 * (1 / 100 + 1 / 100))
    mean = float(np.mean([v.statistic for v in values]))
    assert 0.7 * expected < mean < 1.3 * expected
    assert np.mean([v.statistic >= 0.25 for v in values]) > 0.1  # why PSI never decides


def test_chi2_reports_categories_only_the_candidate_has() -> None:
    ref = ["en"] * 900 + ["de"] * 100
    cand = ["en"] * 880 + ["de"] * 100 + ["xx"] * 15 + ["yy"] * 5
    got = chi2_test(ref, cand)
    assert got.details["new_categories"] == [
        {"category": "xx", "candidate": 15, "candidate_share": 15 / 1000},
        {"category": "yy", "candidate": 5, "candidate_share": 5 / 1000},
    ]
    assert got.details["new_category_share"] == pytest.approx(0.02)


# ---------------------------------------------------------------- MMD permutations
def test_mmd_permutations_are_sized_for_the_threshold_and_a_capped_run_is_undecided(rng: np.random.Generator) -> None:
    assert permutations_needed(0.01 / 20 / 4) == 16000
    ref, cand = rng.normal(size=(60, 4)), rng.normal(3.0, 1.0, size=(60, 4))
    stopped = mmd_test(ref, cand, permutations=2000, stop=lambda: True)  # stops after the first block of 512
    assert stopped.details["permutations"] == 512 and stopped.details["exceedances"] == 0
    assert stopped.p_value == pytest.approx(1 / 513)
    assert permutation_undecided(0, 512, threshold=1 / 16000)  # might pass 1/16000 with more permutations
    assert not permutation_undecided(0, 512, threshold=0.01)  # already significant
    assert not permutation_undecided(200, 512, threshold=1 / 16000)  # clearly not significant
