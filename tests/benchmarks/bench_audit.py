#!/usr/bin/env python3
"""`mlguard audit` of 10,000 workloads in a real kube-apiserver (the e2e control plane).

    python tests/benchmarks/bench_audit.py [--workloads 10000] [--namespaces 100] [--page-size 500]

Creates ``--namespaces`` namespaces, each with a GPU ResourceQuota, and ``--workloads`` workloads spread
over them: vLLM Deployments shaped like a real one (env, args, probes, volumes; one GPU each, tolerations,
node class and priority; apps/v1), StatefulSets, Jobs and CronJobs (batch/v1, batch/v1beta1 on 1.20) in
the ratio 6:2:1:1; one in ten sets NVIDIA_VISIBLE_DEVICES without a GPU (gpu-isolation denies it). No
kube-controller-manager runs: no ReplicaSets or Pods are made, so every listed object is judged.

Then, each in a fresh process (peak memory is the process's own): the audit as `mlguard audit` runs it
(discovery, paged lists, judging at point audit with the baseline PolicySet) -- wall time, peak RSS
(VmHWM), API requests by verb; then the same with --write-reports into the installed OpenReports CRDs:
first run (every Report applied), second run (nothing changed: no write).
The API server and etcd share the machine's cores with the benchmark: figures are a floor.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
sys.path.insert(0, str(REPO))

from bench_cache import Filler, bench_pod, rss_kib  # noqa: E402
from e2e_cluster import ControlPlane, build_binaries  # noqa: E402

SHARED_CRDS = REPO.parent / "shared" / "schemas" / "crds"


def namespace_name(i: int) -> str:
    return f"audit-{i:03d}"


def workload(ns: str, index: int) -> tuple[str, dict[str, Any]]:
    pod = bench_pod(ns, 0)  # a GPU vLLM pod (index 0: with GPU, tolerations, class, priority)
    spec = copy.deepcopy(pod["spec"])
    spec = {k: v for k, v in spec.items() if v is not None}
    if index % 10 == 3:  # a GPU reaching a container that did not ask for one
        spec["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu")
        spec["containers"][0]["env"].append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"})
    name = f"w-{index:05d}"
    labels = {"app": name, "team": "search", "cost-center": "cc-1042"}
    template = {"metadata": {"labels": labels}, "spec": spec}
    kind = index % 10
    if kind < 6:
        return (f"/apis/apps/v1/namespaces/{ns}/deployments",
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}})
    if kind < 8:
        return (f"/apis/apps/v1/namespaces/{ns}/statefulsets",
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "labels": labels},
                 "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                          "template": template}})
    job_template = copy.deepcopy(template)
    job_template["spec"]["restartPolicy"] = "Never"
    job_spec = {"backoffLimit": 0, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600,
                "template": job_template}
    if kind == 8:
        return (f"/apis/batch/v1/namespaces/{ns}/jobs",
                {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
                 "spec": {**job_spec, "manualSelector": True, "selector": {"matchLabels": {"app": name}}}})
    return (f"/apis/batch/v1beta1/namespaces/{ns}/cronjobs",
            {"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": name, "labels": labels},
             "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job_spec}}})


def measure(kubeconfig: str, page: int, write: bool) -> dict[str, Any]:
    """In its own process: one audit (and, with ``write``, two report syncs)."""
    from kubernetes import client, config

    from policies.policyset import default_policyset_path, load_policyset
    from webhook.audit import Api, run_audit
    from webhook.openreports import ReportWriter, build_reports

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = Api(client.ApiClient(configuration))
    policyset = load_policyset(default_policyset_path())
    began, cpu0 = time.perf_counter(), time.process_time()
    run = run_audit(api, policyset, page=page)
    audit_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu0
    out: dict[str, Any] = {"judged": len(run.judged), "audit_s": round(audit_s, 2), "cpu_s": round(cpu_s, 2),
                           "requests": dict(api.requests), "findings": sum(len(j.outcome.violations)
                                                                           for j in run.judged)}
    if write:
        writer = ReportWriter(api)
        reports: Any = None
        for label in ("first", "second"):
            before = dict(api.requests)
            began = time.perf_counter()
            if label == "second":
                del run, reports  # as the loop does: one run's objects at a time
                run = run_audit(api, policyset, page=page)
            reports = build_reports(run)
            stats = writer.sync(reports)
            out[f"{label}_write"] = {"seconds": round(time.perf_counter() - began, 2), "applied": stats.applied,
                                     "unchanged": stats.unchanged, "deleted": stats.deleted,
                                     "reports": sum(len(r) for r in reports.values()),
                                     "requests": {k: v - before.get(k, 0) for k, v in api.requests.items()}}
    _, hwm = rss_kib()
    out["peak_rss_mib"] = round(hwm / 1024, 1)
    return out


def in_subprocess(kubeconfig: Path, page: int, write: bool) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--measure", "--kubeconfig", str(kubeconfig), "--page-size", str(page)]
    proc = subprocess.run(argv + (["--write"] if write else []), capture_output=True, text=True, cwd=REPO,
                          timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"audit measurement failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.kubeconfig, args.page_size, args.write)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    cp = ControlPlane(workdir=work / "cluster", bin_dir=build_binaries(), controllers=False).start()
    try:
        admin = ["kubectl", "--kubeconfig", str(cp.admin_kubeconfig)]
        for crd in sorted((SHARED_CRDS / "openreports").glob("*.yaml")):
            subprocess.run([*admin, "apply", "--server-side", "-f", str(crd)], check=True, capture_output=True)
        filler = Filler(cp)
        filler.create(*[("/api/v1/namespaces", {"metadata": {"name": namespace_name(i)}})
                        for i in range(args.namespaces)])
        filler.create(*[(f"/api/v1/namespaces/{namespace_name(i)}/resourcequotas",
                         {"metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "64"}}})
                        for i in range(args.namespaces)])
        began = time.perf_counter()
        filler.create(*[workload(namespace_name(i % args.namespaces), i) for i in range(args.workloads)])
        rate = args.workloads / (time.perf_counter() - began)
        print(f"kube-apiserver {cp.server} (Kubernetes 1.20), {args.namespaces} namespaces with a GPU quota, "
              f"{args.workloads} workloads (Deployments, StatefulSets, Jobs, CronJobs 6:2:1:1; created at "
              f"{rate:.0f}/s); page size {args.page_size}")
        read = in_subprocess(cp.admin_kubeconfig, args.page_size, write=False)
        print(f"audit (read + judge, baseline PolicySet): {read['judged']} objects judged, {read['findings']} "
              f"findings in {read['audit_s']} s wall, {read['cpu_s']} s CPU in the audit process "
              f"({read['judged'] / read['audit_s']:.0f} objects/s); "
              f"peak RSS {read['peak_rss_mib']} MiB; API requests {read['requests']}")
        written = in_subprocess(cp.admin_kubeconfig, args.page_size, write=True)
        for label in ("first", "second"):
            w = written[f"{label}_write"]
            print(f"reports, {label} run: {w['reports']} Reports, {w['applied']} applied, {w['unchanged']} unchanged, "
                  f"{w['deleted']} deleted in {w['seconds']} s; API requests {w['requests']}")
        print(f"with reports: peak RSS {written['peak_rss_mib']} MiB")
        print(f"machine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
