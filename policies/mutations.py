"""What the mutating webhook adds to GPU Pods, and the notes `mlguard check` prints about it.

Only Pods are mutated (controllers' templates stay as git has them; Argo CD would otherwise show
them OutOfSync forever). Every mutation is idempotent and happens only where it is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.gpu import GpuConfig
from policies.workload import PodTemplate, Workload


@dataclass(frozen=True)
class Mutation:
    what: str         # "tolerations", "nodeClass", "runtimeClassName"
    path: str         # field path in the template that will change
    message: str


def tolerates(tolerations: Any, taint: Mapping[str, str]) -> bool:
    """Kubernetes toleration semantics for one taint."""
    for tol in tolerations or []:
        if not isinstance(tol, Mapping):
            continue
        effect_ok = not tol.get("effect") or tol.get("effect") == taint.get("effect")
        if tol.get("operator") == "Exists":
            if (not tol.get("key") or tol.get("key") == taint["key"]) and effect_ok:
                return True
        elif tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", "") and effect_ok:
            return True
    return False


def selected_node_classes(spec: Mapping[str, Any], label: str) -> list[str] | None:
    """GPU classes a pod spec selects via nodeSelector or required node affinity; None when it selects none."""
    selector = spec.get("nodeSelector") or {}
    if isinstance(selector, Mapping) and label in selector:
        return [str(selector[label])]
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    classes: list[str] = []
    found = False
    for term in affinity.get("nodeSelectorTerms") or []:
        for expr in (term or {}).get("matchExpressions") or []:
            if expr.get("key") == label and expr.get("operator") == "In":
                found = True
                classes.extend(str(v) for v in expr.get("values") or [])
    return classes if found else None


def _toleration(taint: Mapping[str, str]) -> dict[str, str]:
    tol = {"key": taint["key"], "operator": "Exists"}
    if taint.get("effect"):
        tol["effect"] = taint["effect"]
    return tol


def planned_for_template(tpl: PodTemplate, *, uses_gpu: bool, mutations: Mapping[str, Any],
                         gpu: GpuConfig) -> list[Mutation]:
    """Mutations admission would apply to a pod made from this template."""
    if not uses_gpu:
        return []
    out = []
    if mutations.get("tolerations"):
        missing = [t for t in gpu.taints if not tolerates(tpl.spec.get("tolerations"), t)]
        if missing:
            keys = ", ".join(f"{t['key']}:{t.get('effect', '')}" for t in missing)
            out.append(Mutation("tolerations", f"{tpl.spec_path}.tolerations",
                                f"toleration for {keys} will be added at admission"))
    node_class = mutations.get("defaultNodeClass")
    if node_class and selected_node_classes(tpl.spec, gpu.node_label) is None:
        out.append(Mutation("nodeClass", f"{tpl.spec_path}.nodeSelector",
                            f"nodeSelector {gpu.node_label}={node_class} will be added at admission"))
    runtime = mutations.get("runtimeClassName")
    if runtime and not tpl.spec.get("runtimeClassName"):
        out.append(Mutation("runtimeClassName", f"{tpl.spec_path}.runtimeClassName",
                            f"runtimeClassName {runtime} will be set at admission"))
    return out


def planned_mutations(workload: Workload, *, mutations: Mapping[str, Any], gpu: GpuConfig) -> list[Mutation]:
    return [m for i, tpl in enumerate(workload.templates)
            for m in planned_for_template(tpl, uses_gpu=workload.uses_gpu(i, gpu), mutations=mutations, gpu=gpu)]


def mutate_pod(pod: Mapping[str, Any], *, mutations: Mapping[str, Any], gpu: GpuConfig,
               uses_gpu: bool) -> dict[str, Any]:
    """A mutated deep copy of a Pod; unchanged when nothing is needed (a second pass is a no-op)."""
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    spec = out.get("spec")
    if not uses_gpu or not isinstance(spec, dict):
        return out
    if mutations.get("tolerations"):
        tolerations = spec.get("tolerations")
        if not isinstance(tolerations, list):
            tolerations = []
        for taint in gpu.taints:
            if not tolerates(tolerations, taint):
                tolerations.append(_toleration(taint))
        if tolerations:
            spec["tolerations"] = tolerations
    node_class = mutations.get("defaultNodeClass")
    if node_class and selected_node_classes(spec, gpu.node_label) is None:
        current = spec.get("nodeSelector")
        selector: dict[str, Any] = current if isinstance(current, dict) else {}
        selector[gpu.node_label] = node_class
        spec["nodeSelector"] = selector
    runtime = mutations.get("runtimeClassName")
    if runtime and not spec.get("runtimeClassName"):
        spec["runtimeClassName"] = runtime
    return out


def mutate_admitted_pod(pod: Mapping[str, Any], policyset: Any, *, facts: Any = None) -> dict[str, Any]:
    """The webhook's entry point: mutate a Pod under a PolicySet (DRA claims resolved through ``facts``)."""
    from policies.workload import extract

    workload = extract(pod, gpu=policyset.gpu, resolve_claim=getattr(facts, "resolve_claim", None))
    uses_gpu = bool(workload.templates) and workload.uses_gpu(0, policyset.gpu)
    return mutate_pod(pod, mutations=policyset.mutations, gpu=policyset.gpu, uses_gpu=uses_gpu)
