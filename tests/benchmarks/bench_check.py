"""Benchmark: `mlguard check`'s evaluation path on 10,000 workload objects.

Prints objects per second for the policy engine alone (in process, baseline and strict PolicySets)
and for the whole CLI (YAML parsing included) on a file with the same objects.

    python tests/benchmarks/bench_check.py [--objects 10000]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from policies.context import ManifestFacts  # noqa: E402
from policies.engine import evaluate  # noqa: E402
from policies.policyset import CATALOG, load_policyset  # noqa: E402


def workload(i: int, rng: random.Random) -> dict:
    kind = rng.choice(["Deployment", "StatefulSet", "Job", "CronJob", "Rollout", "Pod"])
    gpus = rng.choice([0, 0, 1, 2, 4])
    ns = f"team-{i % 40}"
    container = {
        "name": "server",
        "image": f"registry.example.com/model-{i}@sha256:" + "b" * 64,
        "env": [{"name": "MODEL", "value": f"m{i}"}],
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}},
    }
    if gpus:
        container["resources"]["limits"]["nvidia.com/gpu"] = gpus
    spec = {"containers": [container, {"name": "log", "image": "fluent-bit:3"}], "priorityClassName": "inference-high"}
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        spec["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-L4"}
    labels = {"app": f"w{i}", "team": "ml", "cost-center": "cc-1"}
    if i % 3 == 0:
        labels["mlguard.io/model"] = f"model-{i}"
    tpl = {"metadata": {"labels": labels}, "spec": spec}
    meta = {"name": f"w{i}", "namespace": ns}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, "labels": labels}, "spec": spec}
    if kind == "CronJob":
        job = {"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600,
               "template": {**tpl, "spec": {**spec, "restartPolicy": "Never"}}}
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": "@daily", "jobTemplate": {"spec": job}}}
    if kind == "Job":
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                "spec": {"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600,
                         "template": {**tpl, "spec": {**spec, "restartPolicy": "Never"}}}}
    api = "argoproj.io/v1alpha1" if kind == "Rollout" else "apps/v1"
    body = {"replicas": rng.choice([1, 2, 4]), "selector": {"matchLabels": {"app": f"w{i}"}}, "template": tpl}
    if kind == "Rollout":
        body["strategy"] = {"canary": {"steps": [{"setWeight": 20}, {"analysis": {"templates": [
            {"templateName": "latency"}]}}]}}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": body}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(7)
    objects = [workload(i, rng) for i in range(args.objects)]
    quotas = [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": f"team-{n}"},
               "spec": {"hard": {"requests.nvidia.com/gpu": "64"}}} for n in range(40)]
    manifests = objects + quotas
    print(f"mlguard check benchmark: {args.objects} workload objects (+{len(quotas)} ResourceQuotas)")
    for name in ("baseline.yaml", "strict.yaml"):
        policyset = load_policyset(CATALOG / name)
        best = None
        for _ in range(3):
            start = time.perf_counter()
            facts = ManifestFacts(manifests)
            report = evaluate(manifests, policyset, point="ci", facts=facts)
            elapsed = time.perf_counter() - start
            best = elapsed if best is None else min(best, elapsed)
        print(f"  engine, {name:<13} {len(policyset.enabled_policies()):>2} policies: {best:.2f} s best of 3 "
              f"-> {args.objects / best:,.0f} objects/s ({len(report.violations)} violations)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifests.yaml"
        path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", "-o",
                               str(Path(tmp) / "out.json"), str(path)], cwd=ROOT, capture_output=True, text=True,
                              check=False)
        elapsed = time.perf_counter() - start
        print(f"  CLI end to end (YAML parse + baseline + JSON out): {elapsed:.2f} s -> "
              f"{args.objects / elapsed:,.0f} objects/s (exit {proc.returncode})")


if __name__ == "__main__":
    main()
