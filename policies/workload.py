"""Pod specs from any workload: one extractor maps each kind to its pod template(s) and paths."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from policies.gpu import GpuConfig, claim_devices, container_gpus
from policies.model import Resource

Section = Literal["containers", "initContainers", "ephemeralContainers"]
# (namespace, name, is_template) -> the ResourceClaim / ResourceClaimTemplate object, or None
ClaimResolver = Callable[[str, str, bool], Mapping[str, Any] | None]
# (namespace, kind, name) -> the object, or None (used for Rollout workloadRef)
ObjectResolver = Callable[[str, str, str], Mapping[str, Any] | None]

MODEL_LABEL = "mlguard.io/model"
KSERVE_COMPONENTS = ("predictor", "transformer", "explainer")
# KServe predictor framework shorthands: each is a container-like spec.
KSERVE_FRAMEWORKS = ("model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml",
                     "lightgbm", "paddle", "huggingface")


def join(path: str, key: str | int) -> str:
    """Extend a dotted field path: ``join("spec", "containers")``, ``join(p, 0)`` -> ``p[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


@dataclass(frozen=True)
class ContainerRef:
    """One container of a pod template and where it sits."""

    path: str
    section: Section
    container: Mapping[str, Any]

    @property
    def name(self) -> str:
        # KServe runs a predictor's `model`/framework spec as the container `kserve-container`
        default = "kserve-container" if self.path.endswith(KSERVE_FRAMEWORKS) else "<unnamed>"
        return str(self.container.get("name", default))

    @property
    def sidecar(self) -> bool:
        return self.section == "initContainers" and self.container.get("restartPolicy") == "Always"

    @property
    def resources(self) -> Mapping[str, Any]:
        res = self.container.get("resources")
        return res if isinstance(res, Mapping) else {}


@dataclass
class PodTemplate:
    """A pod spec inside a workload, with the path of its spec and metadata."""

    name: str                      # "pod", "template", "predictor", "leader", "worker", ...
    spec_path: str                 # path of the pod spec ("spec", "spec.template.spec", "spec.predictor")
    metadata_path: str             # path of the template's metadata
    spec: Mapping[str, Any]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    pods: int = 1                  # pods of this template at full size (replicas, parallelism, group size)
    surge: int = 0                 # extra pods during a rolling update
    extra_containers: list[ContainerRef] = field(default_factory=list)  # KServe framework containers
    resource: Resource | None = None   # when the template belongs to another object (workloadRef)

    def containers(self, *, sections: tuple[Section, ...] = ("containers", "initContainers",
                                                             "ephemeralContainers")) -> Iterator[ContainerRef]:
        yield from (c for c in self.extra_containers if c.section in sections)
        for section in sections:
            items = self.spec.get(section) or []
            if not isinstance(items, list):
                continue
            for i, container in enumerate(items):
                if isinstance(container, Mapping):
                    yield ContainerRef(join(join(self.spec_path, section), i), section, container)

    def container_gpus(self, gpu: GpuConfig) -> dict[str, Decimal]:
        """GPUs one pod of this template holds: app containers and sidecars run together,
        regular init containers run alone before them (the larger need wins)."""
        running: dict[str, Decimal] = {}
        peak: dict[str, Decimal] = {}
        for ref in self.containers(sections=("containers", "initContainers")):
            need = container_gpus(ref.container, gpu)
            if ref.section == "containers" or ref.sidecar:
                for k, v in need.items():
                    running[k] = running.get(k, Decimal(0)) + v
            else:
                for k, v in need.items():
                    peak[k] = max(peak.get(k, Decimal(0)), v)
        for k, v in peak.items():
            running[k] = max(running.get(k, Decimal(0)), v)
        return running


@dataclass
class Workload:
    """An object with its pod templates, as policies see it."""

    resource: Resource
    obj: Mapping[str, Any]
    templates: list[PodTemplate]
    claim_gpus: dict[int, dict[str, Decimal]] = field(default_factory=dict)  # template index -> DRA GPUs
    # the part of claim_gpus from named ResourceClaims: one claim shared by every pod of the template
    shared_claim_gpus: dict[int, dict[str, Decimal]] = field(default_factory=dict)
    _memo: dict[tuple[str, int, int], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def labels(self) -> Mapping[str, str]:
        return _map(_map(self.obj.get("metadata")).get("labels"))

    @property
    def annotations(self) -> Mapping[str, str]:
        return _map(_map(self.obj.get("metadata")).get("annotations"))

    def pod_gpus(self, index: int, gpu: GpuConfig) -> dict[str, Decimal]:
        """GPUs one pod of template ``index`` holds: resources plus DRA claims (computed once)."""
        key = ("pod_gpus", index, id(gpu))
        if key not in self._memo:
            out = dict(self.templates[index].container_gpus(gpu))
            for k, v in self.claim_gpus.get(index, {}).items():
                out[k] = out.get(k, Decimal(0)) + v
            self._memo[key] = {k: v for k, v in out.items() if v > 0}
        return dict(self._memo[key])

    def uses_gpu(self, index: int, gpu: GpuConfig) -> bool:
        """True when any container (ephemeral ones included) or DRA claim of the template asks for a GPU."""
        key = ("uses_gpu", index, id(gpu))
        if key not in self._memo:
            self._memo[key] = bool(self.pod_gpus(index, gpu)) or bool(self.claim_gpus.get(index)) or any(
                container_gpus(ref.container, gpu) for ref in self.templates[index].containers())
        return bool(self._memo[key])

    def full_size_gpus(self, gpu: GpuConfig, *, surge: bool = True) -> dict[str, Decimal]:
        """GPUs the workload needs at full size, rolling-update surge included unless ``surge=False``
        (the steady state: what it holds when it is not rolling)."""
        total: dict[str, Decimal] = {}
        for i, tpl in enumerate(self.templates):
            pods = tpl.pods + (tpl.surge if surge else 0)
            shared = self.shared_claim_gpus.get(i, {})
            for k, v in self.pod_gpus(i, gpu).items():
                once = shared.get(k, Decimal(0))  # a named claim's devices are held once, however many pods
                total[k] = total.get(k, Decimal(0)) + (v - once) * pods + once
        return total

    def is_model_serving(self) -> bool:
        return any(MODEL_LABEL in tpl.labels for tpl in self.templates) or MODEL_LABEL in self.labels


def _map(value: Any) -> Mapping[str, Any]:
    """A mapping, or an empty one for anything else (objects arrive in every shape)."""
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


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


def _meta(obj: Mapping[str, Any], key: str) -> Mapping[str, str]:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    value = meta.get(key) if isinstance(meta, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _template(name: str, path: str, template: Any, *, pods: int, surge: int = 0) -> PodTemplate | None:
    if not isinstance(template, Mapping):
        return None
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        return None
    return PodTemplate(name=name, spec_path=join(path, "spec"), metadata_path=join(path, "metadata"),
                       spec=spec, labels=_meta(template, "labels"), annotations=_meta(template, "annotations"),
                       pods=pods, surge=surge)


def _kserve_component(obj: Mapping[str, Any], comp: str, spec: Mapping[str, Any]) -> PodTemplate | None:
    part = spec.get(comp)
    if not isinstance(part, Mapping):
        return None
    path = join("spec", comp)
    labels = {**_meta(obj, "labels"), **_map(part.get("labels"))}
    annotations = {**_meta(obj, "annotations"), **_map(part.get("annotations"))}
    replicas = _int(part.get("maxReplicas"), _int(part.get("minReplicas"), 1)) or 1
    tpl = PodTemplate(name=comp, spec_path=path, metadata_path="metadata", spec=part, labels=labels,
                      annotations=annotations, pods=replicas)
    for key in KSERVE_FRAMEWORKS:
        if isinstance(part.get(key), Mapping):
            tpl.extra_containers.append(ContainerRef(join(path, key), "containers", part[key]))
    return tpl


def pod_templates(obj: Mapping[str, Any], *, resolve_object: ObjectResolver | None = None) -> list[PodTemplate]:
    """The pod templates of any supported kind; unknown kinds have none."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return []
    if kind == "Pod":
        return [PodTemplate(name="pod", spec_path="spec", metadata_path="metadata", spec=spec,
                            labels=_meta(obj, "labels"), annotations=_meta(obj, "annotations"))]
    replicas = _int(spec.get("replicas"), 1)
    if kind == "Deployment":
        strategy = _map(spec.get("strategy"))
        surge = 0 if strategy.get("type") == "Recreate" else _surge(
            _map(strategy.get("rollingUpdate")).get("maxSurge"), replicas)
        found = _template("template", "spec.template", spec.get("template"), pods=replicas, surge=surge)
    elif kind in ("ReplicaSet", "StatefulSet"):
        found = _template("template", "spec.template", spec.get("template"), pods=replicas)
    elif kind == "DaemonSet":
        found = _template("template", "spec.template", spec.get("template"), pods=1)
    elif kind == "Job":
        found = _template("template", "spec.template", spec.get("template"),
                          pods=_int(spec.get("parallelism"), 1))
    elif kind == "CronJob":
        job = _map(_map(spec.get("jobTemplate")).get("spec"))
        found = _template("template", "spec.jobTemplate.spec.template", job.get("template"),
                          pods=_int(job.get("parallelism"), 1))
    elif kind == "Rollout":
        return _rollout_templates(obj, spec, replicas, resolve_object)
    elif kind == "InferenceService":
        return [t for c in KSERVE_COMPONENTS if (t := _kserve_component(obj, c, spec)) is not None]
    elif kind == "LeaderWorkerSet":
        lwt = _map(spec.get("leaderWorkerTemplate"))
        size = _int(lwt.get("size"), 1) or 1
        base = "spec.leaderWorkerTemplate"
        worker = _template("worker", join(base, "workerTemplate"), lwt.get("workerTemplate"),
                           pods=replicas * (size - 1 if lwt.get("leaderTemplate") else size))
        leader = _template("leader", join(base, "leaderTemplate"), lwt.get("leaderTemplate"), pods=replicas)
        return [t for t in (leader, worker) if t is not None]
    else:
        return []
    return [found] if found is not None else []


def _rollout_templates(obj: Mapping[str, Any], spec: Mapping[str, Any], replicas: int,
                       resolve_object: ObjectResolver | None) -> list[PodTemplate]:
    strategy = _map(spec.get("strategy"))
    canary = strategy.get("canary") if isinstance(strategy.get("canary"), Mapping) else None
    surge = _surge(canary.get("maxSurge"), replicas) if canary is not None else replicas  # blueGreen: 2x
    ref = spec.get("workloadRef")
    if isinstance(ref, Mapping) and not isinstance(spec.get("template"), Mapping):
        if resolve_object is None:
            return []
        namespace = Resource.of(dict(obj)).namespace
        target = resolve_object(namespace, str(ref.get("kind", "Deployment")), str(ref.get("name", "")))
        if not isinstance(target, Mapping):
            return []
        tpl = _template("workloadRef", "spec.template", _map(target.get("spec")).get("template"),
                        pods=replicas, surge=surge)
        if tpl is None:
            return []
        tpl.resource = Resource.of(dict(target), default_namespace=namespace)
        return [tpl]
    found = _template("template", "spec.template", spec.get("template"), pods=replicas, surge=surge)
    return [found] if found is not None else []


def extract(obj: Mapping[str, Any], *, gpu: GpuConfig, default_namespace: str = "default",
            resolve_claim: ClaimResolver | None = None,
            resolve_object: ObjectResolver | None = None) -> Workload:
    """Turn any object into a Workload: its templates and the GPUs its DRA claims hold."""
    resource = Resource.of(dict(obj), default_namespace=default_namespace)
    templates = pod_templates(obj, resolve_object=resolve_object)
    workload = Workload(resource=resource, obj=obj, templates=templates)
    for i, tpl in enumerate(templates):
        claims = tpl.spec.get("resourceClaims") or []
        if not isinstance(claims, list):
            continue
        devices: dict[str, Decimal] = {}
        shared: dict[str, Decimal] = {}
        for claim in claims:
            if not isinstance(claim, Mapping):
                continue
            nested = claim.get("source")
            source: Mapping[str, Any] = nested if isinstance(nested, Mapping) else claim
            name = source.get("resourceClaimName") or source.get("resourceClaimTemplateName")
            if not isinstance(name, str) or resolve_claim is None:
                continue
            is_template = "resourceClaimTemplateName" in source
            found = resolve_claim(resource.namespace, name, is_template)
            if not isinstance(found, Mapping):
                continue
            claim_spec = _map(found.get("spec"))
            if is_template:
                claim_spec = _map(claim_spec.get("spec"))
            for k, v in claim_devices(claim_spec, gpu).items():
                devices[k] = devices.get(k, Decimal(0)) + v
                if not is_template:
                    shared[k] = shared.get(k, Decimal(0)) + v
        if devices:
            workload.claim_gpus[i] = devices
        if shared:
            workload.shared_claim_gpus[i] = shared
    return workload
