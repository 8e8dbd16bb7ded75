#!/usr/bin/env python3
"""The webhook's cluster cache at scale, against a real kube-apiserver (the e2e control plane).

    python tests/benchmarks/bench_cache.py [--sizes 10000,50000] [--namespaces 1000] [--requests 2000]
                                           [--configmaps 1000] [--nodes 1000]

Creates 1,000 namespaces, each with a vLLM Deployment (applied with kubectl, so it carries the
last-applied copy) and four ReplicaSets of it, then Pods up to each size (spread evenly, a quarter
of them with a GPU, each shaped like a vLLM pod a ReplicaSet made: env, args, probes, volumes,
owner), and one GPU ResourceQuota per namespace. At each size it prints:

- the cache alone, in a fresh process each (``--measure``): objects, sync time (list of every
  cached kind), resident memory the objects take (VmRSS after sync and a GC, minus before start,
  minus the same over the cluster without pods), and the process peak, for objects kept whole
  (as before issue 18) and trimmed to what policies read (now);
- the webhook as deployed (gunicorn over TLS, one worker x 8 threads, live cache, as its
  ServiceAccount): time to /readyz, the worker's RSS, and admission latency (p50, p99, max) of a
  GPU Deployment CREATE whose quota look-ahead walks its namespace's pods: sequential on one
  keep-alive connection, then 8 connections at once.

Before the pod rounds, ``--configmaps`` ConfigMaps (spread over the namespaces; each shaped like an
app's config: 12 short settings, an 8 KiB config file and a 1.7 KiB CA certificate) and ``--nodes``
Nodes (each with the labels a cloud node carries, a GPU taint on one in four, and a status with
capacity, conditions and 50 images) are created, and the cache is measured with and without its
ConfigMap and Node informers, whole and trimmed: the difference is what they cost. ``--sizes ""``
measures that alone.

Pods are created before the quotas each round (no kube-controller-manager runs: a quota without
a computed status would refuse new pods), so the quotas are deleted and re-created between sizes.
The API server and etcd share the machine's cores with the benchmark: figures are a floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO))

from e2e_cluster import ControlPlane, Webhook, build_binaries, objects_of, render  # noqa: E402

GPU_EVERY = 4                         # one pod in four holds a GPU
QUOTA = {"requests.nvidia.com/gpu": "64", "pods": "1000"}


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


# ---- objects -----------------------------------------------------------------------------------
def namespace_name(i: int) -> str:
    return f"bench-{i:04d}"


def bench_pod(ns: str, index: int) -> dict[str, Any]:
    """A pod as a ReplicaSet of a vLLM Deployment makes it (what kubelet would add is not here)."""
    rs = f"llm-{index % 7}-5f7c9d{index % 7}b"
    gpu = index % GPU_EVERY == 0
    resources: dict[str, Any] = {"requests": {"cpu": "4", "memory": "24Gi"}, "limits": {"memory": "24Gi"}}
    if gpu:
        resources["limits"]["nvidia.com/gpu"] = "1"
    env = [{"name": f"VLLM_OPTION_{k:02d}", "value": f"setting-{k}-" + "v" * 24} for k in range(10)]
    env += [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    labels = {"app": f"llm-{index % 7}", "pod-template-hash": f"5f7c9d{index % 7}b", "team": "search",
              "cost-center": "cc-1042", "mlguard.io/model": f"llama-{index % 7}"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{rs}-{index:06d}", "namespace": ns, "labels": labels,
                     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000",
                                     "kubectl.kubernetes.io/restartedAt": "2026-11-30T10:00:00Z"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                          "uid": f"00000000-0000-4000-8000-{index % 7:012d}",
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {
            "containers": [{
                "name": "vllm", "image": "registry.example.com/vllm/vllm-openai@sha256:" + "4f" * 32,
                "args": ["--model", f"meta-llama/llama-{index % 7}", "--max-model-len", "8192",
                         "--gpu-memory-utilization", "0.92", "--port", "8000"],
                "env": env, "resources": resources,
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
                "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 120},
                "volumeMounts": [{"name": "cache", "mountPath": "/root/.cache/huggingface"},
                                 {"name": "shm", "mountPath": "/dev/shm"}],
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000},
            }],
            "priorityClassName": "inference-high" if gpu else None,
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"} if gpu else None,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}] if gpu else None,
            "volumes": [{"name": "cache", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}],
        },
    }


def bench_workloads(ns: str) -> list[tuple[str, dict[str, Any]]]:
    """One vLLM Deployment per namespace and the ReplicaSets a Deployment keeps: the current one and
    three old revisions at 0 replicas (revisionHistoryLimit is 10 by default)."""
    pod = bench_pod(ns, 0)
    template = {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": pod["spec"]}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "llm", "namespace": ns, "labels": {"app": "llm-0"},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                            {"kind": "Deployment", "spec": {"template": template}})}},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "llm-0"}}, "template": template}}
    out = [(f"/apis/apps/v1/namespaces/{ns}/deployments", dep)]
    for revision in range(1, 5):
        out.append((f"/apis/apps/v1/namespaces/{ns}/replicasets", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"llm-{revision}f7c9d", "namespace": ns, "labels": {"app": "llm-0"},
                         "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm",
                                              "uid": "00000000-0000-4000-8000-000000000099", "controller": True}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "llm-0"}}, "template": template}}))
    return out


def bench_configmap(ns: str, index: int) -> dict[str, Any]:
    """An app's ConfigMap: settings, a config file, a CA bundle (what a Helm chart or kustomize makes)."""
    data = {f"SETTING_{k:02d}": f"value-{k}-{index}" for k in range(12)}
    data["config.yaml"] = "".join(f"option_{k}: {'x' * 40}\n" for k in range(170))          # ~8 KiB
    data["ca.crt"] = "-----BEGIN CERTIFICATE-----\n" + ("A" * 64 + "\n") * 24 + "-----END CERTIFICATE-----\n"
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"app-config-{index}", "namespace": ns, "labels": {"app": "llm"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                             {"data": {k: v for k, v in data.items() if k.startswith("SETTING")}})}},
            "data": data}


def bench_node(index: int) -> dict[str, Any]:
    """A node as a cloud provider registers it (labels, taints) with the status a kubelet reports."""
    gpu = index % GPU_EVERY == 0
    labels = {"kubernetes.io/hostname": f"node-{index}", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "node.kubernetes.io/instance-type": "g6.12xlarge" if gpu else "m7i.4xlarge",
              "topology.kubernetes.io/region": "us-east-1",
              "topology.kubernetes.io/zone": f"us-east-1{'abc'[index % 3]}",
              **{f"example.com/pool-attr-{k}": f"v{k}" for k in range(18)}}
    if gpu:
        labels["nvidia.com/gpu.product"] = "NVIDIA-L4"
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{index:05d}", "labels": labels},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}] if gpu else [],
                     "providerID": f"aws:///us-east-1a/i-{index:017x}"},
            "status": {"capacity": {"cpu": "48", "memory": "192Gi", "pods": "110", **({"nvidia.com/gpu": "4"} if gpu
                                                                                      else {})},
                       "images": [{"names": [f"registry.example.com/image-{k}@sha256:" + "ab" * 32,
                                             f"registry.example.com/image-{k}:v1"], "sizeBytes": 123456789}
                                  for k in range(50)]}}


def review_body(ns: str) -> bytes:
    container = {"name": "vllm", "image": "registry.example.com/vllm/vllm-openai@sha256:" + "4f" * 32,
                 "resources": {"requests": {"cpu": "4", "memory": "24Gi"},
                               "limits": {"memory": "24Gi", "nvidia.com/gpu": "1"}},
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}}}
    labels = {"app": "new-llm", "team": "search", "cost-center": "cc-1042"}
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "new-llm", "namespace": ns,
                                                                      "labels": labels},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "new-llm"}},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "containers": [container], "priorityClassName": "inference-high",
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}}}
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"}, "namespace": ns,
        "name": "new-llm", "operation": "CREATE", "userInfo": {"username": "alice", "groups": ["developers"]},
        "object": obj, "oldObject": None, "dryRun": False}}).encode()


# ---- filling the API server ----------------------------------------------------------------------
class Filler:
    """Creates objects with plain HTTPS POSTs on keep-alive connections, one per thread (the
    kubernetes client's per-call validation and serialization would make the client the bottleneck)."""

    def __init__(self, cp: ControlPlane, threads: int = 16) -> None:
        self.ctx = ssl.create_default_context(cafile=str(cp.pki.ca_path))
        self.ctx.load_cert_chain(str(cp.admin.cert), str(cp.admin.key))
        self.port = cp.port
        self.threads = threads

    def _all(self, method: str, requests: list[tuple[str, dict[str, Any] | None]]) -> None:
        errors: list[str] = []

        def run(k: int) -> None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=60)
            for path, obj in requests[k::self.threads]:
                conn.request(method, path, body=json.dumps(obj) if obj is not None else None,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status >= 300:
                    errors.append(f"{method} {path}: {resp.status} {data[:300]!r}")
                    return
            conn.close()
        workers = [threading.Thread(target=run, args=(k,)) for k in range(self.threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        if errors:
            raise SystemExit(errors[0])

    def create(self, *objects: tuple[str, dict[str, Any]]) -> None:
        self._all("POST", list(objects))

    def namespaces(self, n: int) -> None:
        self.create(*[("/api/v1/namespaces", {"metadata": {"name": namespace_name(i), "labels": {
            "team": f"team-{i % 50}"}}}) for i in range(n)])

    def workloads(self, n: int) -> None:
        self.create(*[w for i in range(n) for w in bench_workloads(namespace_name(i))])

    def pods(self, start: int, stop: int, namespaces: int) -> float:
        began = time.perf_counter()
        self.create(*[(f"/api/v1/namespaces/{namespace_name(i % namespaces)}/pods",
                       bench_pod(namespace_name(i % namespaces), i)) for i in range(start, stop)])
        return (stop - start) / (time.perf_counter() - began)

    def configmaps(self, n: int, namespaces: int) -> None:
        self.create(*[(f"/api/v1/namespaces/{namespace_name(i % namespaces)}/configmaps",
                       bench_configmap(namespace_name(i % namespaces), i)) for i in range(n)])

    def nodes(self, n: int) -> None:
        self.create(*[("/api/v1/nodes", bench_node(i)) for i in range(n)])

    def quotas(self, namespaces: int, *, create: bool) -> None:
        if create:
            self.create(*[(f"/api/v1/namespaces/{namespace_name(i)}/resourcequotas",
                           {"metadata": {"name": "gpus"}, "spec": {"hard": QUOTA}}) for i in range(namespaces)])
        else:
            self._all("DELETE", [(f"/api/v1/namespaces/{namespace_name(i)}/resourcequotas/gpus", None)
                                 for i in range(namespaces)])


def raw_list_seconds(cp: ControlPlane) -> float:
    """The API server's share of a sync: every page of the pod list (500 a page, as the cache asks),
    read and thrown away."""
    ctx = ssl.create_default_context(cafile=str(cp.pki.ca_path))
    ctx.load_cert_chain(str(cp.admin.cert), str(cp.admin.key))
    conn = http.client.HTTPSConnection("127.0.0.1", cp.port, context=ctx, timeout=120)
    began = time.perf_counter()
    token = ""
    while True:
        conn.request("GET", "/api/v1/pods?limit=500" + (f"&continue={token}" if token else ""))
        body = conn.getresponse().read()
        marker = body.rfind(b'"continue":"')   # no parsing: only the continue token is needed
        token = body[marker + 12:body.index(b'"', marker + 12)].decode() if marker >= 0 else ""
        if not token:
            break
    conn.close()
    return time.perf_counter() - began


# ---- the cache alone, in a fresh process -------------------------------------------------------------
def deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes an object graph holds (sys.getsizeof of every dict, list and string in it, each once: an
    interned string shared by many objects counts once)."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        size += sum(deep_size(v, seen) for v in obj)
    return size


def measure_cache(kubeconfig: str, variant: str) -> dict[str, Any]:
    """Runs in its own process (``--measure``): one ClusterCache, its sync time and memory. A variant
    ``<before|after>-without-<configmaps|nodes>`` leaves that informer out."""
    from webhook.cluster import CACHED, ClusterCache, api_client

    left_out = variant.partition("-without-")[2]
    kinds = tuple(c for c in CACHED if c.name != left_out)
    # before issue 18 objects were kept whole: the same kinds without trimming
    cached = tuple(dataclasses.replace(c, trim=lambda o: o) for c in kinds) if variant.startswith("before") else kinds
    gc.collect()
    rss0, _ = rss_kib()
    cache = ClusterCache(api_client(kubeconfig=kubeconfig), cached=cached)
    began = time.perf_counter()
    cache.start()
    if not cache.wait_synced(600):
        raise SystemExit("cache did not sync in 600 s")
    synced = time.perf_counter() - began
    gc.collect()
    rss1, hwm = rss_kib()
    objects = {i.name: sum(len(v) for v in i.store.values()) for i in cache.informers if not i.absent}
    held = {i.name: round(deep_size(i.store, set()) / 2**20, 2) for i in cache.informers if not i.absent}
    cache.stop()
    return {"variant": variant, "sync_s": round(synced, 2), "cache_mib": round((rss1 - rss0) / 1024, 1),
            "peak_rss_mib": round(hwm / 1024, 1), "objects": objects, "held_mib": held}


def cache_in_subprocess(kubeconfig: Path, variant: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--measure", variant, "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, cwd=REPO, timeout=900, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith('{"ts"')]  # not the cache's log
        raise SystemExit(f"cache measurement ({variant}) failed with exit {proc.returncode}:\n"
                         + "\n".join(lines[-40:]))
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ---- the webhook as deployed -----------------------------------------------------------------------
def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def latencies(port: int, ca: Path, body: bytes, *, requests: int, connections: int) -> list[float]:
    ctx = ssl.create_default_context(cafile=str(ca))
    out: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        local = []
        for _ in range(n):
            began = time.perf_counter()
            conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            local.append(time.perf_counter() - began)
            if resp.status != 200 or b'"allowed":true' not in data.replace(b" ", b""):
                with lock:
                    errors.append(f"unexpected answer {resp.status}: {data[:300]!r}")
                break
        conn.close()
        with lock:
            out.extend(local)
    threads = [threading.Thread(target=run, args=(requests // connections,)) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(errors[0])
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def webhook_figures(cp: ControlPlane, work: Path, namespaces: int, requests: int) -> dict[str, Any]:
    policyset = REPO / "policies" / "catalog" / "baseline.yaml"
    began = time.perf_counter()
    hook = Webhook(cp, policyset=policyset, workdir=work).start(timeout=900)
    ready = time.perf_counter() - began
    try:
        assert hook.proc is not None
        workers = worker_pids(hook.proc.proc.pid)
        body = review_body(namespace_name(namespaces // 2))
        latencies(hook.port, cp.pki.ca_path, body, requests=50, connections=1)  # warm-up
        seq = latencies(hook.port, cp.pki.ca_path, body, requests=requests, connections=1)
        par = latencies(hook.port, cp.pki.ca_path, body, requests=requests, connections=8)
        return {"ready_s": round(ready, 1), "workers": len(workers),
                "worker_rss_mib": [round(rss_kib(p)[0] / 1024, 1) for p in workers],
                "seq_p50_ms": round(pct(seq, 0.5), 2), "seq_p99_ms": round(pct(seq, 0.99), 2),
                "seq_max_ms": round(seq[-1] * 1000, 2), "par8_p50_ms": round(pct(par, 0.5), 2),
                "par8_p99_ms": round(pct(par, 0.99), 2), "par8_rps": round(len(par) / sum(par) * 8, 0)}
    finally:
        hook.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--configmaps", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--measure", choices=[f"{v}{w}" for v in ("before", "after")
                                              for w in ("", "-without-configmaps", "-without-nodes")],
                        help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_cache(args.kubeconfig, args.measure)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    cp = ControlPlane(workdir=work / "cluster", bin_dir=build_binaries(), controllers=False).start()
    try:
        admin = ["kubectl", "--kubeconfig", str(cp.admin_kubeconfig)]
        prod = render("overlays/prod")
        priority = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": "inference-high"}, "value": 100000}
        rbac = [*objects_of(prod, "Namespace", "ClusterRole", "ClusterRoleBinding"), priority]
        subprocess.run([*admin, "apply", "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List",
                       "items": rbac}), text=True, check=True, capture_output=True)
        filler = Filler(cp)
        filler.namespaces(args.namespaces)
        filler.workloads(args.namespaces)
        filler.quotas(args.namespaces, create=True)
        if args.configmaps or args.nodes:
            filler.configmaps(args.configmaps, args.namespaces)
            filler.nodes(args.nodes)
            print(f"{args.configmaps} ConfigMaps ({len(json.dumps(bench_configmap('x', 0)['data'])) / 1024:.1f} KiB "
                  f"of data each) and {args.nodes} Nodes ({len(json.dumps(bench_node(1))) / 1024:.1f} KiB each as "
                  "created):")
            for variant in ("before", "after"):
                full = cache_in_subprocess(cp.admin_kubeconfig, variant)
                for kind, count in (("configmaps", args.configmaps), ("nodes", args.nodes)):
                    without = cache_in_subprocess(cp.admin_kubeconfig, f"{variant}-without-{kind}")
                    held = full["cache_mib"] - without["cache_mib"]
                    kept = full["held_mib"].get(kind, 0.0)
                    print(f"  cache {variant:6s}: {count} {kind}: the store holds {kept:6.2f} MiB "
                          f"({kept * 1024 / max(1, count):.2f} KiB each, deep size); the process's RSS "
                          f"{held:+.1f} MiB with them ({full['cache_mib']} against {without['cache_mib']} MiB: "
                          f"includes the allocator's high water from parsing the list), sync {full['sync_s']} s "
                          f"against {without['sync_s']} s")
        empty = webhook_figures(cp, work, args.namespaces, min(args.requests, 500))
        base = {v: cache_in_subprocess(cp.admin_kubeconfig, v) for v in ("before", "after")}
        print(f"kube-apiserver {cp.server}, {args.namespaces} namespaces, quotas and Deployments (each with 4 "
              f"ReplicaSets), no pods: webhook worker RSS "
              f"{empty['worker_rss_mib']} MiB; a cache process +{base['before']['cache_mib']} / "
              f"+{base['after']['cache_mib']} MiB (before / after): the baselines subtracted below")
        created = 0
        for size in sizes:
            filler.quotas(args.namespaces, create=False)
            rate = filler.pods(created, size, args.namespaces)
            created = size
            filler.quotas(args.namespaces, create=True)
            print(f"\n== {size} pods ({size // GPU_EVERY} with a GPU) in {args.namespaces} namespaces, "
                  f"{args.namespaces} quotas (created at {rate:.0f} pods/s)")
            print(f"the API server's share: the pod list's pages fetched and dropped in {raw_list_seconds(cp):.2f} s")
            for variant in ("before", "after"):
                m = cache_in_subprocess(cp.admin_kubeconfig, variant)
                held = m["cache_mib"] - base[variant]["cache_mib"]
                print(f"cache {variant:6s}: sync {m['sync_s']:6.2f} s, {held:7.1f} MiB for the objects "
                      f"({held * 1024 / size:.2f} KiB a pod; process peak {m['peak_rss_mib']:.0f} MiB), "
                      f"objects {m['objects']}")
            w = webhook_figures(cp, work, args.namespaces, args.requests)
            cache_mib = [round(r - b, 1) for r, b in zip(w["worker_rss_mib"], empty["worker_rss_mib"], strict=False)]
            print(f"webhook: ready in {w['ready_s']} s, {w['workers']} worker(s), worker RSS {w['worker_rss_mib']} MiB "
                  f"(cache +{cache_mib} MiB); admission of a GPU Deployment ({args.requests} reviews, look-ahead over "
                  f"{size // args.namespaces} pods): sequential p50 {w['seq_p50_ms']} ms, p99 {w['seq_p99_ms']} ms, "
                  f"max {w['seq_max_ms']} ms; 8 connections p50 {w['par8_p50_ms']} ms, p99 {w['par8_p99_ms']} ms, "
                  f"{w['par8_rps']:.0f} reviews/s")
        print(f"\nmachine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
