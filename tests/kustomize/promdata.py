"""A real Prometheus for the Kustomize tests (dashboard panels, KEDA triggers), loaded with series.

Six hours at one-minute resolution of: the three-team GPU fleet as kube-state-metrics, DCGM exporter,
vLLM, TGI and Triton export it (tests/rollouts/gpu_fleet.py); mlguard's own metrics, with the names,
label names and buckets of the metric objects in webhook/metrics.py and rollouts/metrics.py (read from
those objects, so a renamed metric fails the tests that use it); the audit's gauge
``mlguard_audit_results{policy,namespace,result}``; and ``up`` for both services.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.metrics import MetricWrapperBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rollouts"))
import gpu_fleet as gf

STEP = 60
HISTORY = 6 * 3600
# Label values for mlguard's metrics, by label name. A label this table does not know fails the
# tests: a new label on a metric deserves a look at the dashboard.
LABEL_VALUES = {
    "operation": ["CREATE", "UPDATE"], "kind": ["Deployment", "Pod"],
    "decision": ["allowed", "denied", "warned", "error"], "policy": ["gpu-limits", "gpu-tolerations", "eval-gate"],
    "action": ["deny", "warn", "audit"], "result": ["success", "refused"],
    "check": ["latency", "error-rate", "input-drift"], "verdict": ["pass", "fail", "inconclusive", "error"],
    "caller": ["argo", "flagger"], "source": ["prometheus", "sample-store"],
    "reason": ["handshake_timeout", "read_timeout", "evicted"], "outcome": ["success", "failed"],
}
AUDIT_RESULTS = ("pass", "fail", "warn", "error", "skip")


def mlguard_metrics() -> list[tuple[str, MetricWrapperBase]]:
    """(job, metric object) for every metric the webhook and the analysis provider define."""
    import webhook.metrics as webhook_metrics
    from rollouts.metrics import AnalysisMetrics

    # the audit's metrics live in webhook/metrics.py but are served by the audit Deployment (job mlguard-audit);
    # mlguard_audit_results is added below with realistic label values
    found = [("mlguard-audit" if m._name.startswith("mlguard_audit") else "mlguard-webhook", m)
             for m in vars(webhook_metrics).values()
             if isinstance(m, MetricWrapperBase) and m._name != "mlguard_audit_results"]
    analysis = AnalysisMetrics()
    found += [("mlguard-analysis", m) for m in vars(analysis).values() if isinstance(m, MetricWrapperBase)]
    assert len(found) >= 12
    return found


def mlguard_series(writer: gf.OpenMetricsWriter | None, t: np.ndarray, rng: np.random.Generator) -> set[str]:
    """Adds mlguard's series to ``writer`` (None: only name them); returns the metric names."""
    out = writer or gf.OpenMetricsWriter()
    names = set()
    for job, metric in mlguard_metrics():
        kind, name, labelnames = metric._type, metric._name, metric._labelnames
        target = {"job": job, "namespace": "mlguard-system", "pod": f"{job}-7c9d8-abcde", "service": job}
        for values in product(*(LABEL_VALUES[label] for label in labelnames)):
            labels = {**target, **dict(zip(labelnames, values, strict=True))}
            if kind == "counter":
                out.add(f"{name}_total", labels, t, np.cumsum(rng.poisson(2.0, t.size)).astype(float))
                names.add(f"{name}_total")
            elif kind == "gauge":
                out.add(name, labels, t, np.full(t.size, 1.0 if name == "mlguard_cache_synced" else 0.0))
                names.add(name)
            elif kind == "histogram":
                bounds = metric._upper_bounds
                observed = rng.lognormal(math.log(bounds[len(bounds) // 2]), 0.8, size=(t.size, 20))
                per_step = np.stack([(observed <= b).sum(axis=1) for b in bounds], axis=1)
                cumulative = np.cumsum(per_step, axis=0).astype(float)
                for i, bound in enumerate(bounds):
                    le = "+Inf" if math.isinf(bound) else repr(float(bound))
                    out.add(f"{name}_bucket", {**labels, "le": le}, t, cumulative[:, i])
                out.add(f"{name}_count", labels, t, cumulative[:, -1])
                out.add(f"{name}_sum", labels, t, np.cumsum(observed.sum(axis=1)))
                names.update({f"{name}_bucket", f"{name}_count", f"{name}_sum"})
            else:
                raise AssertionError(f"{name}: a {kind}, which these tests cannot generate yet")
    for job in ("mlguard-webhook", "mlguard-analysis"):
        out.add("up", {"job": job, "namespace": "mlguard-system", "instance": f"{job}:8443"}, t, np.ones(t.size))
    # The audit's gauge (issue 16 part B emits it): one value per (policy, namespace, result).
    for policy, namespace, result in product(("gpu-limits", "gpu-idle"), ("team-llm", "team-vision"), AUDIT_RESULTS):
        out.add("mlguard_audit_results", {"job": "mlguard-audit", "policy": policy, "namespace": namespace,
                                          "result": result}, t, np.full(t.size, float(rng.integers(0, 4) + 1)))
    return names | {"mlguard_audit_results"}


class Prom:
    """A running Prometheus: its URL and the time its data ends."""

    def __init__(self, url: str, at: float) -> None:
        self.url, self.at = url, at

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def instant(self, expr: str) -> list[dict[str, Any]]:
        doc = self.get("/api/v1/query", query=expr, time=f"{self.at:.0f}")
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loaded_prometheus() -> Iterator[Prom]:
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        raise AssertionError("the prometheus and promtool binaries (Debian package 'prometheus') are required")
    end = math.floor(time.time() / STEP) * STEP - 2 * STEP
    fleet = gf.three_teams(end, step=STEP)
    fleet.history = HISTORY
    fleet.squatters = [("gpu-h100-b", 7, end - 3 * 3600, end + 1, 91.0)]
    writer, _ = gf.series(fleet)
    mlguard_series(writer, fleet.grid, np.random.default_rng(3))
    with tempfile.TemporaryDirectory(prefix="kustomize-prometheus-") as tmp:
        files, _ = writer.write(Path(tmp) / "om")
        gf.backfill(files, Path(tmp) / "tsdb")
        port = _free_port()
        with gf.prometheus(Path(tmp) / "tsdb", lookback="5m", port=port, log=Path(tmp) / "prometheus.log") as proc:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("prometheus did not become ready") from None
                    time.sleep(0.2)
            yield Prom(url, end)
