"""gpu-quota beyond its samples: live facts, UPDATE comparisons, quota scopes and keys."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
import yaml

from policies.context import EmptyFacts, ManifestFacts, RequestInfo
from policies.engine import evaluate_object, new_violations
from policies.gpu import GpuConfig
from policies.library.gpu_quota import quota_applies, quota_limit
from policies.model import Resource
from policies.policyset import parse_policyset


def policyset(params: Mapping[str, Any] | None = None, *, only_new: bool = False):
    doc = {"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": "t"},
           "spec": {"policies": {"gpu-quota": {"action": "deny", "onlyNewViolations": only_new,
                                               "params": dict(params or {})}}}}
    return parse_policyset(yaml.safe_dump(doc))


def deployment(replicas: int, gpus: int = 2, *, name: str = "vllm", ns: str = "team-a") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "strategy": {"type": "Recreate"},
                     "template": {"spec": {"containers": [
                         {"name": "server", "image": "vllm:1", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}}}


def quota(hard: Mapping[str, Any], *, name: str = "gpu", ns: str = "team-a", **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": ns},
            "spec": {"hard": dict(hard), **spec}}


class LiveFacts(EmptyFacts):
    """What the webhook hands in: quotas from its cache, usage counted from live pods."""

    def __init__(self, quotas: list[dict], usage: dict[str, Decimal]) -> None:
        self._quotas = quotas
        self._usage = usage
        self.asked: list[Resource] = []

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return [q for q in self._quotas if q["metadata"]["namespace"] == namespace]

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        self.asked.append(exclude)
        return dict(self._usage)


def messages(result) -> list[str]:
    return [v.message for v in result.violations if v.policy == "gpu-quota"]


def test_live_usage_comes_from_the_facts_and_excludes_the_object_itself() -> None:
    facts = LiveFacts([quota({"requests.nvidia.com/gpu": 8})], {"nvidia.com/gpu": Decimal(5)})
    result = evaluate_object(deployment(2), policyset(), point="admission", facts=facts)
    assert messages(result) == [
        "Deployment `vllm` needs 4 nvidia.com/gpu at full size (2 pods x 2) but ResourceQuota `gpu` allows 8 "
        "(requests.nvidia.com/gpu) and other workloads in `team-a` use 5, leaving 3; lower the replicas, the GPUs "
        "per pod or the rolling-update surge (maxSurge), or raise the quota"]
    assert facts.asked == [Resource("apps/v1", "Deployment", "team-a", "vllm")]
    fits = LiveFacts([quota({"requests.nvidia.com/gpu": 8})], {"nvidia.com/gpu": Decimal(4)})
    assert messages(evaluate_object(deployment(2), policyset(), point="admission", facts=fits)) == []


@pytest.mark.parametrize(("old", "new", "denied"), [(5, 4, False), (5, 5, False), (5, 6, True), (2, 5, True)])
def test_update_denies_only_a_need_that_grew(old: int, new: int, denied: bool) -> None:
    """Quota 6, 2 GPUs per pod: 5 replicas (10 GPUs) are already over; shrinking or keeping that is not new."""
    ps = policyset(only_new=True)
    facts = LiveFacts([quota({"requests.nvidia.com/gpu": 6})], {})
    before = evaluate_object(deployment(old), ps, point="admission", facts=facts)
    after = evaluate_object(deployment(new), ps, point="admission", facts=facts)
    assert after.violations, "every size above 3 replicas is over the quota"
    assert f"needs {new * 2} nvidia.com/gpu" in after.violations[0].message
    assert bool(new_violations(after, before)) is denied


def test_manifest_facts_sum_every_other_workload_of_the_namespace_only() -> None:
    objects = [quota({"requests.nvidia.com/gpu": 10}), deployment(2, name="a"), deployment(1, name="b"),
               deployment(8, name="elsewhere", ns="team-b"), deployment(2, name="c")]
    facts = ManifestFacts(objects)
    result = evaluate_object(objects[-1], policyset(), point="ci", facts=facts)
    assert messages(result) == []  # a: 4, b: 2, c: 4 of 10; team-b's 16 do not count
    grown = deployment(3, name="c")
    over = messages(evaluate_object(grown, policyset(), point="ci", facts=facts))
    assert len(over) == 1 and "needs 6 nvidia.com/gpu" in over[0] and "use 6, leaving 4" in over[0]


def test_the_tightest_of_several_quotas_is_reported() -> None:
    facts = LiveFacts([quota({"requests.nvidia.com/gpu": 12}, name="wide"),
                       quota({"nvidia.com/gpu": 6, "requests.nvidia.com/gpu": 9}, name="tight")], {})
    [message] = messages(evaluate_object(deployment(4), policyset(), point="admission", facts=facts))
    assert "ResourceQuota `tight` allows 6 (nvidia.com/gpu)" in message and "needs 8 " in message


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["no ResourceQuota in namespace `team-a` limits nvidia.com/gpu"]),
    ({"requireQuota": False}, []),
])
def test_require_quota_param(params: dict, expected: list[str]) -> None:
    # at admission the facts are the cluster's: no quota is no quota (offline, see test_quota_offline.py)
    found = messages(evaluate_object(deployment(1), policyset(params), point="admission", facts=ManifestFacts([])))
    assert [e for e in expected if any(e in m for m in found)] == expected and len(found) == len(expected)


def test_look_ahead_can_be_turned_off() -> None:
    facts = LiveFacts([quota({"requests.nvidia.com/gpu": 2})], {"nvidia.com/gpu": Decimal(2)})
    assert messages(evaluate_object(deployment(4), policyset({"lookAhead": False}), point="admission",
                                    facts=facts)) == []
    assert messages(evaluate_object(deployment(4), policyset(), point="admission", facts=facts))


def test_a_cpu_workload_never_asks_for_facts() -> None:
    cpu = deployment(3)
    cpu["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "2"}}
    facts = LiveFacts([], {})
    assert messages(evaluate_object(cpu, policyset(), point="admission", facts=facts)) == []
    assert facts.asked == []


def test_quota_limit_reads_both_keys_and_ignores_bad_quantities() -> None:
    assert quota_limit(quota({"requests.nvidia.com/gpu": "4", "nvidia.com/gpu": 2}), "nvidia.com/gpu") == (
        Decimal(2), "nvidia.com/gpu")
    assert quota_limit(quota({"requests.nvidia.com/gpu": "lots"}), "nvidia.com/gpu") is None
    assert quota_limit(quota({"limits.cpu": 4}), "nvidia.com/gpu") is None
    dra = "gpu.nvidia.com.deviceclass.resource.k8s.io/devices"
    assert quota_limit(quota({dra: 3}), dra) == (Decimal(3), dra)


def _scoped(**spec: Any) -> dict:
    return quota({"requests.nvidia.com/gpu": 1}, **spec)


GPU = {"containers": [{"name": "s", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}


@pytest.mark.parametrize(("spec", "pod", "applies"), [
    ({"scopes": ["Terminating"]}, {**GPU, "activeDeadlineSeconds": 60}, True),
    ({"scopes": ["Terminating"]}, GPU, False),
    ({"scopes": ["NotTerminating"]}, GPU, True),
    ({"scopes": ["BestEffort"]}, GPU, False),
    ({"scopes": ["NotBestEffort"]}, GPU, True),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In",
                                              "values": ["inference-high"]}]}},
     {**GPU, "priorityClassName": "inference-high"}, True),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "NotIn",
                                              "values": ["inference-high"]}]}},
     {**GPU, "priorityClassName": "inference-high"}, False),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "DoesNotExist"}]}},
     GPU, True),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "Exists"}]}},
     GPU, False),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "Terminating", "operator": "DoesNotExist"}]}},
     GPU, True),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "VolumeAttributesClass", "operator": "Exists"}]}},
     GPU, False),
])
def test_quota_scopes_follow_kubernetes(spec: dict, pod: dict, applies: bool) -> None:
    assert quota_applies(_scoped(**spec), pod) is applies


@pytest.mark.parametrize(("owner", "api_version", "controller"), [
    ("ReplicaSet", "apps/v1", "replicaset-controller"), ("Deployment", "apps/v1", "deployment-controller"),
    ("CronJob", "batch/v1", "cronjob-controller")])
def test_objects_a_controller_made_are_left_to_their_owner(owner: str, api_version: str, controller: str) -> None:
    """A ReplicaSet of a Deployment, a pod of a ReplicaSet: the owner was checked at full size, and the
    API server's own quota admission counts the pods; counting them here again would double them. The reference
    is believed from the controller's own service account only (policies.owners)."""
    made = deployment(4)
    made["kind"] = "ReplicaSet"
    made["metadata"]["ownerReferences"] = [{"apiVersion": api_version, "kind": owner, "name": "vllm", "uid": "u",
                                            "controller": True}]
    facts = LiveFacts([quota({"requests.nvidia.com/gpu": 8})], {"nvidia.com/gpu": Decimal(8)})
    by_controller = RequestInfo(user=f"system:serviceaccount:kube-system:{controller}")
    assert messages(evaluate_object(made, policyset(), point="admission", facts=facts, request=by_controller)) == []
    by_tenant = RequestInfo(user="system:serviceaccount:team-a:deployer")
    assert messages(evaluate_object(made, policyset(), point="admission", facts=facts, request=by_tenant))
    made["metadata"]["ownerReferences"][0]["controller"] = False
    assert messages(evaluate_object(made, policyset(), point="admission", facts=facts, request=by_controller))


def test_a_forged_controller_reference_gets_the_full_look_ahead() -> None:
    """Issue 14: `ownerReferences: [{controller: true}]` to the tenant's own ConfigMap skipped the look-ahead, so
    200 x 8 GPUs passed a quota of 1000, at admission and offline. Now the Deployment is judged fully."""
    big = deployment(200, 8, name="big")
    big["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "mine", "uid": "u-cm",
                                           "controller": True}]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine", "namespace": "team-a", "uid": "u-cm"}}
    limit = quota({"requests.nvidia.com/gpu": 1000})
    expected = ("Deployment `big` needs 1600 nvidia.com/gpu at full size (200 pods x 8) but ResourceQuota `gpu` "
                "allows 1000")
    offline = messages(evaluate_object(big, policyset(), point="ci", facts=ManifestFacts([cm, limit, big])))
    assert any(m.startswith(expected) for m in offline), offline
    facts = LiveFacts([limit], {})
    online = messages(evaluate_object(big, policyset(), point="admission", facts=facts,
                                      request=RequestInfo(user="bob")))
    assert any(m.startswith(expected) for m in online), online
    # a Deployment is never made by a controller: a reference to a real Deployment, same uid, spares it nothing
    mine = deployment(1, 1, name="small")
    mine["metadata"]["uid"] = "u-small"
    big["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "small",
                                           "uid": "u-small", "controller": True}]
    offline = messages(evaluate_object(big, policyset(), point="ci", facts=ManifestFacts([mine, limit, big])))
    assert any(m.startswith(expected) for m in offline), offline
    # a reference to a real Deployment that is not in the checked set is not believed offline either
    big["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "elsewhere",
                                           "uid": "u-d", "controller": True}]
    offline = messages(evaluate_object(big, policyset(), point="ci", facts=ManifestFacts([limit, big])))
    assert any(m.startswith(expected) for m in offline), offline
