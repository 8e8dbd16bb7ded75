"""Distribution drift between a reference window and a candidate window: KS, chi-square, PSI."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats

from rollouts.stats.result import TestResult, as_sample, check_positive


def ks_test(reference: np.ndarray, candidate: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``, two-sided, ``method="auto"``).

    ``statistic`` is the largest distance between the two empirical CDFs; ``details`` says where it
    lies and whether the candidate's CDF is above (``sign`` 1: candidate values smaller) or below it.
    """
    ref = as_sample(reference, name="reference")
    cand = as_sample(candidate, name="candidate")
    res = stats.ks_2samp(ref, cand, alternative="two-sided", method="auto")
    details = {
        "location": float(res.statistic_location),
        "sign": int(res.statistic_sign),
        "reference_mean": float(ref.mean()),
        "candidate_mean": float(cand.mean()),
    }
    return TestResult("ks", float(res.statistic), float(res.pvalue), ref.size, cand.size, details)


def _categories(values: Sequence[Hashable], *, name: str) -> Counter[Hashable]:
    if isinstance(values, str | bytes):
        raise ValueError(f"{name}: expected a sequence of category values, got a single string")
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"{name}: expected a sequence of category values") from None
    if not items:
        raise ValueError(f"{name}: needs at least 1 value, got none")
    for item in items:
        if item is None:
            raise ValueError(f"{name}: contains a missing value (None); drop or label missing values first")
        if isinstance(item, float | np.floating) and not math.isfinite(item):
            raise ValueError(f"{name}: contains NaN or infinite values")
    try:
        return Counter(items)
    except TypeError:
        raise ValueError(f"{name}: category values must be hashable (strings, numbers, booleans)") from None


def chi2_test(reference: Sequence[Hashable], candidate: Sequence[Hashable]) -> TestResult:
    """Chi-square homogeneity test on the 2 x K table of category counts (``scipy.stats.chi2_contingency``).

    scipy's defaults: Yates' continuity correction when the table has one degree of freedom
    (two categories). With a single category in both windows there is nothing to compare:
    statistic 0, p-value 1. ``details.min_expected`` below 5 means the chi-square approximation is rough.
    """
    ref_counts = _categories(reference, name="reference")
    cand_counts = _categories(candidate, name="candidate")
    cats = sorted(set(ref_counts) | set(cand_counts), key=lambda c: (type(c).__name__, str(c)))
    table = np.array([[ref_counts[c] for c in cats], [cand_counts[c] for c in cats]], dtype=np.int64)
    n_ref, n_cand = int(table[0].sum()), int(table[1].sum())
    if len(cats) == 1:
        return TestResult("chi2", 0.0, 1.0, n_ref, n_cand, {
            "categories": 1, "dof": 0, "min_expected": None, "yates_correction": False,
            "note": "a single category in both windows", "new_categories": [], "new_category_count": 0,
            "new_category_share": 0.0,
        })
    res = stats.chi2_contingency(table, correction=True)
    dof = int(res.dof)
    # The largest contributors, so a person sees which categories moved.
    expected = res.expected_freq
    contrib = ((table - expected) ** 2 / expected).sum(axis=0)
    top = np.argsort(-contrib)[:5]
    details: dict[str, object] = {
        "categories": len(cats),
        "dof": dof,
        "min_expected": float(expected.min()),
        "yates_correction": dof == 1,
        "top_categories": [
            {"category": str(cats[i]), "reference": int(table[0, i]), "candidate": int(table[1, i]),
             "reference_share": float(table[0, i] / n_ref), "candidate_share": float(table[1, i] / n_cand)}
            for i in top
        ],
    }
    details.update(new_categories(ref_counts, cand_counts))
    return TestResult("chi2", float(res.statistic), float(res.pvalue), n_ref, n_cand, details)


def new_categories(reference: Counter[Hashable], candidate: Counter[Hashable], *, top: int = 10) -> dict[str, object]:
    """Categories the candidate has and the reference never had (largest first), and their total share.

    A new value (an unseen language, a new client version) is news in itself, whatever a test on
    the whole mix says: the chi-square test needs about 2 % of the rows in a new category to notice
    it at alpha 0.01, so the checks report every new category next to the test.
    """
    n_cand = sum(candidate.values())
    fresh = sorted(((c, n) for c, n in candidate.items() if c not in reference), key=lambda cn: (-cn[1], str(cn[0])))
    return {
        "new_categories": [
            {"category": str(c), "candidate": int(n), "candidate_share": n / n_cand} for c, n in fresh[:top]
        ],
        "new_category_count": len(fresh),
        "new_category_share": sum(n for _, n in fresh) / n_cand if n_cand else 0.0,
    }


def psi(reference: np.ndarray, candidate: np.ndarray, *, bins: int = 10, epsilon: float = 1e-4) -> TestResult:
    """Population Stability Index over quantile bins taken from the reference.

    Cut points are the reference's ``1/bins ... (bins-1)/bins`` quantiles, taken as observed values
    (inverted CDF; duplicates from ties dropped, so a discrete feature gets fewer bins, never empty
    ones). A bin is ``(lower, upper]``. Candidate values below the reference's minimum or above its
    maximum get a bin of their own, with the reference's share ``1/(m + 1)`` (the chance that a new
    value falls outside ``m`` earlier ones), so a constant reference against a moved candidate is
    not a PSI of 0. Empty bins get proportion ``epsilon`` and both distributions are then
    renormalised, so the index stays finite. ``PSI = sum((c - r) * ln(c / r))``; no p-value.

    PSI grows as the windows shrink: without any drift its expectation is about
    ``(bins - 1) (1/n + 1/m)`` (it is a chi-square statistic divided by the sample size), reported as
    ``details.expected_without_drift``. At 100 rows per side and 10 bins that is 0.18, so fixed
    thresholds (0.1, 0.25) flag a quarter of undrifted features: the checks report PSI and never
    decide on it.
    """
    ref = as_sample(reference, name="reference")
    cand = as_sample(candidate, name="candidate")
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 2 <= bins <= 1000:
        raise ValueError(f"bins must be a whole number from 2 to 1000, got {bins!r}")
    eps = check_positive(epsilon, name="epsilon", upper=0.1)
    cuts = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, int(bins) + 1)[1:-1], method="inverted_cdf"))
    cuts = cuts[cuts < ref.max()]  # a cut at the maximum would leave the top bin empty in the reference
    k = cuts.size + 1
    ref_p = np.bincount(np.searchsorted(cuts, ref, side="left"), minlength=k) / ref.size
    inner = np.searchsorted(cuts, cand, side="left")
    below, above = cand < ref.min(), cand > ref.max()
    inner[below | above] = k  # set apart, counted below
    cand_p = np.bincount(inner, minlength=k + 1)[:k] / cand.size
    outside = {"below": float(below.mean()), "above": float(above.mean())}
    tails = [share for share in (outside["below"], outside["above"]) if share > 0]
    if tails:  # out-of-range candidate values: bins of their own
        # The chance that a new value from the reference's distribution falls below (above) all m
        # reference values is 1/(m + 1): the reference's share of such a bin, then renormalised.
        ref_p = np.concatenate([ref_p, np.full(len(tails), 1.0 / (ref.size + 1))])
        ref_p /= ref_p.sum()
        cand_p = np.concatenate([cand_p, np.asarray(tails)])
    empty = {"reference": int((ref_p == 0).sum()), "candidate": int((cand_p == 0).sum())}
    ref_s = np.where(ref_p == 0, eps, ref_p)
    cand_s = np.where(cand_p == 0, eps, cand_p)
    ref_s, cand_s = ref_s / ref_s.sum(), cand_s / cand_s.sum()
    value = float(np.sum((cand_s - ref_s) * np.log(cand_s / ref_s)))
    details = {
        "bins": int(ref_p.size),
        "bins_requested": int(bins),
        "outside_reference_range": outside,
        "expected_without_drift": (ref_p.size - 1) * (1.0 / ref.size + 1.0 / cand.size),
        "epsilon": eps,
        "empty_bins": empty,
        "cut_points": [float(c) for c in cuts],
        "reference_proportions": [float(p) for p in ref_p],
        "candidate_proportions": [float(p) for p in cand_p],
    }
    return TestResult("psi", value, None, ref.size, cand.size, details)
