"""MMD: the statistic, the median heuristic and the matrix-product permutations against plain formulas."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from rollouts.stats import mmd_test
from rollouts.stats.mmd import (
    median_pairwise,
    permutation_indices,
    permutation_statistics,
    permutation_statistics_loop,
    rbf_kernel,
    squared_distances,
)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al. (2012) eq. 3, written out with scipy's cdist."""
    n, m = len(x), len(y)
    kxx = np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma**2))
    kyy = np.exp(-cdist(y, y, "sqeuclidean") / (2 * sigma**2))
    kxy = np.exp(-cdist(x, y, "sqeuclidean") / (2 * sigma**2))
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def test_statistic_and_bandwidth_match_the_textbook_formulas(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(70, 6)), rng.normal(0.3, 1.2, size=(55, 6))
    got = mmd_test(x, y, permutations=100)
    pooled = np.vstack([x, y])
    sigma = float(np.sqrt(np.median(pdist(pooled, "sqeuclidean"))))
    assert got.details["bandwidth"] == pytest.approx(sigma, rel=1e-12)
    assert got.statistic == pytest.approx(_mmd2_unbiased(x, y, sigma), rel=1e-9, abs=1e-12)
    assert (got.n_reference, got.n_candidate) == (70, 55)


@pytest.mark.parametrize("n", [5, 6, 7, 40])
def test_median_of_pairs_read_from_the_full_matrix(rng: np.random.Generator, n: int) -> None:
    z = rng.normal(size=(n, 3))
    d2 = squared_distances(z)
    np.testing.assert_allclose(d2, cdist(z, z, "sqeuclidean"), atol=1e-10)
    assert median_pairwise(d2) == pytest.approx(np.median(pdist(z, "sqeuclidean")), rel=1e-12)


@pytest.mark.parametrize(("shift", "n", "m"), [(0.0, 60, 45), (0.4, 50, 50), (0.15, 80, 30)])
def test_matrix_products_give_the_loop_statistics_and_p_value(
    rng: np.random.Generator, shift: float, n: int, m: int
) -> None:
    x, y = rng.normal(size=(n, 8)), rng.normal(shift, size=(m, 8))
    kernel, _ = rbf_kernel(np.vstack([x, y]))
    perms = permutation_indices(n + m, 300, seed=5)
    np.testing.assert_allclose(
        permutation_statistics(kernel, perms, n=n),
        permutation_statistics_loop(kernel, perms, n=n),
        rtol=1e-9,
        atol=1e-13,
    )
    fast = mmd_test(x, y, permutations=300, seed=5)
    slow = mmd_test(x, y, permutations=300, seed=5, vectorised=False)
    assert fast.p_value == slow.p_value
    assert fast.statistic == pytest.approx(slow.statistic, rel=1e-12)
    assert (fast.details["engine"], slow.details["engine"]) == ("matrix products", "loop")


def test_blocks_of_permutations_match_one_block(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(25, 4))
    kernel, _ = rbf_kernel(np.vstack([x, y]))
    perms = permutation_indices(55, 1300, seed=1)  # three blocks of 512
    np.testing.assert_allclose(
        permutation_statistics(kernel, perms, n=30),
        permutation_statistics_loop(kernel, perms, n=30),
        rtol=1e-9,
        atol=1e-13,
    )


def test_permutations_are_seeded_permutations() -> None:
    a, b, c = (permutation_indices(50, 20, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (np.sort(a, axis=1) == np.arange(50)).all()


def test_obvious_shift_gets_the_smallest_possible_p_value(rng: np.random.Generator) -> None:
    got = mmd_test(rng.normal(size=(100, 16)), rng.normal(1.0, size=(100, 16)), permutations=199)
    assert got.p_value == pytest.approx(1 / 200)
    assert got.statistic > got.details["null_q95"]


def test_capping_records_the_original_sizes(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(120, 4))
    got = mmd_test(x, y, permutations=20, max_samples=100)
    assert (got.n_reference, got.n_candidate) == (100, 100)
    assert got.details["subsampled_from"] == {"reference": 300, "candidate": 120}
    uncapped = mmd_test(x, y, permutations=20, max_samples=500)
    assert "subsampled_from" not in uncapped.details


def test_one_dimensional_input_is_one_feature(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=50), rng.normal(size=40)
    assert (
        mmd_test(x, y, permutations=50).statistic
        == mmd_test(x[:, None], y[:, None], permutations=50).statistic
    )


def test_large_pooled_sample_takes_the_median_over_a_row_subset(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(700, 5)), rng.normal(size=(700, 5))
    got = mmd_test(x, y, permutations=20)
    full = float(np.sqrt(np.median(pdist(np.vstack([x, y]), "sqeuclidean"))))
    assert "1000 random rows" in got.details["bandwidth_rule"]
    assert got.details["bandwidth"] == pytest.approx(full, rel=0.02)


def test_matrix_products_are_several_times_faster_than_the_loop(rng: np.random.Generator) -> None:
    x, y = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))

    def best(vectorised: bool) -> float:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            mmd_test(x, y, permutations=200, vectorised=vectorised)
            times.append(time.perf_counter() - start)
        return min(times)

    assert best(False) > 3 * best(True)
