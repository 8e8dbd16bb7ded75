"""Helpers for the webhook tests: AdmissionReview builders, workload builders, a gunicorn server."""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TEST_POLICYSET = HERE / "policysets" / "webhook-test.yaml"
OWN_NAMESPACE = "mlguard-system"

GVR = {  # kind -> (group, version, resource)
    "Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"), "ReplicaSet": ("apps", "v1", "replicasets"),
    "Job": ("batch", "v1", "jobs"), "CronJob": ("batch", "v1", "cronjobs"),
    "Rollout": ("argoproj.io", "v1alpha1", "rollouts"), "ResourceQuota": ("", "v1", "resourcequotas"),
    "Scale": ("autoscaling", "v1", "scale"), "DaemonSet": ("apps", "v1", "daemonsets"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- objects ---------------------------------------------------------------------------------
def container(name: str = "server", *, gpus: int | str | None = 1, requests_gpus: int | str | None = None,
              companions: bool = True) -> dict[str, Any]:
    res: dict[str, Any] = {"limits": {}, "requests": {}}
    if gpus is not None:
        res["limits"]["nvidia.com/gpu"] = str(gpus)
    if requests_gpus is not None:
        res["requests"]["nvidia.com/gpu"] = str(requests_gpus)
    if companions:
        res["requests"].update({"cpu": "4", "memory": "32Gi"})
        res["limits"]["memory"] = "32Gi"
    return {"name": name, "image": "registry.example.com/vllm@sha256:" + "a" * 64,
            "resources": {k: v for k, v in res.items() if v}}


COST = {"team": "search", "cost-center": "cc-1234"}
# What the webhook denies in these tests: more GPUs than the test PolicySet's maxPerContainer (8).
# The API server accepts it, so a real webhook sees it. (A GPU in requests only, or a fractional
# GPU, never reaches a webhook for a Pod or a built-in workload: the API server's own validation
# refuses it first; tests/e2e shows both. Only custom resources such as a Rollout carry them here.)
OVER_LIMIT = 9


def too_many(name: str = "a") -> dict[str, Any]:
    """A container the API server accepts and gpu-limits denies (9 GPUs, more than 8 per container)."""
    return container(name, gpus=OVER_LIMIT)


def pod_spec(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"containers": list(containers) or [container()]}


def pod(name: str = "p", namespace: str = "team-a", *, spec: dict[str, Any] | None = None,
        labels: Mapping[str, str] | None = COST, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec or pod_spec()}


def template(spec: dict[str, Any] | None = None, labels: Mapping[str, str] | None = COST) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web", **(labels or {})}}, "spec": spec or pod_spec()}


def deployment(name: str = "web", namespace: str = "team-a", *, replicas: int = 2,
               spec: dict[str, Any] | None = None, labels: Mapping[str, str] | None = COST,
               annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app": "web"}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": template(spec, labels)}}


def rollout(name: str = "llm", namespace: str = "team-a", *, replicas: int = 2,
            spec: dict[str, Any] | None = None, labels: Mapping[str, str] | None = COST) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": template(spec, labels),
                     "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "5m"}}]}}}}


def cronjob(name: str = "nightly", namespace: str = "team-a", *, spec: dict[str, Any] | None = None,
            labels: Mapping[str, str] | None = COST) -> dict[str, Any]:
    tpl = template(spec, labels)
    tpl["spec"]["restartPolicy"] = "Never"
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {
                "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600, "template": tpl}}}}


def review(obj: Mapping[str, Any] | None, *, operation: str = "CREATE", old: Mapping[str, Any] | None = None,
           uid: str | None = None, user: str = "alice", groups: tuple[str, ...] = ("developers",),
           subresource: str | None = None, dry_run: bool = False, kind: str | None = None,
           namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
    """A complete AdmissionReview as the API server sends it."""
    source = obj or old or {}
    kind = kind or str(source.get("kind"))
    api_group = str(source.get("apiVersion", "")).rpartition("/")[0]
    if kind in GVR and (not source.get("apiVersion") or api_group == GVR[kind][0]):
        group, version, resource = GVR[kind]
    else:  # another kind (KubeRay, Kubeflow, Knative, a Volcano Job, ...): its apiVersion, the lower-case plural
        group, _, version = str(source.get("apiVersion", "")).rpartition("/")
        resource = f"{kind.lower()}s"
    meta = source.get("metadata") or {}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "namespace": namespace or meta.get("namespace", "team-a"),
        "name": name or meta.get("name"),
        "operation": operation,
        "userInfo": {"username": user, "uid": "u-" + user, "groups": list(groups)},
        "object": copy.deepcopy(obj) if obj is not None else None,
        "oldObject": copy.deepcopy(old) if old is not None else None,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    if subresource:
        request["subResource"] = subresource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def scale_review(resource: str, name: str, namespace: str, *, replicas: int, old_replicas: int) -> dict[str, Any]:
    """UPDATE of the scale subresource of ``resource`` (deployments, statefulsets, rollouts, ...)."""
    def scale(n: int) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name, "namespace": namespace},
                "spec": {"replicas": n}}
    body = review(scale(replicas), operation="UPDATE", old=scale(old_replicas), kind="Scale", subresource="scale")
    group = {"deployments": "apps", "statefulsets": "apps", "replicasets": "apps", "rollouts": "argoproj.io"}
    body["request"]["resource"] = {"group": group[resource], "version": "v1", "resource": resource}
    return body


def patch_of(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = response.get("patch")
    if not raw:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(raw))


def gpu_pod(name: str, namespace: str, *, gpus: int, owner: tuple[str, str] | None = None,
            phase: str = "Running") -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": {"team": "search"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": f"uid-{owner[1]}",
                                    "controller": True}]
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "img", "resources": {
        "limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "1", "memory": "1Gi"}}}]},
        "status": {"phase": phase}}


def gpu_deployment(name: str, namespace: str, *, gpus: int, replicas: int) -> dict:
    """A Deployment as the API lists it (no kind/apiVersion on list items)."""
    template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "img",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}, "env": [{"name": "SECRET", "value": "x"}]}]}}
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}}


# ---- the server ------------------------------------------------------------------------------
class WebhookServer:
    """``python -m webhook serve`` (gunicorn, TLS) on 127.0.0.1, logs to a file."""

    def __init__(self, *, workdir: Path, cert: Path, key: Path, ca: Path, policyset: Path,
                 env: Mapping[str, str] | None = None, workers: int = 2, threads: int = 4) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = ca
        self.log_path = workdir / f"webhook-{self.port}.log"
        self.metrics_dir = workdir / f"metrics-{self.port}"
        self.metrics_dir.mkdir()
        full_env = {**os.environ, "MLGUARD_WEBHOOK_NAMESPACE": OWN_NAMESPACE,
                    "MLGUARD_WEBHOOK_RELOAD_INTERVAL": "0.2",
                    "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), **(env or {})}
        full_env = {k: v for k, v in full_env.items() if v is not None}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--cert", str(cert), "--key", str(key), "--policyset", str(policyset), "--workers", str(workers),
             "--threads", str(threads)],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        self.session.verify = str(ca)

    def wait(self, path: str = "/healthz", *, status: int = 200, timeout: float = 30.0) -> requests.Response:
        end = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"webhook exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                last = self.session.get(self.url + path, timeout=2)
                if last.status_code == status:
                    return last
            except requests.RequestException as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"{path} never answered {status}: {last}\n{self.log_path.read_text()[-3000:]}")

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, json=body, timeout=10, **kwargs)

    def admit(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        resp = self.post(path, body)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
        assert out["response"]["uid"] == body["request"]["uid"]
        return out["response"]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.session.get(self.url + "/metrics", timeout=5).text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in children.read_text().split()} if children.exists() else set()

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.session.close()
        self._log.close()


def metric(values: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


# ---- slow clients ----------------------------------------------------------------------------
class SlowClients:
    """Connections that hold a server's attention without finishing a request: plain TCP that never
    starts TLS, TLS connections trickling request headers, and TLS connections trickling a body
    (one byte per connection every ``interval`` seconds). A connection the server closes is opened
    again, so the pressure stays at ``idle + headers + body`` connections for the whole run."""

    def __init__(self, port: int, *, idle: int = 16, headers: int = 24, body: int = 24,
                 interval: float = 0.25) -> None:
        import ssl
        import threading

        self.port = port
        self.kinds = ["idle"] * idle + ["headers"] * headers + ["body"] * body
        self.interval = interval
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.socks: list[Any] = [None] * len(self.kinds)
        self.closed_by_server = 0
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def _open(self, kind: str) -> Any:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.opened += 1
        if kind == "idle":
            return raw
        tls = self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        if kind == "headers":
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        else:
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000000\r\n\r\n{")
        return tls

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, kind in enumerate(self.kinds):
                if self._stop.is_set():
                    break
                sock = self.socks[i]
                try:
                    if sock is None:
                        self.socks[i] = self._open(kind)
                    elif kind != "idle":
                        sock.sendall(b"a")
                    else:  # an idle socket: has the server closed it?
                        sock.setblocking(False)
                        try:
                            if sock.recv(1) == b"":
                                raise ConnectionResetError
                        except BlockingIOError:
                            pass
                        finally:
                            if self.socks[i] is sock:
                                sock.setblocking(True)
                except OSError:
                    if sock is not None:
                        self.closed_by_server += 1
                        sock.close()
                    self.socks[i] = None
            self._stop.wait(self.interval)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        end = time.monotonic() + 20
        while any(s is None for s in self.socks) and time.monotonic() < end:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def timed_reviews(server: WebhookServer, body: Mapping[str, Any], *, seconds: float,
                  fresh_every: int = 10) -> tuple[list[float], list[str]]:
    """A normal client: one review after another for ``seconds`` (keep-alive, a new connection
    every ``fresh_every`` requests, as the API server's pool does now and then). Returns the
    latencies and the failures (anything but a 200 AdmissionReview for this uid)."""
    latencies: list[float] = []
    failures: list[str] = []
    session = requests.Session()
    session.trust_env = False
    session.verify = str(server.ca)
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            if n and n % fresh_every == 0:
                session.close()
            started = time.perf_counter()
            try:
                resp = session.post(server.url + "/validate", json=body, timeout=10)
                ok = resp.status_code == 200 and resp.json()["response"]["uid"] == body["request"]["uid"]
                if not ok:
                    failures.append(f"{resp.status_code}: {resp.text[:200]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))
            latencies.append(time.perf_counter() - started)
            n += 1
    finally:
        session.close()
    return latencies, failures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
