"""`ManifestFacts` holding objects in a compact form (`add(obj, held)` + ``load``), as `mlguard check` does for
large sets: every answer is the one the plain facts give, including usage that needs another object looked up
(a Rollout's workloadRef, a DRA claim) and usage asked with another GpuConfig than the one given up front."""

from __future__ import annotations

import marshal
from decimal import Decimal

import yaml

from policies.context import ManifestFacts
from policies.gpu import GpuConfig
from policies.model import Resource

GPU = GpuConfig()
OBJECTS = list(yaml.safe_load_all("""
apiVersion: v1
kind: Namespace
metadata: {name: ml, labels: {env: prod}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: gpu, namespace: ml}
spec: {hard: {requests.nvidia.com/gpu: "16"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain, namespace: ml}
spec:
  replicas: 2
  template:
    spec:
      containers: [{name: s, image: s, resources: {limits: {nvidia.com/gpu: 2}}}]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r, namespace: ml}
spec:
  replicas: 3
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: per-pod, namespace: ml}
spec: {spec: {devices: {requests: [{name: g, exactly: {deviceClassName: gpu.nvidia.com}}]}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: claims, namespace: ml}
spec:
  parallelism: 2
  template:
    spec:
      resourceClaims: [{name: b, resourceClaimTemplateName: per-pod}]
      containers: [{name: s, image: s}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: devices, namespace: ml}
data: {list: "0,1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ml}
spec:
  replicas: 0
  template:
    spec:
      containers: [{name: s, image: s, resources: {limits: {nvidia.com/gpu: 1}}}]
"""))


def held_facts(objects: list[dict], gpu: GpuConfig | None = GPU) -> ManifestFacts:
    facts = ManifestFacts(gpu=gpu, load=marshal.loads)
    for obj in objects:
        facts.add(obj, marshal.dumps(obj))
    return facts


def test_held_facts_answer_as_the_plain_ones() -> None:
    plain, held = ManifestFacts(OBJECTS), held_facts(OBJECTS)
    for facts in (plain, held):
        assert facts.namespace_labels("ml") == {"env": "prod"}
        assert [q["metadata"]["name"] for q in facts.quotas("ml")] == ["gpu"]
        assert facts.referenced_by_rollout("ml", "Deployment", "web")
    assert held.resolve_object("ml", "ConfigMap", "devices") == plain.resolve_object("ml", "ConfigMap", "devices")
    assert held.resolve_claim("ml", "per-pod", True) == plain.resolve_claim("ml", "per-pod", True)
    assert held.resolve_object("ml", "Deployment", "missing") is None
    for exclude in ("plain", "r", "claims", "web"):
        res = Resource("apps/v1", "Deployment", "ml", exclude)
        assert held.gpu_usage("ml", exclude=res, gpu=GPU) == plain.gpu_usage("ml", exclude=res, gpu=GPU)


def test_usage_counts_what_needs_a_lookup_and_objects_added_after_the_lookup_target() -> None:
    # the Rollout comes before the Deployment it points at, the Job needs its claim template: both need other
    # objects, so they are counted when usage is asked, with every object known
    facts = held_facts(OBJECTS)
    usage = facts.gpu_usage("ml", exclude=Resource("v1", "Pod", "ml", "other"), gpu=GPU)
    assert usage["nvidia.com/gpu"] == Decimal(2 * 2 + 3 * 1)   # plain 2x2, the Rollout's 3 pods of web's template
    assert usage["gpu.nvidia.com.deviceclass.resource.k8s.io/devices"] == Decimal(2)


def test_usage_asked_with_another_gpu_config_is_worked_out_from_the_held_objects() -> None:
    other = GpuConfig(resource_names=("example.com/tpu",))
    tpu = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t", "namespace": "ml"},
           "spec": {"containers": [{"name": "s", "image": "s", "resources": {"limits": {"example.com/tpu": 4}}}]}}
    facts, plain = held_facts([*OBJECTS, tpu]), ManifestFacts([*OBJECTS, tpu])
    nobody = Resource("v1", "Pod", "ml", "x")
    assert facts.gpu_usage("ml", exclude=nobody, gpu=other)["example.com/tpu"] == Decimal(4)
    assert "nvidia.com/gpu" not in facts.gpu_usage("ml", exclude=nobody, gpu=other)
    for gpu in (other, GPU):
        assert facts.gpu_usage("ml", exclude=nobody, gpu=gpu) == plain.gpu_usage("ml", exclude=nobody, gpu=gpu)


def test_an_object_added_after_usage_was_asked_is_counted() -> None:
    facts = held_facts(OBJECTS[:3])
    before = facts.gpu_usage("ml", exclude=Resource("v1", "Pod", "ml", "x"), gpu=GPU)
    facts.add(OBJECTS[-1], marshal.dumps(OBJECTS[-1]))
    facts.add(OBJECTS[3], marshal.dumps(OBJECTS[3]))
    after = facts.gpu_usage("ml", exclude=Resource("v1", "Pod", "ml", "x"), gpu=GPU)
    assert before == {"nvidia.com/gpu": Decimal(4)} and after == {"nvidia.com/gpu": Decimal(4 + 3)}
