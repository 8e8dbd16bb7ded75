"""gpu-quota: GPU namespaces have a GPU ResourceQuota, and a workload fits it at full size.

Look-ahead: the GPUs a workload needs at full size (replicas x per-pod GPUs, plus rolling-update
surge) must fit the namespace's quota minus what the other workloads use. The facts come through
`ClusterFacts`: offline from the manifest set (`ManifestFacts`), online from the webhook's caches.
Offline (`mlguard check`), a namespace whose ResourceQuotas are not in the checked set (nor in a
`--cluster-facts` snapshot) gets no deny: an audit finding with the full-size need and how to make the
check real. Findings carry the full-size GPU count as their amount, so that `new_violations` can tell a
grown need from an old one on UPDATE.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from policies.context import EvalContext, QuotaKnowledge
from policies.model import Finding
from policies.owners import controlled
from policies.quantity import QuantityError, format_quantity, parse_quantity
from policies.registry import Policy, register
from policies.workload import PodTemplate, Workload

# Where the pod count of each kind is set: the look-ahead violation points there (a stable path,
# so that UPDATE comparisons by path work whether or not the field is present).
COUNT_PATHS = {
    "Deployment": "spec.replicas", "ReplicaSet": "spec.replicas", "StatefulSet": "spec.replicas",
    "Rollout": "spec.replicas", "LeaderWorkerSet": "spec.replicas", "Job": "spec.parallelism",
    "CronJob": "spec.jobTemplate.spec.parallelism", "Pod": "spec", "InferenceService": "spec.predictor",
    "DaemonSet": "spec.template.spec",
}
_NON_POD_SCOPES = {"VolumeAttributesClass"}


def quota_keys(name: str) -> tuple[str, str]:
    """The ResourceQuota `spec.hard` keys that limit a GPU resource (or DRA quota name)."""
    return f"requests.{name}", name


def quota_limit(quota: Mapping[str, Any], name: str) -> tuple[Decimal, str] | None:
    """The tightest limit a quota sets on ``name``, with the key that sets it; None when it sets none."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    if not isinstance(hard, Mapping):
        return None
    best: tuple[Decimal, str] | None = None
    for key in quota_keys(name):
        if key not in hard:
            continue
        try:
            value = parse_quantity(hard[key])
        except QuantityError:
            continue
        if best is None or value < best[0]:
            best = (value, key)
    return best


def _scope_holds(scope: str, spec: Mapping[str, Any], operator: str = "Exists",
                 values: list[str] | None = None) -> bool:
    """Kubernetes quota scope semantics for one pod spec."""
    if scope == "PriorityClass":
        name = spec.get("priorityClassName")
        if operator == "In":
            return name in (values or [])
        if operator == "NotIn":
            return name not in (values or [])
        return bool(name) if operator == "Exists" else not name
    if scope in ("Terminating", "NotTerminating"):
        deadline = spec.get("activeDeadlineSeconds")
        base = isinstance(deadline, int) and deadline >= 0
        base = base if scope == "Terminating" else not base
    elif scope in ("BestEffort", "NotBestEffort"):
        containers = [c for s in ("containers", "initContainers") for c in spec.get(s) or []
                      if isinstance(c, Mapping)]
        best_effort = not any((c.get("resources") or {}).get(k) for c in containers for k in ("requests", "limits"))
        base = best_effort if scope == "BestEffort" else not best_effort
    elif scope == "CrossNamespacePodAffinity":
        affinity = spec.get("affinity") or {}
        terms = [t for kind in ("podAffinity", "podAntiAffinity") for mode in (
            "requiredDuringSchedulingIgnoredDuringExecution", "preferredDuringSchedulingIgnoredDuringExecution")
            for t in ((affinity.get(kind) or {}).get(mode) or [])]
        terms = [t.get("podAffinityTerm", t) for t in terms if isinstance(t, Mapping)]
        base = any(isinstance(t, Mapping) and (t.get("namespaces") or "namespaceSelector" in t) for t in terms)
    elif scope in _NON_POD_SCOPES:
        base = False
    else:
        base = True  # a scope this version does not know: assume it applies (the stricter reading)
    return not base if operator == "DoesNotExist" else base


def quota_applies(quota: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """True when a ResourceQuota's scopes cover pods of this spec."""
    qspec = quota.get("spec") or {}
    for scope in qspec.get("scopes") or []:
        if not _scope_holds(str(scope), spec):
            return False
    for expr in ((qspec.get("scopeSelector") or {}).get("matchExpressions") or []):
        if isinstance(expr, Mapping) and not _scope_holds(str(expr.get("scopeName")), spec,
                                                          str(expr.get("operator", "Exists")), expr.get("values")):
            return False
    return True


def scoped(quota: Mapping[str, Any]) -> bool:
    qspec = quota.get("spec") or {}
    return bool(qspec.get("scopes") or (qspec.get("scopeSelector") or {}).get("matchExpressions"))


@dataclass(frozen=True)
class Need:
    """GPUs of one resource name a workload needs at full size, per template."""

    name: str
    parts: tuple[tuple[PodTemplate, Decimal], ...]  # (template, GPUs per pod)

    def total(self, templates: list[PodTemplate] | None = None) -> Decimal:
        keep = None if templates is None else {id(t) for t in templates}
        return sum(((t.pods + t.surge) * n for t, n in self.parts if keep is None or id(t) in keep), Decimal(0))

    def breakdown(self) -> str:
        out = []
        for tpl, per_pod in self.parts:
            pods = f"{tpl.pods} pod{'s' if tpl.pods != 1 else ''}"
            if tpl.surge:
                pods = f"({pods} + {tpl.surge} surge)"
            label = f"{tpl.name}: " if len(self.parts) > 1 else ""
            out.append(f"{label}{pods} x {format_quantity(per_pod)}")
        return " + ".join(out)


@dataclass(frozen=True)
class Over:
    """The quota a need overflows the most."""

    quota: Mapping[str, Any]
    key: str
    hard: Decimal
    used: Decimal | None  # None for a scoped quota: usage is known per namespace, not per scope
    left: Decimal
    part: Decimal


@register
class GpuQuota(Policy):
    id = "gpu-quota"
    title = "GPU namespaces have a GPU quota, and workloads fit it at full size"
    severity = "high"
    # 1.1: offline without the namespace's quotas, an audit finding instead of a deny; 1.2: every kind counted at
    # full size (Ray autoscaling, JobSet, TrainJob, LLMInferenceService, Knative...)
    version = "1.3.0"
    runbook = "runbooks/gpu-quota-exhausted.md"
    description = (
        "A namespace that runs GPU pods has a ResourceQuota limiting each GPU resource it uses (requests.<name> or "
        "<name>; DRA: <class>.deviceclass.resource.k8s.io/devices). Look-ahead: the GPUs a workload needs at full "
        "size (replicas x per-pod GPUs, plus rolling-update surge) fit the namespace's quota minus what other "
        "workloads use; offline the quotas and usage come from the manifest set, online from the cluster. A "
        "scoped quota (priority class, Terminating, ...) is checked against its hard limit only, as usage is "
        "known per namespace, not per scope. Each kind counts its own way: Ray worker groups at maxReplicas when "
        "autoscaling (and a RayService twice during a NewCluster upgrade), JobSets replicas x parallelism, TrainJobs "
        "numNodes x resourcesPerNode, Kubeflow jobs every replica (elastic ones at maxReplicas), LLMInferenceServices "
        "replicas x the parallelism size, Knative revisions at max-scale; runtimes and configs count where they run.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "requireQuota": {"type": "boolean",
                             "description": "Deny a GPU workload in a namespace without a GPU ResourceQuota."},
            "lookAhead": {"type": "boolean",
                          "description": "Check that the workload fits the quota at full size."},
        },
    }
    defaults = {"requireQuota": True, "lookAhead": True}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        res = workload.resource
        if ctx.facts.referenced_by_rollout(res.namespace, res.kind, res.name):
            return  # its pods are the Rollout's: checked (and counted) there
        if controlled(workload.obj, res.namespace, ctx):
            # a ReplicaSet of a Deployment, a Job of a CronJob, a pod of either: the owner looks ahead (an owner
            # reference is believed only from the controller itself or with the owner known: policies.owners)
            return
        needs = self._needs(workload, ctx)
        if not needs:
            return
        path = workload.count_path or COUNT_PATHS.get(res.kind) or (
            workload.templates[0].spec_path if len(workload.templates) == 1 else "spec")
        if ctx.point == "ci" and isinstance(ctx.facts, QuotaKnowledge) and not ctx.facts.quotas_known(res.namespace):
            # offline, without the namespace's ResourceQuota: say what it needs, never deny as if it knew
            for need in needs:
                yield self._unknown(workload, need, path)
            return
        quotas = [q for q in ctx.facts.quotas(res.namespace) if isinstance(q, Mapping)]
        usage: dict[str, Decimal] | None = None
        for need in needs:
            templates = [t for t, _ in need.parts]
            limiting = [(q, lim) for q in quotas if (lim := quota_limit(q, need.name)) is not None]
            scoped_to = [(q, lim, [t for t in templates if quota_applies(q, t.spec)]) for q, lim in limiting]
            covered = {id(t) for _, _, in_scope in scoped_to for t in in_scope}
            if any(id(t) not in covered for t in templates) and params["requireQuota"]:
                yield self._missing(workload, need, bool(limiting))
            if not params["lookAhead"]:
                continue
            worst: Over | None = None
            for quota, (hard, key), in_scope in scoped_to:
                if not in_scope:
                    continue
                if usage is None and not scoped(quota):
                    usage = ctx.facts.gpu_usage(res.namespace, exclude=res, gpu=ctx.gpu)
                used = None if scoped(quota) else (usage or {}).get(need.name, Decimal(0))
                left = hard - (used or 0)
                part = need.total(in_scope)
                if part > left and (worst is None or left - part < worst.left - worst.part):
                    worst = Over(quota, key, hard, used, left, part)
            if worst is not None:
                yield self._over(workload, need, path, worst)

    @staticmethod
    def _needs(workload: Workload, ctx: EvalContext) -> list[Need]:
        parts: dict[str, list[tuple[PodTemplate, Decimal]]] = {}
        for i, tpl in enumerate(workload.templates):
            if tpl.pods + tpl.surge <= 0:
                continue  # a runtime or config: its pods are counted where they run
            for name, per_pod in workload.pod_gpus(i, ctx.gpu).items():
                parts.setdefault(name, []).append((tpl, per_pod))
        return [Need(name, tuple(p)) for name, p in sorted(parts.items())]

    @staticmethod
    def _unknown(workload: Workload, need: Need, path: str) -> Finding:
        ns = workload.resource.namespace
        return Finding(path, f"{workload.resource.kind} `{workload.resource.name}` needs "
                             f"{format_quantity(need.total())} {need.name} at full size ({need.breakdown()}); the "
                             f"ResourceQuotas of namespace `{ns}` are not in the checked manifests, so whether it "
                             f"fits is not known offline: check the folder that holds them too (`mlguard check "
                             f"platform/ apps/`), or pass --cluster-facts FILE written by `mlguard facts "
                             f"--kubeconfig ...`", action="audit", amount=need.total(),
                       identity=f"{need.name}: quota unknown")

    @staticmethod
    def _missing(workload: Workload, need: Need, scoped_only: bool) -> Finding:
        ns = workload.resource.namespace
        key = quota_keys(need.name)[0] if ".deviceclass.resource.k8s.io/" not in need.name else need.name
        why = (f"the ResourceQuotas of namespace `{ns}` that limit {need.name} are scoped to other pods"
               if scoped_only else f"no ResourceQuota in namespace `{ns}` limits {need.name}")
        return Finding("metadata.namespace",
                       f"{workload.resource.kind} `{workload.resource.name}` uses {need.name} but "
                       f"{why}; add a ResourceQuota to `{ns}` with spec.hard.{key} set to the GPUs the namespace may "
                       f"use (this workload alone takes {format_quantity(need.total())} at full size)",
                       amount=need.total(), identity=f"{need.name}: no quota")

    @staticmethod
    def _over(workload: Workload, need: Need, path: str, over: Over) -> Finding:
        ns = workload.resource.namespace
        qname = (over.quota.get("metadata") or {}).get("name", "<unnamed>")
        total = need.total()
        if over.used is None:
            room = f"ResourceQuota `{qname}` (scoped) allows {format_quantity(over.hard)} ({over.key})"
        else:
            left = format_quantity(max(over.left, Decimal(0)))
            room = (f"ResourceQuota `{qname}` allows {format_quantity(over.hard)} ({over.key}) and other workloads "
                    f"in `{ns}` use {format_quantity(over.used)}, leaving {left}")
        scope = "" if over.part == total else f", {format_quantity(over.part)} of them in the quota's scope"
        return Finding(path, f"{workload.resource.kind} `{workload.resource.name}` needs {format_quantity(total)} "
                             f"{need.name} at full size ({need.breakdown()}{scope}) but {room}; lower the replicas, "
                             f"the GPUs per pod or the rolling-update surge (maxSurge), or raise the quota",
                       amount=total, identity=f"{need.name}: over ResourceQuota {qname}")
