"""Benchmark: `mlguard check` on one file of 10,000 workload objects.

1. The policy engine alone (in process, baseline and strict PolicySets): objects per second, on the core kinds
   (Deployment, StatefulSet, Job, CronJob, Rollout, Pod: the set this benchmark has always measured) and on a
   mix of the same size in which half the objects are the other kinds GPU platforms deploy with (KServe,
   KubeRay, Kubeflow, Trainer, JobSet, LeaderWorkerSet, Knative, Volcano, Argo Workflows, a generic kind).
2. `mlguard check` (walk, parse, judge, locate every finding, JSON report) against libyaml's own parse of
   the same file (`list(yaml.load_all(text, Loader=yaml.CSafeLoader))`), in the same process, best of 3,
   CPU time of this process (the machine is shared: wall time measures the neighbours). Goal: <= 2x.
3. Peak memory (max RSS of a fresh `mlguard check` process) at 10,000, 25,000 and 50,000 objects, next to
   a fresh process that only parses the file (streaming, nothing kept). Goal: <= 300 MiB at 50,000, linear.

    python tests/benchmarks/bench_check.py [--objects 10000] [--memory 10000,25000,50000] [--sets core,mixed]
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


def _tpl(i: int, rng: random.Random) -> dict:
    """A pod template of the core generator (GPUs, probes, labels and all), for the other kinds."""
    while True:
        obj = workload(i, rng)
        if obj["kind"] in ("Deployment", "StatefulSet", "Rollout"):
            return obj["spec"]["template"]


def new_kind(i: int, rng: random.Random) -> dict:
    """One object of a kind beyond the core ones, built around the core generator's pod template (shapes as in
    the policy samples: policies/library/*/tests/kinds)."""
    tpl = _tpl(i, rng)
    meta = {"name": f"n{i}", "namespace": f"team-{i % 40}"}
    spec = tpl["spec"]
    kind = rng.choice(["RayCluster", "RayService", "RayJob", "PyTorchJob", "JobSet", "TrainJob", "LLMInferenceService",
                       "InferenceService", "KnativeService", "VolcanoJob", "Workflow", "LeaderWorkerSet", "Notebook"])
    n = rng.choice([1, 2, 4])
    if kind.startswith("Ray"):
        cluster = {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                       {"name": "ray-head", "image": "rayproject/ray:2.46.0"}]}}},
                   "workerGroupSpecs": [{"groupName": "gpu", "replicas": n, "minReplicas": 0, "maxReplicas": n,
                                         "rayStartParams": {}, "template": tpl}]}
        body = {"RayCluster": cluster, "RayService": {"serveConfigV2": "applications: []", "rayClusterConfig": cluster},
                "RayJob": {"entrypoint": "python x.py", "activeDeadlineSeconds": 3600, "shutdownAfterJobFinishes": True,
                           "rayClusterSpec": cluster}}[kind]
        return {"apiVersion": "ray.io/v1", "kind": kind, "metadata": meta, "spec": body}
    if kind == "PyTorchJob":
        return {"apiVersion": "kubeflow.org/v1", "kind": kind, "metadata": meta,
                "spec": {"runPolicy": {"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600},
                         "pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": tpl},
                                                 "Worker": {"replicas": n, "template": tpl}}}}
    if kind == "JobSet":
        return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": kind, "metadata": meta,
                "spec": {"ttlSecondsAfterFinished": 600, "replicatedJobs": [
                    {"name": "w", "replicas": n, "template": {"spec": {"parallelism": 2, "activeDeadlineSeconds": 3600,
                                                                       "template": tpl}}}]}}
    if kind == "TrainJob":
        return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": kind, "metadata": meta,
                "spec": {"activeDeadlineSeconds": 3600, "runtimeRef": {"name": "torch-distributed"},
                         "trainer": {"numNodes": n, "image": spec["containers"][0]["image"],
                                     "resourcesPerNode": spec["containers"][0]["resources"]}}}
    if kind == "LLMInferenceService":
        return {"apiVersion": "serving.kserve.io/v1alpha2", "kind": kind, "metadata": meta,
                "spec": {"replicas": n, "model": {"uri": "hf://org/m"}, "labels": tpl["metadata"]["labels"],
                         "template": spec}}
    if kind == "InferenceService":
        predictor = {**spec, "minReplicas": 1, "maxReplicas": n}
        return {"apiVersion": "serving.kserve.io/v1beta1", "kind": kind, "metadata": {**meta,
                "labels": tpl["metadata"]["labels"]}, "spec": {"predictor": predictor}}
    if kind == "KnativeService":
        knative = {"metadata": {"labels": tpl["metadata"]["labels"],
                                "annotations": {"autoscaling.knative.dev/max-scale": str(n)}}, "spec": spec}
        return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": meta,
                "spec": {"template": knative}}
    if kind == "VolcanoJob":
        return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": meta,
                "spec": {"ttlSecondsAfterFinished": 600, "tasks": [{"name": "w", "replicas": n, "template": tpl}]}}
    if kind == "Workflow":
        container = {k: v for k, v in spec["containers"][0].items() if k != "name"}
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": meta,
                "spec": {"activeDeadlineSeconds": 3600, "ttlStrategy": {"secondsAfterCompletion": 600},
                         "podMetadata": {"labels": tpl["metadata"]["labels"]},
                         "templates": [{"name": "main", "container": container,
                                        **{k: v for k, v in spec.items() if k != "containers"}}]}}
    if kind == "LeaderWorkerSet":
        return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": kind, "metadata": meta,
                "spec": {"replicas": n, "leaderWorkerTemplate": {"size": 2, "leaderTemplate": tpl,
                                                                  "workerTemplate": tpl}}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "metadata": meta, "spec": {"template": tpl}}


def write_manifests(path: Path, count: int) -> int:
    rng = random.Random(7)
    objects = [workload(i, rng) for i in range(count)]
    quotas = [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": f"team-{n}"},
               "spec": {"hard": {"requests.nvidia.com/gpu": "64"}}} for n in range(40)]
    path.write_text(yaml.dump_all(objects + quotas, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                  sort_keys=False))
    return len(objects) + len(quotas)


# Peak RSS from /proc/self/status VmHWM: getrusage's ru_maxrss would count the parent's memory that a forked
# child held before exec (Linux keeps that high-water mark across execve).
PEAK = """
import sys
mode, path, out = sys.argv[1:4]
if mode == "parse":
    import yaml
    with open(path) as f:
        for _ in yaml.load_all(f.read(), Loader=yaml.CSafeLoader):
            pass
    code = 0
else:
    from policies.cli import main
    code = main(["check", "--format", "json", "-o", out, path])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) // 1024, code)
"""


def peak_mib(mode: str, path: Path, out: Path) -> tuple[int, int]:
    proc = subprocess.run([sys.executable, "-c", PEAK, mode, str(path), str(out)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"{mode} {path}: {proc.stderr[-2000:]}")
    mib, code = lines[-1].split()
    return int(mib), int(code)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--memory", default="10000,25000,50000", help="object counts for the memory runs")
    parser.add_argument("--sets", default="core,mixed", help="engine sets: core kinds, and a mix with the others")
    args = parser.parse_args()
    rng = random.Random(7)
    objects = [workload(i, rng) for i in range(args.objects)]
    quotas = [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": f"team-{n}"},
               "spec": {"hard": {"requests.nvidia.com/gpu": "64"}}} for n in range(40)]
    mixed_rng = random.Random(11)
    sets = {"core": objects + quotas,
            "mixed": [new_kind(i, mixed_rng) if i % 2 else objects[i] for i in range(args.objects)] + quotas}
    print(f"mlguard check benchmark: {args.objects} workload objects (+{len(quotas)} ResourceQuotas)")
    for label in args.sets.split(","):
        manifests = sets[label]
        for name in ("baseline.yaml", "strict.yaml"):
            policyset = load_policyset(CATALOG / name)
            best = None
            for _ in range(3):
                start = time.process_time()
                facts = ManifestFacts(manifests)
                report = evaluate(manifests, policyset, point="ci", facts=facts)
                elapsed = time.process_time() - start
                best = elapsed if best is None else min(best, elapsed)
            print(f"  engine, {label:<6} {name:<13} {len(policyset.enabled_policies()):>2} policies: {best:.2f} s CPU "
                  f"best of 3 -> {args.objects / best:,.0f} objects/s ({len(report.violations)} violations)")

    from policies.check import CheckOptions, run_check
    from policies.output import render_json
    from policies.policyset import default_policyset_path

    policyset = load_policyset(default_policyset_path())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifests.yaml"
        write_manifests(path, args.objects)
        size = path.stat().st_size / 2**20
        parse_best = check_best = None
        for _ in range(3):
            start = time.process_time()
            docs = list(yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader))
            parse = time.process_time() - start
            del docs
            start = time.process_time()
            result = run_check([str(path)], CheckOptions(policyset=policyset, root=Path(tmp)))
            render_json(result, policyset)
            check = time.process_time() - start
            parse_best = parse if parse_best is None else min(parse_best, parse)
            check_best = check if check_best is None else min(check_best, check)
        assert parse_best and check_best
        print(f"  one {size:.1f} MiB file, CPU best of 3: libyaml parse {parse_best:.2f} s, mlguard check "
              f"{check_best:.2f} s ({len(result.findings)} findings located) -> {check_best / parse_best:.2f}x "
              f"the parse (goal <= 2x)")
        for count in (int(c) for c in args.memory.split(",") if c):
            big = Path(tmp) / f"m{count}.yaml"
            write_manifests(big, count)
            parse_mib, _ = peak_mib("parse", big, Path(tmp) / "out.json")
            check_mib, code = peak_mib("check", big, Path(tmp) / "out.json")
            print(f"  peak memory at {count:>6,} objects ({big.stat().st_size / 2**20:.0f} MiB file): mlguard check "
                  f"{check_mib} MiB (exit {code}), the parse alone {parse_mib} MiB")
            big.unlink()


if __name__ == "__main__":
    main()
