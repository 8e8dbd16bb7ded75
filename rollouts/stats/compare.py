"""Canary against stable on one metric: Mann-Whitney U, two proportions, McNemar (paired)."""

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


def mcnemar_test(reference_correct: Sequence[bool], candidate_correct: Sequence[bool]) -> TestResult:
    """McNemar's test on paired per-item correctness (two-sided).

    ``b`` = items the reference got right and the candidate wrong, ``c`` = the reverse. With fewer
    than 25 discordant pairs: exact binomial test of ``b`` out of ``b + c`` at 1/2
    (``scipy.stats.binomtest``; ``statistic = min(b, c)``); otherwise chi-square with continuity
    correction, ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom.
    """
    ref = as_booleans(reference_correct, name="reference_correct")
    cand = as_booleans(candidate_correct, name="candidate_correct")
    if ref.size != cand.size:
        raise ValueError(f"mcnemar: paired results must have the same length, got {ref.size} and {cand.size}")
    b = int(np.count_nonzero(ref & ~cand))
    c = int(np.count_nonzero(~ref & cand))
    discordant = b + c
    if discordant == 0:
        statistic, p_value, test = 0.0, 1.0, "no-discordant-pairs"
    elif discordant < MCNEMAR_EXACT_BELOW:
        statistic = float(min(b, c))
        p_value = float(stats.binomtest(b, discordant, 0.5, alternative="two-sided").pvalue)
        test = "exact-binomial"
    else:
        statistic = (abs(b - c) - 1.0) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
        test = "chi2-continuity"
    details = {
        "test": test, "b": b, "c": c, "items": int(ref.size),
        "reference_accuracy": float(ref.mean()), "candidate_accuracy": float(cand.mean()),
    }
    return TestResult("mcnemar", float(statistic), min(1.0, p_value), int(ref.size), int(cand.size), details)
