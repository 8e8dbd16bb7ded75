"""Turning sample-store records into columns: numeric, categorical, boolean, embeddings."""

from __future__ import annotations

import re
from collections.abc import Set
from typing import Any, Literal

import numpy as np

from rollouts.errors import ParamError, SampleFormatError
from rollouts.sources.samples import NUMBER_TYPES, Samples

FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
Kind = Literal["numeric", "categorical"]


def kind_of(values: list[Any], *, field: str) -> Kind:
    return kind_of_types(set(map(type, values)), field=field)


def kind_of_types(types: Set[type], *, field: str) -> Kind:
    """``numeric`` (ints and floats), ``categorical`` (strings and booleans) or a SampleFormatError."""
    if types <= NUMBER_TYPES:
        return "numeric"
    if types <= {str, bool}:
        return "categorical"
    raise SampleFormatError(f"field {field!r} mixes numbers, strings or nested values; cannot test it")


def kind_between(baseline: Samples, canary: Samples, *, field: str) -> Kind:
    """The kind of ``field`` over both windows: ``kind_of(column(baseline) + column(canary))``."""
    return kind_of_types(value_types(baseline, field) | value_types(canary, field), field=field)


def scalar_fields(samples: Samples) -> list[str]:
    """Fields holding scalars (numbers, strings, booleans) in any record, in first-seen order."""
    if samples.array is not None:
        return [f"col{i}" for i in range(samples.array.shape[1])]
    out = []
    for name in samples.fields():
        if samples.size(name) and isinstance(samples.first(name), int | float | str | bool):
            out.append(name)
    return out


def _npy_index(array: np.ndarray, key: str, field: str) -> int:
    m = re.fullmatch(r"col([0-9]+)", field)
    if not m or int(m.group(1)) >= array.shape[1]:
        raise ParamError(
            f"{key!r} is a .npy array with {array.shape[1]} columns; "
            f"name features col0..col{array.shape[1] - 1}, not {field!r}"
        )
    return int(m.group(1))


def column(samples: Samples, field: str) -> list[Any]:
    """Non-missing values of ``field`` (``colN`` for .npy columns). NaN/inf are refused by the statistics."""
    if samples.array is not None:
        values: list[Any] = samples.array[:, _npy_index(samples.array, samples.key, field)].tolist()
        return values
    return samples.column(field)


def count(samples: Samples, field: str) -> int:
    """``len(column(samples, field))`` without building the list."""
    if samples.array is not None:
        _npy_index(samples.array, samples.key, field)
        return int(samples.array.shape[0])
    return samples.size(field)


def value_types(samples: Samples, field: str) -> frozenset[type]:
    """``set(map(type, column(samples, field)))``, cached for jsonl records."""
    if samples.array is not None:
        _npy_index(samples.array, samples.key, field)
        return frozenset({float}) if samples.array.shape[0] else frozenset()
    return samples.types(field)


def numbers(samples: Samples, field: str) -> np.ndarray:
    """``np.asarray(column(samples, field), dtype=np.float64)`` for a numeric field, converted once."""
    if samples.array is not None:
        return np.ascontiguousarray(samples.array[:, _npy_index(samples.array, samples.key, field)])
    values = samples.numbers(field)
    if values is None:
        raise SampleFormatError(f"field {field!r} in {samples.key!r} holds values other than numbers")
    return values


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
    if samples.array is None and samples.types(field) <= {bool}:
        return list(values)
    out = []
    for v in values:
        if isinstance(v, bool):
            out.append(v)
        elif v in (0, 1):
            out.append(bool(v))
        else:
            raise SampleFormatError(f"field {field!r} in {samples.key!r} must be true/false, got {v!r}")
    return out
