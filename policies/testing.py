"""`mlguard test`: run policy test cases (in the spirit of `kyverno test` and `gator verify`).

Test files are validated by JSON Schema (policies/schema/policytest.schema.yaml): an unknown key or an
`expect` that is not one of pass|fail|allow|deny|warn|audit is an error with the file and line. Two kinds
of file share the format:

- a policy's samples, ``policies/library/<policy>/tests/suite.yaml``: `policy` and `params` build a
  one-policy PolicySet (action deny), so the cases test the policy alone;
- a team's own cases, any ``*.mlguard-test.yaml``, run against the team's PolicySet (`policyset: FILE` in
  the test file, or ``mlguard test DIR --policyset FILE``) with its overrides, environments, exemptions
  and break-glass; each case may give namespace labels and the admission request (operation, user,
  groups). The verdict is admission's: dry-run and break-glass applied as the webhook applies them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from policies.context import ClusterFacts, GpuIdleness, ManifestFacts, RequestInfo, StaticUtilisation, WithUtilisation
from policies.decision import break_glass, effective_violations
from policies.engine import EXTRACTOR, evaluate
from policies.manifests import ManifestError, load_file
from policies.model import EnforcementPoint, Resource, Violation
from policies.policyset import PolicySet, PolicySetError, _fmt_path, _line_of, load_policyset, parse_policyset
from policies.workload import pod_templates

LIBRARY = Path(__file__).parent / "library"
SCHEMA_PATH = Path(__file__).parent / "schema" / "policytest.schema.yaml"
TEAM_GLOBS = ("*.mlguard-test.yaml", "*.mlguard-test.yml")


class TestFileError(ValueError):
    """A malformed test file: every problem, each with the file and line."""

    __test__ = False  # not a pytest test class


@cache
def policytest_schema() -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load(SCHEMA_PATH.read_text())
    return schema


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
    found = set(root.rglob("suite.yaml"))
    for pattern in TEAM_GLOBS:
        found |= set(root.rglob(pattern))
    return sorted(found)


def read_test_file(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """The test file's content, validated; TestFileError names every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise TestFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TestFileError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}") from exc
    errors = []
    validator = jsonschema.Draft202012Validator(policytest_schema())
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        parts = list(err.absolute_path)
        line = _line_of(root, parts) or 1
        if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
            known = set(err.schema.get("properties") or {})
            unknown = [k for k in err.instance if k not in known]
            for key in unknown:
                errors.append(f"{path}:{_line_of(root, [*parts, key]) or line}: {_fmt_path([*parts, key])}: "
                              f"unknown key {key!r} (known: {', '.join(sorted(known))})")
            continue
        message = err.message
        if err.validator == "enum":
            message = f"{err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
        errors.append(f"{path}:{line}: {_fmt_path(parts)}: {message}")
    if errors:
        raise TestFileError("invalid test file:\n" + "\n".join(f"  - {e}" for e in errors))
    assert isinstance(data, dict)
    return data, root


def _one_policy_set(suite: Mapping[str, Any], path: Path) -> PolicySet:
    policy = suite["policy"]
    spec: dict[str, Any] = {"policies": {policy: {"action": "deny", "params": suite.get("params") or {}}}}
    extra = suite.get("policyset") or {}
    for key, value in extra.items():
        if key == "policy":
            spec["policies"][policy].update(value)
        else:
            spec[key] = value
    doc = {"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": f"test-{policy}"},
           "spec": spec}
    return parse_policyset(yaml.safe_dump(doc), source=f"{path} (policy {policy})")


def policyset_for(suite: Mapping[str, Any], path: Path, given: PolicySet | None) -> PolicySet:
    """`--policyset` first, then the file's `policyset: FILE`, then a one-policy set for `policy`."""
    if given is not None:
        return given
    ref = suite.get("policyset")
    if isinstance(ref, str):
        return load_policyset(path.parent / ref)
    if not suite.get("policy"):
        raise TestFileError(f"{path}:1: no PolicySet to test: give `policyset: FILE`, `policy: ID`, or run "
                            "`mlguard test DIR --policyset FILE`")
    return _one_policy_set(suite, path)


def _objects(path: Path, where: str) -> list[dict[str, Any]]:
    try:
        parsed = load_file(path, str(path))
    except ManifestError as exc:
        raise TestFileError(f"{where}: {exc}") from exc
    if parsed.skipped:
        first = parsed.skipped[0]
        raise TestFileError(f"{where}: {first.source}:{first.line}: {first.reason}")
    return [o.obj for o in parsed.objects]


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj['kind']}/{meta.get('namespace', 'default')}/{meta.get('name')}"


def _verdict(hits: list[Violation], *, point: str, objects: Sequence[Mapping[str, Any]], targets: list[str],
             info: RequestInfo | None, policyset: PolicySet) -> tuple[set[str], list[str]]:
    """The actions that reach the user (at admission: after dry-run and break-glass), and what happened."""
    if point != "admission":
        return {str(v.action) for v in hits}, []
    effective = effective_violations(hits, dry_run=policyset.dry_run)
    actions = {str(v.action) for v in effective}
    said: list[str] = []
    denies = [v for v in effective if v.action == "deny"]
    if denies and info is not None:
        for obj in objects:
            if _key(obj) not in targets:
                continue
            glass = break_glass(denies, obj=obj, info=info, policyset=policyset)
            if glass.lifted:
                actions.discard("deny")
                actions.add("warn")
                said.append(f"break-glass lifted {', '.join(glass.lifted)}")
            elif glass.note:
                said.append(glass.note)
    return actions, said


def run_suite(path: Path, *, policyset: PolicySet | None = None) -> Iterator[CaseResult]:
    suite, root = read_test_file(path)
    ps = policyset_for(suite, path, policyset)
    label = suite.get("policy") or path.name.split(".")[0]
    for index, case in enumerate(suite["cases"]):
        where = f"{path}:{_line_of(root, ['cases', index]) or 1}"
        name = case["name"]
        file = path.parent / case["file"]
        if not file.is_file():
            raise TestFileError(f"{where}: cases[{index}].file: {case['file']}: no such file")
        objects = _objects(file, where)
        labels = {**(suite.get("namespaceLabels") or {}), **(case.get("namespaceLabels") or {})}
        facts: ClusterFacts = ManifestFacts(objects, extra_labels=labels, workloads=ps.workloads)
        utilisation = case.get("utilisation") or suite.get("utilisation")
        if utilisation is not None:
            facts = WithUtilisation(facts, _utilisation(utilisation))
        request = case.get("request")
        info = RequestInfo(operation=request.get("operation", "CREATE"), user=request.get("user", ""),
                           groups=tuple(request.get("groups") or ())) if request is not None else None
        point: EnforcementPoint = case.get("point") or ("admission" if request is not None else "ci")
        report = evaluate(objects, ps, point=point, facts=facts, request=info)
        targets = [case["resource"]] if case.get("resource") else [
            _key(o) for o in objects if pod_templates(o, config=ps.workloads) or o.get("kind") == "Rollout"]
        if case.get("resource") and case["resource"] not in {_key(o) for o in objects}:
            raise TestFileError(f"{where}: cases[{index}].resource: {case['resource']} is not in {case['file']}")
        policy = case.get("policy") or suite.get("policy")
        hits = [v for v in report.violations if str(v.resource) in targets and (not policy or v.policy == policy)]
        notes = [n for n in report.notes if not policy or n.policy in (policy, EXTRACTOR)]  # the extractor's too
        actions, said = _verdict(hits, point=point, objects=objects, targets=targets, info=info, policyset=ps)
        problems = _judge(case["expect"], actions, hits, policy, targets)
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
        if problems and said:
            problems.append("(" + "; ".join(said) + ")")
        kinds = sorted({t.split("/")[0] for t in targets})
        yield CaseResult(label, path, name, not problems, "\n".join(problems), kinds, case["expect"])


def _utilisation(data: Mapping[str, Any]) -> StaticUtilisation:
    """A test file's `utilisation` (the schema checked its shape) as the audit would hand it in."""
    by_resource = {}
    for w in data.get("workloads") or []:
        kind, namespace, name = str(w["resource"]).split("/")
        by_resource[Resource("", kind, namespace, name)] = GpuIdleness(
            gpus=float(w["gpus"]), idle_for_seconds=int(w["idleForSeconds"]),
            utilisation_percent=w.get("utilisationPercent"), idle_gpu_hours=None, gpu_hours=0.0,
            window_seconds=int(w.get("windowSeconds", 86400)), threshold_percent=float(w.get("thresholdPercent", 5)))
    return StaticUtilisation(by_resource=_AnyVersion(by_resource), unknown=data.get("unknown"))


class _AnyVersion(dict[Resource, GpuIdleness]):
    """Looks a resource up by kind, namespace and name (a test file names no apiVersion)."""

    def get(self, key: Resource, default: Any = None) -> Any:
        return super().get(Resource("", key.kind, key.namespace, key.name), default)


def _judge(expect: str, actions: set[str], hits: list[Violation], policy: str | None, targets: list[str]
           ) -> list[str]:
    errors = [v for v in hits if v.error]
    if expect == "error":
        return [] if errors else [f"expected an error result, got: {'; '.join(v.line() for v in hits) or 'none'}"]
    if errors:
        return ["the policy could not judge: " + "; ".join(v.line() for v in errors)]
    got = ("deny" if "deny" in actions else "warn" if "warn" in actions else "audit" if "audit" in actions
           else "allow")
    who = f"a {policy} finding" if policy else "a finding"
    if expect == "pass" and hits:
        return ["expected pass, got: " + "; ".join(v.line() for v in hits)]
    found = "; ".join(f"{v.action}: {v.line()}" for v in hits) or "no finding"
    if expect == "fail" and not hits:
        return [f"expected {who} on {', '.join(targets)}, got none"]
    if expect == "allow" and got == "deny":  # admitted, with or without warnings
        return [f"expected allow (admitted), got deny: {found}"]
    if expect in ("deny", "warn", "audit") and got != expect:
        return [f"expected {expect}, got {got}: {found}"]
    return []


def run_all(root: Path = LIBRARY, *, policyset: PolicySet | None = None) -> list[CaseResult]:
    """Every case of every test file under ``root``; TestFileError or PolicySetError for a bad file."""
    out: list[CaseResult] = []
    for suite in find_suites(root):
        try:
            out.extend(run_suite(suite, policyset=policyset))
        except PolicySetError as exc:
            raise TestFileError(f"{suite}: {exc}") from exc
    return out
