"""The one result type every statistical test returns, and the input checks they share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class TestResult:
    """A test's outcome: method, statistic, p-value (``None`` where the method has none), sizes, extras.

    ``details`` holds JSON-serialisable extras only (plain floats, ints, strings, lists, dicts, ``None``).
    """

    __test__ = False  # not a pytest test class

    method: str
    statistic: float
    p_value: float | None
    n_reference: int
    n_candidate: int
    details: dict[str, Any] = field(default_factory=dict)


def as_sample(values: Any, *, name: str, ndim: int = 1, min_size: int = 1) -> np.ndarray:
    """``values`` as a finite float64 array of ``ndim`` dimensions with at least ``min_size`` rows.

    A 1-D input is accepted where 2-D rows are wanted (one column). Anything else raises ``ValueError``.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: values must be numbers ({exc})") from None
    if ndim == 2 and arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != ndim:
        shape = "a 1-D array of numbers" if ndim == 1 else "a 2-D array (rows are samples)"
        raise ValueError(f"{name}: expected {shape}, got shape {arr.shape}")
    if arr.shape[0] < min_size:
        plural = "s" if min_size != 1 else ""
        raise ValueError(f"{name}: needs at least {min_size} sample{plural}, got {arr.shape[0]}")
    if ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"{name}: rows have no columns")
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: {bad} value{'s are' if bad != 1 else ' is'} NaN or infinite")
    return arr


def check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    return alternative


def check_count(value: Any, *, name: str) -> int:
    """A non-negative whole count (bools refused: they are almost always a mistake here)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name}: expected a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must not be negative, got {value}")
    return int(value)


def check_trials(x: Any, n: Any, *, name: str) -> tuple[int, int]:
    """``x`` successes out of ``n`` trials, ``0 <= x <= n``, ``n >= 1``."""
    x, n = check_count(x, name=f"{name} count"), check_count(n, name=f"{name} total")
    if n == 0:
        raise ValueError(f"{name}: needs at least one trial, got 0")
    if x > n:
        raise ValueError(f"{name}: count {x} is larger than the total {n}")
    return x, n


def check_positive(value: Any, *, name: str, upper: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0 or (upper is not None and v >= upper):
        bound = f" and below {upper:g}" if upper is not None else ""
        raise ValueError(f"{name}: must be a finite number above 0{bound}, got {value!r}")
    return v


def as_booleans(values: Sequence[Any], *, name: str) -> np.ndarray:
    """A 1-D array of bools from bools or 0/1 values."""
    if isinstance(values, str | bytes):
        raise ValueError(f"{name}: expected a sequence of true/false values, got a string")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of true/false values, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: needs at least one value, got none")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name}: values must be true/false (or 0/1)")
    return arr.astype(bool)


def finite_or_none(value: float) -> float | None:
    """JSON has no inf/NaN: those become ``None``."""
    v = float(value)
    return v if math.isfinite(v) else None
