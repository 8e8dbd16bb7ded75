"""Live cluster facts for the policies: list+watch caches through the kubernetes client.

`ClusterCache` implements `policies.context.ClusterFacts` from memory; no request ever waits on
the API server. One `Informer` thread per resource lists it, then watches from the list's
resourceVersion; when a watch ends or drops it resumes from the last resourceVersion it saw,
and when the API server answers 410 Gone (that version is too old) it lists again.

What is cached is the table `CACHED` (the ClusterRole in kustomize/base/webhook/rbac.yaml grants
list+watch on exactly these; adding a kind is one `Cached` entry and one RBAC rule):
namespaces (labels for match selectors and environments), pods (GPU usage), resourcequotas,
deployments, replicasets and statefulsets (a Rollout's ``workloadRef`` at admission, the pod
template a ``/scale`` is sized by, and which workload a pod belongs to), runtimeclasses (does
``mutations.runtimeClassName`` exist), nodes (labels and taints: is a pod's ``nodeName`` a GPU
node), configmaps (the value a container's ``NVIDIA_VISIBLE_DEVICES`` takes from one), and — when
the API has them — resource.k8s.io ResourceClaims and ResourceClaimTemplates (DRA GPUs) and KEDA's
keda.sh ScaledObjects (gpu-scale-to-zero: does a ScaledObject take this workload to zero; trimmed to
name, namespace, pause annotations, scaleTargetRef, minReplicaCount and idleReplicaCount). Where KEDA's
CRD is not installed that informer is absent and ``scaled_objects`` answers None: the policy then warns
that it could not see them. Secrets are never read: RBAC cannot grant a Secret's key names without
its values (a metadata-only list, PartialObjectMetadataList, shows key names only inside managedFields,
needs the same ``list secrets`` grant, and managedFields are the writer's to clear, so they prove
nothing; checked against the e2e kube-apiserver 1.20).

Each object is trimmed as it arrives (`Cached.trim`): metadata without managedFields and without
the kubectl last-applied annotation (a second copy of the object); a Pod keeps only what GPU
counting and ownership read (its containers' extended resources and DRA claims, its
resourceClaims, phase and owners): never other pods' env values, commands, volumes, labels or
annotations, and a terminated pod not at all. A Node keeps its name, labels and taints. A ConfigMap
keeps its name and its ``data`` keys, each value stripped and cut to `CONFIGMAP_VALUE_CHARS` (a
device list that matters is short: what decides is whether it is void, none or empty, which a cut
value still tells), at most `CONFIGMAP_MAX_KEYS` keys (the count of the others is kept, so a
lookup of one of them is "unknown", never "unset"); no binaryData (never in env), labels or
annotations. Repeated strings are interned.
tests/benchmarks/bench_cache.py measures it: 50,000 pods took 1.6 GiB kept whole, 0.1 GiB trimmed.

GPU usage: the GPUs of a namespace's non-terminated pods (phase not Succeeded or Failed), minus
the pods of the workload under review. A pod belongs to workload ``W`` when it is ``W`` itself,
when its controller is ``W``, or when its chain of controllers leads to ``W`` through cached ReplicaSets,
StatefulSets, Deployments and pods, each link with the uid its reference names (a Deployment's or a Rollout's pods,
a LeaderWorkerSet's leaders and workers): policies.owners walks it, for `mlguard check --cluster-facts` too.
Owners are matched by kind, name and (where the cache holds ``W``) uid, never by a name prefix: ``llm``
does not own ``llm-big-*``. The one owner matched by name alone is a CronJob's Job, ``W-<digits>``, which
the cache does not hold. A pod whose chain the cache cannot follow counts as someone else's: the
look-ahead is then stricter, never more lenient. Pods still Pending count: the quota holds them.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from policies.context import OMITTED_KEYS
from policies.gpu import GpuConfig
from policies.model import Resource
from policies.owners import CHAIN_KINDS, owned_by
from policies.workload import extract
from webhook import metrics
from webhook.logging import get_logger

log = get_logger("cluster")
TERMINATED_PHASES = ("Succeeded", "Failed")
DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")

Obj = dict[str, Any]
Trim = Callable[[Obj], Obj | None]   # None: the object is not kept
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
OWNER_FIELDS = ("apiVersion", "kind", "name", "uid", "controller")
# Pod annotations the webhook reads of another pod: a LeaderWorkerSet's group size (the /scale of a
# LeaderWorkerSet is sized by one of its pods; webhook.admission.LWS_SIZE_ANNOTATION).
POD_ANNOTATIONS = ("leaderworkerset.sigs.k8s.io/size",)
# What a cached ConfigMap keeps (trim_configmap): enough of a value to judge and show it, and a bound on keys.
CONFIGMAP_VALUE_CHARS = 64
CONFIGMAP_MAX_KEYS = 256


class RawWatch(watch.Watch):
    """A Watch that hands over the API's JSON objects as they came (no model classes).

    (``stream(..., deserialize=False)`` would do the same but loses the ``ERROR`` event's Status, so
    a 410 Gone could not be told from a dropped connection.)
    """

    def get_return_type(self, func: Callable[..., Any]) -> Any:
        return None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


class Informer:
    """One resource kept in memory by list + watch, in its own daemon thread."""

    def __init__(self, *, name: str, kind: str, api_version: str, list_fn: Callable[..., Any],
                 args: tuple[Any, ...] = (), optional: bool = False, watch_timeout: int = 300,
                 backoff: float = 1.0, trim: Trim | None = None, page: int = 500) -> None:
        self.name = name
        self.page = page
        self.trim = trim
        self.kind = kind
        self.api_version = api_version
        self.list_fn = list_fn
        self.args = args
        self.optional = optional
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.store: dict[str, dict[str, Obj]] = {}   # namespace ("" for cluster scope) -> name -> object
        self.synced = threading.Event()
        self.absent = False                          # an optional API the server does not serve
        self.resource_version: str | None = None
        self.lists = 0
        self.resumes = 0
        self.relists_410 = 0
        self.version = 0                             # bumped on every change (memo invalidation)
        self._stop = threading.Event()
        self._watch: RawWatch | None = None
        self.on_synced: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    # ---- store -------------------------------------------------------------------------------
    def _normalize(self, obj: Obj) -> Obj | None:
        kept = self.trim(obj) if self.trim is not None else obj
        if kept is not None:
            kept["kind"] = self.kind                # list items carry no kind/apiVersion
            kept["apiVersion"] = self.api_version
        return kept

    def _put(self, obj: Obj) -> None:
        kept = self._normalize(obj)
        if kept is None:   # no longer worth keeping (a pod that terminated)
            self._delete(obj)
            return
        meta = _meta(obj)
        self.store.setdefault(str(meta.get("namespace") or ""), {})[str(meta.get("name"))] = kept
        self.version += 1

    def _delete(self, obj: Obj) -> None:
        meta = _meta(obj)
        self.store.get(str(meta.get("namespace") or ""), {}).pop(str(meta.get("name")), None)
        self.version += 1

    def in_namespace(self, namespace: str) -> dict[str, Obj]:
        return self.store.get(namespace, {})

    # ---- list + watch -------------------------------------------------------------------------
    def _list(self) -> None:
        """List in pages (500 objects; fewer for kinds whose objects may be large), trimming each page as it
        arrives: the raw list is never held whole."""
        store: dict[str, dict[str, Obj]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page, "_preload_content": False, "_request_timeout": (5, 60)}
            if token:
                kwargs["_continue"] = token
            resp = self.list_fn(*self.args, **kwargs)
            body = orjson.loads(resp.data)   # 500 of bench_cache.py's pods: 28 ms to parse, json takes 47
            for obj in body.get("items") or []:
                kept = self._normalize(obj) if isinstance(obj, dict) else None
                if kept is not None:
                    meta = _meta(obj)
                    store.setdefault(str(meta.get("namespace") or ""), {})[str(meta.get("name"))] = kept
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
        self.store = store
        self.version += 1
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        self.lists += 1
        self.absent = False

    def _watch_once(self) -> None:
        w = RawWatch()
        self._watch = w
        kwargs: dict[str, Any] = {"timeout_seconds": self.watch_timeout, "allow_watch_bookmarks": True,
                                  "_request_timeout": (5, self.watch_timeout + 30)}
        if self.resource_version:
            kwargs["resource_version"] = self.resource_version
        for event in w.stream(self.list_fn, *self.args, **kwargs):
            if self._stop.is_set():
                w.stop()
                break
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, dict):
                continue
            rv = _meta(obj).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED"):
                self._put(obj)
            elif kind == "DELETED":
                self._delete(obj)
            if rv:
                self.resource_version = str(rv)

    def run(self) -> None:
        while not self._stop.is_set():
            if self.resource_version is None or not self.synced.is_set():
                try:
                    self._list()
                except ApiException as exc:
                    if self.optional and exc.status in (403, 404):
                        if not self.absent:
                            log.warning("optional resource not served; caching nothing for it",
                                        extra={"event": "cache_absent", "resource": self.name,
                                               "status": exc.status})
                        self.absent = True
                        self.synced.set()
                        if self.on_synced:
                            self.on_synced()
                        self._stop.wait(60)
                        continue
                    log.error("list failed", extra={"event": "cache_list_failed", "resource": self.name,
                                                    "status": exc.status, "reason": exc.reason})
                    self._stop.wait(self.backoff)
                    continue
                except Exception as exc:
                    log.error("list failed", extra={"event": "cache_list_failed", "resource": self.name,
                                                    "error": repr(exc)})
                    self._stop.wait(self.backoff)
                    continue
                self.synced.set()
                if self.on_synced:
                    self.on_synced()
                log.info("listed", extra={"event": "cache_listed", "resource": self.name,
                                          "resource_version": self.resource_version,
                                          "objects": sum(len(v) for v in self.store.values())})
            try:
                self._watch_once()
                self.resumes += 1  # the server ended the watch (timeout or dropped): resume from our version
            except ApiException as exc:
                if exc.status == 410:
                    self.relists_410 += 1
                    log.info("watch expired (410 Gone): listing again",
                             extra={"event": "cache_relist", "resource": self.name,
                                    "resource_version": self.resource_version})
                    self.resource_version = None  # the old view keeps serving while we re-list
                    try:
                        self._list()
                    except Exception as list_exc:
                        log.error("re-list failed", extra={"event": "cache_list_failed", "resource": self.name,
                                                           "error": repr(list_exc)})
                        self._stop.wait(self.backoff)
                    continue
                log.warning("watch failed", extra={"event": "cache_watch_failed", "resource": self.name,
                                                   "status": exc.status, "reason": exc.reason})
                self.resumes += 1
                self._stop.wait(self.backoff)
            except Exception as exc:  # dropped connection, protocol error: resume from the last version
                if self._stop.is_set():
                    break
                log.warning("watch dropped: resuming", extra={"event": "cache_watch_dropped",
                                                               "resource": self.name, "error": repr(exc),
                                                               "resource_version": self.resource_version})
                self.resumes += 1
                self._stop.wait(min(self.backoff, 0.2))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name=f"informer-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def status(self) -> dict[str, Any]:
        return {"synced": self.synced.is_set(), "absent": self.absent, "resourceVersion": self.resource_version,
                "lists": self.lists, "resumes": self.resumes, "relists410": self.relists_410}


# ---- what is kept of each object ---------------------------------------------------------------
def _intern(value: Any) -> Any:
    """One copy of a string repeated across objects (namespace names, label values, quantities)."""
    return sys.intern(value) if isinstance(value, str) else value


def _interned_map(values: Any) -> Obj:
    return {sys.intern(str(k)): _intern(v) for k, v in values.items()} if isinstance(values, Mapping) else {}


def trim_metadata(meta: Any, *, annotations: bool = True) -> Obj:
    """name, namespace, resourceVersion, labels, owners and (unless told not to) annotations other
    than kubectl's last-applied copy; never managedFields."""
    if not isinstance(meta, Mapping):
        return {}
    out: Obj = {k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta}
    if "namespace" in meta:
        out["namespace"] = _intern(meta["namespace"])
    if isinstance(meta.get("labels"), Mapping):
        out["labels"] = _interned_map(meta["labels"])
    refs = _owners(meta, OWNER_FIELDS)
    if refs:
        out["ownerReferences"] = refs
    kept = meta.get("annotations")
    if annotations and isinstance(kept, Mapping):
        kept = {k: v for k, v in kept.items() if k != LAST_APPLIED}
        if kept:
            out["annotations"] = kept
    return out


def _owners(meta: Mapping[str, Any], fields: tuple[str, ...]) -> list[Obj]:
    refs = meta.get("ownerReferences")
    if not isinstance(refs, list):
        return []
    return [{k: _intern(r[k]) for k in fields if k in r} for r in refs if isinstance(r, Mapping)]


def keep_metadata(obj: Obj) -> Obj:
    """Namespaces, RuntimeClasses: their names and labels are all policies read."""
    return {"metadata": trim_metadata(obj.get("metadata"), annotations=False)}


def keep_spec(obj: Obj) -> Obj:
    """ResourceQuotas, workloads, DRA claims: metadata and spec (a workload's template is evaluated
    when a Rollout references it); no status."""
    out: Obj = {"metadata": trim_metadata(obj.get("metadata"))}
    if "spec" in obj:
        out["spec"] = obj["spec"]
    return out


def trim_replicaset(obj: Obj) -> Obj:
    """A ReplicaSet a Deployment controls keeps its metadata and replicas only: its pod template is
    the Deployment's (cached itself), and a Deployment keeps up to revisionHistoryLimit (10) old
    ones. Any other ReplicaSet (a Rollout's, or a bare one a workloadRef may name) keeps its spec."""
    out = keep_spec(obj)
    controller = _controller(out)
    spec = out.get("spec")
    if controller is not None and controller.get("kind") == "Deployment" and isinstance(spec, Mapping):
        out["spec"] = {"replicas": spec.get("replicas")}
    return out


KEDA_ANNOTATIONS = ("autoscaling.keda.sh/paused", "autoscaling.keda.sh/paused-replicas")
KEDA_SPEC = ("scaleTargetRef", "minReplicaCount", "idleReplicaCount")


def trim_scaledobject(obj: Obj) -> Obj:
    """What gpu-scale-to-zero reads of a KEDA ScaledObject: its name, the pause annotations, its target and
    its floors. Never its triggers (they may hold queries, addresses and authentication references)."""
    meta = _meta(obj)
    slim: Obj = {k: meta[k] for k in ("name", "resourceVersion") if k in meta}
    if "namespace" in meta:
        slim["namespace"] = _intern(meta["namespace"])
    annotations = meta.get("annotations")
    kept = {k: str(annotations[k]) for k in KEDA_ANNOTATIONS if isinstance(annotations, Mapping) and k in annotations}
    if kept:
        slim["annotations"] = kept
    found = obj.get("spec")
    spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return {"metadata": slim, "spec": {k: spec[k] for k in KEDA_SPEC if k in spec}}


def _extended_resources(container: Mapping[str, Any]) -> Obj:
    """A container's extended resources (domain-qualified names: every GPU resource is one; cpu,
    memory, ephemeral-storage and hugepages never are) and its DRA claims."""
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return {}
    out: Obj = {}
    for section in ("requests", "limits"):
        values = resources.get(section)
        if isinstance(values, Mapping):
            kept = {sys.intern(k): _intern(v) for k, v in values.items() if isinstance(k, str) and "/" in k}
            if kept:
                out[section] = kept
    if resources.get("claims"):
        out["claims"] = resources["claims"]
    return out


def trim_pod(obj: Obj) -> Obj | None:
    """What GPU counting and ownership read of another pod: the extended resources and DRA claims of
    its containers (a sidecar's restartPolicy with them), its resourceClaims, phase and owners, and a
    LeaderWorkerSet's group size. No env, command, volumes, labels or other annotations. A terminated
    pod holds nothing: not kept."""
    status = obj.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    if phase in TERMINATED_PHASES:
        return None
    found = obj.get("spec")
    spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    kept: Obj = {}
    for section in ("initContainers", "containers"):
        items = spec.get(section)
        containers = []
        for c in items if isinstance(items, list) else []:
            resources = _extended_resources(c) if isinstance(c, Mapping) else {}
            if resources:
                entry: Obj = {"resources": resources}
                if section == "initContainers" and "restartPolicy" in c:
                    entry["restartPolicy"] = _intern(c["restartPolicy"])
                containers.append(entry)
        if containers:
            kept[section] = containers
    if spec.get("resourceClaims"):
        kept["resourceClaims"] = spec["resourceClaims"]
    meta = _meta(obj)
    slim: Obj = {k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta}
    if "namespace" in meta:
        slim["namespace"] = _intern(meta["namespace"])
    refs = _owners(meta, ("kind", "name", "uid", "controller"))
    if refs:
        slim["ownerReferences"] = refs
    annotations = meta.get("annotations")
    kept_annotations = {k: _intern(annotations[k]) for k in POD_ANNOTATIONS
                        if isinstance(annotations, Mapping) and k in annotations}
    if kept_annotations:
        slim["annotations"] = kept_annotations
    return {"metadata": slim, "spec": kept, "status": {"phase": _intern(phase)} if phase else {}}


def trim_node(obj: Obj) -> Obj:
    """A Node: its name, labels and taints (is it a GPU node); no status, capacity, addresses or images."""
    meta = _meta(obj)
    spec = obj.get("spec")
    taints = spec.get("taints") if isinstance(spec, Mapping) else None
    kept_taints = [{k: _intern(t[k]) for k in ("key", "value", "effect") if k in t}
                   for t in taints if isinstance(t, Mapping)] if isinstance(taints, list) else []
    slim: Obj = {k: meta[k] for k in ("name", "resourceVersion") if k in meta}
    if isinstance(meta.get("labels"), Mapping):
        slim["labels"] = _interned_map(meta["labels"])
    return {"metadata": slim, "spec": {"taints": kept_taints} if kept_taints else {}}


def trim_configmap(obj: Obj) -> Obj:
    """A ConfigMap: name, namespace and its first `CONFIGMAP_MAX_KEYS` data keys (in the API's order, which
    is sorted), each value stripped and cut to `CONFIGMAP_VALUE_CHARS`; how many keys were left out."""
    meta = _meta(obj)
    slim: Obj = {k: meta[k] for k in ("name", "resourceVersion") if k in meta}
    if "namespace" in meta:
        slim["namespace"] = _intern(meta["namespace"])
    out: Obj = {"metadata": slim}
    data = obj.get("data")
    if isinstance(data, Mapping) and data:
        kept: Obj = {}
        for key, value in data.items():
            if len(kept) == CONFIGMAP_MAX_KEYS:
                out[OMITTED_KEYS] = len(data) - CONFIGMAP_MAX_KEYS
                break
            if isinstance(key, str):
                kept[sys.intern(key)] = _intern(str(value).strip()[:CONFIGMAP_VALUE_CHARS])
        out["data"] = kept
    return out


@dataclass(frozen=True)
class Cached:
    """One cached resource: its informer's name (the plural), kind, how to list it, what to keep.

    ``optional``: an API the server may not serve (or RBAC may not grant); the cache is synced
    without it and reports it absent."""

    name: str
    kind: str
    api_version: str
    lister: Callable[[client.ApiClient], Callable[..., Any]]
    trim: Trim
    optional: bool = False
    args: tuple[str, ...] = ()   # the group, version and plural of a custom resource (list_cluster_custom_object)
    page: int = 500   # objects a list page asks for: what one page may hold in memory before it is trimmed


CACHED: tuple[Cached, ...] = (
    Cached("namespaces", "Namespace", "v1", lambda api: client.CoreV1Api(api).list_namespace, keep_metadata),
    Cached("pods", "Pod", "v1", lambda api: client.CoreV1Api(api).list_pod_for_all_namespaces, trim_pod),
    Cached("resourcequotas", "ResourceQuota", "v1",
           lambda api: client.CoreV1Api(api).list_resource_quota_for_all_namespaces, keep_spec),
    Cached("deployments", "Deployment", "apps/v1",
           lambda api: client.AppsV1Api(api).list_deployment_for_all_namespaces, keep_spec),
    Cached("replicasets", "ReplicaSet", "apps/v1",
           lambda api: client.AppsV1Api(api).list_replica_set_for_all_namespaces, trim_replicaset),
    Cached("statefulsets", "StatefulSet", "apps/v1",
           lambda api: client.AppsV1Api(api).list_stateful_set_for_all_namespaces, keep_spec),
    Cached("runtimeclasses", "RuntimeClass", "node.k8s.io/v1",
           lambda api: client.NodeV1Api(api).list_runtime_class, keep_metadata, optional=True),
    Cached("scaledobjects", "ScaledObject", "keda.sh/v1alpha1",
           lambda api: client.CustomObjectsApi(api).list_cluster_custom_object, trim_scaledobject, optional=True,
           args=("keda.sh", "v1alpha1", "scaledobjects")),
    # optional: a webhook whose RBAC predates them keeps serving; a nodeName is then a warning and a value
    # from a ConfigMap unresolved (the informer reports itself absent in /readyz and the log). Smaller pages:
    # a Node's status (images) runs to tens of KiB, and a ConfigMap may hold up to 1 MiB, so a page of 100
    # is at most ~100 MiB of JSON in the worst case (a few MiB in practice) before it is trimmed.
    Cached("nodes", "Node", "v1", lambda api: client.CoreV1Api(api).list_node, trim_node, optional=True, page=100),
    Cached("configmaps", "ConfigMap", "v1", lambda api: client.CoreV1Api(api).list_config_map_for_all_namespaces,
           trim_configmap, optional=True, page=100),
)
# The kinds `resolve_object` answers from the cache (kind -> informer). Secrets are never cached.
RESOLVABLE = {"Deployment": "deployments", "ReplicaSet": "replicasets", "StatefulSet": "statefulsets",
              "ConfigMap": "configmaps"}


def api_client(*, kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster configuration, or a kubeconfig file (tests, running outside the cluster)."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class ClusterCache:
    """`ClusterFacts` from list+watch caches. `synced` once every informer has listed."""

    def __init__(self, api: client.ApiClient, *, watch_timeout: int = 300, backoff: float = 1.0,
                 cached: tuple[Cached, ...] = CACHED) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._watch_timeout, self._backoff = watch_timeout, backoff
        self.by_name: dict[str, Informer] = {
            c.name: self._informer(c.name, c.kind, c.api_version, c.lister(api), args=c.args, optional=c.optional,
                                   trim=c.trim, page=c.page)
            for c in cached}
        self.by_name["resourceclaims"] = self._dra("resourceclaims", "ResourceClaim")
        self.by_name["resourceclaimtemplates"] = self._dra("resourceclaimtemplates", "ResourceClaimTemplate")
        self.informers = list(self.by_name.values())
        self.namespaces = self.by_name["namespaces"]
        self.pods = self.by_name["pods"]
        self.quotas_informer = self.by_name["resourcequotas"]
        self.replicasets = self.by_name["replicasets"]
        self.runtimeclasses = self.by_name["runtimeclasses"]
        self.scaledobjects = self.by_name.get("scaledobjects")
        self.claims = self.by_name["resourceclaims"]
        self.claim_templates = self.by_name["resourceclaimtemplates"]
        self._memo: dict[tuple[str, str, str, int], dict[str, Decimal]] = {}
        for informer in self.informers:
            informer.on_synced = self._refresh_gauge

    def _refresh_gauge(self) -> None:
        _ = self.synced  # reading the property sets the gauge

    def _informer(self, name: str, kind: str, api_version: str, list_fn: Callable[..., Any], *,
                  args: tuple[Any, ...] = (), optional: bool = False, trim: Trim | None = None,
                  page: int = 500) -> Informer:
        return Informer(name=name, kind=kind, api_version=api_version, list_fn=list_fn, args=args, optional=optional,
                        watch_timeout=self._watch_timeout, backoff=self._backoff, trim=trim, page=page)

    def _dra(self, plural: str, kind: str) -> Informer:
        version = DRA_VERSIONS[0]
        try:  # pick the newest resource.k8s.io version the server serves (discovery, once, at start)
            groups = client.ApisApi(self._custom.api_client).get_api_versions(_request_timeout=5)
            for group in groups.groups or []:
                if group.name == "resource.k8s.io":
                    served = [v.version for v in group.versions or []]
                    version = next((v for v in DRA_VERSIONS if v in served), version)
        except Exception:  # discovery failing is not fatal: the informer reports the API absent
            pass
        return self._informer(plural, kind, f"resource.k8s.io/{version}", self._custom.list_cluster_custom_object,
                              args=("resource.k8s.io", version, plural), optional=True, trim=keep_spec)

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    @property
    def synced(self) -> bool:
        ok = all(i.synced.is_set() for i in self.informers)
        metrics.CACHE_SYNCED.set(1 if ok else 0)
        return ok

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.synced:
                return True
            time.sleep(0.05)
        return self.synced

    def status(self) -> dict[str, Any]:
        return {i.name: i.status() for i in self.informers}

    # ---- ClusterFacts ------------------------------------------------------------------------
    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        ns = self.namespaces.in_namespace("").get(namespace)
        if ns is None:
            return None
        labels = _meta(ns).get("labels")
        return dict(labels) if isinstance(labels, Mapping) else {}

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return list(self.quotas_informer.in_namespace(namespace).values())

    def resolve_claim(self, namespace: str, name: str, is_template: bool) -> Mapping[str, Any] | None:
        return (self.claim_templates if is_template else self.claims).in_namespace(namespace).get(name)

    def resolve_object(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        """A cached object of a `RESOLVABLE` kind (Deployment, ReplicaSet, StatefulSet, ConfigMap) of the
        namespace; None for any other kind (a Secret)."""
        informer = self.by_name.get(RESOLVABLE.get(kind, ""))
        return informer.in_namespace(namespace).get(name) if informer is not None else None

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        return False  # Rollouts are not cached: a referenced Deployment is checked on its own (stricter)

    def scaled_objects(self, namespace: str, target: str | None = None) -> Sequence[Mapping[str, Any]] | None:
        """The namespace's KEDA ScaledObjects (trimmed; with ``target``, those whose scaleTargetRef.name it is);
        None when they cannot be known: KEDA's API is not served (or RBAC does not grant it), or the informer
        has not listed them yet. One admission request reads one namespace's ScaledObjects once."""
        informer = self.scaledobjects
        if informer is None or informer.absent or not informer.synced.is_set():
            return None
        found = list(informer.in_namespace(namespace).values())
        if target is None:
            return found
        return [so for so in found if (so.get("spec") or {}).get("scaleTargetRef", {}).get("name") == target]

    def node(self, name: str) -> Mapping[str, Any] | None:
        """A cached Node (name, labels, taints); None when not known (or the nodes API is not granted)."""
        return self.by_name["nodes"].in_namespace("").get(name)

    def runtime_class_exists(self, name: str) -> bool | None:
        """Whether the cluster has RuntimeClass ``name``; None when that is not known (API not served,
        or not listed yet)."""
        informer = self.runtimeclasses
        if informer.absent or not informer.synced.is_set():
            return None
        return name in informer.in_namespace("")

    def owned_replicasets(self, namespace: str, kind: str, name: str) -> list[Obj]:
        """The cached ReplicaSets whose controller is ``kind``/``name`` (a Deployment's or a Rollout's),
        newest revision first."""
        found = [rs for rs in list(self.replicasets.in_namespace(namespace).values())
                 if (_controller(rs) or {}).get("kind") == kind and (_controller(rs) or {}).get("name") == name]
        return sorted(found, key=_revision, reverse=True)

    def _pod_gpus(self, pod: Obj, gpu: GpuConfig) -> dict[str, Decimal]:
        meta = _meta(pod)
        key = (str(meta.get("namespace")), str(meta.get("name")), str(meta.get("resourceVersion")), id(gpu))
        hit = self._memo.get(key)
        if hit is None:
            workload = extract(pod, gpu=gpu, resolve_claim=self.resolve_claim)
            hit = workload.pod_gpus(0, gpu) if workload.templates else {}
            if len(self._memo) > max(50_000, 2 * sum(len(v) for v in self.pods.store.values())):
                self._memo.clear()
            self._memo[key] = hit
        return hit

    def _resolve_owner(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        """A link of a pod's owner chain: a cached pod, or a cached object of `CHAIN_KINDS`."""
        if kind == "Pod":
            return self.pods.in_namespace(namespace).get(name)
        return self.resolve_object(namespace, kind, name) if kind in CHAIN_KINDS else None

    def owned_by(self, pod: Mapping[str, Any], workload: Resource) -> bool:
        """The pod is ``workload`` itself (a Pod), or its chain of controllers leads to ``workload`` through
        cached objects (ReplicaSets, StatefulSets, Deployments, pods), each link checked by uid: the walk
        `mlguard check --cluster-facts` makes too (policies.owners.owned_by)."""
        return owned_by(pod, workload, self._resolve_owner)

    def workload_pods(self, namespace: str, kind: str, name: str) -> list[Obj]:
        """Non-terminated pods that belong to workload ``kind``/``name``."""
        workload = Resource("", kind, namespace, name)
        return [p for p in list(self.pods.in_namespace(namespace).values())
                if _running(p) and self.owned_by(p, workload)]

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        total: dict[str, Decimal] = {}
        for pod in list(self.pods.in_namespace(namespace).values()):
            if not _running(pod) or self.owned_by(pod, exclude):
                continue
            for k, v in self._pod_gpus(pod, gpu).items():
                total[k] = total.get(k, Decimal(0)) + v
        return total


def _running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return phase not in TERMINATED_PHASES


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


def _revision(rs: Mapping[str, Any]) -> int:
    annotations = _meta(rs).get("annotations")
    value = annotations.get("deployment.kubernetes.io/revision", "") if isinstance(annotations, Mapping) else ""
    if not value and isinstance(annotations, Mapping):
        value = annotations.get("rollout.argoproj.io/revision", "")
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
