"""Statistical honesty with fixed seeds: no drift -> rejections near alpha; a stated shift -> rejections.

Bound under the null: at most 2 x alpha over 500 trials (the Monte-Carlo standard error at
alpha = 0.05 is 0.01, so 0.10 is five standard errors above a correct test).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rollouts.stats import (
    chi2_test,
    ks_test,
    mann_whitney_test,
    mcnemar_test,
    mmd_test,
    psi,
    two_proportion_test,
)

ALPHA = 0.05
TRIALS = 500


def _rate(trials: int, one: Callable[[np.random.Generator], float | None], seed: int) -> float:
    rng = np.random.default_rng(seed)
    rejections = 0
    for _ in range(trials):
        p = one(rng)
        assert p is not None
        rejections += p < ALPHA
    return rejections / trials


def test_ks_null_and_a_0_2_sd_shift_at_n_2000() -> None:
    null = _rate(TRIALS, lambda r: ks_test(r.normal(size=300), r.normal(size=300)).p_value, seed=1)
    assert null <= 2 * ALPHA
    power = _rate(50, lambda r: ks_test(r.normal(size=2000), r.normal(0.2, size=2000)).p_value, seed=2)
    assert power >= 0.9


def test_ks_null_on_skewed_data() -> None:
    null = _rate(TRIALS, lambda r: ks_test(r.lognormal(size=200), r.lognormal(size=250)).p_value, seed=3)
    assert null <= 2 * ALPHA


def test_chi2_null_and_a_shifted_category_mix() -> None:
    cats = np.array(["a", "b", "c", "d", "e"])
    base = np.array([0.4, 0.25, 0.15, 0.15, 0.05])
    moved = np.array([0.32, 0.25, 0.15, 0.15, 0.13])

    def draw(r: np.random.Generator, p: np.ndarray, n: int) -> list[str]:
        return list(r.choice(cats, size=n, p=p))

    null = _rate(TRIALS, lambda r: chi2_test(draw(r, base, 400), draw(r, base, 300)).p_value, seed=4)
    assert null <= 2 * ALPHA
    power = _rate(50, lambda r: chi2_test(draw(r, base, 2000), draw(r, moved, 2000)).p_value, seed=5)
    assert power >= 0.9


def test_mmd_null_and_an_obvious_shift_of_384_dim_embeddings() -> None:
    null = _rate(
        TRIALS,
        lambda r: (
            mmd_test(
                r.normal(size=(40, 16)),
                r.normal(size=(40, 16)),
                permutations=100,
                seed=int(r.integers(1 << 30)),
            ).p_value
        ),
        seed=6,
    )
    assert null <= 2 * ALPHA

    def shifted(r: np.random.Generator) -> float | None:
        ref = r.normal(size=(200, 384))
        cand = r.normal(size=(200, 384))
        cand[:, :48] += 0.5  # an eighth of the dimensions moved by half a standard deviation
        return mmd_test(ref, cand, permutations=200, seed=int(r.integers(1 << 30))).p_value

    assert _rate(10, shifted, seed=7) >= 0.9


def test_mann_whitney_null_and_a_slower_canary() -> None:
    null = _rate(
        TRIALS, lambda r: mann_whitney_test(r.lognormal(size=60), r.lognormal(size=60)).p_value, seed=8
    )
    assert null <= 2 * ALPHA
    # Per-interval p95 latencies: log-normal with sigma 0.3; the canary 30 % slower, 60 intervals each.
    power = _rate(
        100,
        lambda r: mann_whitney_test(1.3 * r.lognormal(0, 0.3, size=60), r.lognormal(0, 0.3, size=60)).p_value,
        seed=9,
    )
    assert power >= 0.9
    wrong_way = _rate(
        100,
        lambda r: mann_whitney_test(r.lognormal(0, 0.3, size=60), 1.3 * r.lognormal(0, 0.3, size=60)).p_value,
        seed=10,
    )
    assert wrong_way <= ALPHA  # a faster canary is not "greater"


@pytest.mark.parametrize(("p", "n"), [(0.05, 800), (0.01, 150)])  # z-test, and Fisher for small counts
def test_two_proportion_null_and_a_doubled_rate(p: float, n: int) -> None:
    null = _rate(
        TRIALS,
        lambda r: two_proportion_test(int(r.binomial(n, p)), n, int(r.binomial(n, p)), n).p_value,
        seed=11,
    )
    assert null <= 2 * ALPHA
    power = _rate(
        100,
        lambda r: (
            two_proportion_test(int(r.binomial(5000, 2 * p)), 5000, int(r.binomial(5000, p)), 5000).p_value
        ),
        seed=12,
    )
    assert power >= 0.9


def test_mcnemar_null_and_a_regressed_model() -> None:
    def pairs(r: np.random.Generator, flip_down: float, flip_up: float) -> float | None:
        ref = r.random(300) < 0.7
        u = r.random(300)
        cand = np.where(ref, u >= flip_down, u < flip_up)
        return mcnemar_test(list(ref), list(cand)).p_value

    null = _rate(TRIALS, lambda r: pairs(r, 0.1, 0.7 * 0.1 / 0.3), seed=13)  # same accuracy in expectation
    assert null <= 2 * ALPHA
    power = _rate(100, lambda r: pairs(r, 0.2, 0.05), seed=14)  # accuracy 0.70 -> ~0.58
    assert power >= 0.9


def test_psi_stays_low_without_drift_and_crosses_the_fail_threshold_under_a_shift() -> None:
    rng = np.random.default_rng(15)
    quiet = [psi(rng.normal(size=5000), rng.normal(size=5000)).statistic for _ in range(50)]
    assert max(quiet) < 0.1  # never reaches the warn threshold
    moved = [psi(rng.normal(size=5000), rng.normal(0.7, size=5000)).statistic for _ in range(20)]
    assert min(moved) > 0.25
