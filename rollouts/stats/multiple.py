"""Multiple-testing correction for a family of p-values (several features, several metrics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np


def adjust_p_values(p_values: Sequence[float], *, method: Literal["bonferroni", "bh"]) -> list[float]:
    """Adjusted p-values, in the input order; compare each with alpha.

    ``bonferroni``: ``min(1, m p)`` (family-wise error). ``bh``: Benjamini-Hochberg step-up
    (false discovery rate, independent or positively dependent tests):
    ``p_(i) -> min(1, min_{j >= i} m p_(j) / j)`` over the sorted p-values.
    """
    if method not in ("bonferroni", "bh"):
        raise ValueError(f"method must be 'bonferroni' or 'bh', got {method!r}")
    if isinstance(p_values, str | bytes):
        raise ValueError("p_values: expected a sequence of numbers")
    values = list(p_values)
    for value in values:
        numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if not numeric:
            raise ValueError(f"p_values: expected numbers between 0 and 1, got {value!r}")
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"p_values: every p-value must be between 0 and 1, got {value!r}")
    m = len(values)
    if m == 0:
        return []
    p = np.asarray(values, dtype=np.float64)
    if method == "bonferroni":
        return [float(v) for v in np.minimum(1.0, p * m)]
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, ranked)
    return [float(v) for v in out]
