"""Anytime-valid tests for canaries, judged again at every AnalysisRun measurement.

Each function takes the CUMULATIVE data since the canary started and returns an e-value ``E`` (the
value of a test (super)martingale, or a bound on one) and the always-valid p-value ``p = min(1, 1/E)``.
By Ville's inequality ``P(E_t >= 1/alpha for some t) <= alpha`` under the null, so failing at the
first look where ``p < alpha`` keeps the false-alarm rate at or below alpha however many looks are
taken and whenever the canary stops -- unlike a fixed-sample test repeated at each look. No state is
needed between looks: ``E_t`` is a function of the cumulative data.

References: Lindon, Sanden, Shirikian, "Rapid regression detection in software deployments through
sequential testing", KDD 2022 (Poisson counts, mixture martingales); Robbins' method of mixtures
and the mSPRT (Johari, Koomen, Pekelis, Walsh 2017); Howard, Ramdas, McAuliffe, Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021; Waudby-Smith et al.,
"Time-uniform central limit theory and asymptotic confidence sequences", 2021.

Which guarantee each test gives:
- ``sequential_proportion_test``: exact (finite-sample) for Bernoulli outcomes under any
  interleaving of candidate and reference traffic and any traffic split.
- ``sequential_count_test``: exact for Poisson-process counts when the candidate's share of
  exposure stays at ``exposure_ratio`` (a fixed traffic split), and equally for per-request
  Bernoulli outcomes when each request goes to the candidate with that fixed probability (then
  the label of each error is Bernoulli(share) under the null, whatever the error rate). With the
  ratio taken from the request counts, and with a split that steps up mid-window (5 -> 50 %),
  the simulation in ``tests/rollouts_stats`` still stays below alpha, but that is not a proof.
  It needs about a third of the data the exact proportion test needs (no nuisance rate).
- ``sequential_mean_test``: asymptotic (normal approximation with plug-in variances), like the
  t-test it replaces; meant for tens of samples per side or more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special

from rollouts.stats.compare import mann_whitney_binned
from rollouts.stats.result import (
    TestResult,
    as_sample,
    check_alternative,
    check_count,
    check_positive,
    check_trials,
)

# log(1e300): e-values are reported as floats, kept finite for JSON.
_LOG_E_CAP = 690.0


def evidence_from_log_e(log_e: float) -> tuple[float, float, dict[str, float]]:
    """(statistic, p_value, details) from a log e-value."""
    log_e = float(min(max(log_e, -_LOG_E_CAP), _LOG_E_CAP))
    p_value = float(min(1.0, math.exp(-log_e)))
    return log_e, p_value, {"e_value": math.exp(log_e), "log_e_value": log_e}


def _loglik(x: int, n: int, p: float) -> float:
    return float(special.xlogy(x, p) + special.xlog1py(n - x, -p))


def sequential_proportion_test(x_candidate: int, n_candidate: int, x_reference: int, n_reference: int,
                               *, alternative: str = "greater", prior_a: float = 0.5,
                               prior_b: float = 0.5) -> TestResult:
    """Anytime-valid test of the candidate's rate against the reference's (errors, refusals).

    E-value = (Beta(``prior_a``, ``prior_b``) mixture likelihood of each arm's outcomes) / (the
    likelihood maximised over the null). For every rate pair in the null the denominator is at least
    the true likelihood, so ``E_t`` is bounded by a likelihood-ratio martingale: exact, for any
    traffic split and any interleaving. The price of exactness is the unknown common rate: the
    evidence loses about ``log(n)/2`` per arm, so it needs roughly 3x the requests of
    ``sequential_count_test`` to see a doubled error rate. ``alternative="greater"`` tests the null
    ``rate_c <= rate_r`` (``E <= 1`` whenever the candidate's observed rate is not higher).
    ``statistic`` is ``log E``; ``p_value = min(1, 1/E)``.
    """
    x_c, n_c = check_trials(x_candidate, n_candidate, name="candidate")
    x_r, n_r = check_trials(x_reference, n_reference, name="reference")
    check_alternative(alternative)
    a = check_positive(prior_a, name="prior_a")
    b = check_positive(prior_b, name="prior_b")
    mixture = float(special.betaln(x_c + a, n_c - x_c + b) + special.betaln(x_r + a, n_r - x_r + b)
                    - 2.0 * special.betaln(a, b))
    rate_c, rate_r = x_c / n_c, x_r / n_r
    pooled = (x_c + x_r) / (n_c + n_r)
    at_pooled = _loglik(x_c, n_c, pooled) + _loglik(x_r, n_r, pooled)
    at_free = _loglik(x_c, n_c, rate_c) + _loglik(x_r, n_r, rate_r)
    inside_null = (
        (alternative == "greater" and rate_c <= rate_r) or (alternative == "less" and rate_c >= rate_r)
    )
    log_e = mixture - (at_free if inside_null else at_pooled)
    statistic, p_value, evidence = evidence_from_log_e(log_e)
    null = {"greater": "candidate rate <= reference rate", "less": "candidate rate >= reference rate",
            "two-sided": "candidate rate == reference rate"}[alternative]
    details = {
        **evidence, "alternative": alternative, "null": null,
        "candidate_rate": rate_c, "reference_rate": rate_r,
        "difference": rate_c - rate_r, "prior": {"a": a, "b": b},
        "construction": "Beta-mixture likelihood over maximum likelihood under the null (exact)",
    }
    return TestResult("msprt-proportion", statistic, p_value, n_r, n_c, details)


def sequential_count_test(count_candidate: int, count_reference: int, *, exposure_ratio: float = 1.0,
                          alternative: str = "greater", prior_strength: float = 10.0,
                          prior_mean: float | None = None) -> TestResult:
    """Anytime-valid test on Poisson-process counts (Lindon et al. 2022): events per unit of exposure.

    ``exposure_ratio`` = candidate exposure / reference exposure (e.g. traffic share 0.1 / 0.9).
    Under the null of equal rates each event comes from the candidate with probability
    ``rho0 = r / (1 + r)``, independently; the e-value is the Beta(``k rho0``, ``k (1 - rho0)``)
    mixture (``k = prior_strength``; restricted to ``rho > rho0`` for ``"greater"``, ``< rho0`` for
    ``"less"``) of the likelihood ratio against ``rho0``. ``prior_mean`` centres the mixture elsewhere
    than ``rho0`` (on the regression worth finding, e.g. a doubled rate: ``2 r / (1 + 2 r)``); any
    prior fixed in advance keeps the guarantee, the choice only moves power between effect sizes.
    ``statistic`` is ``log E``.
    """
    x = check_count(count_candidate, name="count_candidate")
    y = check_count(count_reference, name="count_reference")
    ratio = check_positive(exposure_ratio, name="exposure_ratio")
    check_alternative(alternative)
    k = check_positive(prior_strength, name="prior_strength")
    rho0 = ratio / (1.0 + ratio)
    centre = rho0 if prior_mean is None else check_positive(prior_mean, name="prior_mean", upper=1.0)
    a, b = k * centre, k * (1.0 - centre)
    log_mix = float(special.betaln(a + x, b + y) - special.betaln(a, b))
    if alternative == "greater":
        post, prior = special.betaincc(a + x, b + y, rho0), special.betaincc(a, b, rho0)
    elif alternative == "less":
        post, prior = special.betainc(a + x, b + y, rho0), special.betainc(a, b, rho0)
    else:
        post, prior = 1.0, 1.0
    log_mix += (math.log(post) if post > 0 else -math.inf) - math.log(prior)
    log_null = float(special.xlogy(x, rho0) + special.xlog1py(y, -rho0))
    statistic, p_value, evidence = evidence_from_log_e(log_mix - log_null)
    details = {
        **evidence, "alternative": alternative, "exposure_ratio": ratio, "null_candidate_share": rho0,
        "candidate_share": x / (x + y) if x + y else None,
        "rate_ratio": (x / y) / ratio if y else None,
        "prior": {"a": a, "b": b, "restricted": alternative != "two-sided"},
        "assumes": "a constant exposure ratio over the window",
    }
    return TestResult("msprt-poisson", statistic, p_value, y, x, details)


def normal_mixture_log_e(z: float, lam: float, alternative: str) -> float:
    """log e-value of the normal-mixture mSPRT for a statistic ``z = estimate / sqrt(v)``.

    ``lam = tau^2 / v`` (mixing variance over the estimate's variance): ``log E = -log(1 + lam)/2 +
    z^2 lam / (2 (1 + lam))``; the one-sided versions mix over a half-normal
    (``+ log 2 + log Phi(+-z sqrt(lam / (1 + lam)))``).
    """
    log_e = -0.5 * math.log1p(lam) + z * z * lam / (2.0 * (1.0 + lam))
    if alternative != "two-sided":
        signed = z if alternative == "greater" else -z
        log_e += math.log(2.0) + float(special.log_ndtr(signed * math.sqrt(lam / (1.0 + lam))))
    return log_e


def confidence_half_width(v: float, lam: float, alpha: float) -> float:
    """Half-width of the two-sided (1 - alpha) normal-mixture confidence sequence for the estimate."""
    return math.sqrt(v * 2.0 * (1.0 + lam) / lam * (math.log(1.0 / alpha) + 0.5 * math.log1p(lam)))


def sequential_mean_test(candidate: np.ndarray, reference: np.ndarray, *, alternative: str = "greater",
                         effect_size: float = 0.5, alpha: float = 0.05) -> TestResult:
    """Anytime-valid test of the difference in means (latency per interval, response lengths).

    Normal-mixture mSPRT on ``d = mean_c - mean_r`` with plug-in variance ``v = s_c^2/n_c + s_r^2/n_r``:
    with ``z = d / sqrt(v)`` and ``lam = tau^2 / v`` (mixing scale ``tau = effect_size`` x the
    average standard deviation), ``log E = -log(1 + lam)/2 + z^2 lam / (2 (1 + lam))``; the
    one-sided versions mix over a half-normal (``+ log 2 + log Phi(+-z sqrt(lam/(1+lam)))``).
    Asymptotically valid (Waudby-Smith et al. 2021). ``details.confidence_sequence`` is the
    matching (1 - ``alpha``) two-sided anytime-valid interval for ``d``. ``statistic`` is ``log E``.
    """
    cand = as_sample(candidate, name="candidate", min_size=2)
    ref = as_sample(reference, name="reference", min_size=2)
    check_alternative(alternative)
    eff = check_positive(effect_size, name="effect_size")
    level = check_positive(alpha, name="alpha", upper=1.0)
    var_c, var_r = float(cand.var(ddof=1)), float(ref.var(ddof=1))
    v = var_c / cand.size + var_r / ref.size
    if v <= 0.0:
        raise ValueError("sequential mean test: both samples are constant; no variance to test against")
    diff = float(cand.mean() - ref.mean())
    tau2 = eff * eff * (var_c + var_r) / 2.0
    lam = tau2 / v
    z = diff / math.sqrt(v)
    statistic, p_value, evidence = evidence_from_log_e(normal_mixture_log_e(z, lam, alternative))
    half = confidence_half_width(v, lam, level)
    details = {
        **evidence, "alternative": alternative, "difference": diff, "z": z,
        "candidate_mean": float(cand.mean()), "reference_mean": float(ref.mean()),
        "effect_size": eff, "mixing_scale": math.sqrt(tau2),
        "confidence_sequence": {"level": 1.0 - level, "lower": diff - half, "upper": diff + half},
        "validity": "asymptotic (normal approximation, plug-in variance)",
    }
    return TestResult("msprt-mean", statistic, p_value, int(ref.size), int(cand.size), details)


def sequential_rate_above_test(errors: int, total: int, ceiling: float, *, alpha: float = 0.05,
                               prior_strength: float = 10.0) -> TestResult:
    """Anytime-valid test that a rate is above ``ceiling`` (errors of a canary against an absolute limit).

    The e-value is the Beta(``k c``, ``k (1 - c)``) mixture, restricted to rates above ``c`` =
    ``ceiling`` (``k`` = ``prior_strength``), of the likelihood ratio of each rate against ``c``. For
    every true rate at or below ``c`` each such ratio is a supermartingale in the requests, so the
    mixture is one too and ``P(E_t >= 1/alpha for some t) <= alpha`` (Ville): failing the first time
    ``p < alpha`` keeps the chance of ever failing a canary that is within its ceiling at alpha,
    however often Argo looks. (It is the test of ``sequential_count_test`` with a known null share
    ``c``.) ``details.lower_bound`` is the matching anytime-valid lower confidence bound of the rate:
    the largest rate ``c'`` that the same test rejects at ``alpha``; ``p < alpha`` exactly when it
    is above the ceiling. ``statistic`` is ``log E``.
    """
    x, n = check_trials(errors, total, name="rate")
    c = check_positive(ceiling, name="ceiling", upper=1.0)
    level = check_positive(alpha, name="alpha", upper=1.0)
    k = check_positive(prior_strength, name="prior_strength")
    log_e = _rate_above_log_e(x, n, c, k)
    statistic, p_value, evidence = evidence_from_log_e(log_e)
    target = math.log(1.0 / level)
    rate = x / n
    lower = 0.0
    if x > 0 and _rate_above_log_e(x, n, rate, k) < target:
        lo = min(rate, 1e-12)
        if _rate_above_log_e(x, n, lo, k) >= target:
            lower = float(optimize.brentq(lambda c0: _rate_above_log_e(x, n, c0, k) - target, lo, rate,
                                          xtol=1e-12, rtol=1e-10))
    details = {
        **evidence, "ceiling": c, "rate": rate, "lower_bound": lower, "confidence": 1.0 - level,
        "bound": "anytime-valid (restricted Beta-mixture martingale)", "prior_strength": k,
    }
    return TestResult("msprt-ceiling", statistic, p_value, 0, n, details)


def _rate_above_log_e(x: int, n: int, c: float, k: float) -> float:
    a, b = k * c, k * (1.0 - c)
    post, prior = special.betaincc(a + x, b + n - x, c), special.betaincc(a, b, c)
    if post <= 0.0:
        return -math.inf
    log_mix = float(special.betaln(a + x, b + n - x) - special.betaln(a, b)) + math.log(post) - math.log(prior)
    return log_mix - float(special.xlogy(x, c) + special.xlog1py(n - x, -c))


def sequential_mann_whitney_binned(candidate_counts: Sequence[float] | np.ndarray,
                                   reference_counts: Sequence[float] | np.ndarray, *,
                                   alternative: str = "greater", effect_size: float = 0.1,
                                   alpha: float = 0.05) -> TestResult:
    """Anytime-valid (asymptotic) Mann-Whitney test on histogram buckets of the cumulative window.

    The estimate is ``theta = U / (n_c n_r) - 1/2`` (the probability that a candidate value beats a
    reference value, less a half; ties count half) with its tie-corrected variance ``v``; the
    e-value is the normal-mixture mSPRT on ``z = theta / sqrt(v)`` with mixing scale
    ``tau = effect_size`` on ``theta`` (``lam = tau^2 / v``). Like ``sequential_mean_test`` it rests
    on the normal approximation of a rank statistic (tens of values per side or more).
    ``details.confidence_sequence`` bounds ``theta`` at every look. ``statistic`` is ``log E``.
    """
    base = mann_whitney_binned(candidate_counts, reference_counts, alternative=alternative)
    eff = check_positive(effect_size, name="effect_size", upper=0.5)
    level = check_positive(alpha, name="alpha", upper=1.0)
    n_c, n_r = base.n_candidate, base.n_reference
    theta = float(base.details["prob_superiority"]) - 0.5
    v = float(base.details["variance"]) / float(n_c * n_r) ** 2
    if v <= 0.0:  # all values in one bucket: nothing to rank, no evidence either way
        log_e, half = 0.0, 0.5
    else:
        lam = eff * eff / v
        log_e = normal_mixture_log_e(theta / math.sqrt(v), lam, alternative)
        half = confidence_half_width(v, lam, level)
    statistic, p_value, evidence = evidence_from_log_e(log_e)
    details = {
        **evidence, "alternative": alternative, "theta": theta, "prob_superiority": theta + 0.5,
        "z": theta / math.sqrt(v) if v > 0 else 0.0, "effect_size": eff,
        "confidence_sequence": {"level": 1.0 - level, "lower": theta - half, "upper": theta + half},
        "bins": base.details["bins"], "occupied_bins": base.details["occupied_bins"],
        "validity": "asymptotic (normal approximation of U)",
    }
    return TestResult("msprt-mann-whitney-binned", statistic, p_value, n_r, n_c, details)
