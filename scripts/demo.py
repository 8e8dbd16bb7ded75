#!/usr/bin/env python3
"""mlguard on your machine: the admission webhook (gunicorn, TLS) and the analysis provider.

    python scripts/demo.py [--port 8443] [--analysis-port 8080] [--policyset FILE] [--exit-after-demo]

1. makes a local CA and a serving certificate for 127.0.0.1 (cryptography), in a temporary directory;
2. starts the webhook (``python -m webhook serve``, TLS, 127.0.0.1, the baseline PolicySet) and the
   analysis provider (``python -m rollouts serve``, 127.0.0.1);
3. sends a denied and an allowed AdmissionReview, and the allowed Pod to /mutate, printing each
   exchange the way curl -v would show it (request summary, HTTP status, allowed, message,
   warnings, audit annotations, the decoded JSONPatch);
4. keeps serving until Ctrl-C (``--exit-after-demo``: stops right away; exit 1 if a verdict was wrong).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]
BOLD, RED, GREEN, YELLOW, DIM, RESET = (("\033[1m", "\033[31m", "\033[32m", "\033[33m", "\033[2m", "\033[0m")
                                        if sys.stdout.isatty() else ("",) * 6)


# ---- certificates ------------------------------------------------------------------------------
def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A local CA and a serving certificate for 127.0.0.1/localhost signed by it (EC P-256)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlguard demo CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlguard-webhook.mlguard-system.svc")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                x509.DNSName("mlguard-webhook.mlguard-system.svc")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


# ---- processes ---------------------------------------------------------------------------------
def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(Exception):
    """Ctrl-C, or SIGTERM/SIGHUP (a closed terminal, `timeout`, a supervisor): stop the servers and clean up."""


def _unblock_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def start(argv: list[str], log: Path, procs: list[subprocess.Popen], env: dict[str, str] | None = None) -> (
        subprocess.Popen):
    """Start a server in its own session (so a terminal's Ctrl-C reaches only this script, which stops it) and
    record it in ``procs`` before a signal can interrupt: none is left running unrecorded."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        # the child must not inherit the blocked mask (kept across exec): gunicorn would never see SIGINT or
        # SIGTERM, and every stop would wait out the grace and end in SIGKILL
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})},
                                preexec_fn=_unblock_stop_signals)
        procs.append(proc)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return proc


# No cluster here: the webhook gets its cluster facts (namespace labels, GPU quota) from this file
# instead of its list+watch cache (MLGUARD_WEBHOOK_FACTS_FILE).
FACTS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ml-serving
  labels: {mlguard.io/environment: staging}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: gpus, namespace: ml-serving}
spec:
  hard: {requests.nvidia.com/gpu: "8"}
"""


def wait_ready(session: requests.Session, url: str, proc: subprocess.Popen, log: Path, timeout: float = 40) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited ({proc.returncode}); its log:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if session.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready in {timeout:.0f}s; log:\n{log.read_text()[-2000:]}")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal a server's whole process group (gunicorn's master and its workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_all(procs: list[subprocess.Popen], *, grace: float = 8.0) -> None:
    """Stop every server: SIGINT to each gunicorn master (its quick shutdown; nothing is in flight once the
    demo's own sessions are closed), then SIGKILL after ``grace`` seconds, or at once on a second Ctrl-C.
    Further signals cannot interrupt the clean-up; it always ends with every process group gone."""
    forced = False

    def force(signum: int, frame: object) -> None:
        nonlocal forced
        if not forced:
            forced = True
            print("\nstopping now (SIGKILL)", flush=True)
            for proc in procs:
                _signal_group(proc, signal.SIGKILL)

    for sig in STOP_SIGNALS:
        signal.signal(sig, force)
    for proc in procs:
        if proc.poll() is None:  # SIGINT: gunicorn's quick shutdown (SIGTERM would wait out graceful_timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        while proc.poll() is None:
            if time.monotonic() > deadline and not forced:
                force(signal.SIGALRM, None)
            time.sleep(0.05)
    for proc in procs:  # workers left behind by a master that died first
        _signal_group(proc, signal.SIGKILL)


# ---- the reviews -------------------------------------------------------------------------------
def gpu_container(*, limits: bool) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "1"},
                                 "limits": {"memory": "48Gi"}}
    if limits:
        resources["limits"]["nvidia.com/gpu"] = "1"
    return {"name": "vllm", "image": "registry.example.com/vllm/vllm-openai@sha256:" + "4f" * 32,
            "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct"], "ports": [{"containerPort": 8000}],
            "resources": resources,
            "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
            "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 120}}


def pod_spec(*, limits: bool) -> dict[str, Any]:
    return {"containers": [gpu_container(limits=limits)], "priorityClassName": "inference-high",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


LABELS = {"app": "llama", "team": "search", "cost-center": "cc-1042"}


def denied_deployment() -> dict[str, Any]:
    """A sidecar without a GPU that sees every GPU of the node: the API server accepts it, mlguard
    does not. (A GPU in requests only would never reach the webhook for a Deployment: the API server
    refuses it itself.)"""
    spec = pod_spec(limits=True)
    spec["containers"].append({"name": "log-shipper", "image": "registry.example.com/fluent-bit@sha256:" + "2c" * 32,
                               "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                               "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                             "limits": {"memory": "64Mi"}}})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "llama-8b", "namespace": "ml-serving", "labels": {"app": "llama"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "llama"}},
                     "template": {"metadata": {"labels": LABELS}, "spec": spec}}}


def allowed_pod() -> dict[str, Any]:
    spec = pod_spec(limits=True)
    del spec["tolerations"]  # the mutating webhook adds it
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "llama-8b-debug", "namespace": "ml-serving", "labels": LABELS}, "spec": spec}


def review(obj: dict[str, Any], *, user: str = "alice@example.com") -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    resource = obj["kind"].lower() + "s"
    gvk = {"group": group, "version": version, "kind": obj["kind"]}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": gvk, "requestKind": gvk,
        "resource": {"group": group, "version": version, "resource": resource},
        "namespace": obj["metadata"]["namespace"], "name": obj["metadata"]["name"], "operation": "CREATE",
        "userInfo": {"username": user, "groups": ["ml-engineers", "system:authenticated"]},
        "object": obj, "oldObject": None, "dryRun": False}}


def exchange(session: requests.Session, url: str, body: dict[str, Any], title: str) -> dict[str, Any]:
    req = body["request"]
    print(f"\n{BOLD}## {title}{RESET}")
    print(f"{DIM}> POST {url}{RESET}")
    print(f"{DIM}> AdmissionReview uid={req['uid']}: {req['operation']} {req['kind']['kind']} "
          f"{req['namespace']}/{req['name']} by {req['userInfo']['username']} ({len(json.dumps(body))} bytes){RESET}")
    started = time.perf_counter()
    resp = session.post(url, json=body, timeout=10)
    took = (time.perf_counter() - started) * 1000
    print(f"< HTTP {resp.status_code} {resp.reason}  ({took:.1f} ms)")
    if resp.status_code != 200:
        print(f"< {resp.text}")
        return {}
    out = resp.json()["response"]
    color = GREEN if out["allowed"] else RED
    print(f"  uid:      {out['uid']} {'(echoed)' if out['uid'] == req['uid'] else '(MISMATCH)'}")
    print(f"  allowed:  {color}{str(out['allowed']).lower()}{RESET}")
    if "status" in out:
        print(f"  status:   {out['status'].get('code')}")
        print("  message:")
        for line in out["status"].get("message", "").splitlines():
            print(f"    {RED}{line}{RESET}")
    print("  warnings:" + ("" if out.get("warnings") else " (none)"))
    for w in out.get("warnings", []):
        print(f"    {YELLOW}{w}{RESET}")
    if out.get("auditAnnotations"):
        print("  auditAnnotations:")
        for k, v in out["auditAnnotations"].items():
            print(f"    {k}: {v}")
    if out.get("patch"):
        print(f"  patch ({out['patchType']}, decoded):")
        for op in json.loads(base64.b64decode(out["patch"])):
            print(f"    {json.dumps(op)}")
    else:
        print("  patch:    (none)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8443, help="webhook port (another free one if taken)")
    parser.add_argument("--analysis-port", type=int, default=8080, help="analysis provider port")
    parser.add_argument("--policyset", default=str(REPO / "policies" / "catalog" / "baseline.yaml"))
    parser.add_argument("--exit-after-demo", action="store_true", help="stop after the demo instead of serving")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM/SIGHUP stop the servers: they run in their own sessions, so only this process's
    # clean-up can stop them. A second Ctrl-C during the clean-up kills them at once; the clean-up still ends.
    stopping = False

    def interrupted(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:  # once: a second signal must not break out of the clean-up below
            stopping = True
            raise Stop(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, interrupted)
    procs: list[subprocess.Popen] = []
    sessions: list[requests.Session] = []
    work = Path(tempfile.mkdtemp(prefix="mlguard-demo-"))
    try:
        ca, cert, key = make_certs(work)
        print(f"{BOLD}mlguard demo{RESET}: local CA and serving certificate for 127.0.0.1 in {work}")
        print("cluster facts (no cluster here): namespace ml-serving (staging) with a ResourceQuota of 8 GPUs")
        port = args.port if port_free(args.port) else free_port()
        session = requests.Session()
        sessions.append(session)
        session.trust_env = False
        session.verify = str(ca)
        webhook_log = work / "webhook.log"
        facts = work / "cluster-facts.yaml"
        facts.write_text(FACTS)
        webhook = start([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                         "--cert", str(cert), "--key", str(key), "--policyset", args.policyset], webhook_log, procs,
                        env={"MLGUARD_WEBHOOK_FACTS_FILE": str(facts), "MLGUARD_WEBHOOK_WORKERS": "1"})
        analysis_log = work / "analysis.log"
        store = write_golden_set(work / "samples")
        aport = args.analysis_port if port_free(args.analysis_port) else free_port()
        analysis = start([sys.executable, "-m", "rollouts", "serve", "--host", "127.0.0.1", "--port", str(aport),
                          "--sample-store", f"golden={store}"], analysis_log, procs)
        analysis_url = f"http://127.0.0.1:{aport}"
        base = f"https://127.0.0.1:{port}"
        wait_ready(session, base + "/readyz", webhook, webhook_log)
        ready = session.get(base + "/readyz", timeout=5).json()
        print(f"webhook:  {base}  (gunicorn, TLS, pid {webhook.pid}; PolicySet {ready['policyset']['name']} "
              f"sha256:{ready['policyset']['digest'][:12]}; log {webhook_log})")
        plain = requests.Session()
        sessions.append(plain)
        plain.trust_env = False
        wait_ready(plain, analysis_url + "/healthz", analysis, analysis_log)
        print(f"analysis: {analysis_url}  (pid {analysis.pid}; Argo Rollouts web metric provider: GET "
              f"{analysis_url}/v1/analyses/<check>; log {analysis_log})")

        denied = exchange(session, base + "/validate", review(denied_deployment()),
                          "1. a Deployment whose log shipper sees every GPU (NVIDIA_VISIBLE_DEVICES=all) -> /validate")
        allowed = exchange(session, base + "/validate", review(allowed_pod()),
                           "2. a Pod with GPU limits, requests and probes -> /validate")
        mutated = exchange(session, base + "/mutate", review(allowed_pod()),
                           "3. the same Pod -> /mutate (adds what the PolicySet's mutations turn on)")
        golden = {"store": "golden", "baseline": "stable.jsonl", "canary": "canary.jsonl", "min_accuracy": "0.85"}
        verdict = analyse(plain, f"{analysis_url}/v1/analyses/eval-score", golden,
                          "4. the analysis provider judges a canary on the golden set (what Argo Rollouts asks)")
        ok = (denied.get("allowed") is False and allowed.get("allowed") is True and mutated.get("allowed") is True
              and verdict.get("verdict") == "fail")
        print(f"\ntry it yourself:\n  curl --cacert {ca} {base}/readyz\n  curl --cacert {ca} {base}/metrics\n"
              f"  curl '{analysis_url}/v1/analyses/eval-score?store=golden&baseline=stable.jsonl&canary=stable.jsonl'")
        if args.exit_after_demo:
            print("demo " + ("OK" if ok else "FAILED: a verdict was not the expected one"))
            return 0 if ok else 1
        print(f"\n{BOLD}serving until Ctrl-C{RESET}", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 0
    except Stop:
        print("\nstopping the servers (Ctrl-C again to kill them at once)", flush=True)
        return 0
    finally:
        for s in sessions:  # idle keep-alive connections would hold the servers' workers until their timeout
            s.close()
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)
        print(f"stopped; removed {work}", flush=True)


def write_golden_set(directory: Path) -> Path:
    """Per-item correctness of the stable model and of a quantized canary that lost quality on the same
    600-item golden set (seeded: the same files every run)."""
    import json
    import random

    rng = random.Random(20261123)
    directory.mkdir(parents=True, exist_ok=True)
    stable, canary = [], []
    for i in range(600):
        ok = rng.random() < 0.90
        stable.append({"id": f"q{i}", "correct": ok})
        canary.append({"id": f"q{i}", "correct": (ok and rng.random() > 0.12) or (not ok and rng.random() < 0.05)})
    for name, rows in (("stable.jsonl", stable), ("canary.jsonl", canary)):
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def analyse(session: requests.Session, url: str, params: dict[str, str], title: str) -> dict:
    print(f"\n{BOLD}## {title}{RESET}")
    print(f"> GET {url}?" + "&".join(f"{k}={v}" for k, v in params.items()))
    start_time = time.monotonic()
    resp = session.get(url, params=params, timeout=15)
    print(f"< HTTP {resp.status_code} {resp.reason}  ({(time.monotonic() - start_time) * 1000:.1f} ms)")
    body = resp.json()
    for key in ("verdict", "method", "statistic", "p_value", "threshold", "samples", "reason"):
        if key in body:
            value = body[key]
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"  {key + ':':<10} {RED if body.get('verdict') == 'fail' and key == 'verdict' else ''}{shown}"
                  f"{RESET if key == 'verdict' else ''}")
    return body


if __name__ == "__main__":
    sys.exit(main())
