"""The extractor: every supported kind maps to its pod template(s) at the right path."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from policies.context import ManifestFacts
from policies.gpu import GpuConfig
from policies.workload import extract

GPU = GpuConfig()
POD = {"containers": [{"name": "s", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 2}}}]}
TPL = {"metadata": {"labels": {"a": "b"}}, "spec": POD}


@pytest.mark.parametrize(("obj", "paths", "pods"), [
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": POD}, ["spec"], [1]),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
      "spec": {"replicas": 4, "template": TPL}}, ["spec.template.spec"], [4]),
    ({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
      "spec": {"replicas": 3, "template": TPL}}, ["spec.template.spec"], [3]),
    ({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
      "spec": {"replicas": 2, "template": TPL}}, ["spec.template.spec"], [2]),
    ({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {"template": TPL}},
     ["spec.template.spec"], [1]),
    ({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
      "spec": {"parallelism": 3, "template": TPL}}, ["spec.template.spec"], [3]),
    ({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
      "spec": {"jobTemplate": {"spec": {"template": TPL}}}}, ["spec.jobTemplate.spec.template.spec"], [1]),
    ({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "ro"},
      "spec": {"replicas": 2, "template": TPL, "strategy": {"canary": {}}}}, ["spec.template.spec"], [2]),
    ({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "isvc"},
      "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 3, "model": {"modelFormat": {"name": "hf"},
               "resources": {"limits": {"nvidia.com/gpu": 1}}}},
               "transformer": {"containers": [{"name": "t", "image": "t"}]}}},
     ["spec.predictor", "spec.transformer"], [3, 1]),
    ({"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": {"name": "lws"},
      "spec": {"replicas": 2, "leaderWorkerTemplate": {"size": 4, "leaderTemplate": TPL, "workerTemplate": TPL}}},
     ["spec.leaderWorkerTemplate.leaderTemplate.spec", "spec.leaderWorkerTemplate.workerTemplate.spec"], [2, 6]),
])
def test_each_kind_maps_to_its_templates(obj, paths, pods) -> None:
    workload = extract(obj, gpu=GPU)
    assert [t.spec_path for t in workload.templates] == paths
    assert [t.pods for t in workload.templates] == pods


def test_objects_without_pod_templates_pass_untouched() -> None:
    assert extract({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}, gpu=GPU
                   ).templates == []
    # Kubernetes' own groups are never searched: their kinds with pod templates are in the table
    assert extract({"apiVersion": "v1", "kind": "PodTemplate", "template": TPL}, gpu=GPU).templates == []
    # a custom kind without a pod-template shape: nothing found, nothing noted
    widget = extract({"apiVersion": "x/v1", "kind": "Widget", "spec": {"image": "i", "replicas": 3}}, gpu=GPU)
    assert widget.templates == [] and widget.notes == []


def test_an_unknown_kind_is_searched_and_noted() -> None:
    workload = extract({"apiVersion": "x/v1", "kind": "Widget", "metadata": {"name": "w"},
                        "spec": {"roles": [{"replicas": 3, "template": TPL}]}}, gpu=GPU)
    [tpl] = workload.templates
    assert (tpl.spec_path, tpl.pods) == ("spec.roles[0].template.spec", 3)
    assert workload.generic and workload.full_size_gpus(GPU) == {"nvidia.com/gpu": Decimal(6)}
    assert [p for p, _ in workload.notes] == ["spec.roles[0].template.spec"]
    assert "checked as a generic pod template" in workload.notes[0][1]


def test_kserve_model_container_path_and_gpus() -> None:
    obj = {"kind": "InferenceService", "metadata": {"name": "i"}, "spec": {"predictor": {
        "model": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}}}
    workload = extract(obj, gpu=GPU)
    assert [c.path for c in workload.templates[0].containers()] == ["spec.predictor.model"]
    assert workload.pod_gpus(0, GPU) == {"nvidia.com/gpu": Decimal(1)}


def test_all_container_sections_count_and_sidecars_run_alongside() -> None:
    spec = {
        "initContainers": [
            {"name": "download", "image": "d", "resources": {"limits": {"nvidia.com/gpu": 3}}},
            {"name": "proxy", "image": "p", "restartPolicy": "Always", "resources": {"limits": {"nvidia.com/gpu": 1}}},
        ],
        "containers": [{"name": "server", "image": "s", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
    }
    workload = extract({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}, gpu=GPU)
    refs = list(workload.templates[0].containers())
    assert [(r.section, r.name, r.sidecar) for r in refs] == [
        ("containers", "server", False), ("initContainers", "download", False),
        ("initContainers", "proxy", True), ("ephemeralContainers", "debug", False)]
    assert refs[3].path == "spec.ephemeralContainers[0]"
    # server + sidecar run together (2); the regular init container needs 3 alone: the larger wins
    assert workload.pod_gpus(0, GPU) == {"nvidia.com/gpu": Decimal(3)}


def test_rollout_workload_ref_checks_the_referenced_deployment() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ml"},
                  "spec": {"replicas": 0, "template": TPL}}
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r", "namespace": "ml"},
               "spec": {"replicas": 3, "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                        "strategy": {"canary": {"maxSurge": 1}}}}
    facts = ManifestFacts([deployment, rollout])
    workload = extract(rollout, gpu=GPU, resolve_object=facts.resolve_object)
    [tpl] = workload.templates
    assert str(tpl.resource) == "Deployment/ml/web" and tpl.pods == 3 and tpl.surge == 1
    assert workload.full_size_gpus(GPU) == {"nvidia.com/gpu": Decimal(8)}
    assert facts.referenced_by_rollout("ml", "Deployment", "web")
    assert extract(rollout, gpu=GPU).templates == []  # unresolvable: nothing to check here


@pytest.mark.parametrize(("config", "names"), [
    (GpuConfig(), {"nvidia.com/gpu", "nvidia.com/mig-3g.40gb", "nvidia.com/gpu.shared", "amd.com/gpu"}),
    (GpuConfig(resource_names=("example.com/tpu",)), {"example.com/tpu"}),
])
def test_gpu_names_are_configurable(config, names) -> None:
    candidates = {"nvidia.com/gpu", "nvidia.com/mig-3g.40gb", "nvidia.com/gpu.shared", "amd.com/gpu",
                  "example.com/tpu", "cpu", "memory", "nvidia.com/gpu-foo"}
    assert {n for n in candidates if config.is_gpu_resource(n)} == names


def test_dra_claims_count_as_gpus_v1beta1_and_v1() -> None:
    objs = list(yaml.safe_load_all("""
apiVersion: resource.k8s.io/v1beta1
kind: ResourceClaim
metadata: {name: two, namespace: ml}
spec: {devices: {requests: [{name: g, deviceClassName: gpu.nvidia.com, count: 2}]}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one, namespace: ml}
spec: {spec: {devices: {requests: [{name: g, exactly: {deviceClassName: gpu.nvidia.com}}]}}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: nic, namespace: ml}
spec: {spec: {devices: {requests: [{name: n, exactly: {deviceClassName: rdma.example.com}}]}}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ml}
spec:
  resourceClaims: [{name: a, resourceClaimName: two}, {name: b, resourceClaimTemplateName: one},
                   {name: c, resourceClaimTemplateName: nic}]
  containers: [{name: s, image: s}]
"""))
    facts = ManifestFacts(objs)
    workload = extract(objs[-1], gpu=GPU, resolve_claim=facts.resolve_claim)
    assert workload.pod_gpus(0, GPU) == {"gpu.nvidia.com.deviceclass.resource.k8s.io/devices": Decimal(3)}
    assert workload.uses_gpu(0, GPU)


@pytest.mark.parametrize("resources", [None, "4 GPUs", ["nvidia.com/gpu"], {"limits": "nvidia.com/gpu"}])
def test_wrong_shaped_resources_are_no_gpus_not_a_crash(resources) -> None:
    obj = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "s", "resources": resources}]}}
    workload = extract(obj, gpu=GPU)
    assert workload.pod_gpus(0, GPU) == {} and not workload.uses_gpu(0, GPU)


def test_a_named_resource_claim_is_held_once_a_template_claim_once_per_pod() -> None:
    objs = list(yaml.safe_load_all("""
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: shared, namespace: ml}
spec: {devices: {requests: [{name: g, exactly: {deviceClassName: gpu.nvidia.com, count: 2}}]}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: per-pod, namespace: ml}
spec: {spec: {devices: {requests: [{name: g, exactly: {deviceClassName: gpu.nvidia.com}}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: ml}
spec:
  replicas: 3
  strategy: {type: Recreate}
  template:
    spec:
      resourceClaims: [{name: a, resourceClaimName: shared}, {name: b, resourceClaimTemplateName: per-pod}]
      containers: [{name: s, image: s}]
"""))
    facts = ManifestFacts(objs)
    workload = extract(objs[-1], gpu=GPU, resolve_claim=facts.resolve_claim)
    key = "gpu.nvidia.com.deviceclass.resource.k8s.io/devices"
    assert workload.pod_gpus(0, GPU) == {key: Decimal(3)}          # each pod sees both claims
    assert workload.full_size_gpus(GPU) == {key: Decimal(2 + 3)}   # the shared 2 once, 1 per pod x 3
