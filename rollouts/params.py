"""Typed, validated access to a check's parameters (query string, JSON body or Flagger metadata).

Every getter raises :class:`~rollouts.errors.ParamError` (HTTP 400) with the parameter's name and
what was expected, so a typo in an AnalysisTemplate is an Error in Argo, not a silent default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from rollouts.errors import ParamError

DURATION_RE = re.compile(r"^([1-9][0-9]{0,6})(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_SECONDS = 7 * 86400


def parse_duration(value: str, *, name: str, maximum: int = MAX_WINDOW_SECONDS, label: str | None = None) -> int:
    """``"30s"``, ``"10m"``, ``"2h"``, ``"1d"`` -> seconds (a Prometheus-safe duration), at most ``maximum``.
    Errors name ``label`` (default: ``parameter '<name>'``)."""
    label = label or f"parameter {name!r}"
    m = DURATION_RE.match(value)
    if not m:
        raise ParamError(f"{label} must be a duration like 30s, 10m, 2h or 1d, got {value!r}")
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds > maximum:
        raise ParamError(f"{label} is longer than {maximum // 86400}d ({value!r})")
    return seconds


class Params:
    """Read-only view of the caller's parameters with typed getters."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values: dict[str, Any] = {}
        for key, value in values.items():
            if not isinstance(key, str):
                raise ParamError("parameter names must be strings")
            if isinstance(value, list):
                if len(value) != 1:
                    raise ParamError(f"parameter {key!r} given {len(value)} times; give it once")
                value = value[0]
            self._values[key] = value

    def keys(self) -> set[str]:
        return set(self._values)

    def check_known(self, allowed: Iterable[str], *, check: str) -> None:
        unknown = sorted(self.keys() - set(allowed))
        if unknown:
            raise ParamError(
                f"unknown parameter(s) for {check}: {', '.join(unknown)}",
                allowed=sorted(set(allowed)),
            )

    def has(self, name: str) -> bool:
        return self._values.get(name) not in (None, "")

    def raw(self, name: str) -> Any:
        return self._values.get(name)

    def text(self, name: str, default: str | None = None, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self._values.get(name)
        if value is None or value == "":
            if default is None:
                raise ParamError(f"missing required parameter {name!r}")
            return default
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ParamError(f"parameter {name!r} must be a string")
        text = str(value)
        if len(text) > 4096:
            raise ParamError(f"parameter {name!r} is too long ({len(text)} characters, at most 4096)")
        if pattern is not None and not pattern.fullmatch(text):
            raise ParamError(f"parameter {name!r} has an invalid value {text!r} (must match {pattern.pattern})")
        return text

    def optional_str(self, name: str, *, pattern: re.Pattern[str] | None = None) -> str | None:
        if not self.has(name):
            return None
        return self.text(name, pattern=pattern)

    def choice(self, name: str, choices: Iterable[str], default: str | None = None) -> str:
        options = list(choices)
        value = self.text(name, default)
        if value not in options:
            raise ParamError(f"parameter {name!r} must be one of {', '.join(options)}, got {value!r}")
        return value

    def number(
        self, name: str, default: float | None = None, *, low: float | None = None,
        high: float | None = None, low_inclusive: bool = True,
    ) -> float:
        value = self._values.get(name)
        if value is None or value == "":
            if default is None:
                raise ParamError(f"missing required parameter {name!r}")
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParamError(f"parameter {name!r} must be a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ParamError(f"parameter {name!r} must be finite, got {value!r}")
        if low is not None and (number < low or (not low_inclusive and number == low)):
            raise ParamError(f"parameter {name!r} must be {'>=' if low_inclusive else '>'} {low}, got {number}")
        if high is not None and number > high:
            raise ParamError(f"parameter {name!r} must be <= {high}, got {number}")
        return number

    def integer(self, name: str, default: int | None = None, *, low: int = 0, high: int | None = None) -> int:
        value = self._values.get(name)
        if value is None or value == "":
            if default is None:
                raise ParamError(f"missing required parameter {name!r}")
            return default
        if isinstance(value, bool):
            raise ParamError(f"parameter {name!r} must be an integer, got {value!r}")
        try:
            number = int(str(value))
        except ValueError:
            raise ParamError(f"parameter {name!r} must be an integer, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ParamError(f"parameter {name!r} must be {bound}, got {number}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self._values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ParamError(f"parameter {name!r} must be true or false, got {value!r}")

    def duration(self, name: str, default: str) -> int:
        return parse_duration(self.text(name, default), name=name)

    def csv(self, name: str, *, pattern: re.Pattern[str]) -> list[str] | None:
        if not self.has(name):
            return None
        items = [item.strip() for item in self.text(name).split(",") if item.strip()]
        if not items:
            raise ParamError(f"parameter {name!r} is an empty list")
        for item in items:
            if not pattern.fullmatch(item):
                raise ParamError(f"parameter {name!r}: invalid item {item!r} (must match {pattern.pattern})")
        return items
