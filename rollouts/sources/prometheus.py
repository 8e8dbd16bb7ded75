"""Prometheus over its HTTP API, with named query templates and safe label matchers.

Callers never send PromQL (unless the config sets ``allowRawQueries: true``): they name a query
template (from a preset or the config) and pass label values, which are validated against a strict
pattern and escaped before they are put into the ``${selector}`` placeholder of the template.

Template placeholders (``string.Template`` syntax, since PromQL itself is full of braces):
``${selector}`` the label matchers without braces (e.g. ``rollouts_pod_template_hash="6d4f9c",namespace="ml"``),
``${interval}`` a range such as ``1m``, ``${quantile}`` such as ``0.95`` and ``${model}``, which
becomes ``,<model label>="<model>"`` when the caller passes ``model=`` (empty otherwise): only the
series that carry the model label use it.

Every query is one bounded GET (:func:`rollouts.sources.http.bounded_get`): an absolute deadline
for the whole answer and a byte cap (``prometheus.maxBytes``, default 8 MiB; an aggregated range
query of 1,000 points is about 40 KB). Failures become errors, never verdicts: connection refused
or HTTP 5xx -> 503, the deadline -> 504 (also Prometheus' own ``errorType: timeout``), a query the
server rejects (bad PromQL, HTTP 400/422), an answer above the byte cap or one that is not a query
result -> 502.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import string
from typing import Any

import numpy as np
import orjson

from rollouts.errors import (
    AnalysisError,
    ParamError,
    SourceQueryError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from rollouts.sources import Deadline
from rollouts.sources.http import bounded_get

SOURCE_NAME = "prometheus"
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,127}")
# Strict: Kubernetes names, pod-template hashes, model names such as meta-llama/Llama-3.1-8B.
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,252}")


def escape_label_value(value: str) -> str:
    """Escape for a PromQL double-quoted string (after validation, as a second line of defence)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def build_selector(matchers: dict[str, str]) -> str:
    """Validated, escaped label matchers, without the surrounding braces."""
    parts = []
    for name, value in matchers.items():
        if not LABEL_NAME_RE.fullmatch(name):
            raise ParamError(f"invalid label name {name!r} (must match {LABEL_NAME_RE.pattern})")
        if not isinstance(value, str) or not LABEL_VALUE_RE.fullmatch(value):
            raise ParamError(
                f"invalid value {value!r} for label {name!r} (must match {LABEL_VALUE_RE.pattern})"
            )
        parts.append(f'{name}="{escape_label_value(value)}"')
    return ",".join(parts)


def render(
    template: str, *, name: str, selector: str, interval: str, quantile: float = 0.95, model: str = "",
) -> str:
    """Fill a template; ``model`` is an optional extra matcher (``,model_name="x"``) for ``${model}``."""
    try:
        return string.Template(template).substitute(
            selector=selector, interval=interval, quantile=repr(float(quantile)), model=model
        )
    except (KeyError, ValueError) as exc:
        raise AnalysisError(
            f"query template {name!r} is invalid ({exc}); placeholders are ${{selector}}, "
            "${interval}, ${quantile} and ${model}"
        ) from None


DEFAULT_MAX_BYTES = 8 * 1024 * 1024

# A series of a multi-series answer: its labels, and its value (instant) or its points (range).
LabelledValue = tuple[dict[str, str], float]
LabelledSeries = tuple[dict[str, str], "np.ndarray", "np.ndarray"]  # labels, timestamps, values


class PrometheusSource:
    """Instant and range queries, each bounded in time (inside the shared deadline) and in bytes."""

    name = SOURCE_NAME

    def __init__(self, url: str, *, timeout: float = 3.0, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "url": self.url, "timeoutSeconds": self.timeout, "maxBytes": self.max_bytes}

    def _get(self, path: str, params: dict[str, str], *, deadline: Deadline) -> Any:
        """The ``data`` of a successful API answer; an AnalysisError otherwise."""
        timeout = deadline.timeout(self.timeout, source=self.name)
        # Prometheus stops evaluating at its own timeout, a little before ours ends.
        params = {**params, "timeout": f"{max(int(timeout * 900), 100)}ms"}
        answer = bounded_get(
            f"{self.url}{path}", params=params, deadline=deadline, timeout=timeout, max_bytes=self.max_bytes,
            source=self.name, what=f"Prometheus at {self.url}",
            too_large=lambda limit: SourceQueryError(
                f"Prometheus answered more than {limit} bytes (prometheus.maxBytes); query templates must "
                "aggregate to one series (wrap them in sum(...))", source=self.name, limit=limit),
        )
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            doc = None
        error_type = doc.get("errorType") if isinstance(doc, dict) else None
        message = str(doc.get("error", ""))[:400] if isinstance(doc, dict) else ""
        if answer.status == 200 and isinstance(doc, dict) and doc.get("status") == "success":
            return doc.get("data")
        if error_type == "timeout" or answer.status == 504:
            raise SourceTimeoutError(f"Prometheus at {self.url} timed out evaluating the query: {message}",
                                     source=self.name)
        if answer.status in (400, 422) or error_type in ("bad_data", "execution"):
            raise SourceQueryError(f"Prometheus rejected the query (HTTP {answer.status}): {message}",
                                   source=self.name)
        if answer.status >= 500:
            raise SourceUnavailableError(f"Prometheus at {self.url} answered HTTP {answer.status} {message}".rstrip(),
                                         source=self.name)
        raise SourceQueryError(
            f"Prometheus at {self.url} answered HTTP {answer.status} with something that is not a query result",
            source=self.name,
        )

    def instant(self, query: str, *, deadline: Deadline, at: dt.datetime | None = None) -> float | None:
        """One number from an aggregating query at ``at`` (default: now); None when the result is empty.

        NaN and infinities are returned as they are: what they mean depends on the query (no traffic
        in a quantile; a broken counter in a count), so the caller decides.
        """
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = self._get("/api/v1/query", params, deadline=deadline)
        result = self._result(data, "vector", query)
        if not result:
            return None
        if len(result) > 1:
            raise SourceQueryError(
                f"query returned {len(result)} series; templates must aggregate to one series "
                "(wrap them in sum(...))",
                source=self.name, query=query,
            )
        try:
            return float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise SourceQueryError("unexpected instant-query result shape", source=self.name) from None

    def instant_by(self, query: str, *, label: str, deadline: Deadline,
                   at: dt.datetime | None = None) -> dict[str, float]:
        """One number per value of ``label`` (e.g. histogram buckets by ``le``) from an instant query.

        Non-finite values and series without the label are the template's mistake: 502.
        """
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        result = self._result(self._get("/api/v1/query", params, deadline=deadline), "vector", query)
        out: dict[str, float] = {}
        try:
            for item in result or []:
                key = item["metric"].get(label)
                value = float(item["value"][1])
                if key is None or key in out or not math.isfinite(value):
                    raise SourceQueryError(
                        f"query must return one finite value per {label!r} label (histogram buckets: "
                        f"sum by ({label}) (...)); got {item['metric']} = {item['value'][1]}",
                        source=self.name, query=query,
                    )
                out[key] = value
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise SourceQueryError("unexpected instant-query result shape", source=self.name) from None
        return out

    def series(
        self, query: str, *, start: dt.datetime, end: dt.datetime, step_seconds: int, deadline: Deadline,
    ) -> list[float]:
        """Values of one aggregated series over [start, end] at ``step``; NaN points (no traffic) dropped."""
        params = {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
                  "step": f"{step_seconds}s"}
        result = self._result(self._get("/api/v1/query_range", params, deadline=deadline), "matrix", query)
        if not result:
            return []
        if len(result) > 1:
            raise SourceQueryError(
                f"range query returned {len(result)} series; templates must aggregate to one series",
                source=self.name, query=query,
            )
        values: list[float] = []
        try:
            for _, raw in result[0]["values"]:
                value = float(raw)
                if math.isfinite(value):
                    values.append(value)
        except (KeyError, TypeError, ValueError):
            raise SourceQueryError("unexpected range-query result shape", source=self.name) from None
        return values

    def vector(self, query: str, *, deadline: Deadline, at: dt.datetime | None = None) -> list[LabelledValue]:
        """Every series of an instant query, with its labels (the metric name dropped) and value.

        For queries that return one series per group (reports); the byte cap bounds the answer."""
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        result = self._result(self._get("/api/v1/query", params, deadline=deadline), "vector", query)
        out: list[LabelledValue] = []
        try:
            for item in result:
                labels = {str(k): str(v) for k, v in item["metric"].items() if k != "__name__"}
                out.append((labels, float(item["value"][1])))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise SourceQueryError("unexpected instant-query result shape", source=self.name) from None
        return out

    def matrix(
        self, query: str, *, start: dt.datetime, end: dt.datetime, step_seconds: int, deadline: Deadline,
    ) -> list[LabelledSeries]:
        """Every series of a range query: labels (metric name dropped), timestamps (unix seconds) and
        values as arrays. Points are as Prometheus answers them: only the steps where the series had
        a value."""
        params = {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
                  "step": f"{step_seconds}s"}
        result = self._result(self._get("/api/v1/query_range", params, deadline=deadline), "matrix", query)
        out: list[LabelledSeries] = []
        try:
            for item in result:
                labels = {str(k): str(v) for k, v in item["metric"].items() if k != "__name__"}
                values = item["values"]
                out.append((labels, np.fromiter((p[0] for p in values), float, len(values)),
                            np.fromiter((p[1] for p in values), float, len(values))))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise SourceQueryError("unexpected range-query result shape", source=self.name) from None
        return out

    def _result(self, data: Any, kind: str, query: str) -> list[Any]:
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise SourceQueryError("Prometheus answered something that is not a query result", source=self.name)
        if data.get("resultType") != kind:
            raise SourceQueryError(
                f"query returned a {data.get('resultType')}, expected a {kind}", source=self.name, query=query
            )
        result: list[Any] = data["result"]
        return result
