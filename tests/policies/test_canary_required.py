"""canary-required beyond the sample suite: facts from a live cluster, admission of controller-made pods."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import yaml

from policies.context import EmptyFacts, ManifestFacts, RequestInfo
from policies.engine import evaluate, evaluate_object
from policies.policyset import parse_policyset
from policies.testing import LIBRARY

SAMPLES = LIBRARY / "canary_required" / "tests"
HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"
POLICYSET = parse_policyset(HEAD + "spec:\n  policies:\n    canary-required: {action: deny}\n")


def _objects(name: str) -> dict[tuple[str, str], dict]:
    docs = yaml.safe_load_all((SAMPLES / name).read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


class LiveFacts(EmptyFacts):
    """What the webhook knows from its watch: which Deployments Rollouts point at."""

    def __init__(self, refs: set[tuple[str, str, str]]) -> None:
        self.refs = refs

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        return (namespace, kind, name) in self.refs


RS_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


def _denied(obj: Mapping, facts=None, user: str = RS_CONTROLLER) -> list[str]:
    result = evaluate_object(obj, POLICYSET, point="admission", facts=facts, request=RequestInfo(user=user))
    return [v.message for v in result.violations if v.policy == "canary-required"]


def test_a_workloadref_deployment_passes_only_while_a_rollout_points_at_it() -> None:
    objs = _objects("allowed.yaml")
    deployment, rollout = objs[("Deployment", "triton")], objs[("Rollout", "triton")]
    alone = evaluate([deployment], POLICYSET, point="ci", facts=ManifestFacts([deployment]))
    assert [v.path for v in alone.violations] == ["kind"]
    both = evaluate([deployment, rollout], POLICYSET, point="ci", facts=ManifestFacts([deployment, rollout]))
    assert not both.violations


def test_admission_uses_the_live_rollout_references() -> None:
    deployment = _objects("allowed.yaml")[("Deployment", "triton")]
    assert _denied(deployment, EmptyFacts())
    assert not _denied(deployment, LiveFacts({("prod-serving", "Deployment", "triton")}))
    assert _denied(deployment, LiveFacts({("other-ns", "Deployment", "triton")}))


def test_controller_made_pods_pass_bare_pods_do_not() -> None:
    pod = _objects("allowed.yaml")[("Pod", "vllm-7d9f8-abcde")]
    assert not _denied(pod)
    bare = copy.deepcopy(pod)
    del bare["metadata"]["ownerReferences"]
    assert _denied(bare)
    not_controller = copy.deepcopy(pod)
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert _denied(not_controller)
    # the same reference in a tenant's request: believed only when the webhook's cache holds the owner, same uid
    assert _denied(pod, user="alice")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "vllm-7d9f8", "namespace": "prod-serving",
                       "uid": pod["metadata"]["ownerReferences"][0]["uid"]}}
    assert not _denied(pod, ManifestFacts([rs]), user="alice")
    rs["metadata"]["uid"] = "another"
    assert _denied(pod, ManifestFacts([rs]), user="alice")


def test_a_gating_analysis_next_to_a_dry_run_one_is_enough() -> None:
    rollout = _objects("denied.yaml")[("Rollout", "dry-run-only")]
    assert _denied(rollout)
    fixed = copy.deepcopy(rollout)
    fixed["spec"]["strategy"]["canary"]["analysis"] = {"templates": [{"templateName": "mlguard-input-drift"}]}
    assert not _denied(fixed)


def test_kinds_param_narrows_what_must_be_a_rollout() -> None:
    lws = _objects("denied.yaml")[("LeaderWorkerSet", "vllm-405b")]
    narrowed = parse_policyset(HEAD + "spec:\n  policies:\n    canary-required:\n      action: deny\n"
                               "      params: {kinds: [Pod, Deployment]}\n")
    assert _denied(lws)
    assert not evaluate_object(lws, narrowed, point="admission").violations


def test_workloads_that_serve_no_model_are_never_judged() -> None:
    deployment = copy.deepcopy(_objects("denied.yaml")[("Deployment", "vllm")])
    del deployment["spec"]["template"]["metadata"]["labels"]["mlguard.io/model"]
    assert not _denied(deployment)


def test_a_rollout_whose_workload_ref_cannot_be_resolved_still_has_its_strategy_checked() -> None:
    from policies.engine import evaluate as run
    from policies.policyset import parse_policyset as parse

    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "chat", "namespace": "ml", "labels": {"mlguard.io/model": "llama"}},
               "spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "not-here"},
                        "strategy": {"blueGreen": {"activeService": "a"}}}}
    ps = parse("apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nspec:\n  policies:\n    canary-required: {}\n")
    report = run([rollout], ps, point="admission")
    assert [v.path for v in report.violations] == ["spec.strategy.blueGreen"]
