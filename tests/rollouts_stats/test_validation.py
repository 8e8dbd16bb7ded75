"""Bad input raises ValueError with a message that names the problem (the service answers 400)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

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
    subsample,
    two_proportion_test,
)

GOOD = np.arange(10, dtype=float)
GOOD2 = np.arange(20, dtype=float).reshape(10, 2)

SAMPLE_TESTS: list[Callable[..., Any]] = [ks_test, psi, mann_whitney_test, sequential_mean_test]


@pytest.mark.parametrize("fn", SAMPLE_TESTS)
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([]), "at least"),
        (np.array([1.0, np.nan, 2.0]), "NaN or infinite"),
        (np.array([1.0, np.inf, 2.0]), "NaN or infinite"),
        (np.ones((3, 2)), "1-D"),
        (["a", "b"], "must be numbers"),
        ([[1.0, 2.0], [3.0]], "must be numbers"),
    ],
)
@pytest.mark.parametrize("side", [0, 1])
def test_one_dimensional_tests_refuse_bad_samples(
    fn: Callable[..., Any], bad: Any, match: str, side: int
) -> None:
    args = [GOOD, GOOD]
    args[side] = bad
    with pytest.raises(ValueError, match=match):
        fn(*args)


@pytest.mark.parametrize(
    ("ref", "cand", "match"),
    [
        (np.empty((0, 3)), np.ones((5, 3)), "at least 2"),
        (np.ones((5, 3)), np.ones((5, 4)), "columns"),
        (np.full((5, 3), np.nan), np.ones((5, 3)), "NaN"),
        (np.ones((2, 2, 2)), np.ones((5, 3)), "2-D"),
        (np.ones((5, 0)), np.ones((5, 0)), "no columns"),
        (np.ones((6, 3)), np.ones((6, 3)), "identical"),
    ],
)
def test_mmd_refuses_bad_embeddings(ref: np.ndarray, cand: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mmd_test(ref, cand, permutations=10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"permutations": 0}, "permutations"),
        ({"permutations": 2.5}, "permutations"),
        ({"max_samples": 1}, "max_samples"),
    ],
)
def test_mmd_refuses_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mmd_test(GOOD2, GOOD2 + 1, **kwargs)


@pytest.mark.parametrize(
    ("ref", "cand", "match"),
    [
        ([], ["a"], "at least 1"),
        (["a", None], ["a"], "missing value"),
        ([1.0, float("nan")], [1.0], "NaN"),
        ("abc", ["a"], "single string"),
        ([["a"], ["b"]], ["a"], "hashable"),
    ],
)
def test_chi2_refuses_bad_categories(ref: Any, cand: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        chi2_test(ref, cand)


@pytest.mark.parametrize("fn", [two_proportion_test, sequential_proportion_test])
@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((5, 0, 1, 10), "at least one trial"),
        ((11, 10, 1, 10), "larger than the total"),
        ((-1, 10, 1, 10), "negative"),
        ((1.5, 10, 1, 10), "whole number"),
        ((True, 10, 1, 10), "whole number"),
        ((1, 10, 1, float("nan")), "whole number"),
    ],
)
def test_proportion_tests_refuse_bad_counts(
    fn: Callable[..., Any], args: tuple[Any, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args)


@pytest.mark.parametrize("fn", [two_proportion_test, sequential_proportion_test])
def test_alternative_is_checked(fn: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="alternative"):
        fn(1, 10, 1, 10, alternative="bigger")
    with pytest.raises(ValueError, match="alternative"):
        mann_whitney_test(GOOD, GOOD, alternative="larger")


def test_whole_floats_count_as_counts() -> None:
    assert two_proportion_test(5.0, 100.0, 3, 100).n_candidate == 100


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((-1, 3), {}, "negative"),
        ((1, 3), {"exposure_ratio": 0}, "exposure_ratio"),
        ((1, 3), {"exposure_ratio": float("inf")}, "exposure_ratio"),
        ((1, 3), {"prior_strength": -1}, "prior"),
        ((1, 3), {"alternative": "up"}, "alternative"),
    ],
)
def test_count_test_refuses_bad_input(args: tuple[int, int], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sequential_count_test(*args, **kwargs)


def test_mean_test_needs_variation_and_two_samples() -> None:
    with pytest.raises(ValueError, match="constant"):
        sequential_mean_test(np.ones(5), np.ones(7))
    with pytest.raises(ValueError, match="at least 2"):
        sequential_mean_test(np.ones(1), GOOD)
    with pytest.raises(ValueError, match="alpha"):
        sequential_mean_test(GOOD, GOOD + 1, alpha=1.5)
    with pytest.raises(ValueError, match="effect_size"):
        sequential_mean_test(GOOD, GOOD + 1, effect_size=0)


@pytest.mark.parametrize(
    ("ref", "cand", "match"),
    [
        ([True], [True, False], "same length"),
        ([], [], "at least one"),
        ([0, 2], [1, 1], "true/false"),
        ("TF", "TF", "string"),
        ([[True]], [[True]], "1-D"),
    ],
)
def test_mcnemar_refuses_bad_pairs(ref: Any, cand: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mcnemar_test(ref, cand)


def test_subsample_caps_rows_keeps_order_and_is_seeded() -> None:
    values = np.arange(1000).reshape(500, 2)
    same, capped = subsample(values, max_samples=500)
    assert same is values and capped is False
    a, capped = subsample(values, max_samples=100, seed=3)
    b, _ = subsample(values, max_samples=100, seed=3)
    c, _ = subsample(values, max_samples=100, seed=4)
    assert capped is True
    assert a.shape == (100, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (np.diff(a[:, 0]) > 0).all()  # order kept, no duplicates
    assert set(a[:, 0]) <= set(values[:, 0])
    with pytest.raises(ValueError, match="max_samples"):
        subsample(values, max_samples=0)
    with pytest.raises(ValueError, match="scalar"):
        subsample(np.float64(3.0), max_samples=5)
