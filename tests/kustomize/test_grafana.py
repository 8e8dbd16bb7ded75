"""The Grafana dashboard (components/grafana): its JSON is a well-formed dashboard, and every panel's
PromQL parses with promtool and returns data from a real Prometheus loaded with series.

The series: mlguard's own metrics with the names, label names and buckets of the objects in
webhook/metrics.py and rollouts/metrics.py (read from those objects, so a renamed metric fails here),
``mlguard_audit_results{policy,namespace,result}`` (the audit's gauge), ``up`` for both services, and
six hours of the three-team GPU fleet as kube-state-metrics, DCGM exporter, vLLM, TGI and Triton
export it (tests/rollouts/gpu_fleet.py).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
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
import pytest
import yaml
from kustomize_testlib import KUSTOMIZE, Renders, one
from prometheus_client.metrics import MetricWrapperBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rollouts"))
import gpu_fleet as gf

COMPONENT = KUSTOMIZE / "components" / "grafana"
DASHBOARD = COMPONENT / "dashboards" / "mlguard.json"
STEP = 60
HISTORY = 6 * 3600
# What Grafana puts in place of its variables when the dashboard opens (all namespaces, defaults).
SUBSTITUTE = {"$__rate_interval": "4m", "$__range": "6h", "$__interval": "1m", "$namespace": ".*",
              "$idle_threshold": "5", "$idle_grace": "30m", "$gpu_hour_price": "2.50"}
BUILTINS = {"__rate_interval", "__range", "__interval"}
# Label values for mlguard's metrics, by label name. A label this table does not know fails the
# test: a new label on a metric deserves a look at the dashboard.
LABEL_VALUES = {
    "operation": ["CREATE", "UPDATE"], "kind": ["Deployment", "Pod"],
    "decision": ["allowed", "denied", "warned", "error"], "policy": ["gpu-limits", "gpu-tolerations", "eval-gate"],
    "action": ["deny", "warn", "audit"], "result": ["success", "refused"],
    "check": ["latency", "error-rate", "input-drift"], "verdict": ["pass", "fail", "inconclusive", "error"],
    "caller": ["argo", "flagger"], "source": ["prometheus", "sample-store"],
}
AUDIT_RESULTS = ("pass", "fail", "warn", "error", "skip")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def targets(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(doc) if p["type"] != "row" for t in p["targets"]]


def substitute(expr: str) -> str:
    for name in sorted(SUBSTITUTE, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTE[name])
    return expr


# ------------------------------------------------------------------------------------------ structure

def test_the_component_renders_the_dashboard_configmap(renders: Renders) -> None:
    for overlay in ("staging", "prod"):
        cm = one(renders(f"kustomize/overlays/{overlay}"), "ConfigMap", "mlguard-grafana-dashboard")
        assert cm["metadata"]["namespace"] == "mlguard-system"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"]["mlguard.json"]) == dashboard()
    assert yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())["kind"] == "Component"


def test_dashboard_is_well_formed() -> None:
    doc = dashboard()
    assert doc["uid"] == "mlguard-overview" and doc["title"] and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels(doc):
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, f"{p['title']} overlaps another panel"
        cells |= covered
        assert p["title"]
        if p["type"] == "row":
            continue
        assert p.get("description"), f"{p['title']}: say what the panel shows"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]


def test_every_variable_a_panel_uses_is_defined() -> None:
    doc = dashboard()
    defined = {v["name"] for v in doc["templating"]["list"]} | BUILTINS
    texts = [expr for _, expr in targets(doc)] + [p.get("description", "") + p["title"] for p in panels(doc)]
    used = {m for text in texts for m in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)}
    assert used <= defined, used - defined


def test_the_dashboard_covers_what_the_issue_asks_for() -> None:
    exprs = " ".join(expr for _, expr in targets(dashboard()))
    for metric in ("mlguard_admission_requests_total", "mlguard_violations_total",
                   "mlguard_admission_duration_seconds_bucket", "mlguard_policy_errors_total", "mlguard_audit_results",
                   "mlguard_analysis_requests_total", "mlguard_analysis_duration_seconds_bucket",
                   "mlguard_analysis_source_errors_total", "kube_pod_container_resource_requests",
                   "DCGM_FI_DEV_GPU_UTIL", "vllm:num_requests_waiting"):
        assert metric in exprs, metric


# ------------------------------------------------------------------------------------------ real series

def mlguard_metrics() -> list[tuple[str, MetricWrapperBase]]:
    """(job, metric object) for every metric the webhook and the analysis provider define."""
    import webhook.metrics as webhook_metrics
    from rollouts.metrics import AnalysisMetrics

    found = [("mlguard-webhook", m) for m in vars(webhook_metrics).values() if isinstance(m, MetricWrapperBase)]
    analysis = AnalysisMetrics()
    found += [("mlguard-analysis", m) for m in vars(analysis).values() if isinstance(m, MetricWrapperBase)]
    assert len(found) >= 12
    return found


def mlguard_series(writer: gf.OpenMetricsWriter, t: np.ndarray, rng: np.random.Generator) -> set[str]:
    names = set()
    for job, metric in mlguard_metrics():
        kind, name, labelnames = metric._type, metric._name, metric._labelnames
        target = {"job": job, "namespace": "mlguard-system", "pod": f"{job}-7c9d8-abcde", "service": job}
        combos = list(product(*(LABEL_VALUES[label] for label in labelnames)))
        for values in combos:
            labels = {**target, **dict(zip(labelnames, values, strict=True))}
            if kind == "counter":
                writer.add(f"{name}_total", labels, t, np.cumsum(rng.poisson(2.0, t.size)).astype(float))
                names.add(f"{name}_total")
            elif kind == "gauge":
                value = 1.0 if name == "mlguard_cache_synced" else 0.0
                writer.add(name, labels, t, np.full(t.size, value))
                names.add(name)
            elif kind == "histogram":
                bounds = metric._upper_bounds
                observed = rng.lognormal(math.log(bounds[len(bounds) // 2]), 0.8, size=(t.size, 20))
                per_bucket = np.stack([(observed <= b).sum(axis=1) for b in bounds], axis=1)
                cumulative = np.cumsum(per_bucket, axis=0).astype(float)
                for i, bound in enumerate(bounds):
                    le = "+Inf" if math.isinf(bound) else repr(float(bound))
                    writer.add(f"{name}_bucket", {**labels, "le": le}, t, cumulative[:, i])
                writer.add(f"{name}_count", labels, t, cumulative[:, -1])
                writer.add(f"{name}_sum", labels, t, np.cumsum(observed.sum(axis=1)))
                names.update({f"{name}_bucket", f"{name}_count", f"{name}_sum"})
            else:
                raise AssertionError(f"{name}: a {kind} the dashboard test cannot generate yet")
    for job in ("mlguard-webhook", "mlguard-analysis"):
        writer.add("up", {"job": job, "namespace": "mlguard-system", "instance": f"{job}:8443"}, t, np.ones(t.size))
    # The audit's gauge (issue 16 part B emits it): one value per (policy, namespace, result).
    for policy, namespace, result in product(("gpu-limits", "gpu-idle"), ("team-llm", "team-vision"), AUDIT_RESULTS):
        writer.add("mlguard_audit_results", {"job": "mlguard-audit", "policy": policy, "namespace": namespace,
                                             "result": result}, t, np.full(t.size, float(rng.integers(0, 4) + 1)))
    return names | {"mlguard_audit_results"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prom:
    def __init__(self, url: str, at: float) -> None:
        self.url, self.at = url, at

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prom]:
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        pytest.fail("the prometheus and promtool binaries (Debian package 'prometheus') are required")
    end = math.floor(time.time() / STEP) * STEP - 2 * STEP
    fleet = gf.three_teams(end, step=STEP)
    fleet.history = HISTORY
    fleet.squatters = [("gpu-h100-b", 7, end - 3 * 3600, end + 1, 91.0)]
    writer, _ = gf.series(fleet)
    mlguard_series(writer, fleet.grid, np.random.default_rng(3))
    with tempfile.TemporaryDirectory(prefix="grafana-promql-") as tmp:
        files, _ = writer.write(Path(tmp) / "om")
        gf.backfill(files, Path(tmp) / "tsdb")
        port = free_port()
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


def test_every_panel_query_parses_with_promtool(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:panel{i}", "expr": substitute(expr)}
             for i, (_, expr) in enumerate(targets(dashboard()))]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_panel_query_returns_data(prometheus: Prom) -> None:
    problems = []
    for title, expr in targets(dashboard()):
        query = substitute(expr)
        proc = subprocess.run(["promtool", "query", "instant", "-o", "json", f"--time={prometheus.at:.0f}",
                               prometheus.url, query], capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            problems.append(f"{title}: {query}\n    -> {proc.stderr.strip()}")
            continue
        result = json.loads(proc.stdout)
        if not result:
            problems.append(f"{title}: {query}\n    -> no data")
        elif any(math.isnan(float(r["value"][1])) for r in result):
            problems.append(f"{title}: {query}\n    -> NaN")
    assert not problems, "\n".join(problems)


def test_the_namespace_variable_lists_namespaces(prometheus: Prom) -> None:
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "namespace")
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()
    doc = prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric,
                                                             "start": str(prometheus.at - 3600),
                                                             "end": str(prometheus.at)})
    assert {"team-llm", "team-vision", "team-search", "research"} <= set(doc["data"])


def test_mlguard_metrics_the_dashboard_names_exist(prometheus: Prom) -> None:
    """Each mlguard_* name in a panel is one the webhook or analysis provider defines (or the audit's)."""
    writer = gf.OpenMetricsWriter()
    defined = mlguard_series(writer, np.arange(2.0), np.random.default_rng(0))
    used = {n for _, expr in targets(dashboard()) for n in re.findall(r"\bmlguard_[a-z_]+\b", expr)}
    assert used and used <= defined, used - defined
