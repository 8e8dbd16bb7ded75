"""A real Kubernetes control plane on 127.0.0.1 for the e2e suite and the cache benchmark.

etcd (Debian's etcd-server), kube-apiserver and kube-controller-manager (Kubernetes 1.20, built
from Debian's `kubernetes` source package by scripts/e2e-build.sh into a cache outside the clone),
each on free ports, with:

- client-certificate authentication against a CA made here (trustme): an admin in
  ``system:masters``, users with groups (the O of their certificate), and the webhook's own
  ServiceAccount identity ``system:serviceaccount:mlguard-system:mlguard-webhook`` so that the
  project's ClusterRole (kustomize/base/webhook/rbac.yaml) is what lets its cache list and watch;
- RBAC authorization, ``--endpoint-reconciler-type none``, the ServiceAccount admission plugin off
  (there is no token controller), and an audit log at Metadata level (audit annotations land there);
- kube-controller-manager with the deployment, replicaset, garbagecollector, namespace and
  resourcequota controllers only (no scheduler, no kubelet: pods stay Pending, which is what
  ResourceQuota counts).

Every start step has a name; a failure raises `StartError` naming it, with the tail of the
process's log. Nothing is skipped: no binary, no start.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "e2e-build.sh"
WEBHOOK_NAMESPACE = "mlguard-system"
WEBHOOK_SERVICE_ACCOUNT = f"system:serviceaccount:{WEBHOOK_NAMESPACE}:mlguard-webhook"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # reads and watches would drown the log: the suite looks at writes
        {"level": "None", "verbs": ["get", "list", "watch"]},
        {"level": "Metadata"},
    ],
}
CONTROLLERS = "deployment,replicaset,garbagecollector,namespace,resourcequota"


class StartError(RuntimeError):
    """A step of starting the control plane or the webhook failed (the message names it)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` distinct lines of a log (a process retrying prints the same line many times)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    out: list[str] = []
    for line in reversed(text):
        key = line[line.find("]") + 1:] if "]" in line else line  # klog lines differ in their timestamp only
        if all(key != (o[o.find("]") + 1:] if "]" in o else o) for o in out):
            out.append(line)
        if len(out) >= lines:
            break
    return "\n".join(reversed(out))


def build_binaries() -> Path:
    """Run scripts/e2e-build.sh (builds once, then answers from its cache); the bin directory.

    ``MLGUARD_E2E_BIN`` names a directory holding both binaries instead (a build made elsewhere)."""
    given = os.environ.get("MLGUARD_E2E_BIN")
    if given:
        missing = [n for n in ("kube-apiserver", "kube-controller-manager") if not (Path(given) / n).is_file()]
        if missing:
            raise StartError(f"MLGUARD_E2E_BIN={given} holds no {', '.join(missing)}")
        return Path(given)
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StartError(f"scripts/e2e-build.sh failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    for name in ("kube-apiserver", "kube-controller-manager"):
        if not (bin_dir / name).is_file():
            raise StartError(f"scripts/e2e-build.sh printed {bin_dir}, which holds no {name}")
    return bin_dir


# ---- certificates ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Credential:
    """A client certificate: user name ``user`` in ``group`` (its O)."""

    user: str
    group: str | None
    cert: Path
    key: Path


class Pki:
    """One CA for everything: the API server's serving and client-CA, the webhook's serving cert."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="mlguard-e2e")
        self.ca_path = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.ca_b64 = base64.b64encode(self.ca.cert_pem.bytes()).decode()
        self.serving_cert, self.serving_key = self._write("serving", self.ca.issue_cert("127.0.0.1", "localhost"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = root / "sa.key"
        self.sa_pub = root / "sa.pub"
        self.sa_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        self.sa_pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))

    def _write(self, name: str, leaf: trustme.LeafCert) -> tuple[Path, Path]:
        cert, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def client(self, user: str, group: str | None = None) -> Credential:
        safe = "".join(c if c.isalnum() else "_" for c in f"{user}-{group or ''}")
        # a SAN entry of some name: trustme marks subjectAltName critical, and Go (the API server)
        # refuses a certificate whose critical SAN extension is empty ("unhandled critical extension")
        leaf = self.ca.issue_cert("e2e-client.invalid", common_name=user, organization_name=group)
        cert, key = self._write(f"client-{safe}", leaf)
        return Credential(user=user, group=group, cert=cert, key=key)


def kubeconfig_text(server: str, ca: Path, cred: Credential) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "e2e", "preferences": {},
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": cred.user, "user": {"client-certificate": str(cred.cert),
                                               "client-key": str(cred.key)}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": cred.user}}],
    })


# ---- processes -------------------------------------------------------------------------------
class Process:
    """A child process with its output in a log file; stopped with its whole process group."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                     cwd=cwd, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_until(self, step: str, ready: Callable[[], bool], *, timeout: float) -> None:
        """Poll ``ready`` until it holds; a dead process or the timeout raises StartError naming ``step``."""
        end = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < end:
            if not self.alive:
                raise StartError(f"{step}: {self.name} exited with {self.proc.returncode}\n"
                                 f"--- {self.log} (tail)\n{tail(self.log)}")
            try:
                if ready():
                    return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.2)
        raise StartError(f"{step}: {self.name} not ready after {timeout:.0f}s (last error: {last!r})\n"
                         f"--- {self.log} (tail)\n{tail(self.log)}")

    def stop(self, timeout: float = 15) -> None:
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def _https_ok(url: str, *, ca: Path, cred: Credential | None = None, timeout: float = 2) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cred is not None:
        ctx.load_cert_chain(str(cred.cert), str(cred.key))
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
        return bool(resp.status == 200)


# ---- the control plane -----------------------------------------------------------------------
@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, started by `start()`, stopped by `stop()`."""

    workdir: Path
    bin_dir: Path
    etcd_on_tmpfs: bool = True            # etcd's fsyncs dominate bulk creation; a test cluster needs no durability
    apiserver_args: Sequence[str] = ()
    controllers: bool = True              # kube-controller-manager (the scale benchmark creates pods itself)
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(self.workdir / "pki")
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.audit_log = self.workdir / "audit.log"
        self.admin = self.pki.client("e2e-admin", "system:masters")
        self.admin_kubeconfig = self.kubeconfig(self.admin)
        self._etcd_dir: Path | None = None

    def kubeconfig(self, cred: Credential) -> Path:
        path = self.workdir / f"kubeconfig-{cred.cert.stem}"
        path.write_text(kubeconfig_text(self.server, self.pki.ca_path, cred))
        return path

    def _start(self, name: str, argv: Sequence[str]) -> Process:
        exe = argv[0]
        if not (os.path.isabs(exe) and os.access(exe, os.X_OK)) and shutil.which(exe) is None:
            raise StartError(f"start {name}: {exe} not found (scripts/e2e-build.sh installs and builds it)")
        proc = Process(name, argv, log=self.workdir / f"{name}.log")
        self.processes.append(proc)
        return proc

    def start(self) -> ControlPlane:
        try:
            self._start_etcd()
            self._start_apiserver()
            if self.controllers:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self) -> None:
        base = Path("/dev/shm") if self.etcd_on_tmpfs and os.access("/dev/shm", os.W_OK) else self.workdir
        self._etcd_dir = Path(tempfile.mkdtemp(prefix="mlguard-e2e-etcd-", dir=base))
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._start("etcd", [
            shutil.which("etcd") or "/usr/bin/etcd", "--name", "e2e", "--data-dir", str(self._etcd_dir),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"e2e=http://127.0.0.1:{peer}", "--log-level", "warn",
            "--quota-backend-bytes", str(4 * 1024**3)])

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        etcd.wait_until("start etcd", healthy, timeout=30)

    def _start_apiserver(self) -> None:
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        pki = self.pki
        api = self._start("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port), "--insecure-port", "0",
            "--cert-dir", str(self.workdir / "apiserver-certs"),
            "--tls-cert-file", str(pki.serving_cert), "--tls-private-key-file", str(pki.serving_key),
            "--client-ca-file", str(pki.ca_path),
            "--authorization-mode", "RBAC",
            "--service-account-key-file", str(pki.sa_pub),
            "--service-account-signing-key-file", str(pki.sa_key),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--endpoint-reconciler-type", "none",
            "--disable-admission-plugins", "ServiceAccount",
            "--audit-policy-file", str(policy), "--audit-log-path", str(self.audit_log),
            "--audit-log-format", "json", "--audit-log-mode", "blocking",
            "--v", "1",
            *self.apiserver_args])
        api.wait_until("start kube-apiserver", lambda: _https_ok(self.server + "/readyz", ca=pki.ca_path,
                                                                 cred=self.admin), timeout=90)

    def _start_controller_manager(self) -> None:
        # the controllers' own user name, with the rights of system:masters (the bootstrap role of
        # system:kube-controller-manager expects per-controller service accounts, which need tokens)
        cred = self.pki.client("system:kube-controller-manager", "system:masters")
        kcm = self._start("kube-controller-manager", [
            str(self.bin_dir / "kube-controller-manager"),
            "--kubeconfig", str(self.kubeconfig(cred)),
            "--controllers", CONTROLLERS,
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--port", "0", "--secure-port", "0",
            "--concurrent-deployment-syncs", "5", "--concurrent-replicaset-syncs", "5",
            "--v", "1"])
        # ready when its resourcequota controller has computed a quota's status
        probe = "mlguard-e2e-probe"
        self.kubectl_json(["create", "namespace", probe])
        self.kubectl_json(["-n", probe, "create", "quota", "probe", "--hard=pods=1"])

        def quota_computed() -> bool:
            quota = self.kubectl_json(["-n", probe, "get", "resourcequota", "probe"])
            return bool((quota.get("status") or {}).get("hard"))
        kcm.wait_until("start kube-controller-manager (resourcequota controller computes a quota)",
                       quota_computed, timeout=60)
        self.kubectl_json(["delete", "namespace", probe, "--wait=false"])

    def kubectl_json(self, args: Sequence[str], *, stdin: str | None = None) -> dict[str, Any]:
        """kubectl as the admin; JSON output when there is any (the control plane's own plumbing)."""
        argv = ["kubectl", "--kubeconfig", str(self.admin_kubeconfig), *args]
        if (args and args[0] in ("get", "create", "apply")) or "get" in args[:3]:
            argv += ["-o", "json"]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise StartError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}

    def audit_events(self) -> Iterator[dict[str, Any]]:
        if not self.audit_log.exists():
            return
        for line in self.audit_log.read_text().splitlines():
            if line.strip():
                yield json.loads(line)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self._etcd_dir is not None:
            shutil.rmtree(self._etcd_dir, ignore_errors=True)
            self._etcd_dir = None

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name} ({p.log}) tail\n{tail(p.log, lines)}" for p in self.processes)


@contextmanager
def control_plane(workdir: Path, **kwargs: Any) -> Iterator[ControlPlane]:
    cp = ControlPlane(workdir=workdir, bin_dir=build_binaries(), **kwargs)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


# ---- the webhook -----------------------------------------------------------------------------
class Webhook:
    """``python -m webhook serve`` (gunicorn over TLS) on 127.0.0.1 with the live cluster cache,
    authenticated to the API server as the webhook's ServiceAccount (client certificate)."""

    def __init__(self, cp: ControlPlane, *, policyset: Path, workdir: Path, workers: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.cp = cp
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.policyset = policyset
        cred = cp.pki.client(WEBHOOK_SERVICE_ACCOUNT, "system:serviceaccounts")
        self.kubeconfig = cp.kubeconfig(cred)
        metrics_dir = workdir / f"webhook-metrics-{self.port}"
        metrics_dir.mkdir(parents=True)
        self.env = {**os.environ, "MLGUARD_WEBHOOK_NAMESPACE": WEBHOOK_NAMESPACE,
                    "MLGUARD_WEBHOOK_CLUSTER_CACHE": "true", "MLGUARD_WEBHOOK_KUBECONFIG": str(self.kubeconfig),
                    "MLGUARD_WEBHOOK_RELOAD_INTERVAL": "0.5", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    **(env or {})}
        self.argv = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                     "--cert", str(cp.pki.serving_cert), "--key", str(cp.pki.serving_key),
                     "--policyset", str(policyset), *(["--workers", str(workers)] if workers else [])]
        self.log = workdir / f"webhook-{self.port}.log"
        self.proc: Process | None = None

    def start(self, *, step: str = "start the webhook", timeout: float = 60) -> Webhook:
        self.proc = Process("webhook", self.argv, log=self.log, env=self.env, cwd=REPO)
        self.proc.wait_until(f"{step} (gunicorn over TLS, /readyz: PolicySet loaded, cache synced)",
                             lambda: _https_ok(self.url + "/readyz", ca=self.cp.pki.ca_path), timeout=timeout)
        return self

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        ctx = ssl.create_default_context(cafile=str(self.cp.pki.ca_path))
        try:
            with urllib.request.urlopen(self.url + path, context=ctx, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of /metrics (all workers merged)."""
        ctx = ssl.create_default_context(cafile=str(self.cp.pki.ca_path))
        with urllib.request.urlopen(self.url + "/metrics", context=ctx, timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def decisions(self) -> list[dict[str, Any]]:
        """The webhook's JSON decision log lines so far."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "decision":
                out.append(entry)
        return out


# ---- the project's manifests, converted for Kubernetes 1.20 ------------------------------------
def render(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize kustomize/<overlay>``: the objects as the project ships them."""
    proc = subprocess.run(["kubectl", "kustomize", str(REPO / "kustomize" / overlay)], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise StartError(f"kubectl kustomize kustomize/{overlay}: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if isinstance(d, dict)]


def webhook_configurations_for_120(objects: Sequence[Mapping[str, Any]], *, url: str,
                                   ca_bundle: str) -> list[dict[str, Any]]:
    """The Validating/MutatingWebhookConfigurations of a rendered overlay, made to run on 1.20:

    - ``clientConfig.service`` (a Service in front of the webhook's pods) becomes ``url`` with the
      service's path, and ``caBundle`` (cert-manager's cainjector would set it in a cluster);
    - ``matchConditions`` (Kubernetes 1.30+) are dropped: 1.20 has no CEL. The requests they keep
      away from the webhook (nodes, the control plane's identities, DaemonSet pods) then reach it.

    Everything else (rules, failurePolicy, namespaceSelector, timeouts, reinvocation) is kept as shipped.
    """
    out: list[dict[str, Any]] = []
    for obj in objects:
        if obj.get("kind") not in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            continue
        converted = json.loads(json.dumps(obj))
        converted.get("metadata", {}).get("annotations", {}).pop("cert-manager.io/inject-ca-from", None)
        for hook in converted.get("webhooks") or []:
            service = (hook.get("clientConfig") or {}).get("service") or {}
            hook["clientConfig"] = {"url": url + str(service.get("path", "/")), "caBundle": ca_bundle}
            hook.pop("matchConditions", None)
        out.append(converted)
    if len(out) != 2:
        raise StartError(f"expected a Validating- and a MutatingWebhookConfiguration, found {len(out)}")
    return out


def objects_of(objects: Sequence[Mapping[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(o)) for o in objects if o.get("kind") in kinds]


def deployment_for_120(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A shipped Deployment without what needs Kubernetes 1.30: the preStop ``sleep`` action (1.29
    beta, 1.30 on by default) and topologySpreadConstraints' ``matchLabelKeys`` (1.27 beta)."""
    converted: dict[str, Any] = json.loads(json.dumps(obj))
    spec = converted["spec"]["template"]["spec"]
    for c in spec.get("containers") or []:
        lifecycle = c.get("lifecycle") or {}
        if "sleep" in (lifecycle.get("preStop") or {}):
            lifecycle.pop("preStop")
        if not lifecycle:
            c.pop("lifecycle", None)
    for constraint in spec.get("topologySpreadConstraints") or []:
        constraint.pop("matchLabelKeys", None)
    return converted
