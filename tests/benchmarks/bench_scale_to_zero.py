"""Benchmark: gpu-scale-to-zero in `mlguard check` when one namespace holds thousands of GPU model servers and their
KEDA ScaledObjects (the worst case for finding each workload's ScaledObject: every one is in the same namespace).

For N = 1,000, 5,000 and 10,000 vLLM Deployments (half with a ScaledObject at minReplicaCount 0, a quarter at 1,
a quarter with none), the engine's CPU time, best of 3, with only gpu-scale-to-zero on, against the same run with
the policy off (the extractor and the engine's own work). Linear is the goal: the facts index ScaledObjects by
target name, so each workload reads its own ScaledObjects, never the namespace's whole list (except to name a few
in a failing message).

    python tests/benchmarks/bench_scale_to_zero.py [--sizes 1000,5000,10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from policies.context import ManifestFacts  # noqa: E402
from policies.engine import evaluate  # noqa: E402
from policies.policyset import parse_policyset  # noqa: E402

CRON = {"timezone": "UTC", "start": "0 7 * * *", "end": "0 19 * * *", "desiredReplicas": "1"}
HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: bench}\nspec:\n  policies:\n"


def objects(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        name = f"vllm-{i}"
        out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "llm-dev"},
                    "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.2",
                                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
        if i % 4 == 3:
            continue  # no ScaledObject
        out.append({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                    "metadata": {"name": name, "namespace": "llm-dev"},
                    "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 1 if i % 4 == 2 else 0,
                             "triggers": [{"type": "cron", "metadata": CRON}]}})
    return out


def best_of_3(manifests: list[dict[str, Any]], action: str) -> tuple[float, int]:
    policyset = parse_policyset(HEAD + f"    gpu-scale-to-zero: {{action: {action}}}\n")
    best, found = float("inf"), 0
    for _ in range(3):
        start = time.process_time()
        report = evaluate(manifests, policyset, point="ci", facts=ManifestFacts(manifests))
        best = min(best, time.process_time() - start)
        found = len(report.violations)
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,10000")
    args = parser.parse_args()
    print("gpu-scale-to-zero, one namespace of N vLLM Deployments and their ScaledObjects, CPU best of 3:")
    for n in (int(x) for x in args.sizes.split(",")):
        manifests = objects(n)
        off, _ = best_of_3(manifests, '"off"')
        on, found = best_of_3(manifests, "deny")
        print(f"  N={n:>6}: policy off {off:.2f} s, on {on:.2f} s (+{on - off:.2f} s, "
              f"{(on - off) / n * 1e6:.0f} us per workload), {found} findings")


if __name__ == "__main__":
    main()
