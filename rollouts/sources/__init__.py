"""Data sources behind one small interface.

A check receives its sources (Prometheus, sample stores) injected through a
:class:`~rollouts.checks.CheckContext`; every call takes a :class:`Deadline` so that no chain of
calls can outlive the answer budget (Argo's web provider gives up after 10 s). The budget starts
when the request *arrived* (the gunicorn worker stamps it, :mod:`rollouts.worker`), not when a
thread got round to it: time spent queueing is spent budget.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from rollouts.errors import BudgetExceededError, SourceTimeoutError


@runtime_checkable
class Source(Protocol):
    """What every data source offers: a name (for metrics and errors) and a description."""

    name: str

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description for /readyz and error details (no secrets)."""
        ...


class Deadline:
    """A time budget shared by all source calls of one analysis, on the monotonic clock.

    ``started`` is when the request arrived (``time.monotonic()``); by default, now.
    """

    def __init__(self, seconds: float, *, started: float | None = None) -> None:
        self.seconds = seconds
        self.started = time.monotonic() if started is None else started
        self._end = self.started + seconds

    @property
    def end(self) -> float:
        """The absolute end of the budget (``time.monotonic()`` scale)."""
        return self._end

    def elapsed(self) -> float:
        return time.monotonic() - self.started

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

    def check(self, activity: str) -> None:
        """Raise :class:`BudgetExceededError` (504) when the budget is used up, naming ``activity``."""
        if self.remaining() <= 0:
            raise BudgetExceededError(
                f"analysis time budget of {self.seconds:g}s used up while {activity}",
                budget_seconds=self.seconds,
            )
