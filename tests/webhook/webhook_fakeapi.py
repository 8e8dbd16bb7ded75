"""A small threaded HTTP server that speaks the Kubernetes API's list and watch JSON.

Enough of the API for the webhook's list+watch caches, served as kube-apiserver serves it:
- ``GET /api/v1/{namespaces,pods,resourcequotas,nodes,configmaps}``, ``/apis/apps/v1/{deployments,
  replicasets,statefulsets}``, ``/apis/node.k8s.io/v1/runtimeclasses``, ``/apis/resource.k8s.io/v1/{resourceclaims,
  resourceclaimtemplates}`` and KEDA's ``/apis/keda.sh/v1alpha1/scaledobjects`` (404 with ``with_keda=False``,
  as without KEDA's CRD): a ``*List`` with ``metadata.resourceVersion`` and items without ``kind``/``apiVersion``
  (as the real server lists them);
- the same with ``?watch=true&resourceVersion=N``: a chunked stream of
  ``{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}`` lines, one per change after N, held
  open until ``timeoutSeconds``; a ``resourceVersion`` older than the compaction point gets the
  API server's ``ERROR`` event with a 410 ``Expired`` Status;
- ``GET /apis``: discovery (the APIGroupList) for the resource.k8s.io version.

Controls for tests: `FakeApi.add/modify/delete` (events), `drop_watches()` (every open watch
connection is cut mid-stream, without the terminating chunk, as a load balancer or an API server
restart does), `compact()` (older versions expire: the next resume gets 410 Gone), `fail_lists`
(answer lists with 500), and `requests` (every request's path and query, to see resumes).
"""

from __future__ import annotations

import copy
import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

RESOURCES = {
    "/api/v1/namespaces": ("NamespaceList", "v1", "namespaces"),
    "/api/v1/pods": ("PodList", "v1", "pods"),
    "/api/v1/resourcequotas": ("ResourceQuotaList", "v1", "resourcequotas"),
    "/api/v1/nodes": ("NodeList", "v1", "nodes"),
    "/api/v1/configmaps": ("ConfigMapList", "v1", "configmaps"),
    "/apis/apps/v1/deployments": ("DeploymentList", "apps/v1", "deployments"),
    "/apis/apps/v1/replicasets": ("ReplicaSetList", "apps/v1", "replicasets"),
    "/apis/apps/v1/statefulsets": ("StatefulSetList", "apps/v1", "statefulsets"),
    "/apis/node.k8s.io/v1/runtimeclasses": ("RuntimeClassList", "node.k8s.io/v1", "runtimeclasses"),
    "/apis/resource.k8s.io/v1/resourceclaims": ("ResourceClaimList", "resource.k8s.io/v1", "resourceclaims"),
    "/apis/resource.k8s.io/v1/resourceclaimtemplates": ("ResourceClaimTemplateList", "resource.k8s.io/v1",
                                                        "resourceclaimtemplates"),
    "/apis/keda.sh/v1alpha1/scaledobjects": ("ScaledObjectList", "keda.sh/v1alpha1", "scaledobjects"),
}
KINDS = {"namespaces": ("Namespace", "v1"), "pods": ("Pod", "v1"), "resourcequotas": ("ResourceQuota", "v1"),
         "nodes": ("Node", "v1"), "configmaps": ("ConfigMap", "v1"),
         "deployments": ("Deployment", "apps/v1"), "replicasets": ("ReplicaSet", "apps/v1"),
         "statefulsets": ("StatefulSet", "apps/v1"), "runtimeclasses": ("RuntimeClass", "node.k8s.io/v1"),
         "resourceclaims": ("ResourceClaim", "resource.k8s.io/v1"),
         "resourceclaimtemplates": ("ResourceClaimTemplate", "resource.k8s.io/v1"),
         "scaledobjects": ("ScaledObject", "keda.sh/v1alpha1")}


class FakeApi:
    def __init__(self, *, with_dra: bool = True, with_keda: bool = True) -> None:
        self.with_dra = with_dra
        self.with_keda = with_keda  # False: KEDA's CRD is not installed (its path answers 404)
        self.rv = 100
        self.compacted = 0
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in KINDS}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []   # (rv, plural, type, object)
        self.cond = threading.Condition()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.fail_lists: set[str] = set()
        self.forbidden: set[str] = set()   # plurals answered 403 (RBAC that does not grant them)
        self._drop_epoch = 0
        self.server: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ---- state changes ----------------------------------------------------------------------
    def _record(self, plural: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            self.rv += 1
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.rv)
            key = (meta.get("namespace", ""), meta["name"])
            if kind == "DELETED":
                self.objects[plural].pop(key, None)
            else:
                self.objects[plural][key] = obj
            full = {"kind": KINDS[plural][0], "apiVersion": KINDS[plural][1], **obj}
            self.events.append((self.rv, plural, kind, full))
            self.cond.notify_all()
            return obj

    def add(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._record(plural, "ADDED", obj)

    def modify(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._record(plural, "MODIFIED", obj)

    def delete(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self._record(plural, "DELETED", obj)

    def drop_watches(self) -> None:
        with self.cond:
            self._drop_epoch += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Every version seen so far expires (etcd compaction): resuming from one gets 410 Gone."""
        with self.cond:
            self.rv += 1
            self.compacted = self.rv
            self.cond.notify_all()

    def watch_requests(self, plural: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p.endswith("/" + plural) and q.get("watch") == "true"]

    def list_requests(self, plural: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p.endswith("/" + plural) and q.get("watch") != "true"]

    # ---- server -----------------------------------------------------------------------------
    def start(self) -> str:
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                api.requests.append((url.path, query))
                if url.path == "/apis":
                    groups = [{"name": "resource.k8s.io", "versions": [
                        {"groupVersion": "resource.k8s.io/v1", "version": "v1"}],
                        "preferredVersion": {"groupVersion": "resource.k8s.io/v1", "version": "v1"}}]
                    self._json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                     "groups": groups if api.with_dra else []})
                    return
                found = RESOURCES.get(url.path)
                if found is None or (not api.with_dra and url.path.startswith("/apis/resource.k8s.io")) or (
                        not api.with_keda and url.path.startswith("/apis/keda.sh")):
                    self._status(404, "NotFound", "the server could not find the requested resource")
                    return
                list_kind, api_version, plural = found
                if plural in api.forbidden:
                    self._status(403, "Forbidden", f'{plural} is forbidden: User "system:serviceaccount:'
                                 f'mlguard-system:mlguard-webhook" cannot list resource "{plural}"')
                    return
                if query.get("watch") == "true":
                    self._watch(plural, query)
                    return
                if plural in api.fail_lists:
                    self._status(500, "InternalError", "etcdserver: request timed out")
                    return
                with api.cond:
                    items = [copy.deepcopy(o) for o in api.objects[plural].values()]
                    rv = api.rv
                self._json(200, {"kind": list_kind, "apiVersion": api_version,
                                 "metadata": {"resourceVersion": str(rv)}, "items": items})

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, plural: str, query: dict[str, str]) -> None:
                since = int(query.get("resourceVersion") or api.rv)
                timeout = float(query.get("timeoutSeconds") or 30)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if since < api.compacted:
                    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": f"too old resource version: {since} ({api.compacted})",
                              "reason": "Expired", "code": 410}
                    self._chunk(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                    self._chunk(b"")
                    return
                deadline = time.monotonic() + timeout
                epoch = api._drop_epoch
                sent = since
                try:
                    while True:
                        with api.cond:
                            pending = [e for e in api.events if e[0] > sent and e[1] == plural]
                            if not pending and api._drop_epoch == epoch:
                                api.cond.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                                pending = [e for e in api.events if e[0] > sent and e[1] == plural]
                            dropped = api._drop_epoch != epoch
                        if dropped:  # cut the connection mid-stream: no terminating chunk, nothing more sent
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        for rv, _, kind, obj in pending:
                            self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                            sent = rv
                        if time.monotonic() >= deadline:
                            self._chunk(b"")
                            return
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that hang up (a stopped watch) are normal here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this (started) server, written to ``path``."""
        assert self.server is not None
        path.write_text(kubeconfig_text(f"http://127.0.0.1:{self.server.server_address[1]}"))
        return path

    def stop(self) -> None:
        if self.server is not None:
            self.drop_watches()
            self.server.shutdown()
            self.server.server_close()


def kubeconfig_text(url: str) -> str:
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n"
            f"users:\n- name: tester\n  user:\n    token: test-token\ncontexts:\n- name: fake\n  context:\n"
            f"    cluster: fake\n    user: tester\ncurrent-context: fake\n")
