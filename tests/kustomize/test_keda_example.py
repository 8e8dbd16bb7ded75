"""The KEDA example (examples/keda-scale-to-zero): a ScaledObject that scales the inference stack's
vLLM server on its queue and to zero off-hours. Its schema is checked against KEDA's CRD by
test_render.py; here: what it targets, that its cron windows and time zone are real, and that its
queue query is the one vLLM's series answer, asked of a real Prometheus."""

from __future__ import annotations

import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from kustomize_testlib import REPO, Renders, find, one
from promdata import Prom

from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.policyset import load_policyset

EXAMPLE = "kustomize/examples/keda-scale-to-zero"
STACK = "kustomize/examples/inference-stack"


def scaled_object(renders: Renders) -> dict:
    (obj,) = find(renders(EXAMPLE), "ScaledObject")
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    return obj


def trigger(obj: dict, kind: str) -> dict:
    (found,) = [t for t in obj["spec"]["triggers"] if t["type"] == kind]
    return found


def test_it_scales_the_vllm_deployment_of_the_inference_stack_to_zero(renders: Renders) -> None:
    obj = scaled_object(renders)
    ref = obj["spec"]["scaleTargetRef"]
    target = one(renders(STACK), ref["kind"], ref["name"])
    assert (ref["apiVersion"], target["metadata"]["namespace"]) == ("apps/v1", obj["metadata"]["namespace"])
    assert "vllm" in target["spec"]["template"]["spec"]["containers"][0]["image"]
    spec = obj["spec"]
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    # At full size it stays inside the namespace's GPU quota.
    gpus = int(target["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    quota = one(renders(STACK), "ResourceQuota", "gpu")
    assert spec["maxReplicaCount"] * gpus <= int(quota["spec"]["hard"]["requests.nvidia.com/gpu"])
    assert obj["metadata"]["labels"]["team"] == target["metadata"]["labels"]["team"]


def test_the_cron_window_is_working_hours_in_a_real_time_zone(renders: Renders) -> None:
    meta = trigger(scaled_object(renders), "cron")["metadata"]
    ZoneInfo(meta["timezone"])  # an IANA zone, as KEDA's cron scaler requires
    start, end = meta["start"].split(), meta["end"].split()
    assert len(start) == len(end) == 5 and start != end  # "Linux format cron"; KEDA refuses start == end
    assert int(start[1]) < int(end[1]) and start[4] == end[4] == "1-5"  # weekdays, day hours: zero otherwise
    assert int(meta["desiredReplicas"]) >= 1


def test_the_queue_query_asks_for_this_deployments_model(renders: Renders, prometheus: Prom, tmp_path: Path) -> None:
    obj = scaled_object(renders)
    meta = trigger(obj, "prometheus")["metadata"]
    ref = obj["spec"]["scaleTargetRef"]
    target = one(renders(STACK), "Deployment", ref["name"])
    model = next(a.split("=", 1)[1] for a in target["spec"]["template"]["spec"]["containers"][0]["args"]
                 if a.startswith("--model="))  # vLLM labels its series model_name=<--model>
    query = meta["query"]
    assert "vllm:num_requests_waiting" in query
    assert f'namespace="{obj["metadata"]["namespace"]}"' in query and f'model_name="{model}"' in query
    assert float(meta["threshold"]) > 0 and meta["ignoreNullValues"] == "true"
    path = tmp_path / "rule.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "keda", "rules": [{"record": "keda:queue", "expr": query}]}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # KEDA wants a single element; vLLM's series (gpu_fleet: team-llm serves mistral-7b-instruct) give one.
    result = prometheus.instant(query)
    assert len(result) == 1 and float(result[0]["value"][1]) >= 0
    # With the server scaled to zero its series are gone: an empty answer, which ignoreNullValues reads as 0.
    assert prometheus.instant(query.replace(model, "model-scaled-to-zero")) == []


def test_strict_gpu_scale_to_zero_is_satisfied_for_the_scaled_server_only(renders: Renders) -> None:
    """The inference stack's namespace is staging, where strict.yaml asks GPU serving to scale to zero. Checked with
    this example (as `mlguard check kustomize/examples/inference-stack kustomize/examples/keda-scale-to-zero` does),
    the vLLM server it scales passes; the 70B server, which no ScaledObject scales, is denied and told what to add."""
    strict = load_policyset(REPO / "policies" / "catalog" / "strict.yaml")
    objects = renders(STACK) + renders(EXAMPLE)
    report = evaluate(objects, strict, point="ci", facts=ManifestFacts(objects))
    found = {v.resource.name: v for v in report.violations if v.policy == "gpu-scale-to-zero"}
    target = scaled_object(renders)["spec"]["scaleTargetRef"]["name"]
    assert target not in found
    assert found["vllm-llama-70b"].action == "deny"
    assert ("spec.scaleTargetRef {apiVersion: apps/v1, kind: Deployment, name: vllm-llama-70b} and minReplicaCount: 0"
            in found["vllm-llama-70b"].message)
    alone = evaluate(renders(STACK), strict, point="ci", facts=ManifestFacts(renders(STACK)))
    assert target in {v.resource.name for v in alone.violations if v.policy == "gpu-scale-to-zero"}
