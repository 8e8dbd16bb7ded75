"""Data sources behind one small interface.

A check receives its sources (Prometheus, sample stores) injected through a
:class:`~rollouts.checks.CheckContext`; every call takes a :class:`Deadline` so that no chain of
calls can outlive the answer budget (Argo's web provider gives up after 10 s).
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from rollouts.errors import SourceTimeoutError


@runtime_checkable
class Source(Protocol):
    """What every data source offers: a name (for metrics and errors) and a description."""

    name: str

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description for /readyz and error details (no secrets)."""
        ...


class Deadline:
    """A time budget shared by all source calls of one analysis."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def timeout(self, per_call: float, *, source: str) -> float:
        """The timeout for the next call: the per-call limit, cut to what is left of the budget."""
        left = self.remaining() - 0.25
        if left <= 0.05:
            raise SourceTimeoutError(
                f"analysis time budget of {self.seconds:g}s used up before querying {source}",
                source=source,
            )
        return min(per_call, left)
