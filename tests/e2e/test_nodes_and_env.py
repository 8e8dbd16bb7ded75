"""Issue 14 against the real API server: spec.nodeName to a GPU node, and NVIDIA_VISIBLE_DEVICES from a
ConfigMap or a Secret. The webhook reads Nodes and ConfigMaps through its own list+watch cache (the
project's read-only RBAC); it never reads Secrets.

The GPU node is a Node object created with kubectl (no kubelet runs here): the API server stores it, the
webhook's node cache sees its taint and label, and a pod bound to it by nodeName is judged before the
API server stores the pod. Node: Kubernetes API reference v1 (spec.taints, metadata.labels as GPU
feature discovery sets nvidia.com/gpu.product).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Env, reload_policyset, wait_cached
from e2e_objects import COST, GPU_TOLERATION, container, deployment, pod, pod_template

DENIED = 'admission webhook "validate.mlguard.io" denied the request'
GPU_NODE = "e2e-gpu-node"


@pytest.fixture(scope="module")
def gpu_node(env: Env) -> Iterator[str]:
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": GPU_NODE, "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}
    cpu_node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "e2e-cpu-node"}}
    created = env.admin.apply([node, cpu_node])
    assert created.ok, created.output
    wait_cached(env, "nodes", env.admin.get("node", GPU_NODE, quiet=True))
    wait_cached(env, "nodes", env.admin.get("node", "e2e-cpu-node", quiet=True))
    yield GPU_NODE
    env.admin.run("delete", "node", GPU_NODE, "e2e-cpu-node", "--wait=false", quiet=True)


def cpu_container(name: str = "etl", **extra: Any) -> dict[str, Any]:
    return {**container(name, gpus=None), **extra}


def bound(name: str, ns: str, node: str, *containers: dict[str, Any], tolerate: bool = False) -> dict[str, Any]:
    obj = pod(name, ns, *containers)
    obj["spec"]["nodeName"] = node
    if tolerate:
        obj["spec"]["tolerations"] = [GPU_TOLERATION]
    return obj


def test_a_cpu_pod_bound_to_a_gpu_node_by_node_name_is_denied(env: Env, ns: str, gpu_node: str) -> None:
    """The kubelet would run it: nodeName skips the scheduler and NoSchedule is the scheduler's rule."""
    result = env.alice.apply(bound("etl", ns, gpu_node, cpu_container()))
    assert not result.ok
    assert DENIED in result.stderr and "gpu-tolerations: spec.nodeName:" in result.stderr
    assert f"bound to GPU node `{gpu_node}` (taint nvidia.com/gpu:NoSchedule, label " \
           "nvidia.com/gpu.product=NVIDIA-L4)" in result.stderr
    assert "runbooks/admission-denied.md#gpu-tolerations" in result.stderr
    assert not env.admin.run("get", "pod", "etl", "-n", ns, quiet=True).ok

    # a GPU pod bound there, and a CPU pod bound to a CPU node, are stored
    gpu = env.alice.apply(bound("llm", ns, gpu_node, container(), tolerate=True))
    assert gpu.ok, gpu.output
    cpu = env.alice.apply(bound("etl-cpu", ns, "e2e-cpu-node", cpu_container()))
    assert cpu.ok, cpu.output
    assert not [w for w in cpu.warnings if w.startswith("gpu-tolerations")]


def test_a_deployment_bound_to_a_gpu_node_is_denied_and_an_unknown_node_warns(env: Env, ns: str,
                                                                            gpu_node: str) -> None:
    template = pod_template("etl", cpu_container())
    template["spec"]["nodeName"] = gpu_node
    denied = env.alice.apply(deployment("etl", ns, template=template))
    assert not denied.ok and "gpu-tolerations: spec.template.spec.nodeName:" in denied.stderr
    template["spec"]["nodeName"] = "e2e-node-not-registered"
    warned = env.alice.apply(deployment("etl", ns, template=template), "--dry-run=server")
    assert warned.ok, warned.output
    assert any(w.startswith("gpu-tolerations: spec.template.spec.nodeName:") and "cannot be seen here" in w
               for w in warned.warnings), warned.stderr


def with_sidecar(name: str, ns: str, sidecar: dict[str, Any]) -> dict[str, Any]:
    """A GPU Deployment (server with 1 GPU, tolerating the GPU taint) with a CPU sidecar."""
    return deployment(name, ns, template=pod_template(name, container(), sidecar, tolerations=[GPU_TOLERATION]))


def test_nvidia_visible_devices_all_from_a_configmap_is_denied(env: Env, ns: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gpu-env", "namespace": ns},
          "data": {"NVIDIA_VISIBLE_DEVICES": "all", "LOG_LEVEL": "info"}}
    assert env.alice.apply(cm).ok
    wait_cached(env, "configmaps", env.admin.get("configmap", "gpu-env", ns, quiet=True))
    sidecar = cpu_container("metrics", envFrom=[{"configMapRef": {"name": "gpu-env"}}])
    result = env.alice.apply(with_sidecar("llm", ns, sidecar))
    assert not result.ok
    assert DENIED in result.stderr
    assert ("gpu-isolation: spec.template.spec.containers[1].envFrom[0]: container `metrics` of Deployment `llm` gets "
            "NVIDIA_VISIBLE_DEVICES=all from ConfigMap `gpu-env` (envFrom) without a GPU request") in result.stderr
    assert "runbooks/admission-denied.md#gpu-isolation" in result.stderr

    # the same key by name, and the ConfigMap changed to void: stored
    by_key = cpu_container("metrics", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {
        "configMapKeyRef": {"name": "gpu-env", "key": "NVIDIA_VISIBLE_DEVICES"}}}])
    assert not env.alice.apply(with_sidecar("llm", ns, by_key)).ok
    cm["data"]["NVIDIA_VISIBLE_DEVICES"] = "void"
    assert env.alice.apply(cm).ok
    wait_cached(env, "configmaps", env.admin.get("configmap", "gpu-env", ns, quiet=True))
    stored = env.alice.apply(with_sidecar("llm", ns, by_key))
    assert stored.ok, stored.output
    assert not [w for w in stored.warnings if w.startswith("gpu-isolation")]


def test_nvidia_visible_devices_from_a_secret_is_governed_by_unresolved_env(env: Env, ns: str) -> None:
    """The webhook never reads Secrets: the baseline warns (unresolvedEnv: warn), the strict choice denies."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gpu-env", "namespace": ns},
              "stringData": {"NVIDIA_VISIBLE_DEVICES": "all"}}
    assert env.alice.apply(secret).ok
    sidecar = cpu_container("metrics", envFrom=[{"secretRef": {"name": "gpu-env"}}])
    warned = env.alice.apply(with_sidecar("llm", ns, sidecar), "--dry-run=server")
    assert warned.ok, warned.output
    [warning] = [w for w in warned.warnings if w.startswith("gpu-isolation")]
    assert warning.startswith("gpu-isolation: spec.template.spec.containers[1].envFrom[0]: container `metrics` "
                              "of Deployment `llm` takes its environment from Secret `gpu-env` (envFrom), whose "
                              "values the webhook never reads")

    def strict(spec: dict[str, Any]) -> None:
        spec["policies"]["gpu-isolation"].setdefault("params", {})["unresolvedEnv"] = "deny"
    with reload_policyset(env, strict):
        denied = env.alice.apply(with_sidecar("llm", ns, sidecar))
        assert not denied.ok
        assert DENIED in denied.stderr and "Secret `gpu-env` (envFrom), whose values the webhook never reads" \
            in denied.stderr
        assert "secretKeyRef instead of envFrom" in denied.stderr
        # the fix the message names: take the Secret's keys one by one
        per_key = cpu_container("metrics", env=[{"name": "METRICS_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": "gpu-env", "key": "NVIDIA_VISIBLE_DEVICES"}}}])
        fixed = env.alice.apply(with_sidecar("llm", ns, per_key))
        assert fixed.ok, fixed.output


def test_mlguard_facts_records_the_nodes_and_check_decides_a_node_name(env: Env, gpu_node: str) -> None:
    out = env.workdir / "facts-nodes.yaml"
    facts = env.mlguard("facts", "--kubeconfig", str(env.cp.admin_kubeconfig), "-o", str(out))
    assert facts.ok, facts.output
    manifest = env.workdir / "pinned.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: etl, namespace: team-x, labels: "
        + "{" + ", ".join(f"{k}: {v}" for k, v in COST.items()) + "}}\n"
        f"spec:\n  nodeName: {gpu_node}\n  containers: [{{name: etl, image: etl:1}}]\n")
    offline = env.mlguard("check", str(manifest))
    assert "WARN  gpu-tolerations" in offline.stdout and "cannot be seen here" in offline.stdout
    checked = env.mlguard("check", "--cluster-facts", str(out), str(manifest))
    assert checked.returncode == 1
    assert "DENY  gpu-tolerations" in checked.stdout and f"bound to GPU node `{gpu_node}`" in checked.stdout
