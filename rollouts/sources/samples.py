"""Sample stores: named directories or HTTP(S) base URLs holding raw features, embeddings and eval results.

A key is a relative object name inside the store (``baselines/2026-11/inputs.jsonl``). Absolute
paths, ``..`` segments, backslashes and schemes are refused with HTTP 400, and a directory store
also refuses keys that resolve (through symlinks) outside its root. Every read is bounded: size
(``sampleLimits.maxBytes``), rows (``maxRows``) and, for HTTP stores, connect/read timeouts inside
the analysis deadline.

Formats by extension:

- ``.jsonl``: one JSON object per line, ``{"feature": value, ...}``; an embedding is a list of
  numbers under a named field. Read with the standard library's rules (``NaN`` and integers of
  any size are accepted); orjson does the parsing wherever its answer is the same.
- ``.npy``: a 2-D float array (rows are samples), loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from rollouts.errors import (
    ObjectNotFoundError,
    ObjectTooLargeError,
    ParamError,
    SampleFormatError,
    SourceQueryError,
    SourceUnavailableError,
)
from rollouts.sources import Deadline
from rollouts.sources.http import bounded_get

SOURCE_NAME = "sample-store"
KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,511}")
EXTENSIONS = (".jsonl", ".npy")
NUMBER_TYPES = frozenset({int, float})  # bool is not a number here: type(True) is bool
# orjson reads integer literals outside the 64-bit range as floats (the standard library keeps them
# exact). Such a literal has 19 or more digits after a character that can precede a JSON number;
# mapped through this table (digits -> "0", those characters -> "#"), it contains _LONG_INTEGER.
_DIGITS_AND_STARTS = bytes.maketrans(b"0123456789" + b":,[ \t\r\n-", b"0" * 10 + b"#" * 8)
_LONG_INTEGER = b"#" + b"0" * 19


def validate_key(key: str, *, param: str) -> str:
    """A relative object name: no scheme, no absolute path, no ``..``, known extension."""
    if not isinstance(key, str) or not key:
        raise ParamError(f"parameter {param!r} must name an object in the store")
    if "://" in key or key.startswith(("/", "\\")) or "\\" in key or ":" in key:
        raise ParamError(f"parameter {param!r}: {key!r} must be a relative name inside the store")
    segments = key.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise ParamError(f"parameter {param!r}: {key!r} must not contain empty, '.' or '..' segments")
    if not KEY_RE.fullmatch(key):
        raise ParamError(f"parameter {param!r}: {key!r} has characters outside {KEY_RE.pattern}")
    if not key.endswith(EXTENSIONS):
        raise ParamError(f"parameter {param!r}: {key!r} must end in .jsonl or .npy")
    return key


@dataclass(frozen=True)
class Samples:
    """A loaded object: either rows of records (jsonl) or a 2-D array (npy)."""

    key: str
    records: list[dict[str, Any]] | None = None
    array: np.ndarray | None = None

    def fields(self) -> list[str]:
        """Field names in first-seen order (records may differ in their fields)."""
        return list(self._table())

    def column(self, name: str) -> list[Any]:
        """Non-missing (not null) values of one field, in record order."""
        entry = self._table().get(name)
        if entry is None:
            return []
        if entry.values is None:  # the float-matrix path skipped the list: every record holds a float here
            entry.values = list(map(itemgetter(name), self.records or []))
        return entry.values

    def size(self, name: str) -> int:
        """``len(self.column(name))``."""
        entry = self._table().get(name)
        return entry.size if entry is not None else 0

    def first(self, name: str) -> Any:
        """``self.column(name)[0]``, or ``None`` when the field has no values."""
        entry = self._table().get(name)
        return entry.first if entry is not None else None

    def types(self, name: str) -> frozenset[type]:
        """``frozenset(map(type, self.column(name)))``."""
        entry = self._table().get(name)
        return entry.types if entry is not None else frozenset()

    def numbers(self, name: str) -> np.ndarray | None:
        """``np.asarray(self.column(name), dtype=np.float64)`` when the values are all ints and floats
        (booleans are not numbers here), else ``None``. Converted once."""
        entry = self._table().get(name)
        if entry is None:
            return np.empty(0, dtype=np.float64)
        if not entry.types <= NUMBER_TYPES:
            return None
        if entry.numbers is None:
            values = self.column(name)
            entry.numbers = (np.fromiter(values, dtype=np.float64, count=len(values)) if entry.types == {float}
                             else np.asarray(values, dtype=np.float64))
        return entry.numbers

    def _table(self) -> dict[str, _Column]:
        """Every field's column, built for all fields on first use."""
        table: dict[str, _Column] | None = self.__dict__.get("_columns")
        if table is None:
            table = _columns(self.records or [])
            self.__dict__["_columns"] = table
        return table

    @property
    def count(self) -> int:
        if self.records is not None:
            return len(self.records)
        assert self.array is not None
        return int(self.array.shape[0])


@dataclass
class _Column:
    """One field of a jsonl object: its non-missing values, their types, and (numeric) a float64 array."""

    types: frozenset[type]
    size: int
    first: Any
    values: list[Any] | None = None  # None: not built yet (float-matrix path)
    numbers: np.ndarray | None = None  # None: not converted yet


def _columns(records: list[dict[str, Any]]) -> dict[str, _Column]:
    """Field name -> its column, fields in first-seen order."""
    if not records:
        return {}
    names = list(records[0])
    if names and set(map(len, records)) == {len(names)}:
        matrix = _float_matrix(records, names)
        if matrix is not None:
            return matrix
    table: dict[str, _Column] = {}
    everywhere = True
    for name in names:
        table[name], found = _column(records, name)
        everywhere = everywhere and found
    if everywhere and set(map(len, records)) == {len(names)}:
        return table  # every record has exactly the first record's fields
    seen: dict[str, None] = {}
    for record in records:
        if len(seen) > 0 and record.keys() <= seen.keys():
            continue
        seen.update(dict.fromkeys(record))
    return {name: table[name] if name in table else _column(records, name)[0] for name in seen}


def _float_matrix(records: list[dict[str, Any]], names: list[str]) -> dict[str, _Column] | None:
    """The usual feature file, every record holding floats under the same ``names``: all columns at
    once through one float64 matrix, without per-field lists. ``None`` when the records are otherwise."""
    getter = itemgetter(*names)

    def values() -> Iterator[Any]:
        rows = map(getter, records)
        return chain.from_iterable(rows) if len(names) > 1 else rows  # one name: the value, not a tuple

    try:
        if set(map(type, values())) != {float}:
            return None
    except KeyError:  # a record has other fields (each record has len(names) of them)
        return None
    n, d = len(records), len(names)
    by_field = np.fromiter(values(), dtype=np.float64, count=n * d).reshape(n, d).T.copy()
    kinds = frozenset({float})
    return {name: _Column(kinds, n, records[0][name], numbers=by_field[j]) for j, name in enumerate(names)}


def _column(records: list[dict[str, Any]], name: str) -> tuple[_Column, bool]:
    """The field's column, and whether every record has the field (even if null)."""
    everywhere = True
    try:
        values = list(map(itemgetter(name), records))  # C-level loop; KeyError if a record lacks the field
    except KeyError:
        values = [record.get(name) for record in records]
        everywhere = False
    types = set(map(type, values))
    if type(None) in types:
        values = [v for v in values if v is not None]
        types.discard(type(None))
    return _Column(frozenset(types), len(values), values[0] if values else None, values), everywhere


class SampleStore:
    """One named store; reads objects by key within size, row and time limits."""

    def __init__(
        self, name: str, location: str, *, max_bytes: int, max_rows: int, timeout: float,
    ) -> None:
        self.name = name
        self.location = location
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.timeout = timeout
        self.is_http = location.startswith(("http://", "https://"))
        if not self.is_http and "://" in location:
            raise ValueError(f"sample store {name!r}: only directories and http(s) URLs are supported")

    def describe(self) -> dict[str, Any]:
        return {"source": SOURCE_NAME, "store": self.name, "kind": "http" if self.is_http else "directory"}

    def load(self, key: str, *, param: str, deadline: Deadline) -> Samples:
        validate_key(key, param=param)
        data = self._read_http(key, deadline=deadline) if self.is_http else self._read_dir(key)
        deadline.check(f"reading {key!r} from sample store {self.name!r}")
        if key.endswith(".npy"):
            return Samples(key=key, array=self._parse_npy(key, data))
        return Samples(key=key, records=self._parse_jsonl(key, data, deadline=deadline))

    def _read_dir(self, key: str) -> bytes:
        root = Path(self.location).resolve()
        path = (root / key).resolve()
        if root != path and root not in path.parents:
            raise ParamError(f"key {key!r} resolves outside sample store {self.name!r}")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {key!r} in sample store {self.name!r}") from None
        except OSError as exc:
            raise SourceUnavailableError(
                f"sample store {self.name!r} cannot stat {key!r}: {exc.strerror}", source=SOURCE_NAME
            ) from None
        if not path.is_file():
            raise ObjectNotFoundError(f"{key!r} in sample store {self.name!r} is not a file")
        if size > self.max_bytes:
            raise ObjectTooLargeError(
                f"object {key!r} is {size} bytes, above the limit of {self.max_bytes}", limit=self.max_bytes
            )
        try:
            with open(path, "rb") as fh:
                return fh.read(self.max_bytes + 1)
        except OSError as exc:
            raise SourceUnavailableError(
                f"sample store {self.name!r} cannot read {key!r}: {exc.strerror}", source=SOURCE_NAME
            ) from None

    def _read_http(self, key: str, *, deadline: Deadline) -> bytes:
        url = self.location.rstrip("/") + "/" + quote(key, safe="/")

        def too_large(limit: int) -> ObjectTooLargeError:
            return ObjectTooLargeError(f"object {key!r} exceeds the limit of {limit} bytes", limit=limit)

        answer = bounded_get(url, deadline=deadline, timeout=self.timeout, max_bytes=self.max_bytes,
                             source=SOURCE_NAME, what=f"sample store {self.name!r} reading {key!r}",
                             too_large=too_large)
        if answer.status == 404:
            raise ObjectNotFoundError(f"no object {key!r} in sample store {self.name!r}")
        if answer.status >= 500:
            raise SourceUnavailableError(
                f"sample store {self.name!r} answered HTTP {answer.status} for {key!r}", source=SOURCE_NAME,
            )
        if answer.status != 200:
            raise SourceQueryError(
                f"sample store {self.name!r} answered HTTP {answer.status} for {key!r}", source=SOURCE_NAME,
            )
        return answer.body

    def _parse_jsonl(self, key: str, data: bytes, *, deadline: Deadline | None = None) -> list[dict[str, Any]]:
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) > self.max_rows:
            raise ObjectTooLargeError(f"object {key!r} has more than {self.max_rows} rows", limit=self.max_rows)
        activity = f"parsing {key!r}"
        records = _orjson_records(data, lines, check=lambda: deadline.check(activity) if deadline else None)
        if records is None:  # something orjson refuses or reads differently: the standard library decides
            return _stdlib_records(key, lines)
        for lineno, record in enumerate(records, start=1):
            if type(record) is not dict:
                raise SampleFormatError(f"{key!r} record {lineno}: expected a JSON object")
        return records

    def _parse_npy(self, key: str, data: bytes) -> np.ndarray:
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SampleFormatError(f"{key!r} is not a valid .npy file ({exc})") from None
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise SampleFormatError(f"{key!r} must hold a 2-D array (rows are samples)")
        if array.shape[0] > self.max_rows:
            raise ObjectTooLargeError(f"object {key!r} has more than {self.max_rows} rows", limit=self.max_rows)
        if not np.issubdtype(array.dtype, np.number):
            raise SampleFormatError(f"{key!r} must hold numbers, not {array.dtype}")
        array = array.astype(np.float64, copy=False)
        if not np.all(np.isfinite(array)):
            raise SampleFormatError(f"{key!r} contains NaN or infinite values")
        return array


PARSE_CHUNK = 20_000  # lines parsed between two looks at the deadline (about 0.3 s of 20-field records)


def _orjson_records(data: bytes, lines: list[bytes], *, check: Callable[[], None]) -> list[Any] | None:
    """Each line parsed by orjson, or ``None`` where its answer could differ from ``json.loads``.

    orjson refuses some of what the standard library accepts beyond strict JSON (NaN, Infinity,
    numbers that overflow a float, lone surrogates) and reads integers outside the 64-bit range as
    floats: such objects are left to :func:`_stdlib_records`. Everything else parses to equal values.
    """
    if _LONG_INTEGER in data.translate(_DIGITS_AND_STARTS):
        return None
    records: list[Any] = []
    try:
        for start in range(0, len(lines), PARSE_CHUNK):
            check()
            records.extend(map(orjson.loads, lines[start:start + PARSE_CHUNK]))
    except orjson.JSONDecodeError:
        return None
    return records


def _stdlib_records(key: str, lines: list[bytes]) -> list[dict[str, Any]]:
    """``json.loads`` semantics; the first line that is not a JSON object is refused with its number."""
    try:
        # One C-level parse of all lines (several times faster than a loads() per line).
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError):
        records = None
    # A line holding two objects ("{...},{...}") also parses as part of the array: the count catches it.
    if records is None or len(records) != len(lines) or any(type(r) is not dict for r in records):
        for lineno, line in enumerate(lines, start=1):  # slow path: find the bad line
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SampleFormatError(f"{key!r} record {lineno}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise SampleFormatError(f"{key!r} record {lineno}: expected a JSON object")
        raise SampleFormatError(f"{key!r}: cannot parse as JSON lines")
    return records  # type: ignore[no-any-return]


def build_stores(
    locations: dict[str, str], *, max_bytes: int, max_rows: int, timeout: float,
) -> dict[str, SampleStore]:
    stores = {}
    for name, location in locations.items():
        if not location.startswith(("http://", "https://")) and not os.path.isabs(location):
            location = os.path.abspath(location)
        stores[name] = SampleStore(name, location, max_bytes=max_bytes, max_rows=max_rows, timeout=timeout)
    return stores
