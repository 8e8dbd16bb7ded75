"""gpu-scale-to-zero beyond the sample suite: the catalogs' scope (non-critical by namespace only), facts that cannot
see ScaledObjects, the Knative parameter, kinds it does not judge."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from policies.context import EmptyFacts, ManifestFacts
from policies.engine import evaluate
from policies.policyset import load_policyset, parse_policyset
from policies.testing import LIBRARY

SAMPLES = LIBRARY / "gpu_scale_to_zero" / "tests"
CATALOG = LIBRARY.parent / "catalog"
HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"
ID = "gpu-scale-to-zero"


def _objects(name: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    docs = yaml.safe_load_all((SAMPLES / name).read_text())
    return {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs}


def _namespace(name: str, env: str | None) -> dict[str, Any]:
    labels = {"mlguard.io/environment": env} if env else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _in(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    moved = copy.deepcopy(dict(obj))
    moved["metadata"]["namespace"] = namespace
    return moved


VLLM = _objects("denied.yaml")[("Deployment", "llm-dev", "vllm-no-scaler")]


def _findings(objects: list[dict[str, Any]], policyset: Any, *, point: str = "ci", facts: Any = None) -> list[Any]:
    facts = ManifestFacts(objects) if facts is None else facts
    report = evaluate(objects, policyset, point=point, facts=facts)  # type: ignore[arg-type]
    assert not report.policy_errors
    return [v for v in report.violations if v.policy == ID]


@pytest.mark.parametrize(("env", "expected"), [("dev", ["warn"]), ("staging", ["deny"]), ("prod", []), (None, [])])
def test_strict_asks_it_of_dev_and_staging_only(env: str | None, expected: list[str]) -> None:
    """strict.yaml: deny for [dev, staging], and environments.defaults make dev warn; prod and namespaces of no
    environment are critical (not selected)."""
    found = _findings([_namespace("team-x", env), _in(VLLM, "team-x")], load_policyset(CATALOG / "strict.yaml"))
    assert [v.action for v in found] == expected


def test_baseline_has_it_off() -> None:
    baseline = load_policyset(CATALOG / "baseline.yaml")
    assert baseline.policy_config(ID) == {"action": "off"}
    assert _findings([_namespace("team-x", "dev"), _in(VLLM, "team-x")], baseline) == []


def test_a_workload_cannot_exempt_itself_with_labels_or_annotations() -> None:
    """Only the namespace decides: the environment label on the workload (object or pod template), an owner
    reference that is not a controller, or a break-glass-looking annotation change nothing."""
    strict = load_policyset(CATALOG / "strict.yaml")
    sneaky = _in(VLLM, "team-x")
    sneaky["metadata"]["labels"] = {"mlguard.io/environment": "prod", "critical": "true"}
    sneaky["metadata"]["annotations"] = {"mlguard.io/critical": "true"}
    sneaky["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x",
                                              "uid": "1"}]
    sneaky["spec"]["template"]["metadata"]["labels"]["mlguard.io/environment"] = "prod"
    found = _findings([_namespace("team-x", "staging"), sneaky], strict)
    assert [v.action for v in found] == ["deny"]


ONE = parse_policyset(HEAD + f"spec:\n  policies:\n    {ID}: {{action: deny}}\n")


def test_facts_that_cannot_see_scaledobjects_only_warn_and_say_so() -> None:
    """EmptyFacts (the webhook without a cluster cache) has no ScaleKnowledge: never a deny from that."""
    for point in ("ci", "admission"):
        (finding,) = _findings([VLLM], ONE, point=point, facts=EmptyFacts())
        assert finding.action == "warn"
        assert "mlguard could not see the cluster's ScaledObjects here" in finding.message


def test_a_scaledobject_of_another_namespace_does_not_count() -> None:
    scaled = _objects("allowed.yaml")[("ScaledObject", "llm-dev", "vllm-mistral")]
    target = copy.deepcopy(scaled)
    target["spec"]["scaleTargetRef"]["name"] = "vllm-no-scaler"
    assert _findings([VLLM, target], ONE) == []
    elsewhere = _in(target, "llm-staging")
    (finding,) = _findings([VLLM, elsewhere], ONE)
    assert "(no ScaledObject in the checked set in llm-dev)" in finding.message


def test_one_scaledobject_that_scales_to_zero_is_enough() -> None:
    """Two ScaledObjects on one target (KEDA's own webhook refuses that, but the set may hold both): the one that
    reaches zero wins; both failing are both named."""
    scaled = _objects("allowed.yaml")[("ScaledObject", "llm-dev", "vllm-mistral")]
    zero, floor = copy.deepcopy(scaled), copy.deepcopy(scaled)
    for so, name in ((zero, "zero"), (floor, "floor")):
        so["metadata"]["name"] = name
        so["spec"]["scaleTargetRef"]["name"] = "vllm-no-scaler"
    floor["spec"]["minReplicaCount"] = 2
    assert _findings([VLLM, zero, floor], ONE) == []
    paused = copy.deepcopy(zero)
    paused["metadata"]["annotations"] = {"autoscaling.keda.sh/paused": "true"}
    messages = sorted(v.message for v in _findings([VLLM, paused, floor], ONE))
    assert len(messages) == 2
    assert "its ScaledObject `floor` keeps at least 2 replica(s)" in messages[0]
    assert "its ScaledObject `zero` is paused (annotation autoscaling.keda.sh/paused" in messages[1]


def test_paused_replicas_zero_is_at_zero() -> None:
    scaled = copy.deepcopy(_objects("allowed.yaml")[("ScaledObject", "llm-dev", "vllm-mistral")])
    scaled["spec"]["scaleTargetRef"]["name"] = "vllm-no-scaler"
    scaled["spec"]["minReplicaCount"] = 1
    scaled["metadata"]["annotations"] = {"autoscaling.keda.sh/paused-replicas": "0"}
    assert _findings([VLLM, scaled], ONE) == []


def test_knative_explicit_min_scale_parameter() -> None:
    service = _objects("allowed.yaml")[("Service", "llm-dev", "tgi-knative")]
    assert _findings([service], ONE) == []  # Knative's default: a note only
    explicit = parse_policyset(HEAD + f"spec:\n  policies:\n    {ID}: {{action: deny, params: "
                               "{knativeExplicitMinScale: true}}\n")
    (finding,) = _findings([service], explicit)
    assert finding.path == "spec.template.metadata.annotations"
    assert "set autoscaling.knative.dev/min-scale: \"0\" on the revision template" in finding.message


def test_a_kind_it_does_not_judge_gets_a_note_not_a_silent_pass() -> None:
    """A KubeRay RayService (ray.io/v1, ray-service.llm-serve.yaml) with GPU workers serves a model; how it scales
    to zero (KubeRay's autoscaler, worker minReplicas 0) is not judged here: a note says so."""
    image = "rayproject/ray-llm:2.46.0-py311-cu124"
    worker = {"name": "ray-worker", "image": image, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    ray = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "ray-llm", "namespace": "llm-dev"},
           "spec": {"serveConfigV2": "applications:\n- name: llms\n  import_path: ray.serve.llm:build_openai_app\n",
                    "rayClusterConfig": {
                        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                            {"name": "ray-head", "image": image}]}}},
                        "workerGroupSpecs": [{"groupName": "gpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 2,
                                              "rayStartParams": {}, "template": {"spec": {"containers": [worker]}}}]}}}
    report = evaluate([ray], ONE, point="ci", facts=ManifestFacts([ray]))
    assert not [v for v in report.violations if v.policy == ID]
    notes = [n.message for n in report.notes if n.policy == ID]
    assert notes == ["gpu-scale-to-zero does not judge how a RayService scales to zero; not checked (a KEDA "
                     "ScaledObject can scale kinds with a /scale subresource)"]


def test_findings_link_the_policys_runbook() -> None:
    (finding,) = _findings([VLLM], ONE)
    assert finding.runbook == "https://github.com/mlguard/mlguard/blob/main/runbooks/gpu-scale-to-zero.md"


def test_the_verdict_and_its_cause_fit_in_a_warning() -> None:
    """kubectl shows the first 256 characters of an admission warning: every finding on the denied samples says
    there what is wrong (the policy, the field, "cannot scale to zero" and why), the fix may follow."""
    objects = list(_objects("denied.yaml").values())
    report = evaluate(objects, ONE, point="admission", facts=ManifestFacts(objects))
    assert len(report.violations) >= 13
    for v in report.violations:
        shown = f"{v.policy}: {v.path}: {v.message}"[:256]
        assert "cannot scale to zero: " in shown, shown
        assert len(shown.split("cannot scale to zero: ", 1)[1]) >= 30, shown
