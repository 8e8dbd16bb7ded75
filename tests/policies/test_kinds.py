"""The per-kind extractor (policies/kinds.py): template paths, pods at full size, where each field of an
assembled pod comes from, and model serving found without the label. The shapes follow the upstream docs named
in policies/kinds.py; the corpus in data/kinds exercises them end to end."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml

from policies.context import ManifestFacts
from policies.gpu import GpuConfig
from policies.serving import ServingConfig, image_matches
from policies.workload import WorkloadConfig, extract

GPU = GpuConfig()


def _load(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_kinds_are_matched_by_api_group() -> None:
    volcano = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "v"},
               "spec": {"tasks": [{"name": "w", "replicas": 3, "template": {"spec": {"containers": [
                   {"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}]}}
    assert [(t.spec_path, t.pods) for t in extract(volcano, gpu=GPU).templates] == [("spec.tasks[0].template.spec", 3)]
    knative = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "k"},
               "spec": {"template": {"spec": {"containers": [{"image": "i"}]}}}}
    assert [t.spec_path for t in extract(knative, gpu=GPU).templates] == ["spec.template.spec"]
    core_service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": []}}
    assert extract(core_service, gpu=GPU).templates == []
    # no API group (a bare v1, or none): the kind alone decides, Kubernetes' kinds first
    bare = {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": []}}}}
    assert [t.spec_path for t in extract(bare, gpu=GPU).templates] == ["spec.template.spec"]


def test_llm_inference_service_is_an_lws_of_parallelism_sized_groups() -> None:
    [obj] = _load("""
apiVersion: serving.kserve.io/v1alpha2
kind: LLMInferenceService
metadata: {name: ds, namespace: ml, labels: {team: a}}
spec:
  replicas: 3
  labels: {cost-center: cc}
  parallelism: {data: 16, dataLocal: 8}
  template: {containers: [{name: main, resources: {limits: {nvidia.com/gpu: 8}}}]}
  worker: {containers: [{name: main, resources: {limits: {nvidia.com/gpu: 8}}}]}
  prefill:
    replicas: 2
    parallelism: {pipeline: 4}
    worker: {containers: [{name: main, resources: {limits: {nvidia.com/gpu: 2}}}]}
  router: {scheduler: {template: {containers: [{name: epp, image: epp}]}}}
""")
    w = extract(obj, gpu=GPU)
    assert [(t.name, t.spec_path, t.pods) for t in w.templates] == [
        ("main", "spec.template", 3), ("main worker", "spec.worker", 3),     # size 16/8 = 2: a leader + 1 worker
        ("prefill worker", "spec.prefill.worker", 8),                        # no leader: 2 groups of 4 workers
        ("scheduler", "spec.router.scheduler.template", 1)]
    assert w.full_size_gpus(GPU) == {"nvidia.com/gpu": Decimal(3 * 8 + 3 * 8 + 8 * 2)}
    main = w.templates[0]
    assert main.labels == {"team": "a", "cost-center": "cc"} and main.meta_at("labels") == "spec.labels"
    [ref] = main.containers()
    assert ref.path == "spec.template.containers[0]" and ref.fills("image") and ref.fills("readinessProbe")
    assert w.serving is not None and w.serving.templates == (0, 1, 2)  # the scheduler serves no model


def test_ray_worker_groups_autoscaling_hosts_and_upgrade_surge() -> None:
    [obj] = _load("""
apiVersion: ray.io/v1
kind: RayService
metadata: {name: rs}
spec:
  upgradeStrategy: {type: NewClusterWithIncrementalUpgrade, clusterUpgradeOptions: {maxSurgePercent: 50,
                    gatewayClassName: istio, intervalSeconds: 30, stepSizePercent: 10}}
  rayClusterConfig:
    enableInTreeAutoscaling: true
    headGroupSpec: {template: {spec: {containers: [{name: head, image: r}]}}}
    workerGroupSpecs:
      - {groupName: tpu-like, numOfHosts: 2, replicas: 1, minReplicas: 1, maxReplicas: 3,
         template: {spec: {containers: [{name: w, image: r, resources: {limits: {nvidia.com/gpu: 1}}}]}}}
""")
    w = extract(obj, gpu=GPU)
    assert [(t.name, t.pods, t.surge) for t in w.templates] == [("head", 1, 1), ("worker group `tpu-like`", 6, 3)]
    assert w.full_size_gpus(GPU) == {"nvidia.com/gpu": Decimal(9)} and w.count_path.endswith("workerGroupSpecs")
    ref = next(w.templates[1].containers())
    assert ref.fills("livenessProbe") and not ref.fills("image")  # KubeRay probes the Ray container


def test_train_job_takes_its_runtime_and_patches() -> None:
    objs = _load("""
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainingRuntime
metadata: {name: rt, namespace: ml}
spec:
  mlPolicy: {numNodes: 3}
  template:
    spec:
      replicatedJobs:
        - name: dataset-initializer
          template: {spec: {template: {spec: {containers: [{name: init, image: data}]}}}}
        - name: node
          template:
            metadata: {labels: {trainer.kubeflow.org/trainjob-ancestor-step: trainer}}
            spec:
              template:
                metadata: {labels: {team: ml}}
                spec:
                  priorityClassName: batch-low
                  containers: [{name: node, image: base, resources: {limits: {nvidia.com/gpu: 2}}}]
---
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainJob
metadata: {name: tj, namespace: ml}
spec:
  runtimeRef: {name: rt, kind: TrainingRuntime}
  trainer: {image: mine}
  runtimePatches:
    - trainingRuntimeSpec:
        template:
          spec:
            replicatedJobs:
              - name: node
                template: {spec: {template: {spec: {tolerations: [{key: nvidia.com/gpu, operator: Exists}]}}}}
""")
    facts = ManifestFacts(objs)
    w = extract(objs[1], gpu=GPU, resolve_object=facts.resolve_object)
    trainer, init = w.templates
    assert trainer.pods == 3 and w.full_size_gpus(GPU) == {"nvidia.com/gpu": Decimal(6)}
    [node] = trainer.containers()
    assert (node.path, node.container["image"], node.at("resources")) == ("spec.trainer", "mine",
                                                                           "spec.trainer.resourcesPerNode")
    patch = "spec.runtimePatches[0].trainingRuntimeSpec.template.spec.replicatedJobs[0].template.spec.template.spec"
    assert trainer.at("tolerations") == f"{patch}.tolerations"
    assert trainer.at("priorityClassName") == ("TrainingRuntime/rt:spec.template.spec.replicatedJobs[1].template"
                                               ".spec.template.spec.priorityClassName")
    assert trainer.labels == {"team": "ml"} and trainer.unseen is None
    assert str(init.resource) == "TrainingRuntime/ml/rt"  # the runtime's own jobs belong to it
    unresolved = extract(objs[1], gpu=GPU)
    assert unresolved.templates[0].unseen == "TrainingRuntime `rt`" and unresolved.notes[0][0] == "spec.runtimeRef"


def test_argo_template_fields_come_from_the_template_else_the_workflow() -> None:
    [obj] = _load("""
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: wf}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists}]
  podPriorityClassName: batch-low
  podMetadata: {labels: {team: ml}}
  volumes: [{name: shm, emptyDir: {}}]
  templates:
    - name: dag
      dag: {tasks: [{name: a, template: train}]}
    - name: train
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}
      metadata: {labels: {cost-center: cc}}
      volumes: [{name: dev, hostPath: {path: /dev/nvidia0}}]
      initContainers: [{name: fetch, image: f}]
      sidecars: [{name: logs, image: l}]
      script: {image: s, source: "print(1)", resources: {limits: {nvidia.com/gpu: 1}}}
""")
    w = extract(obj, gpu=GPU)
    [tpl] = w.templates  # the dag template makes no pod
    assert [(r.path, r.section, r.name) for r in tpl.containers()] == [
        ("spec.templates[1].script", "containers", "main"), ("spec.templates[1].sidecars[0]", "containers", "logs"),
        ("spec.templates[1].initContainers[0]", "initContainers", "fetch")]
    assert (tpl.at("tolerations"), tpl.at("nodeSelector"), tpl.at("priorityClassName"), tpl.at("affinity")) == (
        "spec.tolerations", "spec.templates[1].nodeSelector", "spec.podPriorityClassName", "spec.templates[1].affinity")
    assert tpl.spec["priorityClassName"] == "batch-low" and tpl.labels == {"team": "ml", "cost-center": "cc"}
    assert [tpl.item_at("volumes", j) for j in range(2)] == ["spec.volumes[0]", "spec.templates[1].volumes[0]"]


def test_an_inference_service_inherits_its_runtime() -> None:
    objs = _load("""
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: vllm}
spec:
  tolerations: [{key: nvidia.com/gpu, operator: Exists}]
  containers: [{name: kserve-container, image: vllm/vllm-openai:v0.9.2, resources: {limits: {nvidia.com/gpu: 2}}}]
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: isvc, namespace: ml}
spec:
  predictor: {minReplicas: 2, model: {runtime: vllm, modelFormat: {name: vllm}, storageUri: "s3://models/x"}}
""")
    facts = ManifestFacts(objs)
    w = extract(objs[1], gpu=GPU, resolve_object=facts.resolve_object)
    assert w.full_size_gpus(GPU) == {"nvidia.com/gpu": Decimal(4)}
    assert w.templates[0].spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert w.serving is not None and (w.serving.model, w.serving.reason) == ("s3://models/x", "kind InferenceService")
    alone = extract(objs[1], gpu=GPU)  # the runtime not in the checked set: its GPUs cannot be counted
    ref = next(alone.templates[0].containers())
    assert alone.full_size_gpus(GPU) == {} and ref.fills("image") and ref.supplied_by == "ServingRuntime `vllm`"
    assert extract(objs[0], gpu=GPU).template_only and extract(objs[0], gpu=GPU).serving is None


@pytest.mark.parametrize(("image", "matched"), [
    ("vllm/vllm-openai:v0.9.2", "vllm/vllm-openai"),
    ("docker.io/vllm/vllm-openai@sha256:" + "a" * 64, "vllm/vllm-openai"),
    ("index.docker.io/lmsysorg/sglang:latest", "lmsysorg/sglang"),
    ("nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3", "nvcr.io/nim/*"),
    ("ghcr.io/acme/vllm-openai:v1", None),
    ("registry.example.com/vllm/vllm-openai:v1", None),
])
def test_serving_images_match_with_the_registry_made_explicit(image: str, matched: str | None) -> None:
    assert image_matches(image, ServingConfig().images) == matched


@pytest.mark.parametrize(("container", "model"), [
    ({"image": "vllm/vllm-openai", "command": ["vllm", "serve"], "args": ["org/m", "--port", "8000"]}, "org/m"),
    ({"image": "vllm/vllm-openai", "args": ["--model=org/m", "--served-model-name", "chat"]}, "org/m"),
    ({"image": "vllm/vllm-openai", "args": ["--model", "/mnt/models", "--served-model-name", "chat"]}, "chat"),
    ({"image": "lmsysorg/sglang", "command": ["sh", "-c", "python3 -m sglang.launch_server --model-path org/s"]},
     "org/s"),
    ({"image": "ghcr.io/huggingface/text-generation-inference", "args": ["--model-id", "org/t"]}, "org/t"),
    ({"image": "vllm/vllm-openai"}, None),
])
def test_the_model_is_named_by_the_server_arguments(container: dict[str, Any], model: str | None) -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"template": {"spec": {"containers": [{"name": "s", **container}]}}}}
    serving = extract(obj, gpu=GPU).serving
    assert serving is not None and serving.model == model


def test_the_serving_selector_and_its_absence() -> None:
    obj = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
           "metadata": {"name": "k", "labels": {"app.kubernetes.io/component": "llm"}},
           "spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/acme/server:1"}]}}}}
    assert extract(obj, gpu=GPU).serving is None
    by_kind = WorkloadConfig.from_spec({"serving": {"selector": {"kinds": ["serving.knative.dev/Service"]}}})
    by_label = WorkloadConfig.from_spec({"serving": {"selector": {
        "labels": {"matchLabels": {"app.kubernetes.io/component": "llm"}}}}})
    no_images = WorkloadConfig.from_spec({"serving": {"selector": {"images": []}}})
    assert extract(obj, gpu=GPU, config=by_kind).serving is not None
    assert extract(obj, gpu=GPU, config=by_label).serving is not None
    vllm = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "v"},
            "spec": {"template": {"spec": {"containers": [{"name": "v", "image": "vllm/vllm-openai"}]}}}}
    assert extract(vllm, gpu=GPU).serving is not None and extract(vllm, gpu=GPU, config=no_images).serving is None
