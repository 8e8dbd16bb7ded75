"""`mlguard test`: run each policy's sample cases (in the spirit of `kyverno test`).

A policy keeps its cases beside it in ``tests/suite.yaml``::

    policy: gpu-limits
    params: {maxPerPod: 4}            # optional, merged over the policy's defaults
    policyset: {mutations: {...}}     # optional, extra PolicySet `spec` keys
    namespaceLabels: {team-a: {mlguard.io/environment: prod}}   # optional
    cases:
      - name: deployment-without-limits
        file: denied/deployment-no-limits.yaml   # every object in it is also cluster context
        resource: Deployment/team-a/vllm          # optional: default every workload in the file
        expect: fail                              # pass | fail
        contains: ["add limits.nvidia.com/gpu"]   # optional substrings of the messages
        paths: ["spec.template.spec.containers[0].resources.limits"]   # optional exact paths
        notes: ["toleration"]                     # optional substrings of the notes
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.policyset import parse_policyset
from policies.workload import pod_templates

LIBRARY = Path(__file__).parent / "library"


@dataclass
class CaseResult:
    policy: str
    suite: Path
    name: str
    ok: bool
    detail: str = ""
    kinds: list[str] = field(default_factory=list)
    expect: str = "pass"


def find_suites(root: Path) -> list[Path]:
    return sorted(root.rglob("suite.yaml"))


def _load_objects(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "List":
            out.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
        elif isinstance(doc, dict):
            out.append(doc)
    return out


def _policyset_for(suite: Mapping[str, Any]) -> Any:
    policy = suite["policy"]
    spec: dict[str, Any] = {"policies": {policy: {"action": "deny", "params": suite.get("params") or {}}}}
    for key, value in (suite.get("policyset") or {}).items():
        if key == "policy":
            spec["policies"][policy].update(value)
        else:
            spec[key] = value
    doc = {"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": f"test-{policy}"},
           "spec": spec}
    return parse_policyset(yaml.safe_dump(doc), source=f"suite {policy}")


def run_suite(path: Path) -> Iterator[CaseResult]:
    suite = yaml.safe_load(path.read_text())
    policy = suite["policy"]
    policyset = _policyset_for(suite)
    for case in suite.get("cases") or []:
        name = case["name"]
        objects = _load_objects(path.parent / case["file"])
        facts = ManifestFacts(objects, extra_labels=suite.get("namespaceLabels"))
        report = evaluate(objects, policyset, point=case.get("point", "ci"), facts=facts)
        targets = [case["resource"]] if case.get("resource") else [
            f"{o['kind']}/{(o.get('metadata') or {}).get('namespace', 'default')}/{o['metadata']['name']}"
            for o in objects if pod_templates(o) or o.get("kind") == "Rollout"]
        kinds = sorted({t.split("/")[0] for t in targets})
        hits = [v for v in report.violations if v.policy == policy and str(v.resource) in targets]
        notes = [n for n in report.notes if n.policy == policy]
        problems = []
        expect = case["expect"]
        if expect == "pass" and hits:
            problems.append("expected pass, got: " + "; ".join(v.line() for v in hits))
        if expect == "fail" and not hits:
            problems.append(f"expected a {policy} violation on {', '.join(targets)}, got none")
        for text in case.get("contains") or []:
            if not any(text in v.message for v in hits):
                problems.append(f"no message contains {text!r}: " + "; ".join(v.message for v in hits))
        for p in case.get("paths") or []:
            if not any(v.path == p for v in hits):
                problems.append(f"no violation at path {p!r}: " + "; ".join(v.path for v in hits))
        for text in case.get("notes") or []:
            if not any(text in n.message for n in notes):
                problems.append(f"no note contains {text!r}: " + "; ".join(n.message for n in notes))
        if report.policy_errors:
            problems.append(f"policy raised: {report.policy_errors}")
        yield CaseResult(policy, path, name, not problems, "\n".join(problems), kinds, expect)


class TestFileError(ValueError):
    """A malformed test file, named with its line."""


def run_all(root: Path = LIBRARY, *, policyset: Any = None) -> list[CaseResult]:
    return [r for suite in find_suites(root) for r in run_suite(suite)]
