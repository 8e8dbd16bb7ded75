"""Sample stores: named directories or HTTP(S) base URLs holding raw features, embeddings and eval results.

A key is a relative object name inside the store (``baselines/2026-11/inputs.jsonl``). Absolute
paths, ``..`` segments, backslashes and schemes are refused with HTTP 400, and a directory store
also refuses keys that resolve (through symlinks) outside its root. Every read is bounded: size
(``sampleLimits.maxBytes``), rows (``maxRows``) and, for HTTP stores, connect/read timeouts inside
the analysis deadline.

Formats by extension:

- ``.jsonl``: one JSON object per line, ``{"feature": value, ...}``; an embedding is a list of
  numbers under a named field.
- ``.npy``: a 2-D float array (rows are samples), loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import requests

from rollouts.errors import (
    ObjectNotFoundError,
    ObjectTooLargeError,
    ParamError,
    SampleFormatError,
    SourceQueryError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from rollouts.sources import Deadline

SOURCE_NAME = "sample-store"
KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,511}")
EXTENSIONS = (".jsonl", ".npy")


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
        seen: dict[str, None] = {}
        for record in self.records or []:
            if len(seen) > 0 and record.keys() <= seen.keys():
                continue
            seen.update(dict.fromkeys(record))
        return list(seen)

    def column(self, name: str) -> list[Any]:
        """Non-missing values of one field (cached)."""
        cache: dict[str, list[Any]] = self.__dict__.setdefault("_columns", {})
        if name not in cache:
            values = [record.get(name) for record in self.records or []]
            cache[name] = [v for v in values if v is not None]
        return cache[name]

    @property
    def count(self) -> int:
        if self.records is not None:
            return len(self.records)
        assert self.array is not None
        return int(self.array.shape[0])


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
        if key.endswith(".npy"):
            return Samples(key=key, array=self._parse_npy(key, data))
        return Samples(key=key, records=self._parse_jsonl(key, data))

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
        timeout = deadline.timeout(self.timeout, source=SOURCE_NAME)
        url = self.location.rstrip("/") + "/" + quote(key, safe="/")
        try:
            with requests.get(url, timeout=(min(timeout, 2.0), timeout), stream=True, allow_redirects=False) as resp:
                if resp.status_code == 404:
                    raise ObjectNotFoundError(f"no object {key!r} in sample store {self.name!r}")
                if resp.status_code >= 500:
                    raise SourceUnavailableError(
                        f"sample store {self.name!r} answered HTTP {resp.status_code} for {key!r}",
                        source=SOURCE_NAME,
                    )
                if resp.status_code != 200:
                    raise SourceQueryError(
                        f"sample store {self.name!r} answered HTTP {resp.status_code} for {key!r}",
                        source=SOURCE_NAME,
                    )
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise ObjectTooLargeError(
                        f"object {key!r} is {declared} bytes, above the limit of {self.max_bytes}",
                        limit=self.max_bytes,
                    )
                chunks: list[bytes] = []
                total = 0
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise ObjectTooLargeError(
                            f"object {key!r} exceeds the limit of {self.max_bytes} bytes", limit=self.max_bytes
                        )
                    if deadline.remaining() < 0.3:
                        raise SourceTimeoutError(
                            f"reading {key!r} from sample store {self.name!r} ran out of time",
                            source=SOURCE_NAME,
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.Timeout:
            raise SourceTimeoutError(
                f"sample store {self.name!r} did not answer within {timeout:.1f}s", source=SOURCE_NAME
            ) from None
        except requests.ConnectionError as exc:
            raise SourceUnavailableError(
                f"sample store {self.name!r} is unreachable: {type(exc).__name__}", source=SOURCE_NAME
            ) from None

    def _parse_jsonl(self, key: str, data: bytes) -> list[dict[str, Any]]:
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) > self.max_rows:
            raise ObjectTooLargeError(f"object {key!r} has more than {self.max_rows} rows", limit=self.max_rows)
        try:
            # One C-level parse of all lines (several times faster than a loads() per line).
            records = json.loads(b"[" + b",".join(lines) + b"]")
        except (json.JSONDecodeError, UnicodeDecodeError):
            records = None
        if records is None or any(type(r) is not dict for r in records):
            for lineno, line in enumerate(lines, start=1):  # slow path: find the bad line
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise SampleFormatError(f"{key!r} record {lineno}: not JSON ({exc})") from None
                if not isinstance(obj, dict):
                    raise SampleFormatError(f"{key!r} record {lineno}: expected a JSON object")
            raise SampleFormatError(f"{key!r}: cannot parse as JSON lines")
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


def build_stores(
    locations: dict[str, str], *, max_bytes: int, max_rows: int, timeout: float,
) -> dict[str, SampleStore]:
    stores = {}
    for name, location in locations.items():
        if not location.startswith(("http://", "https://")) and not os.path.isabs(location):
            location = os.path.abspath(location)
        stores[name] = SampleStore(name, location, max_bytes=max_bytes, max_rows=max_rows, timeout=timeout)
    return stores
