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
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from kustomize_testlib import KUSTOMIZE, Renders, one
from promdata import Prom, mlguard_series

COMPONENT = KUSTOMIZE / "components" / "grafana"
DASHBOARD = COMPONENT / "dashboards" / "mlguard.json"
# What Grafana puts in place of its variables when the dashboard opens (all namespaces, defaults).
SUBSTITUTE = {"$__rate_interval": "4m", "$__range": "6h", "$__interval": "1m", "$namespace": ".*",
              "$idle_threshold": "5", "$idle_grace": "30m", "$gpu_hour_price": "2.50"}
BUILTINS = {"__rate_interval", "__range", "__interval"}


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
                   "mlguard_analysis_source_errors_total", "mlguard_webhook_connections",
                   "kube_pod_container_resource_requests",
                   "DCGM_FI_DEV_GPU_UTIL", "vllm:num_requests_waiting"):
        assert metric in exprs, metric


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


def test_mlguard_metrics_the_dashboard_names_exist() -> None:
    """Each mlguard_* name in a panel is one the webhook or analysis provider defines (or the audit's)."""
    defined = mlguard_series(None, np.arange(2.0), np.random.default_rng(0))
    used = {n for _, expr in targets(dashboard()) for n in re.findall(r"\bmlguard_[a-z_]+\b", expr)}
    assert used and used <= defined, used - defined
