"""Anytime-valid tests (issue 6): exact formulas, and the repeated-looks simulation.

The simulation: 20 looks at the cumulative window of a canary that is NOT worse, many trials,
fixed seeds. A trial is a false alarm if any look rejects at alpha. The sequential tests must stay at
or below alpha -- with a Monte-Carlo slack of two standard errors, sqrt(alpha (1 - alpha) / trials),
stated per test -- while the fixed-sample test repeated at every look must exceed alpha clearly
(at least 2 x alpha; in theory about 4 x alpha for 20 looks).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import integrate, stats

from rollouts.stats import (
    sequential_count_test,
    sequential_mean_test,
    sequential_proportion_test,
    two_proportion_test,
)

ALPHA = 0.05
LOOKS = 20
TRIALS = 400
SLACK = 2 * math.sqrt(ALPHA * (1 - ALPHA) / TRIALS)  # 0.022


def _false_alarms(p_values: Callable[[int, int], float]) -> float:
    """Share of trials in which any of the LOOKS looks gives p < ALPHA."""
    alarms = 0
    for trial in range(TRIALS):
        alarms += any(p_values(trial, look) < ALPHA for look in range(LOOKS))
    return alarms / TRIALS


# ---------------------------------------------------------------- exact formulas against scipy


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_r", "n_r"), [(30, 1000, 12, 1000), (7, 150, 40, 2000), (0, 50, 3, 80)]
)
def test_proportion_e_value_is_beta_binomial_mixture_over_pooled_binomial(
    x_c: int, n_c: int, x_r: int, n_r: int
) -> None:
    got = sequential_proportion_test(x_c, n_c, x_r, n_r, alternative="two-sided")
    pooled = (x_c + x_r) / (n_c + n_r)
    # The binomial coefficients cancel between numerator and denominator.
    want = (
        stats.betabinom.logpmf(x_c, n_c, 0.5, 0.5)
        + stats.betabinom.logpmf(x_r, n_r, 0.5, 0.5)
        - stats.binom.logpmf(x_c, n_c, pooled)
        - stats.binom.logpmf(x_r, n_r, pooled)
    )
    assert got.statistic == pytest.approx(want, abs=1e-9)
    assert got.details["log_e_value"] == got.statistic
    assert got.p_value == pytest.approx(min(1.0, math.exp(-want)), abs=1e-12)


def test_proportion_one_sided_gives_no_evidence_when_the_candidate_is_not_worse() -> None:
    better = sequential_proportion_test(10, 2000, 60, 2000, alternative="greater")
    assert better.details["e_value"] <= 1.0
    assert better.p_value == 1.0
    worse = sequential_proportion_test(60, 2000, 10, 2000, alternative="greater")
    assert worse.p_value < 1e-4
    assert sequential_proportion_test(60, 2000, 10, 2000, alternative="less").p_value == 1.0
    # One-sided evidence equals two-sided evidence when the data point the tested way.
    assert worse.statistic == pytest.approx(
        sequential_proportion_test(60, 2000, 10, 2000, alternative="two-sided").statistic
    )


@pytest.mark.parametrize(
    ("x", "y", "ratio", "alternative"),
    [(30, 40, 0.5, "greater"), (12, 80, 0.25, "greater"), (5, 60, 0.25, "less"), (40, 40, 1.0, "two-sided")],
)
def test_count_e_value_is_the_truncated_beta_mixture(x: int, y: int, ratio: float, alternative: str) -> None:
    got = sequential_count_test(x, y, exposure_ratio=ratio, alternative=alternative, prior_strength=10)
    rho0 = ratio / (1 + ratio)
    a, b = 10 * rho0, 10 * (1 - rho0)
    lo, hi = {"greater": (rho0, 1.0), "less": (0.0, rho0), "two-sided": (0.0, 1.0)}[alternative]

    def integrand(rho: float) -> float:
        # likelihood ratio against rho0 times the prior density
        return math.exp(x * math.log(rho / rho0) + y * math.log((1 - rho) / (1 - rho0))) * stats.beta.pdf(
            rho, a, b
        )

    mass = stats.beta.cdf(hi, a, b) - stats.beta.cdf(lo, a, b)
    value, _ = integrate.quad(
        integrand,
        lo,
        hi,
        points=[x / (x + y)] if lo < x / (x + y) < hi else None,
        epsabs=0,
        epsrel=1e-11,
        limit=200,
    )
    assert got.details["e_value"] == pytest.approx(value / mass, rel=1e-7)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_mean_e_value_is_the_normal_mixture(rng: np.random.Generator, alternative: str) -> None:
    cand, ref = rng.normal(0.3, 1.0, size=40), rng.normal(0.0, 1.5, size=60)
    got = sequential_mean_test(cand, ref, alternative=alternative, effect_size=0.5)
    v = cand.var(ddof=1) / 40 + ref.var(ddof=1) / 60
    d = cand.mean() - ref.mean()
    tau = 0.5 * math.sqrt((cand.var(ddof=1) + ref.var(ddof=1)) / 2)
    lo, hi = {"greater": (0, np.inf), "less": (-np.inf, 0), "two-sided": (-np.inf, np.inf)}[alternative]
    weight = 1.0 if alternative == "two-sided" else 2.0  # half-normal prior for one side

    def integrand(theta: float) -> float:
        return weight * stats.norm.pdf(theta, 0, tau) * math.exp((theta * d - theta**2 / 2) / v)

    value, _ = integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-11)
    assert got.details["e_value"] == pytest.approx(value, rel=1e-8)


def test_mean_confidence_sequence_excludes_zero_exactly_when_the_two_sided_test_rejects(
    rng: np.random.Generator,
) -> None:
    for shift in np.linspace(0, 0.8, 17):
        res = sequential_mean_test(rng.normal(shift, size=50), rng.normal(size=50), alternative="two-sided")
        cs = res.details["confidence_sequence"]
        assert cs["lower"] <= res.details["difference"] <= cs["upper"]
        assert (res.p_value < ALPHA) == (not cs["lower"] <= 0.0 <= cs["upper"])


def test_huge_evidence_stays_finite_for_json() -> None:
    res = sequential_proportion_test(5000, 10000, 10, 10000)
    assert math.isfinite(res.details["e_value"]) and res.p_value == pytest.approx(0.0, abs=1e-250)
    none = sequential_count_test(0, 100_000, exposure_ratio=1.0)
    assert none.p_value == 1.0 and math.isfinite(none.statistic)


# ---------------------------------------------------------------- repeated looks: the simulation


def test_proportion_20_looks_sequential_holds_alpha_fixed_does_not() -> None:
    rng = np.random.default_rng(61)
    per_look = 250
    n = per_look * np.arange(1, LOOKS + 1)
    x_c = rng.binomial(per_look, 0.02, size=(TRIALS, LOOKS)).cumsum(axis=1)
    x_r = rng.binomial(per_look, 0.02, size=(TRIALS, LOOKS)).cumsum(axis=1)
    seq = _false_alarms(
        lambda t, k: sequential_proportion_test(int(x_c[t, k]), int(n[k]), int(x_r[t, k]), int(n[k])).p_value
    )
    fixed = _false_alarms(
        lambda t, k: two_proportion_test(int(x_c[t, k]), int(n[k]), int(x_r[t, k]), int(n[k])).p_value
    )
    assert seq <= ALPHA + SLACK
    assert fixed >= 2 * ALPHA
    one_look = np.mean(
        [
            two_proportion_test(int(x_c[t, -1]), int(n[-1]), int(x_r[t, -1]), int(n[-1])).p_value < ALPHA
            for t in range(TRIALS)
        ]
    )
    assert one_look <= 2 * ALPHA  # a single look is fine; repeating it is the problem


def test_proportion_unequal_traffic_10_percent_canary() -> None:
    rng = np.random.default_rng(62)
    n_c, n_r = 60 * np.arange(1, LOOKS + 1), 540 * np.arange(1, LOOKS + 1)
    x_c = rng.binomial(60, 0.05, size=(TRIALS, LOOKS)).cumsum(axis=1)
    x_r = rng.binomial(540, 0.05, size=(TRIALS, LOOKS)).cumsum(axis=1)
    seq = _false_alarms(
        lambda t, k: (
            sequential_proportion_test(int(x_c[t, k]), int(n_c[k]), int(x_r[t, k]), int(n_r[k])).p_value
        )
    )
    fixed = _false_alarms(
        lambda t, k: two_proportion_test(int(x_c[t, k]), int(n_c[k]), int(x_r[t, k]), int(n_r[k])).p_value
    )
    assert seq <= ALPHA + SLACK
    assert fixed >= 2 * ALPHA


def test_proportion_detects_a_doubled_error_rate() -> None:
    rng = np.random.default_rng(63)
    per_look = 1000
    n = per_look * np.arange(1, LOOKS + 1)
    x_c = rng.binomial(per_look, 0.02, size=(100, LOOKS)).cumsum(axis=1)
    x_r = rng.binomial(per_look, 0.01, size=(100, LOOKS)).cumsum(axis=1)
    detected = [
        next(
            (
                k
                for k in range(LOOKS)
                if sequential_proportion_test(int(x_c[t, k]), int(n[k]), int(x_r[t, k]), int(n[k])).p_value
                < ALPHA
            ),
            None,
        )
        for t in range(100)
    ]
    assert sum(d is not None for d in detected) >= 95  # 1 % -> 2 % caught within 20,000 requests each
    assert np.median([d for d in detected if d is not None]) <= 12


def test_count_20_looks_sequential_holds_alpha_fixed_does_not() -> None:
    rng = np.random.default_rng(64)
    # Poisson errors; the canary gets 20 % of traffic (exposure ratio 0.25), same error rate.
    c = rng.poisson(2.0, size=(TRIALS, LOOKS)).cumsum(axis=1)
    r = rng.poisson(8.0, size=(TRIALS, LOOKS)).cumsum(axis=1)
    seq = _false_alarms(
        lambda t, k: sequential_count_test(int(c[t, k]), int(r[t, k]), exposure_ratio=0.25).p_value
    )
    fixed = _false_alarms(
        lambda t, k: (
            stats.binomtest(int(c[t, k]), int(c[t, k] + r[t, k]), 0.2, alternative="greater").pvalue
            if c[t, k] + r[t, k]
            else 1.0
        )
    )
    assert seq <= ALPHA + SLACK
    assert fixed >= 2 * ALPHA
    # and it sees a canary with twice the error rate per request
    c2 = rng.poisson(4.0, size=(100, LOOKS)).cumsum(axis=1)
    r2 = rng.poisson(8.0, size=(100, LOOKS)).cumsum(axis=1)
    caught = sum(
        any(
            sequential_count_test(int(c2[t, k]), int(r2[t, k]), exposure_ratio=0.25).p_value < ALPHA
            for k in range(LOOKS)
        )
        for t in range(100)
    )
    assert caught >= 90


@pytest.mark.parametrize(
    "weights",
    [[0.2] * LOOKS, [0.05] * 5 + [0.1] * 5 + [0.25] * 5 + [0.5] * 5],
    ids=["fixed-20-percent", "steps-5-10-25-50-percent"],
)
def test_count_test_on_routed_requests_with_the_ratio_from_request_counts(weights: list[float]) -> None:
    """Per-request routing at the canary weight, Bernoulli errors, exposure ratio = n_c / n_r at each look."""
    rng = np.random.default_rng(67)
    per_look, rate = 2000, 0.02
    n_c = rng.binomial(per_look, np.array(weights), size=(TRIALS, LOOKS))
    x_c = rng.binomial(n_c, rate).cumsum(axis=1)
    x_r = rng.binomial(per_look - n_c, rate).cumsum(axis=1)
    n_c, n_r = n_c.cumsum(axis=1), (per_look - n_c).cumsum(axis=1)
    seq = _false_alarms(
        lambda t, k: (
            sequential_count_test(
                int(x_c[t, k]), int(x_r[t, k]), exposure_ratio=n_c[t, k] / n_r[t, k]
            ).p_value
        )
    )
    assert seq <= ALPHA + SLACK


@pytest.mark.parametrize(("dist", "step"), [("normal", 10), ("lognormal", 15)])
def test_mean_20_looks_sequential_holds_alpha_fixed_does_not(dist: str, step: int) -> None:
    rng = np.random.default_rng(65)
    size = (TRIALS, LOOKS * step)
    if dist == "normal":
        cand, ref = rng.normal(size=size), rng.normal(size=size)
    else:  # latency-like, right-skewed
        cand, ref = rng.lognormal(0, 0.5, size=size), rng.lognormal(0, 0.5, size=size)
    seq = _false_alarms(
        lambda t, k: sequential_mean_test(cand[t, : (k + 1) * step], ref[t, : (k + 1) * step]).p_value
    )
    # Welch's t-test at every look, all trials at once
    fixed_any = np.zeros(TRIALS, dtype=bool)
    for k in range(LOOKS):
        p = stats.ttest_ind(
            cand[:, : (k + 1) * step],
            ref[:, : (k + 1) * step],
            axis=1,
            equal_var=False,
            alternative="greater",
        ).pvalue
        fixed_any |= p < ALPHA
    assert seq <= ALPHA + SLACK
    assert fixed_any.mean() >= 2 * ALPHA


def test_mean_detects_a_half_sd_slowdown() -> None:
    rng = np.random.default_rng(66)
    cand, ref = rng.normal(0.5, 1, size=(100, 200)), rng.normal(0, 1, size=(100, 200))
    caught = sum(
        any(
            sequential_mean_test(cand[t, : (k + 1) * 10], ref[t, : (k + 1) * 10]).p_value < ALPHA
            for k in range(LOOKS)
        )
        for t in range(100)
    )
    assert caught >= 95


def test_always_valid_p_is_the_inverse_e_value() -> None:
    for res in (
        sequential_proportion_test(40, 1000, 20, 1000),
        sequential_count_test(50, 20),
        sequential_mean_test(np.arange(30.0) + 5, np.arange(30.0)),
    ):
        assert res.p_value == pytest.approx(min(1.0, 1.0 / res.details["e_value"]))
        assert res.statistic == pytest.approx(math.log(res.details["e_value"]))
