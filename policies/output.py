"""Reports for people and machines: text, json, sarif (2.1.0), junit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from policies.model import Report, Resource, Violation
from policies.registry import all_policies

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"deny": "error", "warn": "warning", "audit": "note"}
WORD = {"deny": "DENY", "warn": "WARN", "audit": "AUDIT"}

Locations = Mapping[Resource, tuple[str, int]]


def _where(resource: Resource, locations: Locations) -> str:
    loc = locations.get(resource)
    return f"{loc[0]}:{loc[1]}" if loc else "<unknown source>"


def render_text(report: Report, locations: Locations, *, color: bool = False) -> str:
    lines: list[str] = []
    for v in sorted(report.violations, key=lambda v: (("deny", "warn", "audit").index(v.action), str(v.resource))):
        lines.append(f"{WORD[v.action]:<5} {v.policy}  {v.resource}  ({_where(v.resource, locations)})")
        lines.append(f"      at:      {v.path or '<object>'}")
        lines.append(f"      fix:     {v.message}")
        lines.append(f"      runbook: {v.runbook}")
    for n in report.notes:
        lines.append(f"NOTE  {n.policy}  {n.resource}: {n.message}")
    s = report.summary()
    verdict = "FAILED (denied)" if report.denied else "passed"
    lines.append(f"mlguard check: {s['resources']} resources, {s['deny']} denied, {s['warn']} warnings, "
                 f"{s['audit']} audit, {len(report.notes)} notes: {verdict}")
    return "\n".join(lines) + "\n"


def render_json(report: Report, locations: Locations) -> str:
    data = report.to_json()
    for v, out in zip(report.violations, data["violations"], strict=True):
        loc = locations.get(v.resource)
        if loc:
            out["source"] = {"file": loc[0], "line": loc[1]}
    return json.dumps(data, indent=2) + "\n"


def _rule(policy_id: str) -> dict[str, Any]:
    policies = all_policies()
    meta = policies[policy_id].metadata() if policy_id in policies else {"title": policy_id, "description": "",
                                                                       "runbook": "", "severity": "high"}
    return {
        "id": policy_id,
        "name": policy_id,
        "shortDescription": {"text": meta["title"]},
        "fullDescription": {"text": meta["description"] or meta["title"]},
        "helpUri": meta["runbook"],
        "properties": {"severity": meta["severity"], "tags": ["kubernetes", "gpu", "mlguard"]},
    }


def render_sarif(report: Report, locations: Locations) -> str:
    rule_ids = sorted({v.policy for v in report.violations})
    results = []
    for v in report.violations:
        loc = locations.get(v.resource)
        location: dict[str, Any] = {
            "logicalLocations": [{"fullyQualifiedName": f"{v.resource}#{v.path}", "kind": "resource"}],
        }
        if loc:
            location["physicalLocation"] = {"artifactLocation": {"uri": loc[0].split(" (")[0]},
                                            "region": {"startLine": loc[1]}}
        results.append({
            "ruleId": v.policy,
            "ruleIndex": rule_ids.index(v.policy),
            "level": LEVELS[v.action],
            "message": {"text": f"{v.resource}: {v.path}: {v.message} (runbook: {v.runbook})"},
            "locations": [location],
            "properties": {"action": v.action, "resource": v.resource.to_json(), "path": v.path},
        })
    sarif = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "mlguard", "informationUri": "https://github.com/mlguard/mlguard",
                                "version": "0.1.0", "rules": [_rule(r) for r in rule_ids]}},
            "results": results,
        }],
    }
    return json.dumps(sarif, indent=2) + "\n"


def render_junit(report: Report, locations: Locations) -> str:
    by_resource: dict[Resource, list[Violation]] = {r: [] for r in report.resources}
    for v in report.violations:
        by_resource.setdefault(v.resource, []).append(v)
    s = report.summary()
    suite = ET.Element("testsuite", name="mlguard check", tests=str(len(by_resource)),
                       failures=str(sum(1 for vs in by_resource.values() if any(v.action == "deny" for v in vs))),
                       errors="0", skipped="0")
    for resource, violations in by_resource.items():
        case = ET.SubElement(suite, "testcase", classname=f"{resource.kind}.{resource.namespace}",
                             name=resource.name, file=_where(resource, locations).rsplit(":", 1)[0])
        denies = [v for v in violations if v.action == "deny"]
        if denies:
            fail = ET.SubElement(case, "failure", message=f"{len(denies)} policy violation(s)", type="mlguard.deny")
            fail.text = "\n".join(v.line() for v in denies)
        others = [v for v in violations if v.action != "deny"]
        if others:
            ET.SubElement(case, "system-out").text = "\n".join(f"{v.action}: {v.line()}" for v in others)
    suites = ET.Element("testsuites", name="mlguard", tests=str(len(by_resource)), failures=suite.get("failures", "0"))
    suites.append(suite)
    ET.SubElement(suite, "properties").append(ET.Element("property", name="summary", value=json.dumps(s)))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "sarif": render_sarif, "junit": render_junit}
