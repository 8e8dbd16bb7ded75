"""PSI: quantile bins from the reference, epsilon for empty bins, against the hand formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rollouts.stats import psi


def _psi(c: list[float], r: list[float]) -> float:
    return sum((ci - ri) * math.log(ci / ri) for ci, ri in zip(c, r, strict=True))


def test_quantile_bins_from_the_reference_and_the_formula() -> None:
    reference = np.arange(1, 101, dtype=float)  # quartile cut points 25, 50, 75 (observed values)
    candidate = np.array([10.0] * 10 + [40.0] * 20 + [60.0] * 30 + [90.0] * 40)
    got = psi(reference, candidate, bins=4)
    assert got.details["cut_points"] == [25.0, 50.0, 75.0]
    assert got.details["reference_proportions"] == pytest.approx([0.25] * 4)
    assert got.details["candidate_proportions"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert got.statistic == pytest.approx(_psi([0.1, 0.2, 0.3, 0.4], [0.25] * 4), abs=1e-12)
    assert got.p_value is None
    assert got.method == "psi"


def test_values_on_a_cut_point_fall_in_the_lower_bin() -> None:
    reference = np.arange(1, 101, dtype=float)
    got = psi(reference, np.array([25.0, 25.01]), bins=4)
    assert got.details["candidate_proportions"] == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_empty_bins_are_smoothed_with_epsilon() -> None:
    reference = np.arange(1, 101, dtype=float)
    candidate = np.full(50, 5.0)  # everything in the first bin
    eps = 1e-3
    got = psi(reference, candidate, bins=4, epsilon=eps)
    c = [x / (1 + 3 * eps) for x in (1.0, eps, eps, eps)]
    assert math.isfinite(got.statistic)
    assert got.statistic == pytest.approx(_psi(c, [0.25] * 4), abs=1e-12)
    assert got.details["empty_bins"] == {"reference": 0, "candidate": 3}


def test_ties_give_fewer_bins() -> None:
    reference = np.array([0.0] * 80 + [1.0] * 20)
    got = psi(reference, np.array([0.0] * 50 + [1.0] * 50), bins=10)
    assert got.details["bins"] == 2
    assert got.details["bins_requested"] == 10
    assert got.statistic == pytest.approx(_psi([0.5, 0.5], [0.8, 0.2]), abs=1e-12)


def test_identical_samples_have_zero_psi(rng: np.random.Generator) -> None:
    x = rng.normal(size=1000)
    assert psi(x, x.copy()).statistic == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bins": 1}, "bins"),
        ({"bins": 2.5}, "bins"),
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 0.5}, "epsilon"),
    ],
)
def test_bad_parameters(rng: np.random.Generator, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        psi(rng.normal(size=10), rng.normal(size=10), **kwargs)  # type: ignore[arg-type]
