"""Prometheus metrics of the webhook (names are a contract with the alert rules).

gunicorn runs several worker processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py sets
it before the workers start) prometheus_client writes each worker's samples to that directory and
/metrics merges them. Gauges say how they merge: ``mlguard_cache_synced`` is the minimum over live
workers (1 only when every worker's cache has synced), ``mlguard_policyset_refused`` the maximum.
Without the variable (tests with Flask's client, a single process) the default registry is used.
"""

from __future__ import annotations

import os
from typing import Any

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
    "1 when the cluster cache (namespaces, pods, quotas, workloads, RuntimeClasses, DRA claims) has listed "
    "and is watching.",
    multiprocess_mode="livemin",
)
RUNTIMECLASS_MISSING = Gauge(
    "mlguard_runtimeclass_missing",
    "1 while mutations.runtimeClassName names a RuntimeClass the cluster does not have (GPU Pods are refused).",
    multiprocess_mode="livemax",
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

# Connections (webhook/worker.py): the open count against the per-worker cap says how close the
# webhook is to refusing the API server; slow or stalled clients show up as deadline closures.
CONNECTIONS = Gauge(
    "mlguard_webhook_connections",
    "Open client connections (TLS handshake, idle keep-alive, reading, writing), summed over live workers.",
    multiprocess_mode="livesum",
)
CONNECTION_LIMIT = Gauge(
    "mlguard_webhook_connection_limit",
    "The cap on open client connections (worker_connections per worker), summed over live workers.",
    multiprocess_mode="livesum",
)
CONNECTIONS_SATURATED = Counter(
    "mlguard_webhook_connections_saturated_total",
    "Times a worker was at its connection cap with no idle connection to close and stopped accepting.",
)
CONNECTIONS_CLOSED = Counter(
    "mlguard_webhook_connections_closed_total",
    "Client connections the webhook closed itself, by reason (handshake_timeout, read_timeout, write_timeout, "
    "evicted: idle at the cap, tls_error, client_closed: mid-request, shutdown).",
    ["reason"],
)

# The audit (webhook/audit_cli.py --loop, its own Deployment: one process, the default registry). Each run
# replaces every sample, so a (policy, namespace, result) that no longer occurs disappears.
AUDIT_RESULTS = Gauge(
    "mlguard_audit_results",
    "Results of the last audit of what runs in the cluster, by policy, namespace (empty: cluster-scoped "
    "objects) and result (pass|fail|warn|error|skip); one result per policy and judged object.",
    ["policy", "namespace", "result"],
    multiprocess_mode="livemax",
)
AUDIT_RUNS = Counter(
    "mlguard_audit_runs_total",
    "Audit runs, by outcome (success; failed: the cluster could not be read or the reports not written).",
    ["outcome"],
)
AUDIT_DURATION = Gauge(
    "mlguard_audit_duration_seconds",
    "Wall time of the last successful audit run (list, judge, write reports).",
    multiprocess_mode="livemax",
)
AUDIT_LAST_SUCCESS = Gauge(
    "mlguard_audit_last_success_timestamp_seconds",
    "Unix time the last audit run finished successfully (alert when it falls behind the interval).",
    multiprocess_mode="livemax",
)
AUDIT_OBJECTS = Gauge(
    "mlguard_audit_objects",
    "Objects judged by the last audit run (controllers; owned ReplicaSets, Jobs and Pods are judged through them).",
    multiprocess_mode="livemax",
)


def set_audit_results(values: dict[tuple[str, str, str], int]) -> None:
    """Replace every ``mlguard_audit_results`` sample with ``values`` ((policy, namespace, result) -> count)."""
    AUDIT_RESULTS.clear()
    for (policy, namespace, result), count in values.items():
        AUDIT_RESULTS.labels(policy, namespace, result).set(count)


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}
_CHILDREN_MAX = 4096


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: prometheus_client validates, locks and looks up on
    every ``labels()`` call, a cost paid per review for each counter. Bounded: past the limit (a
    client inventing kinds) the plain call is made."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_CHILDREN) < _CHILDREN_MAX:
            _CHILDREN[key] = found
    return found


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (multiprocess mode) or of this process."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
