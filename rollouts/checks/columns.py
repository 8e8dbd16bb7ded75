"""Turning sample-store records into columns: numeric, categorical, boolean, embeddings.

How a feature is compared (issue 17): numbers with at most ``MAX_LEVELS`` distinct values across
both windows (0/1 flags, ratings, small counts) are compared as categories -- the KS test is valid
on heavily tied data but wastes most of its power there (0/1 integers: power 0.11 where the
chi-square test on the same data has 0.86). Booleans are the same feature whichever way they are
stored (``true``/``false`` or ``1``/``0``, even mixed between the windows): both become the
categories ``true`` and ``false``.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rollouts.errors import ParamError, SampleFormatError
from rollouts.sources.samples import NUMBER_TYPES, Samples

FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
Kind = Literal["numeric", "categorical"]
# Numbers with at most this many distinct values (both windows together) are compared as categories.
MAX_LEVELS = 10
# Strings with at least this share of distinct values in both windows are identifiers (or free text).
IDENTIFIER_SHARE = 0.5


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
        cache: dict[str, np.ndarray] = samples.__dict__.setdefault("_npy_columns", {})
        if field not in cache:  # a contiguous copy per column, made once (kinds, exclusions and tests read it)
            cache[field] = np.ascontiguousarray(samples.array[:, _npy_index(samples.array, samples.key, field)])
        return cache[field]
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


@dataclass(frozen=True)
class FeatureKind:
    """How a feature is compared, what its values are stored as, and (when it matters) why."""

    kind: Kind
    stored: str  # "numbers", "strings", "booleans", "0/1 flags", "strings and booleans"
    binary: bool = False  # labels are "true"/"false" whatever the storage
    note: str | None = None


def feature_kind(baseline: Samples, canary: Samples, *, field: str) -> FeatureKind:
    """How ``field`` is compared between the two windows (see the module docstring)."""
    types = value_types(baseline, field) | value_types(canary, field)
    if types <= {bool}:
        return FeatureKind("categorical", "booleans", binary=True)
    if types <= NUMBER_TYPES | {bool}:
        values = np.concatenate([_number_values(baseline, field), _number_values(canary, field)])
        # Continuous features show more than MAX_LEVELS values in their first rows: skip the full sort.
        levels = np.unique(values[:256])
        if levels.size <= MAX_LEVELS:
            levels = np.unique(values)
        if bool in types or (levels.size <= 2 and set(levels.tolist()) <= {0.0, 1.0}):
            if not set(levels.tolist()) <= {0.0, 1.0}:
                raise SampleFormatError(f"field {field!r} mixes booleans with numbers other than 0 and 1")
            stored = "booleans and 0/1 numbers" if bool in types else "0/1 numbers"
            return FeatureKind("categorical", stored, binary=True,
                               note="true/false flags: compared as the categories true and false")
        if levels.size <= MAX_LEVELS:
            return FeatureKind("categorical", "numbers", note=(
                f"{levels.size} distinct values (at most {MAX_LEVELS}): compared as categories (chi-square); "
                "KS is conservative on ties"))
        return FeatureKind("numeric", "numbers")
    if types <= {str, bool}:
        return FeatureKind("categorical", "strings" if types <= {str} else "strings and booleans")
    raise SampleFormatError(f"field {field!r} mixes numbers, strings or nested values; cannot test it")


def _number_values(samples: Samples, field: str) -> np.ndarray:
    if samples.array is not None or value_types(samples, field) <= NUMBER_TYPES:
        return numbers(samples, field)
    return np.asarray([float(v) for v in column(samples, field)], dtype=np.float64)  # booleans among them


def category_labels(samples: Samples, field: str, kind: FeatureKind) -> list[str]:
    """The values of a categorically compared field as labels: ``true``/``false`` for flags, the
    string itself, or a number written canonically (``1`` and ``1.0`` are the same category)."""
    if kind.binary:
        return ["true" if v else "false" for v in (_number_values(samples, field) if samples.array is not None
                                                   else column(samples, field))]
    if samples.array is not None or kind.stored == "numbers":
        return [_number_label(v) for v in _number_values(samples, field).tolist()]
    return [("true" if v else "false") if isinstance(v, bool) else str(v) for v in column(samples, field)]


def _number_label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def null_count(samples: Samples, field: str) -> int:
    """Rows where ``field`` is null or absent (a .npy array has none: NaN is refused when it is read)."""
    if samples.array is not None:
        return 0
    return samples.count - samples.size(field)


def exclusion(baseline: Samples, canary: Samples, *, field: str, kind: FeatureKind) -> str | None:
    """Why ``field`` is left out of the DEFAULT feature set, or ``None``.

    - numbers that only go up (or only down) in record order in both windows: a timestamp, a
      counter, a sequence number. The canary's come after the baseline's by construction, so a
      distribution test fails every canary (an epoch ``ts`` field: p = 1e-299).
    - strings with at least ``IDENTIFIER_SHARE`` distinct values in both windows: identifiers or
      free text, whose chi-square test compares nothing.
    Named features (``features=``) are always tested.
    """
    if kind.stored == "numbers":
        arrays = [numbers(baseline, field), numbers(canary, field)]
        if all(a.size >= 3 and np.ptp(a) > 0 and _monotone(a) for a in arrays):
            return "monotone in record order in both windows (a timestamp, counter or sequence number)"
        return None
    if kind.stored == "strings":
        shares = []
        for samples in (baseline, canary):
            values = column(samples, field)
            if len(values) < 3:
                return None
            shares.append(len(set(values)) / len(values))
        if min(shares) >= IDENTIFIER_SHARE:
            return (f"{min(shares):.0%} or more of its values are distinct in both windows "
                    "(an identifier or free text)")
    return None


def _monotone(values: np.ndarray) -> bool:
    steps = np.diff(values)
    return bool(np.all(steps >= 0) or np.all(steps <= 0))


def head(samples: Samples, rows: int | None) -> Samples:
    """The first ``rows`` rows of an object (all of them for ``None``): what one look judges."""
    if rows is None or rows >= samples.count:
        return samples
    if samples.array is not None:
        return Samples(key=samples.key, array=samples.array[:rows])
    return Samples(key=samples.key, records=(samples.records or [])[:rows])
