"""Pod specs from any workload: one extractor maps each object to its pod template(s), their paths and
their multiplicity, and works out what each pod holds: GPU resources, DRA claims (resolved, or
"unknown" when they cannot be), GPU devices injected by annotation, and whether it serves a model.

The per-kind knowledge lives in ``policies.kinds``, model serving in ``policies.serving``, the template
data classes in ``policies.templates``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from policies.devices import InjectedDevice, injected_gpu_devices
from policies.gpu import GpuConfig, asks_for_gpu, claim_devices
from policies.kinds import (
    KSERVE_COMPONENTS,
    KSERVE_FRAMEWORKS,
    Batch,
    Extracted,
    ObjectResolver,
    RegisteredKind,
    find_templates,
    parse_serve_config,
)
from policies.model import Resource
from policies.serving import MODEL_LABEL, Serving, ServingConfig, detect
from policies.templates import ContainerRef, PodTemplate, Section, as_list, as_map, join

__all__ = ["KSERVE_COMPONENTS", "KSERVE_FRAMEWORKS", "MODEL_LABEL", "ClaimResolver", "ContainerRef", "ObjectResolver",
           "PodTemplate", "Section", "Workload", "WorkloadConfig", "extract", "join", "pod_templates"]

# (namespace, name, is_template) -> the ResourceClaim / ResourceClaimTemplate object, or None
ClaimResolver = Callable[[str, str, bool], Mapping[str, Any] | None]


@dataclass(frozen=True)
class WorkloadConfig:
    """What the PolicySet says about workloads: kinds it registers (``spec.workloadKinds``) and what
    counts as model serving (``spec.serving``)."""

    kinds: Mapping[tuple[str, str], RegisteredKind] = field(default_factory=dict)
    serving: ServingConfig = field(default_factory=ServingConfig)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> WorkloadConfig:
        kinds = {}
        for entry in as_list(spec.get("workloadKinds")):
            if isinstance(entry, Mapping):
                registered = RegisteredKind.from_spec(entry)
                kinds[(registered.group, registered.kind)] = registered
        serving = spec.get("serving")
        return cls(kinds=kinds, serving=ServingConfig.from_spec(serving if isinstance(serving, Mapping) else None))


DEFAULT_CONFIG = WorkloadConfig()


@dataclass(slots=True)
class Workload:
    """An object with its pod templates, as policies see it."""

    resource: Resource
    obj: Mapping[str, Any]
    templates: list[PodTemplate]
    claim_gpus: dict[int, dict[str, Decimal]] = field(default_factory=dict)  # template index -> DRA GPUs
    # the part of claim_gpus from named ResourceClaims: one claim shared by every pod of the template
    shared_claim_gpus: dict[int, dict[str, Decimal]] = field(default_factory=dict)
    # template index -> pod claim name -> True (GPU claim), False (no GPU), None (could not be resolved)
    claim_states: dict[int, dict[str, bool | None]] = field(default_factory=dict)
    # template index -> how each unresolved claim is named ("ResourceClaimTemplate `gpu`")
    unresolved_claims: dict[int, list[str]] = field(default_factory=dict)
    batch: Batch | None = None
    count_path: str | None = None
    generic: bool = False
    template_only: bool = False  # a runtime/config whose templates other objects run
    _memo: dict[tuple[str, int, int], Any] = field(default_factory=dict, repr=False, compare=False)
    # what serving and notes are worked out from, on first use (quota usage extracts every object of a
    # namespace and needs neither)
    _found: Extracted = field(default_factory=Extracted, repr=False, compare=False)
    _config: WorkloadConfig | None = field(default=None, repr=False, compare=False)
    _gpu: GpuConfig | None = field(default=None, repr=False, compare=False)

    @property
    def serving(self) -> Serving | None:
        """Why the workload serves a model, which templates serve, and the model (None: not model serving)."""
        key = ("serving", 0, 0)
        if key not in self._memo:
            self._memo[key] = None if self.template_only else detect(  # a runtime or preset serves nothing
                self.obj, self.templates, kind_serving=self._found.serving,
                config=(self._config or DEFAULT_CONFIG).serving, serve_config=self._serve_config())
        found: Serving | None = self._memo[key]
        return found

    def _serve_config(self) -> Any:
        spec = as_map(self.obj.get("spec"))
        return parse_serve_config(spec.get("serveConfigV2")) if self.obj.get("kind") == "RayService" else None

    @property
    def notes(self) -> list[tuple[str, str]]:
        """(path, message) the extractor wants the reader to see: a generic template, an unresolved claim or
        runtime, a podSpecPatch, an unbounded autoscaler."""
        key = ("notes", 0, 0)
        if key not in self._memo:
            gpu = self._gpu or GpuConfig()
            uses = any(self.uses_gpu(i, gpu) for i in range(len(self.templates)))
            out = [(p, m) for p, m, gpu_only in self._found.notes if uses or not gpu_only]
            for i, claims in self.unresolved_claims.items():
                if not self.uses_gpu(i, gpu):
                    out.append((join(self.templates[i].spec_path, "resourceClaims"),
                                f"resource claim {', '.join(claims)} could not be resolved: whether these pods hold "
                                "GPUs is unknown; include the claim in the checked set"))
            self._memo[key] = out
        return list(self._memo[key])

    @property
    def labels(self) -> Mapping[str, str]:
        return as_map(as_map(self.obj.get("metadata")).get("labels"))

    @property
    def annotations(self) -> Mapping[str, str]:
        return as_map(as_map(self.obj.get("metadata")).get("annotations"))

    def pod_gpus(self, index: int, gpu: GpuConfig) -> dict[str, Decimal]:
        """GPUs one pod of template ``index`` holds: resources plus DRA claims (computed once)."""
        key = ("pod_gpus", index, id(gpu))
        if key not in self._memo:
            out = dict(self.templates[index].container_gpus(gpu))
            for k, v in self.claim_gpus.get(index, {}).items():
                out[k] = out.get(k, Decimal(0)) + v
            self._memo[key] = {k: v for k, v in out.items() if v > 0}
        return dict(self._memo[key])

    def injected(self, index: int) -> list[tuple[ContainerRef, list[InjectedDevice]]]:
        """Containers of template ``index`` that pod annotations hand GPU devices (CDI, GKE)."""
        key = ("injected", index, 0)
        if key not in self._memo:
            tpl = self.templates[index]
            devices = injected_gpu_devices(tpl.annotations)
            out = []
            if devices:
                for ref in tpl.containers():
                    mine = [d for d in devices if d.container is None or d.container == ref.name]
                    if mine:
                        out.append((ref, mine))
            self._memo[key] = out
        return list(self._memo[key])

    def uses_gpu(self, index: int, gpu: GpuConfig) -> bool:
        """True when any container (ephemeral ones included) asks for a GPU (a zero quantity is none), a DRA
        claim of the template is a GPU claim, or an annotation injects GPU devices into the pod."""
        key = ("uses_gpu", index, id(gpu))
        if key not in self._memo:
            tpl = self.templates[index]  # asking for a GPU covers holding one: one pass over the containers
            self._memo[key] = (bool(self.claim_gpus.get(index))
                               or any(asks_for_gpu(ref.container, gpu) for ref in tpl.containers())
                               or bool(self.injected(index)))
        return bool(self._memo[key])

    def gpu_unknown(self, index: int, gpu: GpuConfig) -> str | None:
        """Why it cannot be told whether template ``index`` holds a GPU (None when it can): a DRA claim not
        in the checked set, or a runtime whose GPUs are set by the objects that use it."""
        if self.uses_gpu(index, gpu):
            return None
        claims = self.unresolved_claims.get(index)
        if claims:
            return f"resource claim {', '.join(claims)} could not be resolved (not in the checked set)"
        if self.templates[index].gpus_from:
            return f"its GPUs may be set by {self.templates[index].gpus_from}, which is not in the checked set"
        if self.template_only and self.templates[index].pods == 0:  # a ModelMesh runtime runs pods of its own
            return "it is a template: the objects that use it may add GPUs"
        return None

    def full_size_gpus(self, gpu: GpuConfig, *, surge: bool = True) -> dict[str, Decimal]:
        """GPUs the workload needs at full size, rolling-update surge included unless ``surge=False``
        (the steady state: what it holds when it is not rolling)."""
        total: dict[str, Decimal] = {}
        for i, tpl in enumerate(self.templates):
            pods = tpl.pods + (tpl.surge if surge else 0)
            if pods <= 0:
                continue
            shared = self.shared_claim_gpus.get(i, {})
            for k, v in self.pod_gpus(i, gpu).items():
                once = shared.get(k, Decimal(0))  # a named claim's devices are held once, however many pods
                total[k] = total.get(k, Decimal(0)) + (v - once) * pods + once
        return total

    def is_model_serving(self) -> bool:
        return self.serving is not None

    def serving_templates(self) -> list[PodTemplate]:
        return [self.templates[i] for i in self.serving.templates] if self.serving is not None else []


def pod_templates(obj: Mapping[str, Any], *, resolve_object: ObjectResolver | None = None,
                  config: WorkloadConfig | None = None) -> list[PodTemplate]:
    """The pod templates of any object (a kind outside the table: found by a generic search)."""
    return find_templates(obj, resolve=resolve_object, registered=(config or DEFAULT_CONFIG).kinds).templates


def _claim_name(claim: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The ResourceClaim or ResourceClaimTemplate a pod claim refers to (both the 1.26-1.27 ``source`` form and
    the flat form of later versions)."""
    nested = claim.get("source")
    source: Mapping[str, Any] = nested if isinstance(nested, Mapping) else claim
    name = source.get("resourceClaimName") or source.get("resourceClaimTemplateName")
    return (name if isinstance(name, str) and name else None), "resourceClaimTemplateName" in source


def _resolve_claims(workload: Workload, gpu: GpuConfig, resolve_claim: ClaimResolver | None) -> None:
    namespace = workload.resource.namespace
    for i, tpl in enumerate(workload.templates):
        devices: dict[str, Decimal] = {}
        shared: dict[str, Decimal] = {}
        states: dict[str, bool | None] = {}
        unresolved: list[str] = []
        for claim in as_list(tpl.spec.get("resourceClaims")):
            if not isinstance(claim, Mapping):
                continue
            pod_name = str(claim.get("name", ""))
            name, is_template = _claim_name(claim)
            kind = "ResourceClaimTemplate" if is_template else "ResourceClaim"
            found = resolve_claim(namespace, name, is_template) if name and resolve_claim is not None else None
            if not isinstance(found, Mapping):
                states[pod_name] = None
                unresolved.append(f"`{pod_name}` ({kind} `{name}`)" if name else f"`{pod_name}`")
                continue
            claim_spec = as_map(found.get("spec"))
            if is_template:
                claim_spec = as_map(claim_spec.get("spec"))
            mine = claim_devices(claim_spec, gpu)
            states[pod_name] = bool(mine)
            for k, v in mine.items():
                devices[k] = devices.get(k, Decimal(0)) + v
                if not is_template:
                    shared[k] = shared.get(k, Decimal(0)) + v
        if devices:
            workload.claim_gpus[i] = devices
        if shared:
            workload.shared_claim_gpus[i] = shared
        if states:
            workload.claim_states[i] = states
        if unresolved:
            workload.unresolved_claims[i] = unresolved


def extract(obj: Mapping[str, Any], *, gpu: GpuConfig, default_namespace: str = "default",
            resolve_claim: ClaimResolver | None = None, resolve_object: ObjectResolver | None = None,
            config: WorkloadConfig | None = None) -> Workload:
    """Turn any object into a Workload: its templates, the GPUs its DRA claims hold, and whether it serves."""
    config = config or DEFAULT_CONFIG
    resource = Resource.of(dict(obj), default_namespace=default_namespace)
    found = find_templates(obj, resolve=resolve_object, registered=config.kinds)
    workload = Workload(resource=resource, obj=obj, templates=found.templates, batch=found.batch,
                        count_path=found.count_path, generic=found.generic, template_only=found.template_only,
                        _found=found, _config=config, _gpu=gpu)
    _resolve_claims(workload, gpu, resolve_claim)
    return workload
