"""Canary against stable on one metric: Mann-Whitney U (values or histogram bins), two proportions,
McNemar (paired), a rate against a ceiling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from rollouts.stats.result import (
    TestResult,
    as_booleans,
    as_sample,
    check_alternative,
    check_positive,
    check_trials,
    finite_or_none,
)

# Below this many expected events in any cell the z approximation is poor: Fisher's exact test instead.
MIN_EXPECTED_FOR_Z = 5.0
# McNemar: exact binomial below this many discordant pairs, chi-square with continuity otherwise.
MCNEMAR_EXACT_BELOW = 25


def mann_whitney_test(candidate: np.ndarray, reference: np.ndarray, *,
                      alternative: str = "greater") -> TestResult:
    """Mann-Whitney U test (``scipy.stats.mannwhitneyu``, continuity correction, ``method="auto"``).

    ``alternative="greater"``: candidate values tend to be larger than the reference's (e.g. slower).
    ``statistic`` is U of the candidate; ``details.prob_superiority`` = U / (n_c n_r), the chance a
    candidate value beats a reference value (ties count half).
    """
    cand = as_sample(candidate, name="candidate")
    ref = as_sample(reference, name="reference")
    check_alternative(alternative)
    res = stats.mannwhitneyu(cand, ref, alternative=alternative, use_continuity=True, method="auto")
    details = {
        "alternative": alternative,
        "prob_superiority": float(res.statistic) / (cand.size * ref.size),
        "candidate_median": float(np.median(cand)),
        "reference_median": float(np.median(ref)),
    }
    return TestResult("mann-whitney", float(res.statistic), float(res.pvalue), ref.size, cand.size, details)


def _z_p_value(z: float, alternative: str) -> float:
    if alternative == "greater":
        return float(stats.norm.sf(z))
    if alternative == "less":
        return float(stats.norm.cdf(z))
    return float(2.0 * stats.norm.sf(abs(z)))


def two_proportion_test(x_candidate: int, n_candidate: int, x_reference: int, n_reference: int,
                        *, alternative: str = "greater") -> TestResult:
    """Candidate's rate ``x_c / n_c`` against the reference's ``x_r / n_r``.

    Pooled two-proportion z-test; when any expected cell count (under the pooled rate) is below 5,
    Fisher's exact test on the 2 x 2 table instead (``details.test`` says which). ``statistic`` is
    the pooled z-score either way (0 when the pooled rate is 0 or 1).
    ``alternative="greater"``: the candidate's rate is higher (more errors, more refusals).
    """
    x_c, n_c = check_trials(x_candidate, n_candidate, name="candidate")
    x_r, n_r = check_trials(x_reference, n_reference, name="reference")
    check_alternative(alternative)
    p_c, p_r = x_c / n_c, x_r / n_r
    pooled = (x_c + x_r) / (n_c + n_r)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_r))
    z = (p_c - p_r) / se if se > 0 else 0.0
    expected = min(n * q for n in (n_c, n_r) for q in (pooled, 1.0 - pooled))
    details: dict[str, object] = {
        "alternative": alternative, "candidate_rate": p_c, "reference_rate": p_r, "pooled_rate": pooled,
        "min_expected": expected,
    }
    if expected < MIN_EXPECTED_FOR_Z:
        table = [[x_c, n_c - x_c], [x_r, n_r - x_r]]
        res = stats.fisher_exact(table, alternative=alternative)
        details.update(test="fisher-exact", odds_ratio=finite_or_none(res.statistic),
                       why=f"an expected cell count is {expected:.3g} < {MIN_EXPECTED_FOR_Z:g}")
        p_value = float(res.pvalue)
    else:
        details["test"] = "pooled-z"
        p_value = _z_p_value(z, alternative) if se > 0 else 1.0
    return TestResult("two-proportion", float(z), min(1.0, p_value), n_r, n_c, details)


def mcnemar_test(reference_correct: Sequence[bool], candidate_correct: Sequence[bool], *,
                 alternative: str = "two-sided") -> TestResult:
    """McNemar's test on paired per-item correctness.

    ``b`` = items the reference got right and the candidate wrong, ``c`` = the reverse; under the
    null each discordant pair is ``b`` or ``c`` with probability 1/2.

    Two-sided (default): with fewer than 25 discordant pairs the exact binomial test of ``b`` out of
    ``b + c`` at 1/2 (``scipy.stats.binomtest``; ``statistic = min(b, c)``), otherwise chi-square with
    continuity correction, ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom.

    One-sided (``alternative="greater"``: the candidate is worse, ``b > c`` -- the question a canary
    asks; a two-sided test used for it has size alpha/2): the mid-p binomial test,
    ``P(B > b) + P(B = b) / 2`` with ``B ~ Bin(b + c, 1/2)`` (``statistic = b``). The exact test and
    the continuity-corrected normal test are conservative on the few discordant pairs a golden set
    has (simulated size 0.56 alpha at 400 items); the mid-p test is the one Fagerland, Lydersen and
    Laake (BMC Med Res Methodol 2013) recommend: close to alpha and rarely above it.
    """
    ref = as_booleans(reference_correct, name="reference_correct")
    cand = as_booleans(candidate_correct, name="candidate_correct")
    check_alternative(alternative)
    if ref.size != cand.size:
        raise ValueError(f"mcnemar: paired results must have the same length, got {ref.size} and {cand.size}")
    b = int(np.count_nonzero(ref & ~cand))
    c = int(np.count_nonzero(~ref & cand))
    discordant = b + c
    if discordant == 0:
        statistic, p_value, test = 0.0, 1.0, "no-discordant-pairs"
    elif alternative != "two-sided":
        statistic = float(b)
        k = b if alternative == "greater" else c
        p_value = float(stats.binom.sf(k, discordant, 0.5) + 0.5 * stats.binom.pmf(k, discordant, 0.5))
        test = "mid-p-binomial"
    elif discordant < MCNEMAR_EXACT_BELOW:
        statistic = float(min(b, c))
        p_value = float(stats.binomtest(b, discordant, 0.5, alternative="two-sided").pvalue)
        test = "exact-binomial"
    else:
        statistic = (abs(b - c) - 1.0) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
        test = "chi2-continuity"
    details = {
        "test": test, "alternative": alternative, "b": b, "c": c, "items": int(ref.size),
        "reference_accuracy": float(ref.mean()), "candidate_accuracy": float(cand.mean()),
    }
    return TestResult("mcnemar", float(statistic), min(1.0, p_value), int(ref.size), int(cand.size), details)


def mann_whitney_binned(candidate_counts: Sequence[float] | np.ndarray,
                        reference_counts: Sequence[float] | np.ndarray, *, alternative: str = "greater") -> TestResult:
    """Mann-Whitney U on values known only by ordered bin (histogram buckets): ties within a bin.

    ``candidate_counts[j]`` and ``reference_counts[j]`` are how many values of each side fall in bin
    ``j`` (bins in increasing order; whole numbers). ``U`` of the candidate counts a candidate value
    above a reference value as 1 and one in the same bin as 1/2; the normal approximation uses the
    tie-corrected variance ``n_c n_r / 12 * ((N + 1) - sum(t^3 - t) / (N (N - 1)))`` and a continuity
    correction of 1/2, as ``scipy.stats.mannwhitneyu(method="asymptotic")`` does on the expanded
    values. When every value of both sides is in one bin there is nothing to rank: ``z = 0``, ``p = 1``.
    ``details.prob_superiority`` = ``U / (n_c n_r)``.
    """
    cand = _bin_counts(candidate_counts, name="candidate_counts")
    ref = _bin_counts(reference_counts, name="reference_counts")
    if cand.size != ref.size:
        raise ValueError(f"mann_whitney_binned: {cand.size} candidate bins but {ref.size} reference bins")
    check_alternative(alternative)
    n_c, n_r = float(cand.sum()), float(ref.sum())
    if n_c < 1 or n_r < 1:
        raise ValueError("mann_whitney_binned: each side needs at least one value")
    below = np.concatenate([[0.0], np.cumsum(ref)[:-1]])
    u = float(np.sum(cand * (below + ref / 2.0)))
    total = n_c + n_r
    ties = cand + ref
    tie_term = float(np.sum(ties ** 3 - ties)) / (total * (total - 1.0))
    var = n_c * n_r / 12.0 * ((total + 1.0) - tie_term)
    mean = n_c * n_r / 2.0
    one_bin = var <= 1e-9 * mean * mean  # all values in one bin (up to rounding): no ranking information
    if one_bin:
        z, p_value = 0.0, 1.0
    else:
        diff = u - mean
        if alternative == "two-sided":
            z = math.copysign(max(abs(diff) - 0.5, 0.0), diff) / math.sqrt(var)
        else:
            z = (diff - 0.5 if alternative == "greater" else diff + 0.5) / math.sqrt(var)
        p_value = _z_p_value(z, alternative)
    details = {
        "alternative": alternative, "u": u, "z": z, "prob_superiority": u / (n_c * n_r),
        "variance": 0.0 if one_bin else var, "bins": int(cand.size),
        "occupied_bins": int(np.count_nonzero(ties)),
    }
    return TestResult("mann-whitney-binned", float(z), min(1.0, float(p_value)), int(n_r), int(n_c), details)


def _bin_counts(values: Sequence[float] | np.ndarray, *, name: str) -> np.ndarray:
    arr = as_sample(values, name=name)
    if (arr < 0).any() or not np.all(arr == np.round(arr)):
        raise ValueError(f"{name}: bin counts must be whole numbers >= 0")
    return arr


def rate_above_test(errors: int, total: int, ceiling: float, *, alpha: float = 0.05) -> TestResult:
    """Is the rate behind ``errors / total`` above ``ceiling``? Exact one-sided binomial test.

    ``p = P(X >= errors | total, ceiling)``; ``p < alpha`` exactly when the one-sided
    (1 - ``alpha``) Clopper-Pearson lower confidence bound of the rate, ``details.lower_bound``, is
    above the ceiling: a point estimate above the ceiling is not enough (2 errors in 100 requests
    against a 1 % ceiling: lower bound 0.12 %, p = 0.26). ``statistic`` is the observed rate.
    """
    x, n = check_trials(errors, total, name="rate")
    c = check_positive(ceiling, name="ceiling", upper=1.0)
    level = check_positive(alpha, name="alpha", upper=1.0)
    p_value = float(stats.binom.sf(x - 1, n, c)) if x > 0 else 1.0
    lower = float(stats.beta.ppf(level, x, n - x + 1)) if x > 0 else 0.0
    details = {"ceiling": c, "rate": x / n, "lower_bound": lower, "confidence": 1.0 - level,
               "bound": "one-sided Clopper-Pearson"}
    return TestResult("binomial-ceiling", x / n, min(1.0, p_value), 0, n, details)
