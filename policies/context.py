"""What policies may know beyond the object: cluster facts and the admission request.

`policies` never talks to a cluster. Callers hand facts in through `ClusterFacts`: the CLI builds
`ManifestFacts` from the manifests of a pull request, the webhook builds one from its
list+watch caches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from policies.gpu import GpuConfig
from policies.model import EnforcementPoint, Resource
from policies.snapshot import ClusterSnapshot
from policies.workload import Workload, WorkloadConfig, extract

# A ConfigMap as a cache may keep it partly (webhook/cluster.py keeps at most so many keys of each): how many
# data keys were left out. A key that is not there may then be one of them: its value is unknown, not unset.
OMITTED_KEYS = "mlguard.io/omittedKeys"
# cluster-scoped kinds other objects refer to by name alone (a predictor's runtime, a TrainJob's runtime)
CLUSTER_SCOPED = frozenset({"ClusterServingRuntime", "ClusterTrainingRuntime", "ClusterWorkflowTemplate"})


class ClusterFacts(Protocol):
    """Cluster state a policy may consult. Every method answers from memory, never blocks."""

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """Labels of a namespace, or None when the namespace is unknown."""

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        """ResourceQuota objects of a namespace."""

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        """GPUs (by resource name / DRA quota name) held in a namespace by everything but ``exclude``."""

    def resolve_claim(self, namespace: str, name: str, is_template: bool) -> Mapping[str, Any] | None:
        """A ResourceClaim or ResourceClaimTemplate, for DRA GPU counting."""

    def resolve_object(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        """Another object of the same namespace (a Rollout's workloadRef Deployment)."""

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        """True when an Argo Rollout manages this object through workloadRef."""


@runtime_checkable
class QuotaKnowledge(Protocol):
    """Facts that can say they do not know a namespace's quotas (offline: the quota lives in a folder that
    was not checked). Facts without this method (the webhook's cluster cache) always know."""

    def quotas_known(self, namespace: str) -> bool:
        """False when a missing ResourceQuota may only be missing from these facts."""


@runtime_checkable
class ScaleKnowledge(Protocol):
    """Facts that know the KEDA ScaledObjects of a namespace (the CLI: those of the checked set and of the
    --cluster-facts snapshot; the webhook: its cache, when the cluster serves keda.sh). Facts without this method
    cannot tell (gpu-scale-to-zero then warns that it could not see them, never denies)."""

    def scaled_objects(self, namespace: str, target: str | None = None) -> Sequence[Mapping[str, Any]] | None:
        """The namespace's ScaledObjects (with ``target``: those whose scaleTargetRef.name is ``target``); None
        when they cannot be seen (KEDA's API absent, cache not synced). Read-only: never modify what it returns."""


@runtime_checkable
class NodeKnowledge(Protocol):
    """Facts that know Nodes (their labels and taints): the webhook's node cache, a cluster snapshot with
    nodes, Node objects in the checked set. Facts without this method know no node."""

    def node(self, name: str) -> Mapping[str, Any] | None:
        """The Node ``name`` (metadata.labels, spec.taints), or None when it is not known."""


def bound_node(spec: Mapping[str, Any], facts: ClusterFacts, gpu: GpuConfig) -> tuple[str, list[str] | None] | None:
    """A pod spec's ``nodeName`` and what makes that node a GPU node (`GpuConfig.node_marks`: empty for a node
    that is not one; None when the node is not known here). None when the spec names no node.

    A pod bound by ``nodeName`` skips the scheduler; the kubelet does not check NoSchedule taints, so a GPU
    taint does not keep it off a GPU node."""
    name = spec.get("nodeName")
    if not isinstance(name, str) or not name:
        return None
    node = facts.node(name) if isinstance(facts, NodeKnowledge) else None
    return name, (gpu.node_marks(node) if isinstance(node, Mapping) else None)


@dataclass(frozen=True)
class GpuIdleness:
    """How busy a running workload's GPUs have been (from DCGM exporter and kube-state-metrics, measured by
    the caller; policies only read it). ``idle_for_seconds``: every pod holding GPUs now has stayed below
    ``threshold_percent`` at least this long (0: some pod is busy). ``utilisation_percent`` is the mean over
    the window, None when no utilisation was measured for its pods (a MIG slice, no DCGM pod mapping)."""

    gpus: float
    idle_for_seconds: int
    utilisation_percent: float | None
    idle_gpu_hours: float | None
    gpu_hours: float
    window_seconds: int
    threshold_percent: float
    pods: tuple[str, ...] = ()


@runtime_checkable
class UtilisationKnowledge(Protocol):
    """Facts that know how busy running workloads' GPUs are (the audit's, fed from Prometheus)."""

    def gpu_utilisation_unknown(self) -> str | None:
        """Why GPU utilisation is not known at all (no Prometheus given, unreachable, no data); None when known."""

    def gpu_idleness(self, resource: Resource) -> GpuIdleness | None:
        """The workload's GPU idleness; None when none of its pods holds a GPU now."""


@dataclass
class StaticUtilisation:
    """`UtilisationKnowledge` from plain data: the audit's measurements, or a test case's."""

    by_resource: Mapping[Resource, GpuIdleness] = field(default_factory=dict)
    unknown: str | None = None

    def gpu_utilisation_unknown(self) -> str | None:
        return self.unknown

    def gpu_idleness(self, resource: Resource) -> GpuIdleness | None:
        return self.by_resource.get(resource)


class WithUtilisation:
    """Other cluster facts plus `UtilisationKnowledge` (every other question goes to ``facts``)."""

    def __init__(self, facts: ClusterFacts, utilisation: StaticUtilisation) -> None:
        self._facts = facts
        self._utilisation = utilisation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._facts, name)

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._facts.namespace_labels(namespace)

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return self._facts.quotas(namespace)

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        return self._facts.gpu_usage(namespace, exclude=exclude, gpu=gpu)

    def resolve_claim(self, namespace: str, name: str, is_template: bool) -> Mapping[str, Any] | None:
        return self._facts.resolve_claim(namespace, name, is_template)

    def resolve_object(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        return self._facts.resolve_object(namespace, kind, name)

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        return self._facts.referenced_by_rollout(namespace, kind, name)

    def gpu_utilisation_unknown(self) -> str | None:
        return self._utilisation.gpu_utilisation_unknown()

    def gpu_idleness(self, resource: Resource) -> GpuIdleness | None:
        return self._utilisation.gpu_idleness(resource)


@dataclass(frozen=True)
class RequestInfo:
    """Who asks for what, at admission. Absent in CI."""

    operation: str = "CREATE"
    user: str = ""
    groups: tuple[str, ...] = ()
    subresource: str = ""
    dry_run: bool = False

    @property
    def service_account(self) -> str | None:
        """``namespace/name`` when the user is a service account."""
        prefix = "system:serviceaccount:"
        if self.user.startswith(prefix):
            ns, _, name = self.user[len(prefix):].partition(":")
            return f"{ns}/{name}"
        return None


@dataclass
class EvalContext:
    """Everything a policy's check sees besides the workload and its params."""

    gpu: GpuConfig
    facts: ClusterFacts
    point: EnforcementPoint
    request: RequestInfo | None = None
    mutations: Mapping[str, Any] = field(default_factory=dict)
    environment: str | None = None
    keys: Any = None  # eval-gate public keys, set by the caller that owns them
    policyset: Any = None  # the PolicySet, so eval-gate can build its keyring from it


class EmptyFacts:
    """No cluster knowledge at all."""

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return None

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return []

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        return {}

    def resolve_claim(self, namespace: str, name: str, is_template: bool) -> Mapping[str, Any] | None:
        return None

    def resolve_object(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        return None

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        return False


# the kinds `ManifestFacts` reads beyond their identity (it keeps them whole; of the others only the identity and,
# through `load`, what it is given to hold)
INDEXED_KINDS = frozenset({"Namespace", "Node", "ResourceQuota", "ScaledObject"})


@dataclass(frozen=True, slots=True)
class Prepared:
    """One object as `ManifestFacts.add_prepared` indexes it."""

    resource: Resource
    held: Any                                 # the object, or what `load` turns back into it
    need: dict[str, Decimal] | None           # its steady-state GPUs under the facts' GpuConfig (None: when asked)
    indexed: Mapping[str, Any] | None         # the object itself, for the kinds the facts read (INDEXED_KINDS)
    rollout_ref: tuple[str, str, str] | None = None  # a Rollout's workloadRef: (namespace, kind, name)


class ManifestFacts(EmptyFacts):
    """Cluster facts taken from a set of manifests (a pull request's rendered overlays).

    Quotas and usage come from the same set: a PR that adds 16 GPUs to a namespace whose
    ResourceQuota in the repo allows 8 fails. Namespace labels come from Namespace objects in
    the set and from ``extra_labels`` (``--namespace-labels``).
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]] = (), *,
                 extra_labels: Mapping[str, Mapping[str, str]] | None = None,
                 default_namespace: str = "default", cluster: ClusterSnapshot | None = None,
                 workloads: WorkloadConfig | None = None, gpu: GpuConfig | None = None,
                 load: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        """``add`` indexes further objects. A caller that holds many objects in a compact form (`mlguard check`
        of 50,000 objects) passes that form to ``add(obj, held)`` and the function that turns it back into
        the object as ``load``: the facts then hold only the compact form of the objects they look up by name or
        count (workloads, claims, ConfigMaps) and load it again when asked. With ``gpu`` (the GpuConfig that
        `gpu_usage` will be asked with), each object's steady-state GPU need is worked out while it is at hand,
        so counting a namespace's usage loads nothing back."""
        self._cluster = cluster
        self._workloads = workloads  # the PolicySet's registered kinds, so their pods are counted exactly
        self._gpu = gpu
        self._load = load
        self._cluster_scoped: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._default_ns = default_namespace
        self._labels: dict[str, dict[str, str]] = {k: dict(v) for k, v in (extra_labels or {}).items()}
        self._by_key: dict[tuple[str, str, str], Any] = {}   # an object, or what `load` turns into it
        self._quotas: dict[str, list[Mapping[str, Any]]] = {}
        self._rollout_refs: set[tuple[str, str, str]] = set()
        self._scaled: dict[str, list[Mapping[str, Any]]] = {}
        self._scaled_names: dict[str, set[str]] = {}  # namespace -> the set's ScaledObject names (they win)
        self._scaled_by_target: dict[tuple[str, str], list[Mapping[str, Any]]] = {}  # (namespace, target name)
        self._usage_cache: dict[tuple[str, int], tuple[dict[str, Decimal], dict[Resource, dict[str, Decimal]]]] = {}
        # every object of a namespace: (resource, object or its held form, its GPU need under `gpu` or None)
        self._by_namespace: dict[str, list[tuple[Resource, Any, dict[str, Decimal] | None]]] = {}
        self._nodes: dict[str, Mapping[str, Any]] = {}
        for obj in objects:
            if isinstance(obj, Mapping):
                self.add(obj)

    def add(self, obj: Mapping[str, Any], held: Any = None) -> None:
        """Index one more object; ``held`` is what to keep of it instead (see the constructor)."""
        self.add_prepared(self.prepare(obj, held))

    def prepare(self, obj: Mapping[str, Any], held: Any = None) -> Prepared:
        """What `add_prepared` indexes of ``obj``, worked out while the object is at hand: a caller that may still
        drop it (a file that turns out not to parse to its end) prepares first and adds when it knows."""
        res = Resource.of(dict(obj), default_namespace=self._default_ns)
        need = self._need(obj, self._gpu) if self._gpu is not None else None
        indexed = res.kind in INDEXED_KINDS or res.kind in CLUSTER_SCOPED
        rollout_ref = None
        if res.kind == "Rollout":
            spec = obj.get("spec")
            ref = spec.get("workloadRef") if isinstance(spec, Mapping) else None
            if isinstance(ref, Mapping):
                rollout_ref = (res.namespace, str(ref.get("kind", "Deployment")), str(ref.get("name")))
        return Prepared(res, obj if held is None else held, need, obj if indexed else None, rollout_ref)

    def add_prepared(self, prepared: Prepared) -> None:
        res, kept, obj = prepared.resource, prepared.held, prepared.indexed
        self._usage_cache.clear()
        self._by_namespace.setdefault(res.namespace, []).append((res, kept, prepared.need))
        if prepared.rollout_ref is not None:
            self._rollout_refs.add(prepared.rollout_ref)
        if obj is None:
            self._by_key[(res.namespace, res.kind, res.name)] = kept
            return
        if obj.get("kind") == "Namespace":
            meta = obj.get("metadata")
            labels = meta.get("labels") if isinstance(meta, Mapping) else None
            if isinstance(labels, Mapping):
                self._labels.setdefault(res.name, {}).update({str(k): str(v) for k, v in labels.items()})
            return
        if obj.get("kind") == "Node" and str(obj.get("apiVersion", "v1")) == "v1":
            self._nodes[res.name] = obj
            return
        self._by_key[(res.namespace, res.kind, res.name)] = kept
        if res.kind in CLUSTER_SCOPED:
            self._cluster_scoped[(res.kind, res.name)] = obj
        if res.kind == "ResourceQuota":
            self._quotas.setdefault(res.namespace, []).append(obj)
        if res.kind == "ScaledObject" and res.group == "keda.sh":
            self._scaled.setdefault(res.namespace, []).append(obj)
            self._scaled_names.setdefault(res.namespace, set()).add(res.name)
            spec = obj.get("spec")
            ref = spec.get("scaleTargetRef") if isinstance(spec, Mapping) else None
            target = ref.get("name") if isinstance(ref, Mapping) else None
            self._scaled_by_target.setdefault((res.namespace, str(target)), []).append(obj)

    def _object(self, kept: Any) -> Mapping[str, Any] | None:
        if kept is None or isinstance(kept, Mapping) or self._load is None:
            return kept  # type: ignore[no-any-return]
        return self._load(kept)

    def _need(self, obj: Mapping[str, Any], gpu: GpuConfig) -> dict[str, Decimal] | None:
        """The object's GPUs at steady state, when they follow from the object alone; None when its extraction
        looks up another object (a workloadRef, a claim, a runtime: counted when asked, with every object known)
        or fails (then it fails where it is counted, as it would without this)."""
        looked_up = False

        def lookup(*_: Any) -> None:
            nonlocal looked_up
            looked_up = True

        try:
            workload = extract(obj, gpu=gpu, default_namespace=self._default_ns, resolve_claim=lookup,
                               resolve_object=lookup, config=self._workloads)
            need = workload.full_size_gpus(gpu, surge=False)
        except Exception:  # counted again when asked, and fails there as it always did
            return None
        return None if looked_up else need

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        labels = self._labels.get(namespace)
        if labels is None and self._cluster is not None:
            return self._cluster.namespace_labels(namespace)
        return labels

    def node(self, name: str) -> Mapping[str, Any] | None:
        """A Node of the set, else of the cluster snapshot (`mlguard facts` records nodes' labels and taints)."""
        found = self._nodes.get(name)
        if found is None and self._cluster is not None:
            return self._cluster.node(name)
        return found

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        """The set's ResourceQuotas of the namespace (what the pull request makes them), else the cluster's."""
        if namespace in self._quotas:
            return list(self._quotas[namespace])
        return self._cluster.quotas(namespace) if self._cluster is not None else []

    def quotas_known(self, namespace: str) -> bool:
        """True when these facts can tell the namespace's quotas: the set holds a ResourceQuota of it, or the
        cluster snapshot knows the namespace. Otherwise a missing quota may just live in another folder."""
        return namespace in self._quotas or (self._cluster is not None and self._cluster.knows(namespace))

    def resolve_claim(self, namespace: str, name: str, is_template: bool) -> Mapping[str, Any] | None:
        return self._object(self._by_key.get((namespace, "ResourceClaimTemplate" if is_template else "ResourceClaim",
                                              name)))

    def resolve_object(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        if kind in CLUSTER_SCOPED:
            return self._cluster_scoped.get((kind, name))
        return self._object(self._by_key.get((namespace, kind, name)))

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        return (namespace, kind, name) in self._rollout_refs

    def scaled_objects(self, namespace: str, target: str | None = None) -> Sequence[Mapping[str, Any]] | None:
        """The KEDA ScaledObjects of ``namespace`` (with ``target``: those whose scaleTargetRef.name it is), by
        target name from an index (a namespace of thousands of workloads and ScaledObjects stays linear).

        Without a cluster snapshot the checked set is all CI sees: its ScaledObjects, never None. With one, the
        set's plus the cluster's, the set's definition winning for a name both hold (the pull request changes it).
        When the snapshot could not list the cluster's (KEDA not served, not granted, an old file): None, unknown,
        unless the set itself holds ScaledObjects for ``target`` (those are what the pull request makes of it)."""
        mine: Sequence[Mapping[str, Any]] = (self._scaled_by_target.get((namespace, target), ()) if target is not None
                                             else self._scaled.get(namespace, ()))
        if self._cluster is None:
            return mine
        theirs = self._cluster.scaled_objects(namespace, target)
        if theirs is None:
            return mine if target is not None and mine else None
        defined = self._scaled_names.get(namespace, set())
        return [*mine, *(so for so in theirs if str((so.get("metadata") or {}).get("name")) not in defined)]

    def scale_source(self) -> str:
        """Where `scaled_objects` looks, for a finding's words."""
        return "in the checked set" if self._cluster is None else "in the checked set or the cluster facts"

    def _usage(self, namespace: str, gpu: GpuConfig) -> tuple[dict[str, Decimal], dict[Resource, dict[str, Decimal]]]:
        """The namespace's total steady-state GPU need and each workload's own share (computed once)."""
        key = (namespace, id(gpu))
        if key not in self._usage_cache:
            total: dict[str, Decimal] = {}
            own: dict[Resource, dict[str, Decimal]] = {}
            for res, kept, known in self._by_namespace.get(namespace, []):
                if self.referenced_by_rollout(res.namespace, res.kind, res.name):
                    continue  # counted through its Rollout
                need = known if known is not None and gpu is self._gpu else None
                if need is None:
                    obj = self._object(kept)
                    assert obj is not None
                    workload: Workload = extract(obj, gpu=gpu, default_namespace=self._default_ns,
                                                 resolve_claim=self.resolve_claim,
                                                 resolve_object=self.resolve_object, config=self._workloads)
                    # other workloads count at steady state: surge is only the reviewed workload's own
                    need = workload.full_size_gpus(gpu, surge=False)
                if need:
                    # one identity counts once, however many files define it (two overlays, a symlink):
                    # at the largest of its definitions
                    mine = own.setdefault(res, {})
                    for k, v in need.items():
                        mine[k] = max(mine.get(k, Decimal(0)), v)
            for need in own.values():
                for k, v in need.items():
                    total[k] = total.get(k, Decimal(0)) + v
            self._usage_cache[key] = (total, own)
        return self._usage_cache[key]

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        """What the other workloads of the set need at full size, plus, with a cluster snapshot, the GPUs of
        the namespace's running pods that belong to no workload of the set (those are replaced by the set's
        definitions when it syncs)."""
        total, own = self._usage(namespace, gpu)
        mine = own.get(exclude, {})
        out = {k: v - mine.get(k, Decimal(0)) for k, v in total.items()}
        if self._cluster is not None:
            defined = [r for r, _, _ in self._by_namespace.get(namespace, [])] + [exclude]
            for k, v in self._cluster.gpu_usage(namespace, exclude=defined, gpu=gpu).items():
                out[k] = out.get(k, Decimal(0)) + v
        return {k: v for k, v in out.items() if v > 0}
