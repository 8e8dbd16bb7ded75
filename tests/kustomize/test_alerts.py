"""The PrometheusRule: promtool accepts it, alerts fire when they should, every alert has a runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kustomize_testlib import REPO, Obj, Renders, find, labels_match, one

RUNBOOK_PREFIX = "https://github.com/mlguard/mlguard/blob/main/runbooks/"
# Which runbook each situation must link (the fixed list shared with the runbook writers).
REQUIRED_RUNBOOKS = {
    "webhook-unavailable.md", "webhook-latency-high.md", "policyset-reload-refused.md",
    "admission-denied.md", "analysis-provider-errors.md", "drift-alert-investigation.md",
    "runtimeclass-missing.md", "audit-not-running.md",
}
# The metrics the services export (fixed contract) plus Prometheus' own `up`.
KNOWN_METRICS = {
    "mlguard_admission_requests_total", "mlguard_admission_duration_seconds_bucket",
    "mlguard_admission_duration_seconds_count", "mlguard_admission_duration_seconds_sum",
    "mlguard_violations_total", "mlguard_policyset_reloads_total", "mlguard_policyset_refused",
    "mlguard_cache_synced", "mlguard_policy_errors_total", "mlguard_break_glass_total",
    "mlguard_runtimeclass_missing",
    "mlguard_analysis_requests_total", "mlguard_analysis_duration_seconds_bucket",
    "mlguard_analysis_duration_seconds_count", "mlguard_analysis_duration_seconds_sum",
    "mlguard_analysis_source_errors_total", "mlguard_analysis_rejected_total",
    "mlguard_webhook_connections", "mlguard_webhook_connection_limit",
    "mlguard_webhook_connections_saturated_total", "mlguard_webhook_connections_closed_total",
    "mlguard_audit_results", "mlguard_audit_runs_total", "mlguard_audit_duration_seconds",
    "mlguard_audit_last_success_timestamp_seconds", "mlguard_audit_objects",
}
PROMTOOL_TIMEOUT_S = 60


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError("promtool is required (Debian package `prometheus`)")
    return path


def rule_groups(objs: list[Obj]) -> list[Obj]:
    rules = find(objs, "PrometheusRule")
    assert len(rules) == 1
    return rules[0]["spec"]["groups"]


def alerts(objs: list[Obj]) -> list[Obj]:
    return [rule for group in rule_groups(objs) for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def prod(renders: Renders) -> list[Obj]:
    return renders("kustomize/overlays/prod")


@pytest.fixture(scope="module")
def rules_file(prod: list[Obj], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "mlguard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(prod)}, sort_keys=False))
    return path


def test_monitoring_is_in_staging_and_prod_only(renders: Renders) -> None:
    assert find(renders("kustomize/overlays/dev"), "PrometheusRule") == []
    for overlay in ("staging", "prod"):
        assert rule_groups(renders(f"kustomize/overlays/{overlay}")) == rule_groups(
            renders("kustomize/overlays/prod"))


def test_promtool_check_rules(rules_file: Path, prod: list[Obj]) -> None:
    proc = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts(prod))} rules found" in proc.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with a syntax error is refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "Broken", "expr": "sum(rate(mlguard_admission_requests_total[5m])", "for": "1m"}]}]}))
    proc = subprocess.run([promtool(), "check", "rules", str(bad)], capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S, check=False)
    assert proc.returncode != 0


def test_every_alert_links_an_existing_runbook(prod: list[Obj]) -> None:
    linked = set()
    for alert in alerts(prod):
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), (alert["alert"], url)
        name, _, section = url.removeprefix(RUNBOOK_PREFIX).partition("#")
        assert name in REQUIRED_RUNBOOKS, (alert["alert"], name)
        if section:  # the anchor names a heading of that runbook
            headings = [line.lstrip("#").strip() for line in (REPO / "runbooks" / name).read_text().splitlines()
                        if line.startswith("#")]
            assert section in [re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings], url
        linked.add(name)
        assert (REPO / "runbooks" / name).is_file(), f"{alert['alert']}: runbooks/{name} does not exist"
    assert linked == REQUIRED_RUNBOOKS


def test_alerts_are_complete_and_use_only_exported_metrics(prod: list[Obj]) -> None:
    names = set()
    for alert in alerts(prod):
        assert re.fullmatch(r"Mlguard[A-Z][A-Za-z]+", alert["alert"])
        assert alert["alert"] not in names, "alert names are unique"
        names.add(alert["alert"])
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        used = set(re.findall(r"\bmlguard_[a-z_]+\b", alert["expr"]))
        assert used <= KNOWN_METRICS, (alert["alert"], used - KNOWN_METRICS)


def test_service_monitors_scrape_both_services(prod: list[Obj]) -> None:
    audit = one(prod, "ServiceMonitor", "mlguard-audit")  # the audit's Service comes with its component
    assert audit["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "audit"
    assert audit["spec"]["endpoints"][0]["port"] == "metrics"
    for name, scheme in (("mlguard-webhook", "https"), ("mlguard-analysis", "http")):
        monitor = one(prod, "ServiceMonitor", name)
        service = one(prod, "Service", name)
        assert labels_match(monitor["spec"]["selector"], service["metadata"]["labels"])
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["scheme"] == scheme and endpoint["path"] == "/metrics"
    tls = one(prod, "ServiceMonitor", "mlguard-webhook")["spec"]["endpoints"][0]["tlsConfig"]
    assert tls["ca"]["secret"] == {"name": "mlguard-webhook-tls", "key": "ca.crt"}
    assert not tls.get("insecureSkipVerify")
    assert tls["serverName"] == "mlguard-webhook.mlguard-system.svc"


# ---------------------------------------------------------------------------------------------
# promtool test rules: the alerts fire on the situations they describe, and not otherwise.

UNIT_TESTS = {
    "drift outside a rollout fires for job/other callers, not for canary analyses": {
        "interval": "1m",
        "input_series": [
            {"series": 'mlguard_analysis_requests_total{check="input-drift",verdict="fail",caller="job",'
                       'namespace="mlguard-system"}', "values": "0 0 1 1 1"},
            {"series": 'mlguard_analysis_requests_total{check="output-drift",verdict="fail",caller="argo",'
                       'namespace="mlguard-system"}', "values": "0 1 2 3 4"},
        ],
        "alert_rule_test": [{
            "eval_time": "4m", "alertname": "MlguardDriftOutsideRollout",
            "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "mlguard-system", "check": "input-drift",
                               "caller": "job"},
            }],
        }],
    },
    "a busy analysis provider fires on steady rejections, not on one burst": {
        "interval": "1m",
        "input_series": [
            # one burst of 10 rejections at minute 2, then none
            {"series": 'mlguard_analysis_rejected_total{namespace="burst",pod="a"}', "values": "0 0 10x40"},
            # one rejection a minute, throughout
            {"series": 'mlguard_analysis_rejected_total{namespace="steady",pod="b"}', "values": "0+1x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "MlguardAnalysisProviderBusy", "exp_alerts": []},
            {"eval_time": "30m", "alertname": "MlguardAnalysisProviderBusy", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "namespace": "steady"}}]},
        ],
    },
    "a refused PolicySet reload fires after 2 minutes": {
        "interval": "1m",
        "input_series": [
            {"series": 'mlguard_policyset_refused{namespace="mlguard-system",pod="mlguard-webhook-0"}',
             "values": "0 1 1 1 1 1"},
            {"series": 'mlguard_policyset_refused{namespace="mlguard-system",pod="mlguard-webhook-1"}',
             "values": "0 0 0 0 0 0"},
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "MlguardPolicySetReloadRefused", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "MlguardPolicySetReloadRefused", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "mlguard-system", "pod": "mlguard-webhook-0"},
            }]},
        ],
    },
    "webhook errors fire above 5% and not below": {
        "interval": "1m",
        "input_series": [
            {"series": 'mlguard_admission_requests_total{decision="error",kind="Pod",operation="CREATE",'
                       'namespace="mlguard-system"}', "values": "0+10x20"},
            {"series": 'mlguard_admission_requests_total{decision="allowed",kind="Pod",operation="CREATE",'
                       'namespace="mlguard-system"}', "values": "0+90x20"},
            {"series": 'mlguard_admission_requests_total{decision="error",kind="Pod",operation="CREATE",'
                       'namespace="other"}', "values": "0+1x20"},
            {"series": 'mlguard_admission_requests_total{decision="allowed",kind="Pod",operation="CREATE",'
                       'namespace="other"}', "values": "0+99x20"},
        ],
        "alert_rule_test": [{
            "eval_time": "15m", "alertname": "MlguardWebhookErrors",
            "exp_alerts": [{"exp_labels": {"severity": "critical", "namespace": "mlguard-system"}}],
        }],
    },
    "a denial spike fires, a steady trickle does not": {
        "interval": "1m",
        "input_series": [
            {"series": 'mlguard_admission_requests_total{decision="denied",kind="Deployment",'
                       'operation="UPDATE",namespace="mlguard-system"}', "values": "0+5x30"},
            {"series": 'mlguard_admission_requests_total{decision="allowed",kind="Deployment",'
                       'operation="UPDATE",namespace="mlguard-system"}', "values": "0+5x30"},
            {"series": 'mlguard_admission_requests_total{decision="denied",kind="Pod",'
                       'operation="CREATE",namespace="mlguard-system"}', "values": "0+1x30"},
            {"series": 'mlguard_admission_requests_total{decision="allowed",kind="Pod",'
                       'operation="CREATE",namespace="mlguard-system"}', "values": "0+50x30"},
        ],
        "alert_rule_test": [{
            "eval_time": "25m", "alertname": "MlguardAdmissionDeniedSpike",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "mlguard-system",
                                           "kind": "Deployment"}}],
        }],
    },
    "the webhook is down when no replica is scraped": {
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="mlguard-webhook",pod="a"}', "values": "1 1 0 0 0 0 0"},
            {"series": 'up{job="mlguard-analysis",pod="b"}', "values": "1 1 1 1 1 1 1"},
        ],
        "alert_rule_test": [
            {"eval_time": "6m", "alertname": "MlguardWebhookDown",
             "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
            {"eval_time": "6m", "alertname": "MlguardAnalysisProviderDown", "exp_alerts": []},
        ],
    },
    "connection saturation fires at 80% of the cap or when a worker stopped accepting": {
        "interval": "1m",
        "input_series": [
            {"series": 'mlguard_webhook_connections{namespace="mlguard-system",pod="a"}', "values": "100x10 900x10"},
            {"series": 'mlguard_webhook_connection_limit{namespace="mlguard-system",pod="a"}', "values": "1024x20"},
            {"series": 'mlguard_webhook_connections{namespace="mlguard-system",pod="b"}', "values": "10x20"},
            {"series": 'mlguard_webhook_connection_limit{namespace="mlguard-system",pod="b"}', "values": "1024x20"},
            {"series": 'mlguard_webhook_connections_saturated_total{namespace="mlguard-system",pod="b"}',
             "values": "0x12 1 2 3 4 5 6 7 8"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "MlguardWebhookConnectionsSaturated", "exp_alerts": []},
            {"eval_time": "16m", "alertname": "MlguardWebhookConnectionsSaturated", "exp_alerts": [
                {"exp_labels": {"severity": "critical", "namespace": "mlguard-system", "pod": "a"}},
                {"exp_labels": {"severity": "critical", "namespace": "mlguard-system", "pod": "b"}},
            ]},
        ],
    },
    "the audit is stale when its last success falls 30 minutes behind, not while it keeps succeeding": {
        "interval": "1m",
        "input_series": [
            # a run every 10 minutes, stamped with its finish time: fresh throughout
            {"series": 'mlguard_audit_last_success_timestamp_seconds{namespace="mlguard-system",pod="a"}',
             "values": "0 0 0 0 0 0 0 0 0 0 600x9 1200x9 1800x9 2400x9 3000x9"},
            # the last success at 10 minutes, then only failures
            {"series": 'mlguard_audit_last_success_timestamp_seconds{namespace="team-audit",pod="b"}',
             "values": "0 0 0 0 0 0 0 0 0 0 600x49"},
        ],
        "alert_rule_test": [
            {"eval_time": "40m", "alertname": "MlguardAuditStale", "exp_alerts": []},
            {"eval_time": "50m", "alertname": "MlguardAuditStale", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "namespace": "team-audit"}}]},
        ],
    },
    "slow admission fires the latency alert": {
        "interval": "1m",
        "input_series": [
            {"series": f'mlguard_admission_duration_seconds_bucket{{le="{le}",namespace="mlguard-system"}}',
             "values": f"0+{rate}x20"}
            for le, rate in (("0.1", 10), ("0.5", 20), ("1", 100), ("+Inf", 100))
        ],
        "alert_rule_test": [{
            "eval_time": "20m", "alertname": "MlguardWebhookLatencyHigh",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "mlguard-system"}}],
        }],
    },
}


@pytest.fixture(scope="module")
def logic_rules_file(prod: list[Obj], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same rules without annotations: promtool compares annotations exactly, and these unit
    tests are about when an alert fires (expr, for, labels), not about its wording."""
    groups = [{**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                                  for rule in group["rules"]]} for group in rule_groups(prod)]
    path = tmp_path_factory.mktemp("logic") / "mlguard.logic.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


@pytest.mark.parametrize("name", sorted(UNIT_TESTS))
def test_promtool_rule_unit_tests(name: str, logic_rules_file: Path, tmp_path: Path) -> None:
    spec = {"rule_files": [str(logic_rules_file)], "evaluation_interval": "1m", "tests": [UNIT_TESTS[name]]}
    test_file = tmp_path / "test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout}{proc.stderr}"
