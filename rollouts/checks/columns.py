"""Turning sample-store records into columns: numeric, categorical, boolean, embeddings."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np

from rollouts.errors import ParamError, SampleFormatError
from rollouts.sources.samples import Samples

FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
Kind = Literal["numeric", "categorical"]


def kind_of(values: list[Any], *, field: str) -> Kind:
    types = set(map(type, values))
    if types <= {int, float}:
        return "numeric"
    if types <= {str, bool}:
        return "categorical"
    raise SampleFormatError(f"field {field!r} mixes numbers, strings or nested values; cannot test it")


def scalar_fields(samples: Samples) -> list[str]:
    """Fields holding scalars (numbers, strings, booleans) in any record, in first-seen order."""
    if samples.array is not None:
        return [f"col{i}" for i in range(samples.array.shape[1])]
    out = []
    for name in samples.fields():
        values = samples.column(name)
        if values and isinstance(values[0], int | float | str | bool):
            out.append(name)
    return out


def column(samples: Samples, field: str) -> list[Any]:
    """Non-missing values of ``field`` (``colN`` for .npy columns). NaN/inf are refused by the statistics."""
    if samples.array is not None:
        m = re.fullmatch(r"col([0-9]+)", field)
        if not m or int(m.group(1)) >= samples.array.shape[1]:
            raise ParamError(
                f"{samples.key!r} is a .npy array with {samples.array.shape[1]} columns; "
                f"name features col0..col{samples.array.shape[1] - 1}, not {field!r}"
            )
        return samples.array[:, int(m.group(1))].tolist()
    return samples.column(field)


def embeddings(samples: Samples, field: str) -> np.ndarray:
    """A 2-D float matrix: the whole .npy array, or the list under ``field`` of each jsonl record."""
    if samples.array is not None:
        return samples.array
    rows = [r.get(field) for r in samples.records or [] if r.get(field) is not None]
    if not rows:
        return np.empty((0, 0))
    dims = {len(r) if isinstance(r, list) else -1 for r in rows}
    if len(dims) != 1 or -1 in dims or 0 in dims:
        raise SampleFormatError(f"embedding field {field!r} in {samples.key!r} must be equal-length number lists")
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise SampleFormatError(f"embedding field {field!r} in {samples.key!r} holds non-numbers") from None
    if not np.all(np.isfinite(matrix)):
        raise SampleFormatError(f"embedding field {field!r} in {samples.key!r} holds NaN or infinity")
    return matrix


def booleans(samples: Samples, field: str) -> list[bool]:
    values = column(samples, field)
    out = []
    for v in values:
        if isinstance(v, bool):
            out.append(v)
        elif v in (0, 1):
            out.append(bool(v))
        else:
            raise SampleFormatError(f"field {field!r} in {samples.key!r} must be true/false, got {v!r}")
    return out
