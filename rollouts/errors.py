"""Errors of the analysis provider, each with its HTTP status.

Two channels, kept apart: a caller's mistake (bad parameter, unknown check) is a 4xx; a data
source that is down, slow or refuses a query is a 5xx. Neither is ever a verdict: Argo Rollouts
counts a non-2xx answer as a measurement Error (against ``consecutiveErrorLimit``).
"""

from __future__ import annotations

from typing import Any

ERROR_RUNBOOK = "runbooks/analysis-provider-errors.md"


class AnalysisError(Exception):
    """Base class: an answer that is not a verdict."""

    status = 500
    kind = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "status": self.status,
                "type": self.kind,
                "message": self.message,
                **({"details": self.details} if self.details else {}),
            },
            "runbook": ERROR_RUNBOOK,
        }


class ParamError(AnalysisError):
    """A parameter is missing, malformed or out of range (the caller's mistake)."""

    status = 400
    kind = "bad_parameter"


class UnknownCheckError(AnalysisError):
    status = 404
    kind = "unknown_check"


class ObjectNotFoundError(AnalysisError):
    """A sample-store key names no object."""

    status = 404
    kind = "sample_not_found"


class ObjectTooLargeError(AnalysisError):
    """A sample-store object exceeds the configured size or row limit."""

    status = 422
    kind = "sample_too_large"


class SampleFormatError(AnalysisError):
    """A sample-store object cannot be parsed (bad JSON line, wrong array shape)."""

    status = 422
    kind = "sample_format_error"


class SourceError(AnalysisError):
    """A data source failed; ``source`` names it for the metrics."""

    status = 502
    kind = "source_error"

    def __init__(self, message: str, *, source: str, **details: Any) -> None:
        super().__init__(message, source=source, **details)
        self.source = source


class SourceQueryError(SourceError):
    """The source answered but refused the query (e.g. PromQL error): 502 Bad Gateway."""

    status = 502
    kind = "source_query_error"


class SourceUnavailableError(SourceError):
    """The source cannot be reached: 503."""

    status = 503
    kind = "source_unavailable"


class SourceTimeoutError(SourceError):
    """The source did not answer within the time budget: 504."""

    status = 504
    kind = "source_timeout"


class BudgetExceededError(AnalysisError):
    """The analysis used up its time budget (counted from the request's arrival) while working: 504."""

    status = 504
    kind = "budget_exceeded"


class BusyError(AnalysisError):
    """The analysis could not start within its budget (every analysis slot of the worker was busy):
    503 at once, instead of an answer that arrives after the caller gave up."""

    status = 503
    kind = "busy"
