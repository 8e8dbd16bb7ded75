"""Prometheus metrics of the webhook (names are a contract with the alert rules).

gunicorn runs several worker processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py sets
it before the workers start) prometheus_client writes each worker's samples to that directory and
/metrics merges them. Gauges say how they merge: ``mlguard_cache_synced`` is the minimum over live
workers (1 only when every worker's cache has synced), ``mlguard_policyset_refused`` the maximum.
Without the variable (tests with Flask's client, a single process) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "mlguard_admission_requests_total",
    "AdmissionReviews answered, by operation, object kind and decision (allowed|denied|warned|error).",
    ["operation", "kind", "decision"],
)
DURATION = Histogram(
    "mlguard_admission_duration_seconds",
    "Time to answer one AdmissionReview, from parsed body to built response.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
VIOLATIONS = Counter(
    "mlguard_violations_total",
    "Policy violations found at admission, by policy and effective action (deny|warn|audit).",
    ["policy", "action"],
)
RELOADS = Counter(
    "mlguard_policyset_reloads_total",
    "PolicySet (re)loads from the mounted file, by result (success|refused); counted per worker.",
    ["result"],
)
REFUSED = Gauge(
    "mlguard_policyset_refused",
    "1 while the newest PolicySet file is invalid and the last good one keeps serving (or none is loaded).",
    multiprocess_mode="livemax",
)
CACHE_SYNCED = Gauge(
    "mlguard_cache_synced",
    "1 when the cluster cache (namespaces, pods, quotas, DRA claims) has listed and is watching.",
    multiprocess_mode="livemin",
)
POLICY_ERRORS = Counter(
    "mlguard_policy_errors_total",
    "Exceptions raised inside a policy at admission (the object was denied: fail closed).",
    ["policy"],
)
BREAK_GLASS = Counter(
    "mlguard_break_glass_total",
    "Denials turned into allows by the mlguard.io/break-glass annotation, by policy.",
    ["policy"],
)


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (multiprocess mode) or of this process."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
