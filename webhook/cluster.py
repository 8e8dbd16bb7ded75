"""Live cluster facts for the policies: list+watch caches through the kubernetes client.

`ClusterCache` implements `policies.context.ClusterFacts` from memory; no request ever waits on
the API server. One `Informer` thread per resource lists it, then watches from the list's
resourceVersion; when a watch ends or drops it resumes from the last resourceVersion it saw,
and when the API server answers 410 Gone (that version is too old) it lists again.

What is cached (the ClusterRole grants list+watch on exactly these): namespaces (labels for match
selectors and environments), pods (GPU usage), resourcequotas, and — when the API has them —
resource.k8s.io ResourceClaims and ResourceClaimTemplates (DRA GPUs). Workloads are not cached:
`resolve_object` and `referenced_by_rollout` answer None/False.

GPU usage approximation: the GPUs of a namespace's non-terminated pods (phase not Succeeded or
Failed), minus the pods of the workload under review. A pod belongs to workload ``W`` when the
pod is ``W`` itself or one of its ownerReferences is named ``W`` or starts with ``W-`` (ReplicaSet
``W-<hash>`` of a Deployment or Rollout, Job ``W-<time>`` of a CronJob). So a workload named
``web`` also "owns" the pods of ``web-canary`` — their GPUs are then not counted against ``web``,
the look-ahead is more lenient, never stricter. Pods still Pending count: the quota holds them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from policies.gpu import GpuConfig
from policies.model import Resource
from policies.workload import extract
from webhook import metrics
from webhook.logging import get_logger

log = get_logger("cluster")
TERMINATED_PHASES = ("Succeeded", "Failed")
DRA_VERSIONS = ("v1", "v1beta2", "v1beta1")

Obj = dict[str, Any]


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
                 backoff: float = 1.0) -> None:
        self.name = name
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
    def _normalize(self, obj: Obj) -> Obj:
        obj.setdefault("kind", self.kind)          # list items carry no kind/apiVersion
        obj.setdefault("apiVersion", self.api_version)
        return obj

    def _put(self, obj: Obj) -> None:
        meta = _meta(obj)
        self.store.setdefault(str(meta.get("namespace") or ""), {})[str(meta.get("name"))] = self._normalize(obj)
        self.version += 1

    def _delete(self, obj: Obj) -> None:
        meta = _meta(obj)
        self.store.get(str(meta.get("namespace") or ""), {}).pop(str(meta.get("name")), None)
        self.version += 1

    def in_namespace(self, namespace: str) -> dict[str, Obj]:
        return self.store.get(namespace, {})

    # ---- list + watch -------------------------------------------------------------------------
    def _list(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_preload_content": False, "_request_timeout": (5, 60)}
            if token:
                kwargs["_continue"] = token
            resp = self.list_fn(*self.args, **kwargs)
            body = json.loads(resp.data)
            items.extend(i for i in body.get("items") or [] if isinstance(i, dict))
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
        store: dict[str, dict[str, Obj]] = {}
        for obj in items:
            meta = _meta(obj)
            store.setdefault(str(meta.get("namespace") or ""), {})[str(meta.get("name"))] = self._normalize(obj)
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

    def __init__(self, api: client.ApiClient, *, watch_timeout: int = 300, backoff: float = 1.0) -> None:
        core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._watch_timeout, self._backoff = watch_timeout, backoff
        self.namespaces = self._informer("namespaces", "Namespace", "v1", core.list_namespace)
        self.pods = self._informer("pods", "Pod", "v1", core.list_pod_for_all_namespaces)
        self.quotas_informer = self._informer("resourcequotas", "ResourceQuota", "v1",
                                              core.list_resource_quota_for_all_namespaces)
        self.claims = self._dra("resourceclaims", "ResourceClaim")
        self.claim_templates = self._dra("resourceclaimtemplates", "ResourceClaimTemplate")
        self.informers = [self.namespaces, self.pods, self.quotas_informer, self.claims, self.claim_templates]
        self._memo: dict[tuple[str, str, str, int], dict[str, Decimal]] = {}
        for informer in self.informers:
            informer.on_synced = self._refresh_gauge

    def _refresh_gauge(self) -> None:
        _ = self.synced  # reading the property sets the gauge

    def _informer(self, name: str, kind: str, api_version: str, list_fn: Callable[..., Any], *,
                  args: tuple[Any, ...] = (), optional: bool = False) -> Informer:
        return Informer(name=name, kind=kind, api_version=api_version, list_fn=list_fn, args=args, optional=optional,
                        watch_timeout=self._watch_timeout, backoff=self._backoff)

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
                              args=("resource.k8s.io", version, plural), optional=True)

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
        return None

    def referenced_by_rollout(self, namespace: str, kind: str, name: str) -> bool:
        return False

    def _pod_gpus(self, pod: Obj, gpu: GpuConfig) -> dict[str, Decimal]:
        meta = _meta(pod)
        key = (str(meta.get("namespace")), str(meta.get("name")), str(meta.get("resourceVersion")), id(gpu))
        hit = self._memo.get(key)
        if hit is None:
            workload = extract(pod, gpu=gpu, resolve_claim=self.resolve_claim)
            hit = workload.pod_gpus(0, gpu) if workload.templates else {}
            if len(self._memo) > 50_000:
                self._memo.clear()
            self._memo[key] = hit
        return hit

    def workload_pods(self, namespace: str, name: str) -> list[Obj]:
        """Non-terminated pods that belong to workload ``name`` (see the module's approximation)."""
        return [p for p in list(self.pods.in_namespace(namespace).values())
                if _running(p) and owned_by(p, name)]

    def gpu_usage(self, namespace: str, *, exclude: Resource, gpu: GpuConfig) -> dict[str, Decimal]:
        total: dict[str, Decimal] = {}
        for pod in list(self.pods.in_namespace(namespace).values()):
            if not _running(pod) or owned_by(pod, exclude.name):
                continue
            for k, v in self._pod_gpus(pod, gpu).items():
                total[k] = total.get(k, Decimal(0)) + v
        return total


def _running(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return phase not in TERMINATED_PHASES


def owned_by(pod: Mapping[str, Any], workload: str) -> bool:
    """The pod is ``workload`` itself or an ownerReference is named ``workload`` or ``workload-*``."""
    meta = _meta(pod)
    if meta.get("name") == workload:
        return True
    for ref in meta.get("ownerReferences") or []:
        owner = ref.get("name") if isinstance(ref, Mapping) else None
        if isinstance(owner, str) and (owner == workload or owner.startswith(workload + "-")):
            return True
    return False
