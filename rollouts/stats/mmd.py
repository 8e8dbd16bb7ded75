"""Maximum mean discrepancy between two sets of vectors (embeddings), with a permutation p-value.

RBF kernel ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))`` with the median heuristic
(``sigma^2`` = median squared distance over distinct pairs of the pooled sample); the statistic is
the unbiased estimate of MMD^2. The permutation test computes ONE kernel matrix and then every
permutation at once: with ``s`` the 0/1 indicator of the rows labelled "reference" and ``K`` the kernel
matrix with a zero diagonal, the three block sums are ``q = s'Ks``, ``s'K1 - q`` and ``1'K1 - 2 s'K1 + q``,
so all permutations need one matrix product ``K @ S`` (``S``: indicator columns) plus a few vector ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from rollouts.stats.result import TestResult, as_sample
from rollouts.stats.sampling import subsample

# Permutations are processed in blocks of columns to bound memory (N x block float64).
_BLOCK = 512
# The median heuristic looks at the pairs of at most this many pooled rows (~500,000 pairs).
MEDIAN_ROWS = 1000


def squared_distances(z: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of the rows of ``z`` (one Gram matrix), diagonal exactly 0."""
    sq = np.einsum("ij,ij->i", z, z)
    d2: np.ndarray = z @ z.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def median_pairwise(d2: np.ndarray) -> float:
    """Median of the squared distances over distinct pairs, read off the full symmetric matrix.

    The flattened matrix holds N zeros (the diagonal) and every pair twice, so the ``i``-th smallest
    pair sits at position ``N + 2 i`` of its sorted order: one partial sort, no triangle copy.
    """
    n = d2.shape[0]
    pairs = n * (n - 1) // 2
    flat = d2.reshape(-1)
    if pairs % 2:
        k = n + 2 * (pairs // 2)
        return float(np.partition(flat, k)[k])
    lo, hi = n + 2 * (pairs // 2 - 1), n + 2 * (pairs // 2)
    part = np.partition(flat, (lo, hi))
    return float((part[lo] + part[hi]) / 2.0)


def rbf_kernel(z: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, float]:
    """The RBF kernel matrix of the pooled rows with a zero diagonal, and the bandwidth ``sigma``.

    The median runs over all pairs, or over the pairs of ``MEDIAN_ROWS`` pooled rows drawn with
    ``seed`` when there are more (the bandwidth ignores the labels, so the test stays exact).
    """
    k = squared_distances(z)
    if k.shape[0] > MEDIAN_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(k.shape[0], size=MEDIAN_ROWS, replace=False))
        med = median_pairwise(k[np.ix_(rows, rows)])
    else:
        med = median_pairwise(k)
    if med <= 0.0:
        raise ValueError("mmd: more than half of all pairs of vectors are identical; the median heuristic "
                         "gives no bandwidth (are the embeddings constant?)")
    k *= -1.0 / (2.0 * med)
    np.exp(k, out=k)
    np.fill_diagonal(k, 0.0)
    return k, float(np.sqrt(med))


def permutation_indices(n_total: int, permutations: int, *, seed: int) -> np.ndarray:
    """``permutations`` x ``n_total`` row orders from ``seed`` (row ``p``: permutation ``p``)."""
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n_total), (permutations, 1)), axis=1)


def mmd2_from_sums(q: np.ndarray | float, r: np.ndarray | float, total: float, *,
                   n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 from ``q = s'Ks``, ``r = s'K1`` (``K`` zero-diagonal, ``s``: n reference rows)."""
    kxx = q
    kxy = np.subtract(r, q)
    kyy = total - 2.0 * np.asarray(r) + q
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)


def permutation_statistics(kernel: np.ndarray, perms: np.ndarray, *, n: int,
                           stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Unbiased MMD^2 for every permutation (first ``n`` of each row = reference), as matrix products.

    ``stop`` is asked before each block of permutations after the first; when it says so, the
    statistics computed so far are returned (fewer rows than ``perms``).
    """
    n_total = kernel.shape[0]
    m = n_total - n
    rowsum = kernel.sum(axis=1)
    total = float(rowsum.sum())
    out = np.empty(perms.shape[0])
    for start in range(0, perms.shape[0], _BLOCK):
        if start and stop is not None and stop():
            return out[:start]
        block = perms[start:start + _BLOCK, :n]
        cols = block.shape[0]
        s = np.zeros((n_total, cols))
        s[block.T, np.arange(cols)[None, :]] = 1.0
        ks = kernel @ s
        q = np.einsum("ij,ij->j", s, ks)
        r = rowsum @ s
        out[start:start + cols] = mmd2_from_sums(q, r, total, n=n, m=m)
    return out


def permutation_statistics_loop(kernel: np.ndarray, perms: np.ndarray, *, n: int) -> np.ndarray:
    """The same statistics one permutation at a time (block sums of sub-matrices): the slow reference
    implementation that tests and ``tests/benchmarks/bench_drift.py`` compare the matrix products with."""
    m = kernel.shape[0] - n
    out = np.empty(perms.shape[0])
    for i, perm in enumerate(perms):
        x, y = perm[:n], perm[n:]
        kxx = kernel[np.ix_(x, x)].sum()
        kyy = kernel[np.ix_(y, y)].sum()
        kxy = kernel[np.ix_(x, y)].sum()
        out[i] = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)
    return out


def mmd_test(reference: np.ndarray, candidate: np.ndarray, *, permutations: int = 500,
             seed: int = 0, max_samples: int | None = None, vectorised: bool = True,
             stop: Callable[[], bool] | None = None) -> TestResult:
    """Two-sample MMD test with an RBF kernel (median heuristic) and a permutation p-value.

    Rows are samples (a 1-D input is one feature). With ``max_samples`` each side is first capped
    to that many rows (seeded subsample; ``details.subsampled_from`` keeps the original sizes).
    ``p = (1 + #{permuted MMD^2 >= observed}) / (1 + B)`` over the ``B`` permutations run:
    ``permutations``, or fewer when ``stop`` (asked between blocks of 512, e.g. a deadline) ends
    the run early -- ``details.permutations`` says how many, ``details.exceedances`` how many
    reached the observed statistic. ``vectorised=False`` runs the same permutations one at a time
    (the slow reference; same p-value), for tests and benchmarks.
    """
    ref = as_sample(reference, name="reference", ndim=2, min_size=2)
    cand = as_sample(candidate, name="candidate", ndim=2, min_size=2)
    if ref.shape[1] != cand.shape[1]:
        raise ValueError(f"mmd: reference rows have {ref.shape[1]} columns, candidate rows {cand.shape[1]}")
    if isinstance(permutations, bool) or not isinstance(permutations, int | np.integer) or permutations < 1:
        raise ValueError(f"mmd: permutations must be a whole number >= 1, got {permutations!r}")
    details: dict[str, object] = {}
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int | np.integer) or max_samples < 2:
            raise ValueError(f"mmd: max_samples must be a whole number >= 2, got {max_samples!r}")
        original = [int(ref.shape[0]), int(cand.shape[0])]
        ref, ref_capped = subsample(ref, max_samples=int(max_samples), seed=seed)
        cand, cand_capped = subsample(cand, max_samples=int(max_samples), seed=seed + 1)
        if ref_capped or cand_capped:
            details["subsampled_from"] = {"reference": original[0], "candidate": original[1]}
    n, m = ref.shape[0], cand.shape[0]
    kernel, sigma = rbf_kernel(np.vstack([ref, cand]), seed=seed)
    rowsum = kernel.sum(axis=1)
    total = float(rowsum.sum())
    q_obs = float(kernel[:n, :n].sum())
    observed = float(mmd2_from_sums(q_obs, float(rowsum[:n].sum()), total, n=n, m=m))
    perms = permutation_indices(n + m, int(permutations), seed=seed)
    null = (permutation_statistics(kernel, perms, n=n, stop=stop) if vectorised
            else permutation_statistics_loop(kernel, perms, n=n))
    # A relative tolerance so that sums taken in another order (a loop) count the same ties.
    tol = 1e-12 * max(1.0, abs(observed))
    exceed = int(np.count_nonzero(null >= observed - tol))
    p_value = (1 + exceed) / (1 + int(null.size))
    details.update(
        kernel="rbf",
        bandwidth=sigma,
        bandwidth_rule="median pairwise distance of the pooled sample"
        + (f" (pairs of {MEDIAN_ROWS} random rows)" if n + m > MEDIAN_ROWS else ""),
        permutations=int(null.size),
        permutations_requested=int(permutations),
        exceedances=exceed,
        seed=int(seed),
        estimator="unbiased MMD^2",
        engine="matrix products" if vectorised else "loop",
        null_mean=float(null.mean()),
        null_q95=float(np.quantile(null, 0.95)),
        dimensions=int(ref.shape[1]),
    )
    return TestResult("mmd", observed, p_value, n, m, details)


# Permutation work allowed for one answer: permutations x (pooled rows)^2. At 2 x 1,000 rows that is
# 8,000 permutations, about 2 s on 2 shared cores (tests/benchmarks/bench_drift.py): inside the 7 s
# answer budget with room for loading the objects.
MAX_PERMUTATION_WORK = 32_000_000_000
# A capped run still decides "not significant" when its exceedances make p < threshold this unlikely.
UNDECIDED_BELOW = 1e-3


def permutations_needed(threshold: float) -> int:
    """Permutations for a p-value that can fall to half of ``threshold``: ``ceil(2 / threshold)``.

    ``threshold`` is the smallest level the test may have to pass in its family: alpha of the look
    divided by the number of tests (Bonferroni, and Benjamini-Hochberg when it is the only discovery).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    return math.ceil(2.0 / threshold)


def permutation_budget(pooled_rows: int) -> int:
    """The most permutations ``MAX_PERMUTATION_WORK`` allows for a kernel of ``pooled_rows`` rows."""
    return max(1, MAX_PERMUTATION_WORK // max(1, pooled_rows) ** 2)


def permutation_undecided(exceedances: int, permutations: int, threshold: float) -> bool:
    """Could the exact permutation p-value still be below ``threshold`` when this run's is not?

    With ``e`` of ``B`` permutations at or above the observed statistic, the run's p-value is
    ``(1 + e) / (1 + B)``. If that is below ``threshold`` the test is significant; otherwise it is
    decided "not significant" only when ``e`` exceptions would be implausible (probability below
    ``UNDECIDED_BELOW``) for a test whose exact p-value were ``threshold``: ``P(Bin(B, t) >= e)``.
    Too few permutations to tell (a cap, a deadline) is undecided, never a pass.
    """
    if (1 + exceedances) / (1 + permutations) < threshold:
        return False
    return float(stats.binom.sf(exceedances - 1, permutations, threshold)) >= UNDECIDED_BELOW
