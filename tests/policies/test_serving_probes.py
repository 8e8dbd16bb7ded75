"""serving-probes beyond the sample suite: which container serves, and workloadRef attribution."""

from __future__ import annotations

import pytest

from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.gpu import GpuConfig
from policies.library.serving_probes import serving_containers
from policies.policyset import parse_policyset
from policies.workload import extract

HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"
GPU = GpuConfig()


def _deployment(containers: list[dict], annotations: dict | None = None) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "serving"},
            "spec": {"template": {"metadata": {"labels": {"mlguard.io/model": "m"},
                                               "annotations": annotations or {}},
                                  "spec": {"containers": containers}}}}


GPU_LIMIT = {"limits": {"nvidia.com/gpu": 1}}


@pytest.mark.parametrize(("containers", "annotations", "names", "expected"), [
    ([{"name": "a"}, {"name": "b", "resources": GPU_LIMIT}], None, [], ["b"]),
    ([{"name": "a"}, {"name": "b", "resources": GPU_LIMIT}], None, ["a"], ["a"]),
    ([{"name": "a"}, {"name": "b", "resources": GPU_LIMIT}],
     {"kubectl.kubernetes.io/default-container": "a"}, [], ["a"]),
    ([{"name": "a"}, {"name": "b", "ports": [{"containerPort": 80}]}], None, [], ["b"]),
    ([{"name": "a"}, {"name": "b"}], None, [], ["a"]),
    ([{"name": "a", "resources": GPU_LIMIT}, {"name": "b", "resources": GPU_LIMIT}], None, [], ["a", "b"]),
    ([{"name": "proxy"}, {"name": "kserve-container"}], None, [], ["kserve-container"]),
    # a name in containerNames that no container has falls back to the guesses
    ([{"name": "a"}, {"name": "b", "resources": GPU_LIMIT}], None, ["missing"], ["b"]),
])
def test_serving_container_choice(containers, annotations, names, expected) -> None:
    tpl = extract(_deployment(containers, annotations), gpu=GPU).templates[0]
    refs, why = serving_containers(tpl, names=names, gpu=GPU)
    assert [r.name for r in refs] == expected and why


def test_a_rollout_workloadref_reports_on_the_deployment() -> None:
    deployment = _deployment([{"name": "server", "image": "s"}])
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "r", "namespace": "serving"},
               "spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                        "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}}
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    serving-probes: {action: deny}\n")
    report = evaluate([rollout], ps, point="ci", facts=ManifestFacts([rollout, deployment]))
    assert {str(v.resource) for v in report.violations} == {"Deployment/serving/d"}
    assert {v.path for v in report.violations} == {"spec.template.spec.containers[0].readinessProbe",
                                                   "spec.template.spec.containers[0].livenessProbe"}
    # the Deployment checked on its own says the same once, not twice
    both = evaluate([rollout, deployment], ps, point="ci", facts=ManifestFacts([rollout, deployment]))
    assert len(both.violations) == 2


def test_a_startup_probe_alone_satisfies_the_second_requirement() -> None:
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    serving-probes: {action: deny}\n")
    probe = {"httpGet": {"path": "/health", "port": 8000}}
    ok = _deployment([{"name": "s", "readinessProbe": probe, "startupProbe": probe}])
    assert not evaluate([ok], ps, point="ci").violations
    not_a_handler = _deployment([{"name": "s", "readinessProbe": probe, "livenessProbe": {"exec": "x"}}])
    [v] = evaluate([not_a_handler], ps, point="ci").violations
    assert v.path.endswith("livenessProbe") and "without a handler" in v.message
