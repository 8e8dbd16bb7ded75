"""The audit: what already runs in a cluster, judged at enforcement point ``audit``.

Read-only. Discovery first: of the kinds mlguard understands (the extractor's table in policies/kinds.py
and the PolicySet's ``spec.workloadKinds``), those the API server serves, each at the first version that
serves it (the group's preferred version first); a kind the cluster does not serve is skipped quietly.
Then every object of every served kind is listed, page by page (``limit``/``continue``; a continue token
that expired, 410 Gone, lists that kind again from the start), with namespaces and ResourceQuotas for the
facts the policies read (namespace labels, quota look-ahead).

An object whose controller (an ownerReference with ``controller: true``) is itself listed, with the same
uid, is judged through that controller: a Deployment's ReplicaSets and their Pods, a CronJob's Jobs, the
Deployment a KServe InferenceService made. Only a controller that exists counts, so a reference to
nothing exempts nothing; the residue (an object created with a reference to a real controller's uid, which
its controller then releases or deletes) is judged through that controller until it does.

GPU idleness for ``gpu-idle`` comes from Prometheus (``rollouts.report.idle_workloads``), per controller
as kube-state-metrics' ``kube_pod_owner`` names it; it is attributed up the same controller chain to the
object the audit judges. Without Prometheus the policy says so (an error result), never a pass.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from policies.context import ClusterFacts, GpuIdleness, ManifestFacts, StaticUtilisation, WithUtilisation
from policies.engine import Evaluated, Resolutions, evaluate_object
from policies.kinds import TABLE
from policies.model import Resource
from policies.owners import CHAIN_KINDS
from policies.policyset import PolicySet
from policies.snapshot import ClusterSnapshot
from webhook.facts import trim_owner, trim_pod

Obj = dict[str, Any]
PAGE = 500
GPU_IDLE = "gpu-idle"
# kinds listed for the facts, not judged
FACT_KINDS = (("", "v1", "Namespace", "namespaces", False), ("", "v1", "ResourceQuota", "resourcequotas", True))


class AuditError(Exception):
    """The cluster could not be read as the audit needs (said in one line, with the request)."""


@dataclass(frozen=True)
class ServedKind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


class Api:
    """GET (and the report writer's PATCH/DELETE) through the kubernetes client's transport, as raw JSON,
    counting requests (the benchmark reports them)."""

    def __init__(self, api_client: client.ApiClient, *, timeout: tuple[float, float] = (5, 60)) -> None:
        self.client = api_client
        self.timeout = timeout
        self.requests: dict[str, int] = {}

    def call(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: str | None = None,
             content_type: str | None = None) -> Any:
        self.requests[method] = self.requests.get(method, 0) + 1
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if hasattr(self.client, "param_serialize"):  # kubernetes >= 35: the new generator's two steps
            request = self.client.param_serialize(method=method, resource_path=path, query_params=list(query),
                                                  header_params=headers, body=body, auth_settings=["BearerToken"])
            resp = self.client.call_api(*request, _request_timeout=self.timeout)
            data = resp.read()
            if not 200 <= resp.status < 300:
                exc = ApiException(status=resp.status, reason=resp.reason)
                exc.body = data
                raise exc
        else:  # older clients raise ApiException themselves
            legacy: Any = self.client.call_api
            resp = legacy(path, method, query_params=list(query), header_params=headers, body=body,
                                   auth_settings=["BearerToken"], _preload_content=False,
                                   _return_http_data_only=True, _request_timeout=self.timeout)
            data = resp.data
        return orjson.loads(data) if data else None

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> Any:
        return self.call("GET", path, query=query)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def wanted_kinds(policyset: PolicySet) -> set[tuple[str, str]]:
    """(group, kind) of every kind mlguard understands: the extractor's table and the PolicySet's own."""
    return set(TABLE) | set(policyset.workloads.kinds)


def discover(api: Api, wanted: set[tuple[str, str]]) -> list[ServedKind]:
    """The wanted kinds the API server serves, each once, at the first version serving it (preferred first)."""
    groups: dict[str, list[str]] = {"": ["v1"]}
    body = api.get("/apis")
    for group in body.get("groups") or []:
        name = group.get("name")
        if name not in {g for g, _ in wanted}:
            continue
        versions = [v.get("version") for v in group.get("versions") or [] if v.get("version")]
        preferred = (group.get("preferredVersion") or {}).get("version")
        groups[name] = ([preferred] if preferred in versions else []) + [v for v in versions if v != preferred]
    found: dict[tuple[str, str], ServedKind] = {}
    for group, versions in groups.items():
        kinds = {k for g, k in wanted if g == group}
        for version in versions:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                resources = api.get(path).get("resources") or []
            except ApiException as exc:
                if exc.status in (404, 503):  # listed in /apis but not (or not yet) served: skipped
                    continue
                raise
            for r in resources:
                kind, plural = r.get("kind"), str(r.get("name", ""))
                if kind in kinds and "/" not in plural and "list" in (r.get("verbs") or []) \
                        and (group, kind) not in found:
                    found[(group, kind)] = ServedKind(group, version, kind, plural, bool(r.get("namespaced")))
    return sorted(found.values(), key=lambda s: (s.group, s.kind))


def list_all(api: Api, kind: ServedKind, *, namespace: str | None = None, page: int = PAGE,
             max_restarts: int = 3) -> Iterator[Obj]:
    """Every object of a kind, page by page; a page whose continue token expired (410) starts the kind
    over (at most ``max_restarts`` times). Items get their kind and apiVersion (list items carry none)."""
    for _ in range(max_restarts + 1):
        token: str | None = None
        seen: list[Obj] = []
        try:
            while True:
                query = [("limit", str(page))] + ([("continue", token)] if token else [])
                body = api.get(kind.path(namespace), query)
                for item in body.get("items") or []:
                    if isinstance(item, dict):
                        seen.append(slim(item, kind))
                token = (body.get("metadata") or {}).get("continue") or None
                if not token:
                    yield from seen
                    return
        except ApiException as exc:
            if exc.status == 410:
                continue
            raise
    raise AuditError(f"listing {kind.plural}.{kind.group or 'core'}: the continue token expired "
                     f"{max_restarts + 1} times in a row (the list changes faster than it can be read)")


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(item: Obj, kind: ServedKind) -> Obj:
    """A listed object as the audit keeps it: its kind and apiVersion set (list items carry none), without
    what no policy reads and what doubles its size: managedFields, kubectl's last-applied copy, and the
    status of anything but a Pod or a ResourceQuota (GPU usage reads a pod's phase, the quota look-ahead a
    quota's usage)."""
    item["kind"], item["apiVersion"] = kind.kind, kind.api_version
    meta = item.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
    if kind.kind not in ("Pod", "ResourceQuota"):
        item.pop("status", None)
    return item


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


Key = tuple[str, str, str]  # namespace, kind, name


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(obj.get("kind")), str(meta.get("name"))


@dataclass
class Listed:
    """What the audit read: the judged objects (controllers), and how owned objects map to them."""

    objects: list[Obj] = field(default_factory=list)            # judged: no listed controller
    owned: dict[Key, Key] = field(default_factory=dict)          # an owned object -> its listed controller
    cluster_scoped: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) of cluster-scoped objects
    namespaces: list[Obj] = field(default_factory=list)
    quotas: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)                # trimmed, for GPU usage
    owners: list[Obj] = field(default_factory=list)              # owner-chain links, trimmed (policies.owners)
    kinds: list[ServedKind] = field(default_factory=list)
    skipped_kinds: list[tuple[str, str]] = field(default_factory=list)  # wanted but not served
    forbidden: list[str] = field(default_factory=list)  # served, but RBAC refused the list: not audited

    def top(self, key: Key) -> Key:
        """The judged object an object belongs to (itself when it has no listed controller)."""
        seen = {key}
        while key in self.owned:
            key = self.owned[key]
            if key in seen:  # a cycle of references: stop where it closes
                break
            seen.add(key)
        return key


def read_cluster(api: Api, policyset: PolicySet, *, namespace: str | None = None, page: int = PAGE) -> Listed:
    """List every served workload kind, namespaces and quotas; split judged objects from owned ones."""
    wanted = wanted_kinds(policyset)
    kinds = discover(api, wanted)
    out = Listed(kinds=kinds, skipped_kinds=sorted(wanted - {(k.group, k.kind) for k in kinds}))
    everything: list[Obj] = []
    uids: dict[Key, str] = {}
    for kind in kinds:
        if namespace and not kind.namespaced:
            continue  # one namespace: its objects only
        try:
            objects = list(list_all(api, kind, namespace=namespace, page=page))
        except ApiException as exc:
            if exc.status != 403:
                raise
            out.forbidden.append(f"{kind.plural}.{kind.group or 'core'}")  # said loudly by the caller
            continue
        for obj in objects:
            k = key_of(obj)
            uids[k] = str(_meta(obj).get("uid") or "")
            if not kind.namespaced:
                out.cluster_scoped.add((kind.kind, k[2]))
            if kind.kind == "Pod" and kind.group == "":
                out.pods.append(trim_pod(obj))
            elif kind.group == "apps" and kind.kind in CHAIN_KINDS:
                out.owners.append(trim_owner(obj, kind=kind.kind))
            everything.append(obj)
    for obj in everything:
        ref = controller_ref(obj)
        if ref is not None:
            ns = key_of(obj)[0]
            owner = (ns, str(ref.get("kind")), str(ref.get("name")))
            if owner not in uids and ns:  # a namespaced object may be controlled by a cluster-scoped one
                owner = ("", owner[1], owner[2])
            if owner in uids and uids[owner] and uids[owner] == str(ref.get("uid") or ""):
                out.owned[key_of(obj)] = owner
                continue
        out.objects.append(obj)
    ns_kind, quota_kind = (ServedKind(g, v, k, p, n) for g, v, k, p, n in FACT_KINDS)
    if namespace:
        try:
            out.namespaces = [api.get(f"/api/v1/namespaces/{namespace}")]
        except ApiException as exc:
            if exc.status != 404:
                raise
            raise AuditError(f"namespace {namespace} does not exist") from exc
    else:
        out.namespaces = list(list_all(api, ns_kind, page=page))
    out.quotas = list(list_all(api, quota_kind, namespace=namespace, page=page))
    return out


def facts_for(listed: Listed, policyset: PolicySet) -> ManifestFacts:
    """Namespace labels, quotas and GPU usage as the webhook's cache would give them: the judged objects at
    full size plus the running pods that belong to none of them (by the webhook's walk up their controllers, by
    uid, through the listed ReplicaSets, StatefulSets and Deployments). KEDA ScaledObjects are not listed here:
    gpu-scale-to-zero says it could not see them."""
    snapshot = ClusterSnapshot({
        "namespaces": [{"name": str(_meta(n).get("name")), "labels": dict(_meta(n).get("labels") or {})}
                       for n in listed.namespaces],
        "resourceQuotas": [{"apiVersion": "v1", "kind": "ResourceQuota",
                            "metadata": {"name": _meta(q).get("name"), "namespace": _meta(q).get("namespace")},
                            "spec": q.get("spec") or {}, "status": q.get("status") or {}} for q in listed.quotas],
        "pods": listed.pods, "owners": listed.owners})
    return ManifestFacts(listed.objects, cluster=snapshot, workloads=policyset.workloads)


# ---- GPU idleness -----------------------------------------------------------------------------------
def utilisation_for(listed: Listed, workloads: Sequence[Any], *, window_seconds: int,
                    threshold_percent: float) -> StaticUtilisation:
    """`rollouts.report.WorkloadIdle` rows (per controller of GPU pods, as kube_pod_owner names it)
    attributed to the judged objects: a ReplicaSet's to its Deployment (or Rollout), a Job's to its
    CronJob, and so on up the listed controllers. Several rows of one object (the old and new ReplicaSet
    of a rolling update) add their GPUs; it is idle only as long as all of them are."""
    grouped: dict[Key, list[Any]] = {}
    for w in workloads:
        top = listed.top((w.namespace, w.owner_kind, w.owner_name))
        grouped.setdefault(top, []).append(w)
    judged = {key_of(o): o for o in listed.objects}
    by_resource: dict[Resource, GpuIdleness] = {}
    for top, rows in grouped.items():
        obj = judged.get(top)
        if obj is None:
            continue  # a controller the audit does not judge (not listed, or in another namespace)
        holding = [r for r in rows if r.gpus_now > 0]
        if not holding:
            continue
        measured = [r for r in rows if r.utilisation_pct is not None and r.gpu_hours > 0]
        hours = sum(r.gpu_hours for r in measured)
        by_resource[Resource.of(obj, default_namespace=top[0])] = GpuIdleness(
            gpus=sum(r.gpus_now for r in holding),
            idle_for_seconds=min(r.idle_for_seconds for r in holding) if all(r.idle_now for r in holding) else 0,
            utilisation_percent=sum(r.utilisation_pct * r.gpu_hours for r in measured) / hours if hours else None,
            idle_gpu_hours=sum(r.idle_gpu_hours or 0.0 for r in measured) if measured else None,
            gpu_hours=sum(r.gpu_hours for r in rows), window_seconds=window_seconds,
            threshold_percent=threshold_percent, pods=tuple(sorted({p for r in rows for p in r.pods})))
    return StaticUtilisation(by_resource=by_resource)


def gpu_idle_params(policyset: PolicySet) -> Mapping[str, Any] | None:
    """gpu-idle's params when the PolicySet turns it on for the audit anywhere, else None."""
    config = policyset.policy_config(GPU_IDLE)
    if config is None:
        return None
    from policies.registry import all_policies

    return {**all_policies()[GPU_IDLE].defaults, **(config.get("params") or {})}


IdleReader = Callable[[Mapping[str, Any]], tuple[list[Any] | None, str | None]]


def prometheus_idle_reader(url: str | None, policyset: PolicySet, *, timeout: float = 60,
                           end: dt.datetime | None = None, step_seconds: int = 60) -> IdleReader:
    """Reads `idle_workloads` from Prometheus at gpu-idle's threshold, grace period and window, ending now
    (or at ``end``); returns (rows, None), or (None, why) when it cannot."""
    def read(params: Mapping[str, Any]) -> tuple[list[Any] | None, str | None]:
        if not url:
            return None, "no Prometheus was given to the audit (mlguard audit --prometheus URL)"
        from policies.library.gpu_idle import seconds
        from rollouts.errors import AnalysisError
        from rollouts.report import ReportSettings, idle_workloads
        from rollouts.sources import Deadline
        from rollouts.sources.prometheus import PrometheusSource

        try:
            settings = ReportSettings(window_seconds=seconds(str(params["window"])), step_seconds=step_seconds,
                                      idle_threshold=float(params["utilisationBelowPercent"]),
                                      grace_seconds=seconds(str(params["gracePeriod"])),
                                      gpu_resources=tuple(policyset.gpu.resource_names))
            rows = idle_workloads(PrometheusSource(url, timeout=min(timeout, 30)), settings,
                                  deadline=Deadline(timeout), end=end)
        except AnalysisError as exc:
            return None, f"Prometheus at {url} could not answer: {exc}"
        if not rows:
            return None, (f"Prometheus at {url} has no GPU requests from kube-state-metrics "
                          f"(kube_pod_container_resource_requests) in the last {params['window']}")
        return rows, None
    return read


# ---- one audit ------------------------------------------------------------------------------------------
@dataclass
class Judged:
    obj_key: Key
    uid: str
    resource_version: str
    cluster_scoped: bool
    outcome: Evaluated


@dataclass
class AuditRun:
    """One audit's outcome."""

    judged: list[Judged]
    listed: Listed
    policyset: PolicySet
    started: dt.datetime
    seconds: float
    requests: int
    utilisation_unknown: str | None = None


def run_audit(api: Api, policyset: PolicySet, *, namespace: str | None = None, own_namespace: str | None = None,
              idle: IdleReader | None = None, page: int = PAGE) -> AuditRun:
    """Read the cluster, judge every controller at point ``audit``."""
    started, clock = dt.datetime.now(dt.UTC), time.monotonic()
    listed = read_cluster(api, policyset, namespace=namespace, page=page)
    facts: ClusterFacts = facts_for(listed, policyset)
    unknown: str | None = None
    params = gpu_idle_params(policyset)
    if params is not None:
        from policies.library.gpu_idle import seconds

        rows, unknown = (idle or prometheus_idle_reader(None, policyset))(params)
        utilisation = (StaticUtilisation(unknown=unknown) if rows is None else
                       utilisation_for(listed, rows, window_seconds=seconds(str(params["window"])),
                                       threshold_percent=float(params["utilisationBelowPercent"])))
        facts = WithUtilisation(facts, utilisation)
    resolutions: Resolutions = {}
    judged = []
    for obj in listed.objects:
        k = key_of(obj)
        outcome = evaluate_object(obj, policyset, point="audit", facts=facts, own_namespace=own_namespace,
                                  resolutions=resolutions, default_namespace=k[0])
        meta = _meta(obj)
        judged.append(Judged(k, str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""),
                             (k[1], k[2]) in listed.cluster_scoped, outcome))
    return AuditRun(judged, listed, policyset, started, time.monotonic() - clock, api.total, unknown)
