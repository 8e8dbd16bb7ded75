"""`mlguard check` as a CI job runs it, with the shipped catalogs: device lists from elsewhere and
spec.nodeName (issue 14). Offline a ConfigMap in the checked set is read; a Secret or ConfigMap that is not
there is unresolved (baseline: a warning, exit 0; strict: a deny, exit 1); a nodeName is a warning unless a
Node in the set (or --cluster-facts) says what it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STRICT = ROOT / "policies/catalog/strict.yaml"

# A vLLM Deployment whose CPU sidecar takes its environment from a ConfigMap and a Secret (apps/v1, as in
# https://kubernetes.io/docs/tasks/configure-pod-container/configure-pod-configmap/#configure-all-key-value-pairs-in-a-configmap-as-container-environment-variables)
LABELS = {"app": "llm", "team": "search", "cost-center": "cc-1"}


def deployment(sidecar_env: dict[str, Any], **spec: Any) -> dict[str, Any]:
    server = {"name": "vllm", "image": "vllm/vllm-openai@sha256:" + "a" * 64,
              "resources": {"requests": {"cpu": "4", "memory": "16Gi"},
                            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"}}}
    sidecar = {"name": "metrics", "image": "registry.example.com/metrics@sha256:" + "b" * 64, **sidecar_env}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm", "namespace": "team-a",
                                                                       "labels": LABELS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "llm"}},
                     "template": {"metadata": {"labels": LABELS}, "spec": {
                         "containers": [server, sidecar], "priorityClassName": "inference-high",
                         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                         **spec}}}}


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "metrics-env", "namespace": "team-a"},
             "data": {"NVIDIA_VISIBLE_DEVICES": "all"}}
QUOTA = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": "team-a"},
         "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}}


def check(tmp_path: Path, objects: list[dict[str, Any]], *args: str) -> tuple[int, list[dict[str, Any]]]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", *args, str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    found = [v for v in json.loads(proc.stdout)["violations"] if v["policy"] in ("gpu-isolation", "gpu-tolerations")]
    return proc.returncode, found


ENV_FROM_CM = {"envFrom": [{"configMapRef": {"name": "metrics-env"}}]}
ENV_FROM_SECRET = {"envFrom": [{"secretRef": {"name": "metrics-env"}}]}


@pytest.mark.parametrize(("catalog", "objects", "exit_code", "action", "says"), [
    # the ConfigMap is in the checked set: read, denied in both catalogs
    ([], [CONFIGMAP, QUOTA, deployment(ENV_FROM_CM)], 1, "deny",
     "container `metrics` of Deployment `llm` gets NVIDIA_VISIBLE_DEVICES=all from ConfigMap `metrics-env` (envFrom)"),
    (["--policyset", str(STRICT)], [CONFIGMAP, QUOTA, deployment(ENV_FROM_CM)], 1, "deny",
     "container `metrics` of Deployment `llm` gets NVIDIA_VISIBLE_DEVICES=all from ConfigMap `metrics-env` (envFrom)"),
    # not in the checked set: unresolved, unresolvedEnv decides (baseline warn, strict deny)
    ([], [QUOTA, deployment(ENV_FROM_CM)], 0, "warn",
     "ConfigMap `metrics-env` (envFrom), which is not in the checked set"),
    (["--policyset", str(STRICT)], [QUOTA, deployment(ENV_FROM_CM)], 1, "deny",
     "ConfigMap `metrics-env` (envFrom), which is not in the checked set"),
    ([], [QUOTA, deployment(ENV_FROM_SECRET)], 0, "warn",
     "Secret `metrics-env` (envFrom), which is not in the checked set"),
    (["--policyset", str(STRICT)], [QUOTA, deployment(ENV_FROM_SECRET)], 1, "deny", "secretKeyRef instead of envFrom"),
])
def test_device_lists_from_elsewhere_with_the_catalogs(tmp_path: Path, catalog: list[str], objects: list[dict],
                                                       exit_code: int, action: str, says: str) -> None:
    code, found = check(tmp_path, objects, *catalog)
    isolation = [v for v in found if v["policy"] == "gpu-isolation"]
    assert [(v["action"], v["path"]) for v in isolation] == [(action, "spec.template.spec.containers[1].envFrom[0]")]
    assert says in isolation[0]["message"]
    assert isolation[0]["runbook"].endswith("runbooks/admission-denied.md#gpu-isolation")
    assert code == exit_code


def test_node_name_offline_warns_and_a_node_in_the_set_decides(tmp_path: Path) -> None:
    etl = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "etl", "namespace": "team-a", "labels": LABELS},
           "spec": {"nodeName": "gpu-a", "containers": [{"name": "etl", "image": "etl@sha256:" + "c" * 64}]}}
    code, found = check(tmp_path, [etl])
    assert code == 0 and [(v["policy"], v["action"], v["path"]) for v in found] == [
        ("gpu-tolerations", "warn", "spec.nodeName")]
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-a"},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}
    code, found = check(tmp_path, [node, etl], "--policyset", str(STRICT))
    assert code == 1 and [(v["policy"], v["action"]) for v in found] == [("gpu-tolerations", "deny")]
    assert "bound to GPU node `gpu-a` (taint nvidia.com/gpu:NoSchedule)" in found[0]["message"]


def test_a_pod_update_is_not_judged_on_its_node_even_without_only_new_violations() -> None:
    """nodeName is immutable after a Pod's CREATE: an UPDATE never carries a new one, so it is not judged
    (a PolicySet without onlyNewViolations would otherwise refuse every update of a pod the scheduler put on
    an untainted GPU node). A Deployment's template is judged at every operation: its pods are new."""
    from policies.context import ManifestFacts, RequestInfo
    from policies.engine import evaluate_object
    from policies.policyset import parse_policyset

    ps = parse_policyset(yaml.safe_dump({"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet",
                                         "spec": {"policies": {"gpu-tolerations": {"action": "deny"}}}}))
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-a",
                                                            "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}}}
    spec = {"nodeName": "gpu-a", "containers": [{"name": "etl", "image": "etl:1"}]}
    etl = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "etl", "namespace": "team-a"}, "spec": spec}
    facts = ManifestFacts([node])
    for operation, denied in (("CREATE", True), ("UPDATE", False)):
        result = evaluate_object(etl, ps, point="admission", facts=facts, request=RequestInfo(operation=operation))
        assert bool(result.violations) is denied, (operation, result.violations)
    dep = deployment({}, nodeName="gpu-a")
    dep["spec"]["template"]["spec"].pop("tolerations")
    dep["spec"]["template"]["spec"]["containers"] = spec["containers"]
    result = evaluate_object(dep, ps, point="admission", facts=facts, request=RequestInfo(operation="UPDATE"))
    assert [v.path for v in result.violations] == ["spec.template.spec.nodeName"]
