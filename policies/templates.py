"""Pod templates as policies see them: a pod spec, its metadata, its containers, and where each sits.

Paths are the real field paths of the object under review (``spec.workerGroupSpecs[0].template.spec``),
so every finding names a field a person can open. Kinds whose pod spec is assembled from several places
(an Argo Workflow's template and workflow-level defaults, a TrainJob's trainer) say where each field
comes from through ``field_paths`` / ``ContainerRef.fields``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from policies.gpu import GpuConfig, container_gpus
from policies.model import Finding, Resource

Section = Literal["containers", "initContainers", "ephemeralContainers"]
SECTIONS: tuple[Section, ...] = ("containers", "initContainers", "ephemeralContainers")
NONE: Mapping[str, Any] = MappingProxyType({})  # a shared empty default (templates are made by the thousand)


def join(path: str, key: str | int) -> str:
    """Extend a dotted field path: ``join("spec", "containers")``, ``join(p, 0)`` -> ``p[0]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def as_map(value: Any) -> Mapping[str, Any]:
    """A mapping, or an empty one for anything else (objects arrive in every shape)."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def count(value: Any, default: int) -> int:
    """A non-negative int field, or ``default`` (numbers in strings are not counts in these APIs)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def meta(obj: Any, key: str) -> Mapping[str, str]:
    """``metadata.labels`` / ``metadata.annotations`` of an object or template, or empty."""
    return as_map(as_map(as_map(obj).get("metadata")).get(key))


@dataclass(slots=True)  # made by the thousand on every evaluation: slots, and no frozen __setattr__ detour
class ContainerRef:
    """One container of a pod template and where it sits.

    ``fields`` maps a container field to the key that holds it where the object spells it differently
    (a TrainJob's trainer keeps resources in ``resourcesPerNode``). ``supplied`` names the fields something
    else fills in when the container leaves them out, and ``supplied_by`` says what (a KServe ServingRuntime
    supplies the image of a model container; KServe's LLMInferenceServiceConfig presets the image, command
    and probes; KubeRay the probes of the Ray container): such a field missing is not a finding.
    """

    path: str
    section: Section
    container: Mapping[str, Any]
    default_name: str = "<unnamed>"
    fields: Mapping[str, str] = field(default_factory=lambda: NONE)
    supplied: frozenset[str] = frozenset()
    supplied_by: str | None = None

    @property
    def name(self) -> str:
        return str(self.container.get("name") or self.default_name)

    @property
    def sidecar(self) -> bool:
        return self.section == "initContainers" and self.container.get("restartPolicy") == "Always"

    @property
    def resources(self) -> Mapping[str, Any]:
        res = self.container.get("resources")
        return res if isinstance(res, dict | Mapping) else {}

    def fills(self, key: str) -> bool:
        """True when something else fills in ``key`` where the container leaves it out."""
        return key in self.supplied

    def at(self, key: str) -> str:
        """The path of a container field (``ref.at("resources")``)."""
        return join(self.path, self.fields.get(key, key))


@dataclass(slots=True)
class PodTemplate:
    """A pod spec inside a workload, with the path of its spec and metadata."""

    name: str                      # "pod", "template", "predictor", "leader", "worker", "head", ...
    spec_path: str                 # path of the pod spec ("spec", "spec.template.spec", "spec.predictor")
    metadata_path: str             # path of the template's metadata
    spec: Mapping[str, Any]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    pods: int = 1                  # pods of this template at full size (replicas x parallelism, max replicas, ...)
    surge: int = 0                 # extra pods during a rolling update
    extra_containers: list[ContainerRef] = field(default_factory=list)  # containers outside spec.<section> lists
    resource: Resource | None = None   # when the template belongs to another object (workloadRef)
    # where a field is when it is not under spec_path / metadata_path (shared empty defaults: no allocation)
    field_paths: Mapping[str, str] = field(default_factory=lambda: NONE)      # pod field -> its path
    item_paths: Mapping[str, list[str]] = field(default_factory=lambda: NONE)  # list field -> each item's path
    meta_paths: Mapping[str, str] = field(default_factory=lambda: NONE)       # "labels"/"annotations" -> path
    lists_containers: bool = True  # False when every container is in extra_containers (Argo, TrainJob)
    role: str = ""                 # how a message names one of these pods ("a worker pod of group `gpu`")
    unseen: str | None = None      # the object its other pod fields come from, when it is not in the checked set
    gpus_from: str | None = None   # an object not in the checked set that may give these pods GPUs
    _refs: list[ContainerRef] | None = field(default=None, repr=False, compare=False)  # every container, once

    def replace_containers(self, refs: list[ContainerRef]) -> None:
        """Make ``refs`` the template's containers (an extractor that names or annotates them)."""
        self.extra_containers, self.lists_containers, self._refs = list(refs), False, None

    def at(self, key: str) -> str:
        """The path of a pod spec field (``tpl.at("tolerations")``)."""
        return self.field_paths.get(key) or join(self.spec_path, key)

    def item_at(self, key: str, index: int) -> str:
        """The path of item ``index`` of a list field of the pod spec (``volumes``)."""
        paths = self.item_paths.get(key)
        if paths is not None and 0 <= index < len(paths):
            return paths[index]
        return join(self.at(key), index)

    def meta_at(self, key: str) -> str:
        """The path of ``labels`` / ``annotations`` (or a key below them) of the pod template."""
        head, _, rest = key.partition(".")
        base = self.meta_paths.get(head) or join(self.metadata_path, head)
        return join(base, rest) if rest else base

    def containers(self, *, sections: tuple[Section, ...] = SECTIONS) -> Iterator[ContainerRef]:
        """The template's containers of ``sections``: those outside the spec's lists first, then the lists in
        section order (worked out once: every policy walks them)."""
        refs = self._refs
        if refs is None:
            refs = self._refs = list(self._all_containers())
        if sections is SECTIONS:
            return iter(refs)
        return (r for r in refs if r.section in sections)

    def _all_containers(self) -> Iterator[ContainerRef]:
        extra = self.extra_containers
        for section in SECTIONS:
            yield from (c for c in extra if c.section == section)
        if not self.lists_containers:
            return
        spec, base = self.spec, self.spec_path
        for section in SECTIONS:
            items = spec.get(section)
            if not items or not isinstance(items, list):
                continue
            head = f"{base}.{section}" if base else section
            for i, container in enumerate(items):
                if isinstance(container, dict | Mapping):
                    yield ContainerRef(f"{head}[{i}]", section, container)

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


def template_at(name: str, path: str, template: Any, *, pods: int, surge: int = 0,
                extra_labels: Mapping[str, str] | None = None, role: str = "") -> PodTemplate | None:
    """A PodTemplateSpec (``metadata`` + ``spec``) at ``path``, or None when there is no pod spec there."""
    if not isinstance(template, Mapping):
        return None
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        return None
    labels = {**(extra_labels or {}), **meta(template, "labels")}
    return PodTemplate(name=name, spec_path=join(path, "spec"), metadata_path=join(path, "metadata"), spec=spec,
                       labels=labels, annotations=meta(template, "annotations"), pods=pods, surge=surge, role=role)


def pod_spec_at(name: str, path: str, spec: Any, *, pods: int, metadata_path: str,
                labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None,
                role: str = "") -> PodTemplate | None:
    """A bare PodSpec at ``path`` (KServe's LLMInferenceService.spec.template), or None."""
    if not isinstance(spec, Mapping):
        return None
    return PodTemplate(name=name, spec_path=path, metadata_path=metadata_path, spec=spec, labels=dict(labels or {}),
                       annotations=dict(annotations or {}), pods=pods, role=role)


def pod_field_finding(tpl: PodTemplate, path: str, message: str, *, note: bool = False) -> Finding:
    """A finding about a pod field (tolerations, node selection, priority, labels). When the template's
    other pod fields come from an object not in the checked set, the field may be set there: the finding
    says so and is at most a warning."""
    if tpl.unseen is None or note:
        return Finding(path, message, note=note, resource=tpl.resource)
    return Finding(path, f"{message} (unless {tpl.unseen}, which is not in the checked set, sets it)",
                   resource=tpl.resource, action="warn")

