"""Parity: every exported ValidatingAdmissionPolicy, evaluated with the chosen CEL runtime as the API server
evaluates it, gives the Python policy's verdict on every sample of the policy suites (each suite's own
parameters), in the Python policy's words; the exported manifests validate against Kubernetes 1.33's
schema. The rules' exports are held to the same on the example rules' samples."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from policies.context import EmptyFacts, RequestInfo
from policies.engine import evaluate_object
from policies.manifests import load_file
from policies.model import Resource
from policies.policyset import PolicySet, load_policyset
from policies.rules.builtin import KIND_RESOURCES
from policies.rules.vap import FORMS, builtin_form, evaluate_policy, export_vap
from policies.testing import LIBRARY, find_suites, policyset_for, read_test_file

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "catalog" / "examples"


def sample_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml") if p.name != "suite.yaml" and "tests" in p.parts
                  and not p.name.endswith(".mlguard-test.yaml"))


ALL_SAMPLES = [o.obj for f in sample_files(LIBRARY) for o in load_file(f, str(f)).objects]


def suites_of(policy: str) -> Iterator[tuple[str, PolicySet, list[dict[str, Any]]]]:
    """The policy's own suites with their parameters over their samples, and a one-policy set with the
    default parameters over every sample of every policy suite."""
    for path in find_suites(LIBRARY):
        suite, _ = read_test_file(path)
        if suite.get("policy") == policy and not isinstance(suite.get("policyset"), str):
            yield str(path.relative_to(LIBRARY)), policyset_for(suite, path, None), [
                o.obj for f in sample_files(path.parent) for o in load_file(f, str(f)).objects]
    default = policyset_for({"policy": policy}, LIBRARY / "default.yaml", None)
    yield "every sample, default parameters", default, ALL_SAMPLES


def request_for(obj: Mapping[str, Any]) -> dict[str, Any]:
    res = Resource.of(dict(obj))
    group, _, version = res.api_version.rpartition("/")
    return {"operation": "CREATE", "namespace": res.namespace, "name": res.name, "dryRun": False,
            "kind": {"group": group, "version": version, "kind": res.kind},
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]}}


def vap_verdict(documents: list[dict[str, Any]], obj: Mapping[str, Any], labels: Mapping[str, str]
                ) -> tuple[bool, list[str], list[str]]:
    res = Resource.of(dict(obj))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": res.namespace, "labels": dict(labels)}}
    denied, messages, errors = False, [], []
    for doc in documents:
        if doc["kind"] != "ValidatingAdmissionPolicy":
            continue
        verdict = evaluate_policy(doc, obj=obj, request=request_for(obj), namespace=namespace)
        denied |= verdict.denied
        messages += verdict.messages
        errors += verdict.errors
    return denied, messages, errors


@pytest.mark.parametrize("policy", sorted(FORMS))
def test_every_exported_policy_gives_the_python_verdict_on_every_sample(policy: str) -> None:
    compared = denied = 0
    for suite, ps, objects in suites_of(policy):
        form = builtin_form(policy, ps)
        assert not isinstance(form, str), form
        documents = export_vap(ps).documents
        for obj in objects:
            group = str(obj.get("apiVersion", "")).rpartition("/")[0]
            if KIND_RESOURCES.get(str(obj.get("kind")), ("-",))[0] != group or "resourceClaims" in str(obj):
                continue  # kinds the form does not cover, and DRA claims (another object): the webhook's alone
            result = evaluate_object(obj, ps, point="admission", facts=EmptyFacts(), request=RequestInfo(user="alice"))
            python = [v for v in result.violations if v.policy == policy and v.action == "deny"
                      and (form.covers is None or form.covers(v.path))]
            got, messages, errors = vap_verdict(documents, obj, {})
            where = f"{suite}: {obj['kind']}/{obj['metadata'].get('name')}"
            assert not errors, (where, errors)
            assert got == bool(python), (where, [v.line() for v in python], messages)
            if got:
                lines = {v.line() for v in python}
                assert set(messages) & lines, (where, messages, sorted(lines))
                denied += 1
            compared += 1
    print(f"\n{policy}: {compared} objects compared, {denied} denied")
    assert compared >= 200 and denied >= 5, (compared, denied)


def test_exported_rules_give_the_engines_verdict_on_the_example_samples() -> None:
    ps = load_policyset(EXAMPLES / "gpu-rules.yaml")
    export = export_vap(ps)
    assert export.exported == ["h100-prod-only"]
    assert {pid for pid, _ in export.skipped} == {"team-max-gpus", "vllm-tensor-parallel"}
    compared = denied = 0
    for file in sorted(EXAMPLES.glob("*/*.yaml")):
        if file.name.endswith(".mlguard-test.yaml"):
            continue
        for obj in (o.obj for o in load_file(file, str(file)).objects):
            result = evaluate_object(obj, ps, point="admission", facts=EmptyFacts(), request=RequestInfo(user="alice"))
            python = [v for v in result.violations if v.policy == "h100-prod-only"]
            got, messages, errors = vap_verdict(export.documents, obj, {})
            assert not errors and got == bool(python), (file.name, obj["metadata"]["name"], messages)
            assert set(messages) == {v.line() for v in python}
            compared += 1
            denied += got
    assert compared >= 20 and denied == 3


def test_exported_manifests_validate_against_kubernetes_1_33() -> None:
    import kubernetes_validate

    sets = [load_policyset(EXAMPLES / "gpu-rules.yaml"), load_policyset(LIBRARY.parent / "catalog" / "baseline.yaml"),
            load_policyset(LIBRARY.parent / "catalog" / "strict.yaml")]
    count = 0
    for ps in sets:
        for doc in export_vap(ps).documents:
            kubernetes_validate.validate(doc, "1.33", strict=True)
            count += 1
    assert count >= 6
