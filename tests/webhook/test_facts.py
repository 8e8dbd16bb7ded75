"""`mlguard facts` against the tests' local list/watch API server (webhook_fakeapi.py, the real kubernetes
client), and `mlguard check --cluster-facts` with what it wrote: the quota look-ahead in CI with the
cluster's quota and the GPUs its other pods hold, exact to the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from webhook_fakeapi import FakeApi, kubeconfig_text
from webhook_testlib import REPO, gpu_pod

REPO_DATA = REPO / "tests/gitops/repo"
OVERLAY = REPO_DATA / "apps/llm/overlays/staging"


def mlguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policies.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """team-a (staging): quota 16 GPUs; the running vllm (ReplicaSet vllm-5c8d, 1 GPU: the workload the
    overlay replaces), StatefulSet other (2 x 1 GPU), a finished Job pod (4 GPUs, not counted).
    team-b: no quota at all."""
    api = FakeApi()
    api.start()
    api.add("namespaces", {"metadata": {"name": "team-a", "labels": {"mlguard.io/environment": "staging"}}})
    api.add("namespaces", {"metadata": {"name": "team-b", "labels": {"mlguard.io/environment": "dev"}}})
    api.add("resourcequotas", {"metadata": {"name": "gpu", "namespace": "team-a"},
                               "spec": {"hard": {"requests.nvidia.com/gpu": "16"}},
                               "status": {"used": {"requests.nvidia.com/gpu": "3"}}})
    api.add("pods", gpu_pod("vllm-5c8d-aaaaa", "team-a", gpus=1, owner=("ReplicaSet", "vllm-5c8d")))
    api.add("pods", gpu_pod("other-0", "team-a", gpus=1, owner=("StatefulSet", "other")))
    api.add("pods", gpu_pod("other-1", "team-a", gpus=1, owner=("StatefulSet", "other")))
    api.add("pods", gpu_pod("batch-x1", "team-a", gpus=4, owner=("Job", "batch"), phase="Succeeded"))
    api.add("nodes", {"metadata": {"name": "gpu-node-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                                   "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                      "spec": {"podCIDR": "10.0.1.0/24",
                               "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
                      "status": {"capacity": {"nvidia.com/gpu": "4"}}})
    api.add("nodes", {"metadata": {"name": "cpu-node-1", "labels": {"kubernetes.io/os": "linux"}}, "spec": {}})
    assert api.server is not None
    kube = tmp_path_factory.mktemp("kube") / "config"
    kube.write_text(kubeconfig_text(f"http://127.0.0.1:{api.server.server_address[1]}"))
    try:
        yield kube
    finally:
        api.stop()


@pytest.fixture(scope="module")
def facts(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("facts") / "cluster-facts.yaml"
    proc = mlguard("facts", "--kubeconfig", str(cluster), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 namespaces, 2 nodes, 1 quotas, 3 running pods" in proc.stderr
    return out


def test_facts_writes_what_the_webhook_cache_holds_trimmed_and_read_only(facts: Path) -> None:
    data = yaml.safe_load(facts.read_text())
    assert data["kind"] == "ClusterFacts" and data["metadata"]["cluster"].startswith("http://127.0.0.1:")
    assert {n["name"]: n["labels"] for n in data["namespaces"]} == {
        "team-a": {"mlguard.io/environment": "staging"}, "team-b": {"mlguard.io/environment": "dev"}}
    assert [q["spec"]["hard"] for q in data["resourceQuotas"]] == [{"requests.nvidia.com/gpu": "16"}]
    pods = {p["metadata"]["name"]: p for p in data["pods"]}
    assert set(pods) == {"vllm-5c8d-aaaaa", "other-0", "other-1"}  # the finished Job pod is not held
    assert pods["other-0"]["spec"]["containers"] == [{"name": "c", "resources": {
        "limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]  # no image, no env
    assert "resourceClaims" in data  # the fake API serves resource.k8s.io/v1
    # nodes: name, labels and taints, nothing else (no status, podCIDR, annotations)
    assert data["nodes"] == [
        {"name": "gpu-node-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"},
         "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        {"name": "cpu-node-1", "labels": {"kubernetes.io/os": "linux"}, "taints": []}]


def test_cluster_facts_decide_a_node_name(facts: Path, tmp_path: Path) -> None:
    """Offline a pod bound by nodeName is a warning (the node cannot be seen); with the cluster's nodes the
    check is the one admission makes: a CPU pod bound to a GPU node is denied, to a CPU node passes."""
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"etl-{node}", "namespace": "team-b"},
             "spec": {"nodeName": node, "containers": [{"name": "etl", "image": "etl:1"}]}}
            for node in ("gpu-node-1", "cpu-node-1")]
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(yaml.safe_dump_all(pods))

    def node_findings(*args: str) -> dict[str, str]:
        proc = mlguard("check", "--format", "json", *args, str(manifest))
        assert proc.returncode in (0, 1), proc.stderr
        return {v["resource"]["name"]: v["action"] for v in json.loads(proc.stdout)["violations"]
                if v["policy"] == "gpu-tolerations" and v["path"] == "spec.nodeName"}
    assert node_findings() == {"etl-gpu-node-1": "warn", "etl-cpu-node-1": "warn"}
    assert node_findings("--cluster-facts", str(facts)) == {"etl-gpu-node-1": "deny"}


def _gpu_quota(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode in (0, 1), proc.stderr
    return [v for v in json.loads(proc.stdout)["violations"] if v["policy"] == "gpu-quota"]


def test_overlay_without_its_quota_gets_no_deny_offline() -> None:
    [finding] = _gpu_quota(mlguard("check", "--format", "json", str(OVERLAY)))
    assert finding["action"] == "audit"
    assert "needs 16 nvidia.com/gpu at full size ((3 pods + 1 surge) x 4)" in finding["message"]
    assert "--cluster-facts" in finding["message"]


def test_cluster_facts_give_the_exact_look_ahead(facts: Path) -> None:
    [finding] = _gpu_quota(mlguard("check", "--format", "json", "--cluster-facts", str(facts), str(OVERLAY)))
    # 16 allowed; the running vllm pod is the workload being replaced, not "other"; other-0/1 hold 2
    assert finding["action"] == "deny"
    assert ("needs 16 nvidia.com/gpu at full size ((3 pods + 1 surge) x 4) but ResourceQuota `gpu` allows 16 "
            "(requests.nvidia.com/gpu) and other workloads in `team-a` use 2, leaving 14") in finding["message"]
    assert finding["source"] == {"file": "tests/gitops/repo/apps/llm/overlays/staging/replicas.yaml", "line": 2}


def test_a_namespace_the_cluster_knows_without_a_quota_is_denied(facts: Path) -> None:
    [finding] = _gpu_quota(mlguard("check", "--format", "json", "--cluster-facts", str(facts),
                                   str(REPO_DATA / "apps/batch/job.yaml")))
    assert finding["action"] == "deny"
    assert "no ResourceQuota in namespace `team-b` limits nvidia.com/gpu" in finding["message"]


def test_the_platform_folder_wins_over_the_snapshot(facts: Path) -> None:
    """The pull request's own quota (8, in platform/) is what will be synced: it is the one judged."""
    [finding] = _gpu_quota(mlguard("check", "--format", "json", "--cluster-facts", str(facts),
                                   str(REPO_DATA / "platform"), str(OVERLAY)))
    assert "allows 8 (requests.nvidia.com/gpu) and other workloads in `team-a` use 2, leaving 6" in finding["message"]


def test_facts_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "config"
    bad.write_text(kubeconfig_text("http://127.0.0.1:9"))  # nothing listens on the discard port
    proc = mlguard("facts", "--kubeconfig", str(bad))
    assert proc.returncode == 2 and proc.stderr.startswith("mlguard facts: cannot reach the API server")
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = mlguard("check", "--cluster-facts", str(bad), str(OVERLAY))
    assert proc.returncode == 2 and "not a cluster facts file written by `mlguard facts`" in proc.stderr


def test_snapshot_ownership_is_never_a_mere_name_prefix() -> None:
    """Issue 14: `llm` must not claim `llm-big`'s pods (offline, the snapshot keeps no uids: the suffix a controller
    gives its objects decides)."""
    from policies.snapshot import owned_by

    def pod(kind: str, owner: str) -> dict:
        return {"metadata": {"name": "p", "ownerReferences": [{"kind": kind, "name": owner, "controller": True}]}}

    assert owned_by(pod("ReplicaSet", "llm-7d9f8b6c5"), "llm")
    assert owned_by(pod("Job", "nightly-29012345"), "nightly")
    assert owned_by(pod("StatefulSet", "lws1-0"), "lws1")
    assert owned_by(pod("StatefulSet", "llm"), "llm")
    assert not owned_by(pod("ReplicaSet", "llm-big-7d9f8b6c5"), "llm")
    assert not owned_by(pod("StatefulSet", "llm-big"), "llm")
    assert not owned_by(pod("Job", "nightly-big-29012345"), "nightly")
    assert not owned_by({"metadata": {"name": "p", "ownerReferences": [
        {"kind": "ReplicaSet", "name": "llm-7d9f8b6c5", "controller": False}]}}, "llm")
