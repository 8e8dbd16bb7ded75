"""Every test agrees with scipy.stats on the same data (to 1e-9) where scipy has the same test."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats

from rollouts.stats import (
    chi2_test,
    ks_test,
    mann_whitney_test,
    mcnemar_test,
    mmd_test,
    psi,
    sequential_count_test,
    sequential_mean_test,
    sequential_proportion_test,
    two_proportion_test,
)

TOL = 1e-9


@pytest.mark.parametrize(
    ("n", "m", "shift"), [(40, 55, 0.0), (500, 800, 0.1), (3000, 2000, 0.0), (12000, 9000, 0.05)]
)
def test_ks_matches_ks_2samp(rng: np.random.Generator, n: int, m: int, shift: float) -> None:
    ref, cand = rng.normal(size=n), rng.normal(shift, size=m)
    got = ks_test(ref, cand)
    want = stats.ks_2samp(ref, cand)
    assert got.method == "ks"
    assert got.statistic == pytest.approx(want.statistic, abs=TOL)
    assert got.p_value == pytest.approx(want.pvalue, abs=TOL)
    assert (got.n_reference, got.n_candidate) == (n, m)


def test_ks_with_ties_matches(rng: np.random.Generator) -> None:
    ref, cand = rng.integers(0, 5, size=300).astype(float), rng.integers(0, 6, size=200).astype(float)
    want = stats.ks_2samp(ref, cand)
    got = ks_test(ref, cand)
    assert got.p_value == pytest.approx(want.pvalue, abs=TOL)
    assert got.statistic == pytest.approx(want.statistic, abs=TOL)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_chi2_matches_chi2_contingency(rng: np.random.Generator, k: int) -> None:
    cats = [f"c{i}" for i in range(k)]
    ref = list(rng.choice(cats, size=400, p=np.full(k, 1 / k)))
    weights = np.linspace(1, 2, k)
    cand = list(rng.choice(cats, size=300, p=weights / weights.sum()))
    table = np.array([[ref.count(c) for c in cats], [cand.count(c) for c in cats]])
    want = stats.chi2_contingency(table)  # scipy's defaults: Yates only when dof == 1
    got = chi2_test(ref, cand)
    assert got.statistic == pytest.approx(want.statistic, abs=TOL)
    assert got.p_value == pytest.approx(want.pvalue, abs=TOL)
    assert got.details["dof"] == k - 1
    assert got.details["yates_correction"] is (k == 2)


def test_chi2_category_seen_only_in_candidate() -> None:
    ref = ["a"] * 50 + ["b"] * 50
    cand = ["a"] * 40 + ["b"] * 40 + ["new"] * 20
    want = stats.chi2_contingency(np.array([[50, 50, 0], [40, 40, 20]]))
    got = chi2_test(ref, cand)
    assert got.p_value == pytest.approx(want.pvalue, abs=TOL)
    assert got.details["top_categories"][0]["category"] == "new"


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize(("n", "m"), [(6, 7), (60, 45), (400, 900)])
def test_mann_whitney_matches(rng: np.random.Generator, alternative: str, n: int, m: int) -> None:
    cand, ref = rng.lognormal(0.1, 1, size=n), rng.lognormal(0, 1, size=m)
    want = stats.mannwhitneyu(cand, ref, alternative=alternative)
    got = mann_whitney_test(cand, ref, alternative=alternative)
    assert got.statistic == pytest.approx(want.statistic, abs=TOL)
    assert got.p_value == pytest.approx(want.pvalue, abs=TOL)
    assert (got.n_candidate, got.n_reference) == (n, m)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize(
    ("x_c", "n_c", "x_r", "n_r"), [(30, 1000, 18, 1200), (5, 400, 20, 500), (120, 5000, 90, 5000)]
)
def test_two_proportion_z_matches_the_formula_with_scipy_norm(
    alternative: str, x_c: int, n_c: int, x_r: int, n_r: int
) -> None:
    pooled = (x_c + x_r) / (n_c + n_r)
    z = (x_c / n_c - x_r / n_r) / math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_r))
    want = {"greater": stats.norm.sf(z), "less": stats.norm.cdf(z), "two-sided": 2 * stats.norm.sf(abs(z))}
    got = two_proportion_test(x_c, n_c, x_r, n_r, alternative=alternative)
    assert got.details["test"] == "pooled-z"
    assert got.statistic == pytest.approx(z, abs=TOL)
    assert got.p_value == pytest.approx(want[alternative], abs=TOL)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_two_proportion_small_counts_use_fisher_exact(alternative: str) -> None:
    got = two_proportion_test(4, 80, 1, 120, alternative=alternative)
    want = stats.fisher_exact([[4, 76], [1, 119]], alternative=alternative)
    assert got.details["test"] == "fisher-exact"
    assert "expected cell count" in got.details["why"]
    assert got.p_value == pytest.approx(want.pvalue, abs=TOL)


def test_mcnemar_exact_matches_binomtest() -> None:
    ref = [True] * 60 + [True] * 9 + [False] * 3 + [False] * 28
    cand = [True] * 60 + [False] * 9 + [True] * 3 + [False] * 28
    got = mcnemar_test(ref, cand)
    assert (got.details["b"], got.details["c"], got.details["test"]) == (9, 3, "exact-binomial")
    assert got.p_value == pytest.approx(stats.binomtest(9, 12, 0.5).pvalue, abs=TOL)
    assert got.statistic == 3
    assert got.details["reference_accuracy"] == pytest.approx(0.69)
    assert got.details["candidate_accuracy"] == pytest.approx(0.63)


def test_mcnemar_chi2_matches_formula_and_scipy_chi2() -> None:
    # b = 30 regressions, c = 12 improvements: 42 discordant pairs >= 25 -> chi-square with continuity.
    ref = [True] * 100 + [True] * 30 + [False] * 12 + [False] * 8
    cand = [True] * 100 + [False] * 30 + [True] * 12 + [False] * 8
    got = mcnemar_test(ref, cand)
    stat = (abs(30 - 12) - 1) ** 2 / 42
    assert got.details["test"] == "chi2-continuity"
    assert got.statistic == pytest.approx(stat, abs=TOL)
    assert got.p_value == pytest.approx(stats.chi2.sf(stat, 1), abs=TOL)


def test_mcnemar_switches_at_25_discordant_pairs() -> None:
    base_ref, base_cand = [True] * 10, [True] * 10
    below = mcnemar_test(base_ref + [True] * 20 + [False] * 4, base_cand + [False] * 20 + [True] * 4)
    at = mcnemar_test(base_ref + [True] * 20 + [False] * 5, base_cand + [False] * 20 + [True] * 5)
    assert below.details["test"] == "exact-binomial"
    assert at.details["test"] == "chi2-continuity"


def test_results_are_json_serialisable(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    results = [
        ks_test(a[:, 0], b[:, 0]),
        chi2_test(["x", "y"] * 10, ["x"] * 15 + ["y"] * 5),
        psi(a[:, 0], b[:, 0]),
        mmd_test(a, b, permutations=50),
        mann_whitney_test(a[:, 0], b[:, 0]),
        two_proportion_test(3, 10, 0, 10),
        mcnemar_test([True, False] * 5, [False, True] * 5),
        sequential_proportion_test(0, 10, 5, 10),
        sequential_count_test(0, 0),
        sequential_count_test(10_000, 0),
        sequential_mean_test(a[:, 1], b[:, 1]),
    ]
    for result in results:
        text = json.dumps(asdict(result), allow_nan=False)
        assert json.loads(text)["method"] == result.method
