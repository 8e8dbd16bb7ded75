#!/usr/bin/env python3
"""Load test of the admission webhook: gunicorn over TLS on 127.0.0.1, keep-alive connections,
an 8 KB Deployment AdmissionReview to /validate, at fixed rates (100, 500, 1000 req/s).

    python tests/benchmarks/bench_webhook.py [--duration 6] [--rates 100,500,1000] [--configs 2x4,2x4:gthread]

The loader runs in its own processes (Python, open loop): every request has a scheduled send time,
and latency is measured from that time to the last byte of the answer, so a server that falls
behind is charged for the queue it builds (no coordinated omission). Debian's ``wrk`` cannot hold
a fixed rate (that is wrk2), so it is used only for the peak throughput line (closed loop, 8
connections). Prints, per gunicorn configuration (workers x threads) and rate: achieved throughput,
p50, p99, max latency, errors. The loader shares the 2 cores with the server: figures are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import trustme

REPO = Path(__file__).resolve().parents[2]
FACTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: ml-serving, labels: {mlguard.io/environment: staging}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: gpus, namespace: ml-serving}
spec: {hard: {requests.nvidia.com/gpu: "64"}}
"""


def deployment_review(target_bytes: int = 8192) -> bytes:
    """A typical vLLM Deployment review, padded with realistic env vars to ~``target_bytes``."""
    container = {
        "name": "vllm", "image": "registry.example.com/vllm/vllm-openai@sha256:" + "4f" * 32,
        "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--tensor-parallel-size", "1",
                 "--max-model-len", "8192", "--gpu-memory-utilization", "0.92"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "env": [],
        "resources": {"requests": {"cpu": "8", "memory": "48Gi", "nvidia.com/gpu": "1"},
                      "limits": {"memory": "48Gi", "nvidia.com/gpu": "1"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 120},
        "volumeMounts": [{"name": "cache", "mountPath": "/root/.cache/huggingface"},
                         {"name": "shm", "mountPath": "/dev/shm"}],
    }
    labels = {"app": "llama", "team": "search", "cost-center": "cc-1042", "mlguard.io/model": "llama-3.1-8b"}
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "llama-8b", "namespace": "ml-serving", "labels": labels, "annotations": {
               "argocd.argoproj.io/tracking-id": "serving:apps/Deployment:ml-serving/llama-8b"}},
           "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "llama"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "containers": [container], "priorityClassName": "inference-high",
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        "volumes": [{"name": "cache", "emptyDir": {}},
                                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]}}}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0d5e2f1a-bench", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "namespace": "ml-serving", "name": "llama-8b", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"]},
        "object": obj, "oldObject": None, "dryRun": False}}
    i = 0
    while len(json.dumps(review)) < target_bytes:
        container["env"].append({"name": f"VLLM_SETTING_{i:02d}", "value": f"value-{i:02d}-" + "x" * 40})
        i += 1
    return json.dumps(review).encode()


# ---- loader (runs in its own processes) ------------------------------------------------------
Sample = tuple[int, float, float]  # (index of the server, scheduled send time from the start, latency), seconds


def _loader(ports: list[int], ca: str, body: bytes, rate: float, duration: float, slots: list[int], every: int,
            start_at: float, out: mp.Queue) -> None:
    """One connection per slot: slot ``g`` sends at ``start_at + g / rate + n * every / rate`` to ``ports[g %
    len(ports)]`` (``every`` slots in all, across the loader processes), so consecutive sends go to the servers
    in turn."""
    import threading

    ctx = ssl.create_default_context(cafile=ca)
    samples: list[Sample] = []
    errors = [0] * len(ports)
    lock = threading.Lock()

    def run(slot: int) -> None:
        target = slot % len(ports)
        conn = http.client.HTTPSConnection("127.0.0.1", ports[target], context=ctx, timeout=10)
        local: list[Sample] = []
        n = 0
        while True:
            offset = (slot + n * every) / rate
            if offset >= duration:
                break
            scheduled = start_at + offset
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[target] += 1
                local.append((target, offset, time.perf_counter() - scheduled))
            except (OSError, http.client.HTTPException):
                errors[target] += 1
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", ports[target], context=ctx, timeout=10)
            n += 1
        conn.close()
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((samples, errors, time.perf_counter() - start_at))


def interleaved(ports: list[int], ca: str, body: bytes, *, rate: float, duration: float
                ) -> tuple[list[Sample], list[int], float]:
    """Open-loop load at ``rate`` requests/s in all, sent to the servers in turn (A, B, A, B ...), so that
    whatever the machine does meanwhile falls on each of them alike. Latency runs from the scheduled send time
    to the last byte of the answer. Returns the samples, the errors per server and the seconds taken."""
    procs_n = 2 if rate >= 400 else 1
    per_proc = max(len(ports), max(2, min(16, int(rate // 60))) // len(ports) * len(ports))
    every = per_proc * procs_n
    queue: mp.Queue = mp.Queue()
    start_at = time.perf_counter() + 0.5
    procs = [mp.Process(target=_loader, args=(ports, ca, body, rate, duration,
                                              list(range(p * per_proc, (p + 1) * per_proc)), every, start_at, queue))
             for p in range(procs_n)]
    for p in procs:
        p.start()
    samples: list[Sample] = []
    errors = [0] * len(ports)
    elapsed = 0.0
    for _ in procs:
        got, err, took = queue.get(timeout=duration + 60)
        samples.extend(got)
        errors = [a + b for a, b in zip(errors, err, strict=True)]
        elapsed = max(elapsed, took)
    for p in procs:
        p.join()
    return samples, errors, elapsed


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, in milliseconds (nan when there are none)."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] * 1000


def fixed_rate(port: int, ca: str, body: bytes, *, rate: float, duration: float) -> dict[str, float]:
    samples, errors, elapsed = interleaved([port], ca, body, rate=rate, duration=duration)
    latencies = sorted(s[2] for s in samples)
    return {"sent": len(latencies), "throughput": len(latencies) / elapsed, "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99), "max": latencies[-1] * 1000 if latencies else float("nan"),
            "errors": errors[0]}


def wrk_peak(port: int, body: bytes, work: Path) -> str:
    if not shutil.which("wrk"):
        return "wrk not installed"
    script = work / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [[{body.decode()}]]\n")
    out = subprocess.run(["wrk", "-t2", "-c8", "-d5s", "--latency", "-s", str(script),
                          f"https://127.0.0.1:{port}/validate"], capture_output=True, text=True, timeout=60).stdout
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("Requests/sec", "50%", "99%", "Non-2xx"))]
    return ", ".join(lines) or out


# ---- server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started by `serve` (or any gunicorn): SIGTERM, then SIGKILL after gunicorn's grace."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=25)
    except subprocess.TimeoutExpired:
        proc.kill()


def serve(work: Path, cert: Path, key: Path, ca: Path, *, workers: int, threads: int,
          worker_class: str | None = None) -> tuple[subprocess.Popen, int]:
    """``workers`` x ``threads`` of gthread when ``worker_class`` is "gthread", else the configured
    event-loop worker (``threads`` then unused)."""
    port = free_port()
    facts = work / "facts.yaml"
    facts.write_text(FACTS)
    metrics_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-", dir=work))
    env = {**os.environ, "MLGUARD_WEBHOOK_FACTS_FILE": str(facts), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    if worker_class:
        env["MLGUARD_WEBHOOK_WORKER_CLASS"] = worker_class
    log = (work / f"webhook-{workers}x{threads}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--cert", str(cert), "--key", str(key), "--workers", str(workers),
                             "--threads", str(threads)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    session = requests.Session()
    session.trust_env = False
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            if session.get(f"https://127.0.0.1:{port}/readyz", verify=str(ca), timeout=2).status_code == 200:
                return proc, port
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("webhook did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per rate")
    parser.add_argument("--rates", default="100,500,1000")
    parser.add_argument("--configs", default="2x4,2x4:gthread,2x1",
                        help="WORKERSxTHREADS[:gthread], comma-separated: the event-loop worker (with THREADS app "
                             "threads; 1 = inline in the loop) or gunicorn's gthread worker")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    try:
        ca_obj = trustme.CA()
        ca, cert, key = work / "ca.pem", work / "tls.crt", work / "tls.key"
        ca_obj.cert_pem.write_to_path(str(ca))
        issued = ca_obj.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        body = deployment_review()
        print(f"webhook load test: POST /validate, {len(body)} byte Deployment review, TLS, keep-alive, "
              f"{os.cpu_count()} CPUs (shared with the loader), {args.duration:.0f} s per rate")
        for config in args.configs.split(","):
            shape, _, model = config.partition(":")
            workers, threads = (int(x) for x in shape.split("x"))
            proc, port = serve(work, cert, key, ca, workers=workers, threads=threads,
                               worker_class="gthread" if model == "gthread" else None)
            try:
                check = fixed_rate(port, str(ca), body, rate=50, duration=1.0)  # warm-up
                if check["errors"]:
                    raise SystemExit(f"warm-up errors: {check}")
                print(f"\ngunicorn {workers} worker(s) x {threads} threads, "
                      f"{'gthread' if model == 'gthread' else 'webhook.worker.EventLoopWorker'}:")
                print(f"  {'rate':>6}  {'throughput':>11}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  errors")
                for rate in rates:
                    r = fixed_rate(port, str(ca), body, rate=rate, duration=args.duration)
                    print(f"  {rate:>6.0f}  {r['throughput']:>9.0f}/s  {r['p50']:>7.2f}  {r['p99']:>7.2f}  "
                          f"{r['max']:>7.1f}  {r['errors']}")
                print(f"  peak (wrk, closed loop, 8 connections): {wrk_peak(port, body, work)}")
            finally:
                stop(proc)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
