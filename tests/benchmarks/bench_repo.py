"""Benchmark: `mlguard check` on a GitOps repository of 2,000 manifest files / 10,000 objects with 50
kustomize units (each a base of 20 files and an overlay with a strategic-merge and a JSON 6902 patch), plus
1,000 plain files and a platform folder with the namespaces and quotas. Prints wall time, CPU time (mlguard
and its `kubectl kustomize` children) and peak memory of a fresh `mlguard check repo/` process.

    python tests/benchmarks/bench_repo.py [--units 50] [--plain-files 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBJECTS_PER_FILE = 5


def app_file(name: str, gpus: int) -> list[dict]:
    """Five objects, as an application's file holds them: Deployment, Service, ConfigMap, ServiceAccount, PDB."""
    labels = {"app": name, "team": "ml", "cost-center": "cc-1"}
    container = {"name": "server", "image": f"registry.example.com/{name}@sha256:" + "c" * 64,
                 "resources": {"requests": {"cpu": "2", "memory": "8Gi"},
                               "limits": {"memory": "8Gi", **({"nvidia.com/gpu": gpus} if gpus else {})}},
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
                 "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}}}
    spec: dict = {"containers": [container], "priorityClassName": "inference-high"}
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        spec["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-L4"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": labels}, "spec": spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8000}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config"}, "data": {"MODEL": name}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": name}}}},
    ]


def dump(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def make_repo(root: Path, units: int, plain_files: int, files_per_unit: int = 20) -> tuple[int, int]:
    files = objects = 0
    namespaces = [f"team-{u}" for u in range(units)] + [f"plain-{k}" for k in range(10)]
    platform = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
    platform += [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": ns},
                  "spec": {"hard": {"requests.nvidia.com/gpu": "64"}}} for ns in namespaces]
    dump(root / "platform/namespaces-and-quotas.yaml", platform)
    (root / "platform/kustomization.yaml").write_text("resources: [namespaces-and-quotas.yaml]\n")
    for u in range(units):
        base, overlay = root / f"apps/app-{u}/base", root / f"apps/app-{u}/overlays/prod"
        names = []
        for f in range(files_per_unit):
            name = f"svc-{u}-{f}"
            names.append(f"{name}.yaml")
            dump(base / f"{name}.yaml", app_file(name, gpus=1 if f % 4 == 0 else 0))
            files, objects = files + 1, objects + OBJECTS_PER_FILE
        (base / "kustomization.yaml").write_text(yaml.safe_dump({"resources": names}))
        dump(overlay / "replicas.yaml", [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "metadata": {"name": f"svc-{u}-0"}, "spec": {"replicas": 2}}])
        (overlay / "gpu.yaml").write_text(
            "- op: replace\n  path: /spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu\n  value: 2\n")
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "namespace": f"team-{u}", "resources": ["../../base"],
            "patches": [{"path": "replicas.yaml"},
                        {"path": "gpu.yaml", "target": {"kind": "Deployment", "name": f"svc-{u}-4"}}]}))
    for k in range(plain_files):
        docs = app_file(f"plain-{k}", gpus=1 if k % 5 == 0 else 0)
        for d in docs:
            d["metadata"]["namespace"] = f"plain-{k % 10}"
        dump(root / f"clusters/prod/plain-{k % 10}/app-{k}.yaml", docs)
        files, objects = files + 1, objects + OBJECTS_PER_FILE
    return files, objects


PEAK = """
import resource, sys, time
from policies.cli import main
start = time.perf_counter()
code = main(["check", "--format", "json", "-o", sys.argv[2], sys.argv[1]])
wall = time.perf_counter() - start
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # not ru_maxrss: see bench_check
print(wall, me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, int(hwm.split()[1]) // 1024, code)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--plain-files", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        files, objects = make_repo(repo, args.units, args.plain_files)
        (repo / ".git").mkdir()   # a repository root: paths are shown relative to it
        print(f"mlguard check on a repository: {files} manifest files, {objects} objects in them, "
              f"{args.units} kustomize overlays (+ their bases) and a platform folder")
        proc = subprocess.run([sys.executable, "-c", PEAK, str(repo), str(Path(tmp) / "out.json")], cwd=repo,
                              capture_output=True, text=True, check=False)
        if not proc.stdout.strip():
            raise SystemExit(proc.stderr[-3000:])
        wall, cpu, kids, peak, code = proc.stdout.split()
        report = json.loads((Path(tmp) / "out.json").read_text())
        print(f"  wall {float(wall):.1f} s; CPU: mlguard {float(cpu):.1f} s, kubectl kustomize {float(kids):.1f} s; "
              f"peak memory {peak} MiB; exit {code}")
        print(f"  {report['summary']['resources']} objects judged, {len(report['violations'])} findings located, "
              f"{len(report['inputs'])} input notes")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"  (benchmark total {time.perf_counter() - t:.0f} s)")
