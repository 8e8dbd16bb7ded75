"""Prometheus metrics of the analysis provider (names fixed: the alert rules use them).

- ``mlguard_analysis_requests_total{check,verdict,caller}``: verdict pass|fail|inconclusive|error,
  caller argo|flagger|job|other.
- ``mlguard_analysis_duration_seconds{check}``: histogram of the time to answer.
- ``mlguard_analysis_source_errors_total{source}``: failed calls to prometheus / sample-store.
- ``mlguard_analysis_rejected_total``: requests answered 503 (busy) because they could not start
  within their time budget.

Under gunicorn with several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by
``rollouts/gunicorn.conf.py`` and /metrics aggregates all workers.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

VERDICTS = ("pass", "fail", "inconclusive", "error")
CALLERS = ("argo", "flagger", "job", "other")


class AnalysisMetrics:
    """The provider's metrics, registered in their own registry (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "mlguard_analysis_requests_total",
            "Analysis requests answered, by check, verdict (pass, fail, inconclusive, error) and caller "
            "(argo, flagger, job, other).",
            ["check", "verdict", "caller"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlguard_analysis_duration_seconds",
            "Time to answer an analysis request, by check.",
            ["check"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 10),
            registry=self.registry,
        )
        self.source_errors = Counter(
            "mlguard_analysis_source_errors_total",
            "Failed calls to a data source (prometheus, sample-store).",
            ["source"],
            registry=self.registry,
        )

        self.rejected = Counter(
            "mlguard_analysis_rejected_total",
            "Analysis requests answered 503 (busy) at once because no analysis slot freed up while enough "
            "of their time budget was left.",
            registry=self.registry,
        )

    def observe(self, *, check: str, verdict: str, caller: str, seconds: float) -> None:
        self.requests.labels(check=check, verdict=verdict, caller=caller).inc()
        self.duration.labels(check=check).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def caller_of(user_agent: str | None, caller_param: str | None) -> str:
    """argo when the User-Agent names argo-rollouts or ``caller=argo``; else the param if known; else other."""
    if (user_agent and "argo-rollouts" in user_agent.lower()) or caller_param == "argo":
        return "argo"
    if caller_param in ("job",):
        return "job"
    return "other"
