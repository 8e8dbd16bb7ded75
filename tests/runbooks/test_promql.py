"""Every PromQL expression in a runbook, and every alert rule mlguard ships, passes promtool."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import yaml
from runbook_checks import known_metric, metric_names, promql_problems
from runbook_lib import ROOT, promql_blocks

BLOCKS = promql_blocks()
PROMETHEUS_RULE = ROOT / "kustomize" / "components" / "prometheus" / "prometheusrule.yaml"


def test_runbooks_carry_promql() -> None:
    assert len(BLOCKS) >= 15, f"only {len(BLOCKS)} promql blocks"
    assert all(b.text.strip() for b in BLOCKS), [f"{b.file}:{b.line}" for b in BLOCKS if not b.text.strip()]


def test_every_runbook_promql_expression_parses_and_names_real_metrics() -> None:
    problems = promql_problems(b.text for b in BLOCKS)
    report = [f"{BLOCKS[i].file}:{BLOCKS[i].line}: {p}" for i, ps in sorted(problems.items()) for p in ps]
    assert not report, "\n".join(report)


def test_runbooks_use_every_fixed_metric() -> None:
    used = set().union(*(metric_names(b.text) for b in BLOCKS))
    for name in ("mlguard_admission_requests_total", "mlguard_admission_duration_seconds_bucket",
                 "mlguard_violations_total", "mlguard_policyset_reloads_total", "mlguard_policyset_refused",
                 "mlguard_cache_synced", "mlguard_policy_errors_total", "mlguard_break_glass_total",
                 "mlguard_runtimeclass_missing", "mlguard_analysis_requests_total",
                 "mlguard_analysis_duration_seconds_bucket", "mlguard_analysis_source_errors_total",
                 "mlguard_analysis_rejected_total"):
        assert name in used, f"no runbook query uses {name}"


def test_shipped_alert_rules_pass_promtool() -> None:
    assert PROMETHEUS_RULE.is_file(), f"{PROMETHEUS_RULE.relative_to(ROOT)} is missing"
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump({"groups": spec["groups"]}))
        proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unknown = {n for g in spec["groups"] for r in g["rules"] for n in metric_names(str(r["expr"]))
               if not known_metric(n)}
    assert not unknown, f"alert rules use metrics mlguard does not export: {sorted(unknown)}"


def test_checker_reports_bad_syntax_and_unknown_metrics() -> None:
    problems = promql_problems(["sum(rate(mlguard_admission_requests_total[5m])",
                                "rate(mlguard_admission_request_total[5m])",
                                'histogram_quantile(0.99, sum by (le) ('
                                'rate(mlguard_admission_duration_seconds_bucket{namespace="<namespace>"}[5m])))'])
    assert "promtool" in " ".join(problems[0])
    assert problems[1] == ["unknown mlguard metric mlguard_admission_request_total"]
    assert 2 not in problems
