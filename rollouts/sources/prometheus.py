"""Prometheus through prometheus-api-client, with named query templates and safe label matchers.

Callers never send PromQL (unless the config sets ``allowRawQueries: true``): they name a query
template (from a preset or the config) and pass label values, which are validated against a strict
pattern and escaped before they are put into the ``${selector}`` placeholder of the template.

Template placeholders (``string.Template`` syntax, since PromQL itself is full of braces):
``${selector}`` the label matchers without braces (e.g. ``rollouts_pod_template_hash="6d4f9c",namespace="ml"``),
``${interval}`` a range such as ``1m``, ``${quantile}`` such as ``0.95`` and ``${model}``, which
becomes ``,<model label>="<model>"`` when the caller passes ``model=`` (empty otherwise): only the
series that carry the model label use it.

Failures become errors, never verdicts: connection refused -> 503, timeout -> 504, a query the
server rejects (bad PromQL, bad label) -> 502.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import string
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from rollouts.errors import (
    AnalysisError,
    ParamError,
    SourceQueryError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from rollouts.sources import Deadline

SOURCE_NAME = "prometheus"
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,127}")
# Strict: Kubernetes names, pod-template hashes, model names such as meta-llama/Llama-3.1-8B.
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,252}")
_STATUS_RE = re.compile(r"HTTP Status Code (\d{3})")


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


class PrometheusSource:
    """Instant and range queries with per-call timeouts inside a shared deadline."""

    name = SOURCE_NAME

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = PrometheusConnect(
            url=self.url, retry=Retry(total=0, raise_on_status=False), timeout=timeout,
        )

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "url": self.url, "timeoutSeconds": self.timeout}

    def _call(self, fn: Any, *args: Any, deadline: Deadline, **kwargs: Any) -> Any:
        timeout = deadline.timeout(self.timeout, source=self.name)
        try:
            return fn(*args, params={"timeout": f"{max(int(timeout * 1000), 100)}ms"}, timeout=timeout, **kwargs)
        except requests.Timeout:
            raise SourceTimeoutError(
                f"Prometheus at {self.url} did not answer within {timeout:.1f}s", source=self.name
            ) from None
        except requests.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            if isinstance(reason, ReadTimeoutError):  # a read timeout wrapped by the no-retry policy
                raise SourceTimeoutError(
                    f"Prometheus at {self.url} did not answer within {timeout:.1f}s", source=self.name
                ) from None
            raise SourceUnavailableError(
                f"Prometheus at {self.url} is unreachable: {type(exc).__name__}", source=self.name
            ) from None
        except requests.RequestException as exc:
            raise SourceUnavailableError(
                f"Prometheus request failed: {type(exc).__name__}", source=self.name
            ) from None
        except PrometheusApiClientException as exc:
            message = str(exc)
            m = _STATUS_RE.search(message)
            status = int(m.group(1)) if m else 0
            if status in (503, 502) or status == 0:
                raise SourceUnavailableError(
                    f"Prometheus at {self.url} answered HTTP {status}", source=self.name
                ) from None
            if status == 504:
                raise SourceTimeoutError(
                    f"Prometheus at {self.url} timed out evaluating the query", source=self.name
                ) from None
            raise SourceQueryError(
                f"Prometheus rejected the query (HTTP {status}): {message[:400]}", source=self.name
            ) from None
        except (ValueError, KeyError) as exc:
            raise SourceQueryError(
                f"Prometheus answered something that is not a query result: {exc}", source=self.name
            ) from None

    def instant(self, query: str, *, deadline: Deadline) -> float | None:
        """One number from an aggregating query; None when the result is empty or NaN."""
        result = self._call(self._client.custom_query, query, deadline=deadline)
        if not result:
            return None
        if len(result) > 1:
            raise SourceQueryError(
                f"query returned {len(result)} series; templates must aggregate to one series "
                "(wrap them in sum(...))",
                source=self.name, query=query,
            )
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise SourceQueryError("unexpected instant-query result shape", source=self.name) from None
        return value if math.isfinite(value) else None

    def series(
        self, query: str, *, start: dt.datetime, end: dt.datetime, step_seconds: int, deadline: Deadline,
    ) -> list[float]:
        """Values of one aggregated series over [start, end] at ``step``; NaN points (no traffic) dropped."""
        result = self._call(
            self._client.custom_query_range, query, start_time=start, end_time=end,
            step=f"{step_seconds}s", deadline=deadline,
        )
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
