"""Capping large windows: a seeded subsample of rows, order kept."""

from __future__ import annotations

import numpy as np


def subsample(values: np.ndarray, *, max_samples: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """At most ``max_samples`` rows of ``values`` drawn without replacement (seeded); ``True`` if capped.

    Rows keep their original order, so a capped window is still a window. ``values`` itself is
    returned when it is small enough.
    """
    arr = np.asarray(values)
    if arr.ndim == 0:
        raise ValueError(f"subsample: expected an array of rows, got a scalar of shape {arr.shape}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int | np.integer) or max_samples < 1:
        raise ValueError(f"subsample: max_samples must be a whole number >= 1, got {max_samples!r}")
    n = arr.shape[0]
    if n <= max_samples:
        return arr, False
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=int(max_samples), replace=False))
    return arr[rows], True
