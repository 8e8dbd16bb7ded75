"""Where each kind keeps its pod templates, how many pods each makes, and how a batch kind ends.

Every kind is keyed by API group and kind (a Volcano ``Job`` is not a ``batch/v1`` Job). The shapes are
those the projects document; each family names the upstream API version and the page or file read:

- core and apps/batch kinds, Argo Rollouts (argoproj.io/v1alpha1 Rollout, incl. ``workloadRef``)
- KServe (serving.kserve.io): v1beta1 InferenceService (docs/samples/v1beta1), v1alpha1/v1alpha2
  LLMInferenceService and LLMInferenceServiceConfig (docs/samples/llmisvc, pkg/controller/v1alpha2/llmisvc/
  workload_multi_node.go: an LWS of ``replicas`` groups of ``parallelism`` size), v1alpha1 ServingRuntime and
  ClusterServingRuntime (the pod fields and containers a predictor inherits)
- LeaderWorkerSet (leaderworkerset.x-k8s.io/v1)
- KubeRay (ray.io/v1, ray-operator/config/samples): RayCluster, RayService (``rayClusterConfig``; a
  NewCluster upgrade runs a second cluster of the same size), RayJob (``rayClusterSpec``)
- Kubeflow training-operator v1 (kubeflow.org/v1 PyTorchJob, TFJob, MPIJob, PaddleJob, XGBoostJob, JAXJob;
  kubeflow.org/v2beta1 MPIJob): ``spec.<x>ReplicaSpecs.<role>.template`` x replicas, ``spec.runPolicy``
- Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1, manifests/base/runtimes): TrainJob, TrainingRuntime,
  ClusterTrainingRuntime (a JobSet template; the trainer job's container ``node`` gets the TrainJob's
  ``trainer`` image and ``resourcesPerNode``, ``numNodes`` pods)
- JobSet (jobset.x-k8s.io/v1alpha2): ``replicatedJobs[].template.spec.template`` x replicas x parallelism
- Knative Serving (serving.knative.dev/v1 Service, Configuration; docs/serving/autoscaling/scale-bounds.md)
- Volcano (batch.volcano.sh/v1alpha1 Job): ``tasks[].template`` x replicas
- Argo Workflows (argoproj.io/v1alpha1 Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow;
  workflow/controller/workflowpod.go addSchedulingConstraints: a template's scheduling fields, else the
  workflow's)

A kind outside the table is searched for pod-template-shaped objects (``find_generic``) and checked with a
note; a PolicySet registers a kind's template paths in ``spec.workloadKinds`` (``RegisteredKind``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from policies.model import Resource
from policies.templates import (
    ContainerRef,
    PodTemplate,
    Section,
    as_list,
    as_map,
    count,
    join,
    meta,
    pod_spec_at,
    template_at,
)

# (namespace, kind, name) -> the object, or None
ObjectResolver = Callable[[str, str, str], Mapping[str, Any] | None]

KSERVE = "serving.kserve.io"
KSERVE_COMPONENTS = ("predictor", "transformer", "explainer")
# KServe predictor framework shorthands: each is a container-like spec run as `kserve-container`.
KSERVE_FRAMEWORKS = ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml",
                     "lightgbm", "paddle", "huggingface")
KSERVE_CONTAINER = "kserve-container"
KUBEFLOW_REPLICA_SPECS = {"PyTorchJob": "pytorchReplicaSpecs", "TFJob": "tfReplicaSpecs", "MPIJob": "mpiReplicaSpecs",
                          "PaddleJob": "paddleReplicaSpecs", "XGBoostJob": "xgbReplicaSpecs",
                          "JAXJob": "jaxReplicaSpecs"}
TRAINER_ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
KNATIVE_MAX = ("autoscaling.knative.dev/max-scale", "autoscaling.knative.dev/maxScale")
KNATIVE_MIN = ("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/minScale")
KNATIVE_INITIAL = ("autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/initialScale")
RAY_UNBOUNDED = 2147483647  # KubeRay's default maxReplicas (int32 max): no bound
RAY_PROBES = "KubeRay, which adds readiness and liveness probes to Ray containers that set none"
LLMISVC_PRESETS = "KServe's LLMInferenceServiceConfig presets (well-known configs and spec.baseRefs)"
PROBES = frozenset({"readinessProbe", "livenessProbe", "startupProbe"})
LLMISVC_SUPPLIED = PROBES | {"image", "command", "args"}
# API groups of Kubernetes itself (and mlguard's own): their kinds carry no pod template beyond the ones
# in the table, so they are never searched
BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "autoscaling", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io", "discovery.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io", "certificates.k8s.io",
    "resource.k8s.io", "flowcontrol.apiserver.k8s.io", "events.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "internal.apiserver.k8s.io", "storagemigration.k8s.io", "mlguard.io",
})
GENERIC_NOTE = "checked as a generic pod template"
GENERIC_MAX_DEPTH = 12
GENERIC_MAX_NODES = 20_000


@dataclass(frozen=True)
class Setting:
    """A lifecycle field of a batch kind: where it is (or belongs) and its value (None when unset)."""

    path: str
    value: Any
    template: int | None = None  # the template whose pods it bounds (None: all of them)


@dataclass(frozen=True)
class Flag:
    """A boolean the kind must set for its GPUs to be released (RayJob ``shutdownAfterJobFinishes``)."""

    path: str
    value: Any
    why: str


@dataclass(frozen=True)
class Batch:
    """How a batch kind bounds its run time and cleans up: the fields gpu-job-deadline checks."""

    deadlines: tuple[Setting, ...]
    ttl: Setting | None = None
    flags: tuple[Flag, ...] = ()
    what: str = "the job"
    int_or_string: bool = False  # durations written as IntOrString ("3600"), as Argo Workflows does


@dataclass(slots=True)
class Extracted:
    """A kind's templates and what else the extractor learnt about the object."""

    templates: list[PodTemplate] = field(default_factory=list)
    batch: Batch | None = None
    count_path: str | None = None     # where the pod count is set (the quota look-ahead points there)
    notes: list[tuple[str, str, bool]] = field(default_factory=list)  # (path, message, only when it uses a GPU)
    serving: tuple[int, ...] | None = None  # the templates that serve, for a serving kind
    generic: bool = False
    template_only: bool = False  # a runtime or preset: other objects run its templates


# --------------------------------------------------------------------------------------------------
# registration in the PolicySet (spec.workloadKinds)

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")


def _segments(path: str) -> list[str | int | None]:
    """``spec.roles[*].template`` -> ["spec", "roles", None, "template"] (None: every item)."""
    out: list[str | int | None] = []
    for name, index in _SEGMENT.findall(path):
        out.append(name if name else (None if index == "*" else int(index)))
    return out


def _walk(value: Any, segments: list[str | int | None], path: str,
          bound: tuple[int, ...] = ()) -> Iterator[tuple[str, Any, tuple[int, ...]]]:
    if not segments:
        yield path, value, bound
        return
    head, rest = segments[0], segments[1:]
    if isinstance(head, str):
        if isinstance(value, Mapping) and head in value:
            yield from _walk(value[head], rest, join(path, head), bound)
    elif isinstance(value, list):
        items = enumerate(value) if head is None else [(head, value[head])] if 0 <= head < len(value) else []
        for i, item in items:
            yield from _walk(item, rest, join(path, i), bound + ((i,) if head is None else ()))


def _bind(path: str, bound: tuple[int, ...]) -> str:
    """Replace the ``[*]`` of a multiplicity field path with the indexes of the template it belongs to."""
    it = iter(bound)
    return re.sub(r"\[\*\]", lambda _: f"[{next(it, 0)}]", path)


@dataclass(frozen=True)
class RegisteredKind:
    """A kind whose template paths a PolicySet registers (``spec.workloadKinds``)."""

    group: str
    kind: str
    templates: tuple[Mapping[str, Any], ...]
    serving: bool = False
    batch: Mapping[str, Any] | None = None

    @classmethod
    def from_spec(cls, entry: Mapping[str, Any]) -> RegisteredKind:
        return cls(group=str(entry.get("group", "")), kind=str(entry["kind"]),
                   templates=tuple(entry.get("templates") or ()), serving=bool(entry.get("serving", False)),
                   batch=entry.get("batch"))

    def extract(self, obj: Mapping[str, Any]) -> Extracted:
        out = Extracted()
        for entry in self.templates:
            pattern = str(entry["path"])
            for path, value, bound in _walk(obj, _segments(pattern), ""):
                pods = self._pods(obj, entry.get("multiplicity", 1), bound)
                name = str(entry.get("name") or path)
                if entry.get("podSpec"):
                    tpl = pod_spec_at(name, path, value, pods=pods, metadata_path="metadata",
                                      labels=meta(obj, "labels"))
                else:
                    tpl = template_at(name, path, value, pods=pods)
                if tpl is not None:
                    out.templates.append(tpl)
        if self.serving:
            out.serving = tuple(range(len(out.templates)))
        if self.batch:
            deadline = str(self.batch.get("activeDeadlineSeconds", "")) or None
            ttl = str(self.batch.get("ttlSecondsAfterFinished", "")) or None
            deadlines = tuple(Setting(deadline, _get(obj, deadline)) for _ in [0] if deadline)
            out.batch = Batch(deadlines=deadlines, ttl=Setting(ttl, _get(obj, ttl)) if ttl else None)
        return out

    @staticmethod
    def _pods(obj: Mapping[str, Any], multiplicity: Any, bound: tuple[int, ...]) -> int:
        if isinstance(multiplicity, int) and not isinstance(multiplicity, bool):
            return max(multiplicity, 0)
        pods = 1
        for field_path in as_list(multiplicity):
            pods *= count(_get(obj, _bind(str(field_path), bound)), 1)
        return pods


def _get(obj: Any, path: str) -> Any:
    found = next(_walk(obj, _segments(path), ""), None)
    return found[1] if found is not None else None


# --------------------------------------------------------------------------------------------------
# helpers


def _surge(value: Any, replicas: int, default: str = "25%") -> int:
    """maxSurge as pods: an int, or a percentage rounded up (Kubernetes rounds surge up)."""
    value = default if value is None else value
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(replicas * float(value[:-1]) / 100)
        except ValueError:
            return 0
    return 0


def _one(found: PodTemplate | None) -> list[PodTemplate]:
    return [found] if found is not None else []


def _int_annotation(annotations: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, int] | None:
    for key in keys:
        raw = annotations.get(key)
        try:
            value = int(str(raw).strip()) if raw is not None else None
        except ValueError:
            continue
        if value is not None and value >= 0:
            return key, value
    return None


def group_of(obj: Mapping[str, Any]) -> str:
    api = obj.get("apiVersion")
    return api.rpartition("/")[0] if isinstance(api, str) else ""


# --------------------------------------------------------------------------------------------------
# core kinds


def _core(obj: Mapping[str, Any], kind: str, spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    replicas = count(spec.get("replicas"), 1)
    if kind == "Pod":
        return Extracted([PodTemplate(name="pod", spec_path="spec", metadata_path="metadata", spec=spec,
                                      labels=meta(obj, "labels"), annotations=meta(obj, "annotations"))],
                         count_path="spec")
    if kind == "Deployment":
        strategy = as_map(spec.get("strategy"))
        surge = 0 if strategy.get("type") == "Recreate" else _surge(
            as_map(strategy.get("rollingUpdate")).get("maxSurge"), replicas)
        return Extracted(_one(template_at("template", "spec.template", spec.get("template"), pods=replicas,
                                          surge=surge)), count_path="spec.replicas")
    if kind in ("ReplicaSet", "StatefulSet"):
        return Extracted(_one(template_at("template", "spec.template", spec.get("template"), pods=replicas)),
                         count_path="spec.replicas")
    if kind == "DaemonSet":
        return Extracted(_one(template_at("template", "spec.template", spec.get("template"), pods=1)),
                         count_path="spec.template.spec")
    if kind == "Job":
        batch = Batch((Setting("spec.activeDeadlineSeconds", spec.get("activeDeadlineSeconds")),),
                      Setting("spec.ttlSecondsAfterFinished", spec.get("ttlSecondsAfterFinished")))
        return Extracted(_one(template_at("template", "spec.template", spec.get("template"),
                                          pods=count(spec.get("parallelism"), 1))),
                         batch=batch, count_path="spec.parallelism")
    if kind == "CronJob":
        job = as_map(as_map(spec.get("jobTemplate")).get("spec"))
        base = "spec.jobTemplate.spec"
        batch = Batch((Setting(join(base, "activeDeadlineSeconds"), job.get("activeDeadlineSeconds")),),
                      Setting(join(base, "ttlSecondsAfterFinished"), job.get("ttlSecondsAfterFinished")))
        return Extracted(_one(template_at("template", join(base, "template"), job.get("template"),
                                          pods=count(job.get("parallelism"), 1))),
                         batch=batch, count_path=join(base, "parallelism"))
    return Extracted()


def _rollout(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    replicas = count(spec.get("replicas"), 1)
    strategy = as_map(spec.get("strategy"))
    canary = strategy.get("canary") if isinstance(strategy.get("canary"), Mapping) else None
    surge = _surge(canary.get("maxSurge"), replicas) if canary is not None else replicas  # blueGreen: 2x
    ref = spec.get("workloadRef")
    if isinstance(ref, Mapping) and not isinstance(spec.get("template"), Mapping):
        if resolve is None:
            return Extracted(count_path="spec.replicas")
        namespace = Resource.of(dict(obj)).namespace
        target = resolve(namespace, str(ref.get("kind", "Deployment")), str(ref.get("name", "")))
        if not isinstance(target, Mapping):
            return Extracted(count_path="spec.replicas")
        tpl = template_at("workloadRef", "spec.template", as_map(target.get("spec")).get("template"),
                          pods=replicas, surge=surge)
        if tpl is None:
            return Extracted(count_path="spec.replicas")
        tpl.resource = Resource.of(dict(target), default_namespace=namespace)
        return Extracted([tpl], count_path="spec.replicas")
    return Extracted(_one(template_at("template", "spec.template", spec.get("template"), pods=replicas,
                                      surge=surge)), count_path="spec.replicas")


def _lws(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    replicas = count(spec.get("replicas"), 1)
    lwt = as_map(spec.get("leaderWorkerTemplate"))
    size = count(lwt.get("size"), 1) or 1
    base = "spec.leaderWorkerTemplate"
    worker = template_at("worker", join(base, "workerTemplate"), lwt.get("workerTemplate"),
                         pods=replicas * (size - 1 if lwt.get("leaderTemplate") else size))
    leader = template_at("leader", join(base, "leaderTemplate"), lwt.get("leaderTemplate"), pods=replicas)
    templates = [t for t in (leader, worker) if t is not None]
    return Extracted(templates, count_path="spec.replicas")


# --------------------------------------------------------------------------------------------------
# KServe


def _runtime(obj: Mapping[str, Any], part: Mapping[str, Any],
             resolve: ObjectResolver | None) -> tuple[str, Mapping[str, Any] | None]:
    """The ServingRuntime a predictor names (``model.runtime``), resolved when the facts hold it."""
    model = as_map(part.get("model"))
    name = model.get("runtime")
    if not isinstance(name, str) or not name:
        fmt = as_map(model.get("modelFormat")).get("name")
        return (f"the ServingRuntime KServe selects for model format {fmt}" if fmt else
                "its ServingRuntime"), None
    if resolve is not None:
        namespace = Resource.of(dict(obj)).namespace
        for kind in ("ServingRuntime", "ClusterServingRuntime"):
            found = resolve(namespace, kind, name)
            if isinstance(found, Mapping):
                return f"{kind} `{name}`", found
    return f"ServingRuntime `{name}`", None


def _runtime_container(runtime: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = [c for c in as_list(as_map(runtime.get("spec")).get("containers")) if isinstance(c, Mapping)]
    named = [c for c in containers if c.get("name") == KSERVE_CONTAINER]
    return (named or containers or [{}])[0]


def _kserve_component(obj: Mapping[str, Any], comp: str, spec: Mapping[str, Any],
                      resolve: ObjectResolver | None) -> list[PodTemplate]:
    part = spec.get(comp)
    if not isinstance(part, Mapping):
        return []
    path = join("spec", comp)
    labels = {**meta(obj, "labels"), **as_map(part.get("labels"))}
    annotations = {**meta(obj, "annotations"), **as_map(part.get("annotations"))}
    replicas = count(part.get("maxReplicas"), count(part.get("minReplicas"), 1)) or 1
    pod_spec: Mapping[str, Any] = part
    runtime_name, runtime = _runtime(obj, part, resolve) if comp == "predictor" else ("", None)
    runtime_spec = as_map(as_map(runtime).get("spec"))
    if runtime_spec:
        # KServe merges the runtime's pod fields under the predictor's (the predictor's win)
        inherited = {k: runtime_spec[k] for k in ("tolerations", "nodeSelector", "affinity")
                     if runtime_spec.get(k) and not part.get(k)}
        pod_spec = {**part, **inherited}
    tpl = PodTemplate(name=comp, spec_path=path, metadata_path="metadata", spec=pod_spec, labels=labels,
                      annotations=annotations, pods=replicas)
    for key in KSERVE_FRAMEWORKS:
        if not isinstance(part.get(key), Mapping):
            continue
        container = part[key]
        if runtime is not None:
            base = _runtime_container(runtime)
            container = {**base, **{k: v for k, v in container.items() if v not in (None, {}, [])}}
            tpl.extra_containers.append(ContainerRef(join(path, key), "containers", container, KSERVE_CONTAINER))
        else:
            tpl.extra_containers.append(ContainerRef(join(path, key), "containers", container, KSERVE_CONTAINER,
                                                     supplied=frozenset({"image"}), supplied_by=runtime_name))
            if not as_map(container.get("resources")):
                tpl.gpus_from = runtime_name  # KServe takes the runtime container's resources
    templates = [tpl]
    worker = part.get("workerSpec")
    if comp == "predictor" and isinstance(worker, Mapping):
        size = count(worker.get("pipelineParallelSize"), 1)
        templates.append(PodTemplate(name="predictor worker", spec_path=join(path, "workerSpec"),
                                     metadata_path="metadata", spec=worker, labels=labels, annotations=annotations,
                                     pods=replicas * max(size - 1, 1)))
    return templates


def _inference_service(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    templates = [t for c in KSERVE_COMPONENTS for t in _kserve_component(obj, c, spec, resolve)]
    notes = [(tpl.spec_path, f"the {tpl.name}'s model container sets no resources: KServe gives it those of "
              f"{tpl.gpus_from}, which is not in the checked set, so its GPUs are not counted; check the "
              "ServingRuntime with it", False) for tpl in templates if tpl.gpus_from]
    return Extracted(templates, count_path="spec.predictor", serving=tuple(range(len(templates))), notes=notes)


def _lws_size(parallelism: Mapping[str, Any]) -> int:
    """pkg/apis/serving/v1alpha2 ParallelismSpec.GetSize: data / dataLocal when data-parallel, else pipeline."""
    data, local = count(parallelism.get("data"), 0), count(parallelism.get("dataLocal"), 0)
    if data or local:
        return max(max(data, 1) // max(local, 1), 1)
    return count(parallelism.get("pipeline"), 0) or 1


def _llm_stage(obj: Mapping[str, Any], stage: Mapping[str, Any], base: str, label: str,
               labels: Mapping[str, str], annotations: Mapping[str, str], *, pods_default: int) -> list[PodTemplate]:
    """One LLMInferenceService stage (the main one at ``spec``, or ``spec.prefill``): a Deployment of
    ``template``, or with ``worker`` an LWS of ``replicas`` groups of the parallelism size."""
    replicas = count(stage.get("replicas"), pods_default)
    scaling = as_map(stage.get("scaling"))
    replicas = max(replicas, count(scaling.get("maxReplicas"), 0))
    size = _lws_size(as_map(stage.get("parallelism")))
    has_template = isinstance(stage.get("template"), Mapping)
    out = []
    if has_template:
        out.append(pod_spec_at(label, join(base, "template"), stage["template"], pods=replicas,
                               metadata_path=base, labels=labels, annotations=annotations))
    if isinstance(stage.get("worker"), Mapping):
        workers = replicas * (size - 1 if has_template else size)
        out.append(pod_spec_at(f"{label} worker", join(base, "worker"), stage["worker"], pods=workers,
                               metadata_path=base, labels=labels, annotations=annotations))
    templates = [t for t in out if t is not None]
    for tpl in templates:
        tpl.meta_paths = {"labels": join(base, "labels"), "annotations": join(base, "annotations")}
        sections: tuple[Section, ...] = ("containers", "initContainers")
        tpl.replace_containers([ContainerRef(join(join(tpl.spec_path, sec), i), sec, c, supplied=LLMISVC_SUPPLIED,
                                             supplied_by=LLMISVC_PRESETS)
                                for sec in sections
                                for i, c in enumerate(as_list(tpl.spec.get(sec))) if isinstance(c, Mapping)])
    return templates


def _llm_inference_service(obj: Mapping[str, Any], spec: Mapping[str, Any],
                           resolve: ObjectResolver | None) -> Extracted:
    is_config = obj.get("kind") == "LLMInferenceServiceConfig"
    labels = {**meta(obj, "labels"), **as_map(spec.get("labels"))}
    annotations = as_map(spec.get("annotations"))
    main = _llm_stage(obj, spec, "spec", "main", labels, annotations, pods_default=0 if is_config else 1)
    prefill_spec = as_map(spec.get("prefill"))
    prefill = _llm_stage(obj, prefill_spec, "spec.prefill", "prefill",
                         {**labels, **as_map(prefill_spec.get("labels"))},
                         {**annotations, **as_map(prefill_spec.get("annotations"))},
                         pods_default=0 if is_config else 1) if prefill_spec else []
    scheduler = as_map(as_map(spec.get("router")).get("scheduler"))
    extra = _one(pod_spec_at("scheduler", "spec.router.scheduler.template", scheduler.get("template"),
                             pods=0 if is_config else count(scheduler.get("replicas"), 1),
                             metadata_path="spec.router.scheduler"))
    templates = main + prefill + extra
    if is_config:
        for tpl in templates:
            tpl.pods = 0
        return Extracted(templates, count_path="spec.replicas")
    serving = tuple(range(len(main) + len(prefill)))
    return Extracted(templates, count_path="spec.replicas", serving=serving)


def _serving_runtime(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    """A ServingRuntime is a pod template the InferenceServices that select it run; only a multi-model
    runtime (ModelMesh) runs pods of its own (``replicas``)."""
    pods = count(spec.get("replicas"), 1) if spec.get("multiModel") is True else 0
    labels = {**meta(obj, "labels"), **as_map(spec.get("labels"))}
    annotations = as_map(spec.get("annotations"))
    runtime = PodTemplate(name="runtime", spec_path="spec", metadata_path="spec", spec=spec, labels=labels,
                          annotations=annotations, pods=pods)
    templates = [runtime]
    worker = spec.get("workerSpec")
    if isinstance(worker, Mapping):
        templates.append(PodTemplate(name="runtime worker", spec_path="spec.workerSpec", metadata_path="spec",
                                     spec=worker, labels=labels, annotations=annotations, pods=0))
    return Extracted(templates, count_path="spec.replicas")


# --------------------------------------------------------------------------------------------------
# KubeRay


def _ray_cluster(cluster: Mapping[str, Any], base: str, *, surge_mode: str | None,
                 surge_percent: int = 100) -> tuple[list[PodTemplate], list[tuple[str, str, bool]]]:
    notes: list[tuple[str, str, bool]] = []
    autoscaling = cluster.get("enableInTreeAutoscaling") is True
    templates = _one(template_at("head", join(base, "headGroupSpec.template"),
                                 as_map(cluster.get("headGroupSpec")).get("template"), pods=1,
                                 role="the Ray head pod"))
    for i, group in enumerate(as_list(cluster.get("workerGroupSpecs"))):
        group = as_map(group)
        name = str(group.get("groupName") or i)
        hosts = count(group.get("numOfHosts"), 1) or 1
        low, high = count(group.get("minReplicas"), 0), count(group.get("maxReplicas"), RAY_UNBOUNDED)
        if autoscaling:
            replicas = high
            if high >= RAY_UNBOUNDED:
                notes.append((join(join(join(base, "workerGroupSpecs"), i), "maxReplicas"),
                              f"worker group `{name}` autoscales with maxReplicas {RAY_UNBOUNDED} (the CRD's default): "
                              "set a maxReplicas that bounds the GPUs it may take", True))
        else:
            replicas = min(max(count(group.get("replicas"), low), low), high)
        path = join(join(join(base, "workerGroupSpecs"), i), "template")
        tpl = template_at(f"worker group `{name}`", path, group.get("template"), pods=replicas * hosts,
                          role=f"a worker pod of group `{name}`")
        if tpl is not None:
            templates.append(tpl)
    for tpl in templates:
        refs = list(tpl.containers())
        ray = bool(refs) and refs[0].section == "containers"
        # KubeRay probes the Ray container (the first) itself
        tpl.replace_containers([ContainerRef(r.path, r.section, r.container,
                                             supplied=PROBES if ray and k == 0 else frozenset(),
                                             supplied_by=RAY_PROBES if ray and k == 0 else None)
                                for k, r in enumerate(refs)])
        if surge_mode == "NewCluster":
            tpl.surge = tpl.pods
        elif surge_mode == "NewClusterWithIncrementalUpgrade":
            tpl.surge = math.ceil(tpl.pods * surge_percent / 100)
    return templates, notes


def _kuberay(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    kind = obj.get("kind")
    if kind == "RayCluster":
        templates, notes = _ray_cluster(spec, "spec", surge_mode=None)
        return Extracted(templates, notes=notes, count_path="spec.workerGroupSpecs")
    if kind == "RayService":
        upgrade = as_map(spec.get("upgradeStrategy"))
        mode = str(upgrade.get("type") or "NewCluster")
        percent = count(as_map(upgrade.get("clusterUpgradeOptions")).get("maxSurgePercent"), 100)
        templates, notes = _ray_cluster(as_map(spec.get("rayClusterConfig")), "spec.rayClusterConfig",
                                        surge_mode=mode, surge_percent=percent)
        serving = tuple(range(len(templates))) if spec.get("serveConfigV2") or spec.get("serveConfig") else None
        return Extracted(templates, notes=notes, count_path="spec.rayClusterConfig.workerGroupSpecs", serving=serving)
    # RayJob: a cluster of its own (rayClusterSpec) or an existing one (clusterSelector), and a submitter pod
    templates, notes = _ray_cluster(as_map(spec.get("rayClusterSpec")), "spec.rayClusterSpec", surge_mode=None)
    if spec.get("submissionMode", "K8sJobMode") == "K8sJobMode":
        templates += _one(template_at("submitter", "spec.submitterPodTemplate", spec.get("submitterPodTemplate"),
                                      pods=1))
    flags: tuple[Flag, ...] = ()
    if isinstance(spec.get("rayClusterSpec"), Mapping):
        flags = (Flag("spec.shutdownAfterJobFinishes", spec.get("shutdownAfterJobFinishes"),
                      "without it the RayCluster, and its GPUs, stays up after the job ends"),)
    batch = Batch((Setting("spec.activeDeadlineSeconds", spec.get("activeDeadlineSeconds")),), None, flags,
                  what="the Ray job")
    return Extracted(templates, notes=notes, batch=batch, count_path="spec.rayClusterSpec.workerGroupSpecs")


# --------------------------------------------------------------------------------------------------
# Kubeflow training-operator v1 (and mpi-operator v2beta1)


def _kubeflow_job(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    key = KUBEFLOW_REPLICA_SPECS.get(str(obj.get("kind")), "")
    roles = as_map(spec.get(key))
    elastic = as_map(spec.get("elasticPolicy"))
    templates = []
    for role, replica_spec in roles.items():
        replica_spec = as_map(replica_spec)
        replicas = count(replica_spec.get("replicas"), 1)
        if role == "Worker" and elastic:
            replicas = max(replicas, count(elastic.get("maxReplicas"), 0))
        tpl = template_at(str(role), join(join("spec", key), str(role)) + ".template", replica_spec.get("template"),
                          pods=replicas, role=f"a {role} pod")
        if tpl is not None:
            templates.append(tpl)
    run = as_map(spec.get("runPolicy"))
    batch = Batch((Setting("spec.runPolicy.activeDeadlineSeconds", run.get("activeDeadlineSeconds")),),
                  Setting("spec.runPolicy.ttlSecondsAfterFinished", run.get("ttlSecondsAfterFinished")))
    return Extracted(templates, batch=batch, count_path=join("spec", key))


# --------------------------------------------------------------------------------------------------
# JobSet and Kubeflow Trainer v2


def _replicated_jobs(jobset_spec: Mapping[str, Any], base: str, *, template_only: bool,
                     ) -> tuple[list[PodTemplate], list[Setting], list[Mapping[str, Any]]]:
    templates: list[PodTemplate] = []
    deadlines: list[Setting] = []
    jobs: list[Mapping[str, Any]] = []
    for i, rj in enumerate(as_list(jobset_spec.get("replicatedJobs"))):
        rj = as_map(rj)
        job = as_map(as_map(rj.get("template")).get("spec"))
        name = str(rj.get("name") or i)
        job_path = join(join(join(base, "replicatedJobs"), i), "template.spec")
        pods = 0 if template_only else count(rj.get("replicas"), 1) * count(job.get("parallelism"), 1)
        tpl = template_at(f"replicatedJob `{name}`", join(job_path, "template"), job.get("template"), pods=pods,
                          role=f"a pod of replicatedJob `{name}`")
        if tpl is None:
            continue
        deadlines.append(Setting(join(job_path, "activeDeadlineSeconds"), job.get("activeDeadlineSeconds"),
                                 template=len(templates)))
        templates.append(tpl)
        jobs.append(rj)
    return templates, deadlines, jobs


def _jobset(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    templates, deadlines, _ = _replicated_jobs(spec, "spec", template_only=False)
    batch = Batch(tuple(deadlines), Setting("spec.ttlSecondsAfterFinished", spec.get("ttlSecondsAfterFinished")),
                  what="each GPU Job")
    return Extracted(templates, batch=batch, count_path="spec.replicatedJobs")


def _is_trainer_job(rj: Mapping[str, Any]) -> bool:
    labels = meta(rj.get("template"), "labels")
    return labels.get(TRAINER_ANCESTOR_LABEL) == "trainer" or rj.get("name") == "node"


def _training_runtime(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    jobset = as_map(as_map(spec.get("template")).get("spec"))
    templates, _, _ = _replicated_jobs(jobset, "spec.template.spec", template_only=True)
    return Extracted(templates, count_path="spec.mlPolicy.numNodes")


def _trainer_patches(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, pod template) of every runtimePatches entry for the trainer job (``node``)."""
    for j, patch in enumerate(as_list(spec.get("runtimePatches"))):
        jobset = as_map(as_map(as_map(as_map(patch).get("trainingRuntimeSpec")).get("template")).get("spec"))
        for k, rj in enumerate(as_list(jobset.get("replicatedJobs"))):
            rj = as_map(rj)
            if rj.get("name") == "node" or _is_trainer_job(rj):
                path = (f"spec.runtimePatches[{j}].trainingRuntimeSpec.template.spec.replicatedJobs[{k}]"
                        ".template.spec.template")
                yield path, as_map(as_map(as_map(rj.get("template")).get("spec")).get("template"))


def _train_job(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    """A TrainJob runs its runtime's JobSet; the trainer job's container ``node`` takes the TrainJob's
    ``trainer`` (image, command, args, env, ``resourcesPerNode``) and the job runs ``numNodes`` pods."""
    trainer = as_map(spec.get("trainer"))
    ref = as_map(spec.get("runtimeRef"))
    runtime_kind = str(ref.get("kind") or "ClusterTrainingRuntime")
    runtime_name = str(ref.get("name") or "")
    namespace = Resource.of(dict(obj)).namespace
    found = resolve(namespace, runtime_kind, runtime_name) if resolve is not None and runtime_name else None
    runtime = found if isinstance(found, Mapping) else None
    runtime_spec = as_map(as_map(runtime).get("spec"))
    node_pod: Mapping[str, Any] = {}
    node_meta: Mapping[str, Any] = {}
    node_path = ""
    others: list[PodTemplate] = []
    if runtime is not None:
        jobset = as_map(as_map(runtime_spec.get("template")).get("spec"))
        rtpls, _, jobs = _replicated_jobs(jobset, "spec.template.spec", template_only=False)
        owner = Resource.of(dict(runtime), default_namespace=namespace)
        for tpl, rj in zip(rtpls, jobs, strict=True):
            if _is_trainer_job(rj) and not node_path:
                node_pod, node_path = tpl.spec, tpl.spec_path
                node_meta = as_map(as_map(as_map(as_map(rj.get("template")).get("spec")).get("template")
                                          ).get("metadata"))
            else:
                tpl.resource = owner
                others.append(tpl)
    nodes = count(trainer.get("numNodes"), count(as_map(runtime_spec.get("mlPolicy")).get("numNodes"), 1))
    base = next((c for c in as_list(node_pod.get("containers")) if isinstance(c, Mapping) and c.get("name") == "node"),
                {})
    container: dict[str, Any] = {**as_map(base), "name": "node"}
    for key, target in (("image", "image"), ("command", "command"), ("args", "args"), ("env", "env"),
                        ("resourcesPerNode", "resources")):
        if trainer.get(key) is not None:
            container[target] = trainer[key]
    pod: dict[str, Any] = {k: v for k, v in node_pod.items() if k not in ("containers", "initContainers")}
    where = f"{runtime_kind}/{runtime_name}:{node_path}" if node_path else ""
    field_paths = {k: join(where, k) for k in pod} if where else {}
    labels = dict(as_map(node_meta.get("labels")))
    annotations = dict(as_map(node_meta.get("annotations")))
    patch_path = ("spec.runtimePatches[0].trainingRuntimeSpec.template.spec.replicatedJobs[0].template.spec"
                  ".template")
    for path, patch in _trainer_patches(spec):
        patch_path = path
        for key, value in as_map(patch.get("spec")).items():
            if key not in ("containers", "initContainers"):
                pod[key] = value
                field_paths[key] = join(join(path, "spec"), key)
        labels.update(meta(patch, "labels"))
        annotations.update(meta(patch, "annotations"))
    trainer_tpl = PodTemplate(
        name="trainer", spec_path=join(patch_path, "spec"), metadata_path=join(patch_path, "metadata"), spec=pod,
        labels=labels, annotations=annotations, pods=nodes, field_paths=field_paths, lists_containers=False,
        role="a trainer pod",
        extra_containers=[ContainerRef("spec.trainer", "containers", container, "node",
                                       fields={"resources": "resourcesPerNode"})])
    notes: list[tuple[str, str, bool]] = []
    if runtime is None:
        trainer_tpl.unseen = f"{runtime_kind} `{runtime_name}`"
        if not trainer.get("resourcesPerNode"):
            trainer_tpl.gpus_from = trainer_tpl.unseen
        notes.append(("spec.runtimeRef", f"the trainer pods take their pod fields (tolerations, node selection, "
                      f"priority, labels{'' if trainer.get('resourcesPerNode') else ', GPUs'}) from {runtime_kind} "
                      f"`{runtime_name}`, which is not in the checked set; only spec.trainer and spec.runtimePatches "
                      "are checked here", False))
    batch = Batch((Setting("spec.activeDeadlineSeconds", spec.get("activeDeadlineSeconds")),), None,
                  what="the training job")
    return Extracted([trainer_tpl, *others], batch=batch, notes=notes, count_path="spec.trainer.numNodes")


# --------------------------------------------------------------------------------------------------
# Knative, Volcano


def _knative(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    template = as_map(spec.get("template"))
    annotations = meta(template, "annotations")
    maximum = _int_annotation(annotations, KNATIVE_MAX)
    lower = max((v for _, v in filter(None, (_int_annotation(annotations, KNATIVE_MIN),
                                              _int_annotation(annotations, KNATIVE_INITIAL)))), default=1)
    pods = maximum[1] if maximum is not None and maximum[1] > 0 else max(lower, 1)
    tpl = template_at("revision", "spec.template", template, pods=pods)
    notes = []
    if tpl is not None:
        tpl.replace_containers([ContainerRef(r.path, r.section, r.container, "user-container")  # Knative's name
                                for r in tpl.containers()])
        if maximum is None or maximum[1] == 0:
            notes.append(("spec.template.metadata.annotations",
                          f"no autoscaling.knative.dev/max-scale: Knative may scale this revision without bound; "
                          f"the quota look-ahead counts {pods} pod(s) — set max-scale to bound its GPUs", True))
    return Extracted(_one(tpl), notes=notes, count_path="spec.template.metadata.annotations")


def _volcano_job(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    templates: list[PodTemplate] = []
    deadlines: list[Setting] = []
    for i, task in enumerate(as_list(spec.get("tasks"))):
        task = as_map(task)
        name = str(task.get("name") or i)
        path = join(join("spec.tasks", i), "template")
        tpl = template_at(f"task `{name}`", path, task.get("template"), pods=count(task.get("replicas"), 1),
                          role=f"a pod of task `{name}`")
        if tpl is None:
            continue
        deadlines.append(Setting(join(tpl.spec_path, "activeDeadlineSeconds"), tpl.spec.get("activeDeadlineSeconds"),
                                 template=len(templates)))
        templates.append(tpl)
    batch = Batch(tuple(deadlines), Setting("spec.ttlSecondsAfterFinished", spec.get("ttlSecondsAfterFinished")),
                  what="each GPU task's pods")
    return Extracted(templates, batch=batch, count_path="spec.tasks")


# --------------------------------------------------------------------------------------------------
# Argo Workflows

ARGO_SCHEDULING = ("nodeSelector", "affinity", "tolerations")


def _argo_templates(wf: Mapping[str, Any], base: str, *, pods: int) -> tuple[list[PodTemplate], list[Setting],
                                                                             list[tuple[str, str, bool]]]:
    templates: list[PodTemplate] = []
    deadlines: list[Setting] = []
    notes: list[tuple[str, str, bool]] = []
    pod_meta = as_map(wf.get("podMetadata"))
    wf_volumes = as_list(wf.get("volumes"))
    for i, t in enumerate(as_list(wf.get("templates"))):
        t = as_map(t)
        tp = join(join(base, "templates"), i)
        refs: list[ContainerRef] = []
        main: list[tuple[str, Section, Mapping[str, Any]]] = []
        if isinstance(t.get("container"), Mapping):
            main.append((join(tp, "container"), "containers", t["container"]))
        if isinstance(t.get("script"), Mapping):
            main.append((join(tp, "script"), "containers", t["script"]))
        for k, c in enumerate(as_list(as_map(t.get("containerSet")).get("containers"))):
            if isinstance(c, Mapping):
                main.append((join(join(tp, "containerSet.containers"), k), "containers", c))
        if not main:
            continue  # steps, dag, resource, suspend, http, plugin: no pod of the user's
        refs = [ContainerRef(p, s, c, "main") for p, s, c in main]
        for key, section in (("sidecars", "containers"), ("initContainers", "initContainers")):
            refs += [ContainerRef(join(join(tp, key), k), section, c)  # type: ignore[arg-type]
                     for k, c in enumerate(as_list(t.get(key))) if isinstance(c, Mapping)]
        pod: dict[str, Any] = {}
        paths: dict[str, str] = {}
        for key in ARGO_SCHEDULING:
            if t.get(key):
                pod[key], paths[key] = t[key], join(tp, key)
            elif wf.get(key):
                pod[key], paths[key] = wf[key], join(base, key)
            else:
                paths[key] = join(tp, key)
        for key, wf_key in (("priorityClassName", "podPriorityClassName"), ("securityContext", "securityContext"),
                            ("schedulerName", "schedulerName")):
            if t.get(key):
                pod[key], paths[key] = t[key], join(tp, key)
            elif wf.get(wf_key):
                pod[key], paths[key] = wf[wf_key], join(base, wf_key)
            else:
                paths[key] = join(tp, key)
        for key in ("hostNetwork", "hostPID", "hostIPC", "dnsPolicy"):
            if key in wf:
                pod[key], paths[key] = wf[key], join(base, key)
        volumes = [*wf_volumes, *as_list(t.get("volumes"))]
        pod["volumes"] = volumes
        item_paths = {"volumes": [join(join(base, "volumes"), j) for j in range(len(wf_volumes))]
                      + [join(join(tp, "volumes"), j) for j in range(len(as_list(t.get("volumes"))))]}
        if t.get("activeDeadlineSeconds") is not None:
            pod["activeDeadlineSeconds"] = t["activeDeadlineSeconds"]
        labels = {**as_map(pod_meta.get("labels")), **meta(t, "labels")}
        annotations = {**as_map(pod_meta.get("annotations")), **meta(t, "annotations")}
        name = str(t.get("name") or i)
        tpl = PodTemplate(name=f"template `{name}`", spec_path=tp, metadata_path=join(tp, "metadata"), spec=pod,
                          labels=labels, annotations=annotations, pods=pods, extra_containers=refs,
                          field_paths=paths, item_paths=item_paths, lists_containers=False,
                          role=f"a pod of template `{name}`")
        deadline = t.get("activeDeadlineSeconds")
        deadlines.append(Setting(join(tp, "activeDeadlineSeconds") if deadline is not None
                                 else join(base, "activeDeadlineSeconds"),
                                 deadline if deadline is not None else wf.get("activeDeadlineSeconds"),
                                 template=len(templates)))
        for where, patch in ((join(tp, "podSpecPatch"), t.get("podSpecPatch")),
                             (join(base, "podSpecPatch"), wf.get("podSpecPatch"))):
            if patch:
                notes.append((where, f"podSpecPatch is applied by Argo when the pod of template `{name}` is "
                              "created and is not checked here: GPUs, tolerations or devices it adds are not "
                              "seen; set them in the template's fields instead", False))
        templates.append(tpl)
    return templates, deadlines, notes


def _argo_workflow(obj: Mapping[str, Any], spec: Mapping[str, Any], resolve: ObjectResolver | None) -> Extracted:
    kind = obj.get("kind")
    base = "spec.workflowSpec" if kind == "CronWorkflow" else "spec"
    wf = as_map(spec.get("workflowSpec")) if kind == "CronWorkflow" else spec
    runs = kind in ("Workflow", "CronWorkflow")
    templates, deadlines, notes = _argo_templates(wf, base, pods=1 if runs else 0)
    ref = as_map(wf.get("workflowTemplateRef"))
    if ref and not templates:
        ref_kind = "ClusterWorkflowTemplate" if ref.get("clusterScope") else "WorkflowTemplate"
        namespace = Resource.of(dict(obj)).namespace
        target = resolve(namespace, ref_kind, str(ref.get("name", ""))) if resolve is not None else None
        if isinstance(target, Mapping):
            templates, deadlines, more = _argo_templates(as_map(target.get("spec")), "spec", pods=1)
            owner = Resource.of(dict(target), default_namespace=namespace)
            for tpl in templates:
                tpl.resource = owner
            notes += more
            deadlines = [Setting(join(base, "activeDeadlineSeconds"), d.value if d.value is not None
                                 else wf.get("activeDeadlineSeconds"), d.template) for d in deadlines]
        else:
            notes.append((join(base, "workflowTemplateRef"), f"the workflow runs the templates of {ref_kind} "
                          f"`{ref.get('name')}`, which is not in the checked set: its pods are checked where that "
                          "template is", False))
    ttl_spec = as_map(wf.get("ttlStrategy"))
    ttl_value = ttl_spec.get("secondsAfterCompletion")
    if ttl_value is None and ttl_spec.get("secondsAfterSuccess") is not None \
            and ttl_spec.get("secondsAfterFailure") is not None:
        ttl_value = max(count(ttl_spec.get("secondsAfterSuccess"), 0), count(ttl_spec.get("secondsAfterFailure"), 0))
    batch = Batch(tuple(deadlines), Setting(join(base, "ttlStrategy.secondsAfterCompletion"), ttl_value),
                  what="the workflow", int_or_string=True) if runs else None
    return Extracted(templates, batch=batch, notes=notes, count_path=join(base, "templates"))


# --------------------------------------------------------------------------------------------------
# the table

Extractor = Callable[[Mapping[str, Any], Mapping[str, Any], ObjectResolver | None], Extracted]


def _core_for(kind: str) -> Extractor:
    return lambda obj, spec, resolve: _core(obj, kind, spec, resolve)


TABLE: dict[tuple[str, str], Extractor] = {
    ("", "Pod"): _core_for("Pod"),
    **{("apps", k): _core_for(k) for k in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")},
    **{("batch", k): _core_for(k) for k in ("Job", "CronJob")},
    ("argoproj.io", "Rollout"): _rollout,
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): _lws,
    (KSERVE, "InferenceService"): _inference_service,
    (KSERVE, "LLMInferenceService"): _llm_inference_service,
    (KSERVE, "LLMInferenceServiceConfig"): _llm_inference_service,
    (KSERVE, "ServingRuntime"): _serving_runtime,
    (KSERVE, "ClusterServingRuntime"): _serving_runtime,
    **{("ray.io", k): _kuberay for k in ("RayCluster", "RayService", "RayJob")},
    **{("kubeflow.org", k): _kubeflow_job for k in KUBEFLOW_REPLICA_SPECS},
    ("trainer.kubeflow.org", "TrainJob"): _train_job,
    ("trainer.kubeflow.org", "TrainingRuntime"): _training_runtime,
    ("trainer.kubeflow.org", "ClusterTrainingRuntime"): _training_runtime,
    ("jobset.x-k8s.io", "JobSet"): _jobset,
    ("serving.knative.dev", "Service"): _knative,
    ("serving.knative.dev", "Configuration"): _knative,
    ("batch.volcano.sh", "Job"): _volcano_job,
    **{("argoproj.io", k): _argo_workflow for k in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate",
                                                     "CronWorkflow")},
}
_BY_KIND: dict[str, Extractor] = {}
for (_group, _kind), _fn in TABLE.items():
    _BY_KIND.setdefault(_kind, _fn)  # the first (Kubernetes') kind of a name wins an apiVersion-less lookup
# kinds that exist only as templates for others: GPUs in them are decided where they are used
TEMPLATE_ONLY = frozenset({(KSERVE, "ServingRuntime"), (KSERVE, "ClusterServingRuntime"),
                           (KSERVE, "LLMInferenceServiceConfig"), ("trainer.kubeflow.org", "TrainingRuntime"),
                           ("trainer.kubeflow.org", "ClusterTrainingRuntime")})


def known(obj: Mapping[str, Any], group: str | None = None) -> Extractor | None:
    """The extractor of an object's kind: by API group and kind; an object without an API group (a bare
    ``v1``, or none) is looked up by kind alone."""
    kind = obj.get("kind")
    if not isinstance(kind, str):
        return None
    group = group_of(obj) if group is None else group
    found = TABLE.get((group, kind))
    if found is None and group == "":
        found = _BY_KIND.get(kind)
    return found


def is_template_only(obj: Mapping[str, Any]) -> bool:
    return (group_of(obj), str(obj.get("kind"))) in TEMPLATE_ONLY


# --------------------------------------------------------------------------------------------------
# generic search


def _is_container(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("name"), str) and isinstance(value.get("image"), str)


def _is_pod_spec(value: Any) -> bool:
    containers = value.get("containers") if isinstance(value, Mapping) else None
    return isinstance(containers, list) and bool(containers) and all(_is_container(c) for c in containers)


def find_generic(obj: Mapping[str, Any]) -> Extracted:
    """Pod-template-shaped objects anywhere in an object of a kind outside the table: a mapping whose
    ``spec`` is a pod spec (``containers``: a list of mappings with ``name`` and ``image``), or a bare
    pod spec. Each is checked at its real path, with a note. The walk is bounded in depth and size."""
    out = Extracted(generic=True)
    budget = [GENERIC_MAX_NODES]
    cut: list[str] = []  # where the walk stopped short

    def visit(value: Any, path: str, parent: Mapping[str, Any] | None, key: str | int | None, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or depth > GENERIC_MAX_DEPTH:
            if not cut:
                cut.append(path or "<root>")
            return
        if isinstance(value, Mapping):
            pods = count(parent.get("replicas"), 1) if parent is not None and key == "template" else 1
            if _is_pod_spec(value.get("spec")):
                tpl = template_at("template", path, value, pods=pods)
                if tpl is not None:
                    out.templates.append(tpl)
                    return
            if _is_pod_spec(value) and key != "spec":
                out.templates.append(PodTemplate(name="template", spec_path=path, metadata_path=join(path, "metadata"),
                                                 spec=value, labels={}, annotations={}, pods=pods))
                return
            for k, v in value.items():
                if depth == 0 and k in ("metadata", "status", "apiVersion", "kind"):
                    continue
                if isinstance(k, str) and isinstance(v, Mapping | list):
                    visit(v, join(path, k), value, k, depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping | list):
                    visit(item, join(path, i), parent, key, depth + 1)

    visit(obj, "", None, None, 0)
    if cut:
        out.notes.append((cut[0], f"{obj.get('kind')} is not a kind mlguard knows and is larger than the generic "
                          f"search reads ({GENERIC_MAX_NODES} fields, {GENERIC_MAX_DEPTH} levels deep): pod templates "
                          f"from {cut[0]} on are not checked; register the kind's template paths in the PolicySet's "
                          "spec.workloadKinds", False))
    for tpl in out.templates:
        where = tpl.spec_path
        out.notes.append((where, f"{obj.get('kind')} is not a kind mlguard knows: {where} was {GENERIC_NOTE} "
                          f"({tpl.pods} pod{'s' if tpl.pods != 1 else ''} counted); register the kind's template "
                          "paths in the PolicySet's spec.workloadKinds to check it exactly", False))
    return out


def find_templates(obj: Mapping[str, Any], *, resolve: ObjectResolver | None = None,
                   registered: Mapping[tuple[str, str], RegisteredKind] | None = None) -> Extracted:
    """The pod templates of any object: a registered kind, a kind in the table, else a generic search
    (never for Kubernetes' own API groups). Objects with no pod template yield none."""
    kind = obj.get("kind")
    group = group_of(obj)
    entry = registered.get((group, str(kind))) if registered else None
    if entry is not None:
        return entry.extract(obj)
    extractor = known(obj, group)
    if extractor is not None:
        spec = obj.get("spec")
        found = extractor(obj, spec, resolve) if isinstance(spec, Mapping) else Extracted()
        found.template_only = (group, kind) in TEMPLATE_ONLY
        return found
    if group in BUILTIN_GROUPS:
        return Extracted()
    return find_generic(obj)


def parse_serve_config(text: Any) -> Any:
    """A RayService's ``serveConfigV2`` (YAML in a string), or None."""
    if not isinstance(text, str) or len(text) > 256 * 1024:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None
