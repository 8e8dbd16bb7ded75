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
from webhook_testlib import REPO, gpu_deployment, gpu_pod

REPO_DATA = REPO / "tests/gitops/repo"
OVERLAY = REPO_DATA / "apps/llm/overlays/staging"


def replicaset(name: str, namespace: str, *, owner: tuple[str, str] | None = None,
               owner_uid: str | None = None) -> dict:
    """A ReplicaSet as the API lists it, with its pod template (which `mlguard facts` must not keep)."""
    meta: dict = {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                  "annotations": {"deployment.kubernetes.io/revision": "1"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": owner_uid or f"uid-{owner[1]}", "controller": True,
                                    "blockOwnerDeletion": True}]
    return {"metadata": meta, "spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "c", "image": "img", "env": [{"name": "TOKEN", "value": "secret"}]}]}}}}


def mlguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policies.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """team-a (staging): quota 16 GPUs; the running vllm (Deployment vllm, its ReplicaSet vllm-5c8d, 1 GPU: the
    workload the overlay replaces), StatefulSet other (2 x 1 GPU), a finished Job pod (4 GPUs, not counted).
    team-b: no quota at all. KEDA is served, with no ScaledObject."""
    api = FakeApi()
    api.start()
    api.add("deployments", gpu_deployment("vllm", "team-a", gpus=1, replicas=1))
    api.add("replicasets", replicaset("vllm-5c8d", "team-a", owner=("Deployment", "vllm")))
    api.add("statefulsets", {"metadata": {"name": "other", "namespace": "team-a", "uid": "uid-other"},
                             "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}}})
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
    api.write_kubeconfig(kube)
    try:
        yield kube
    finally:
        api.stop()


@pytest.fixture(scope="module")
def facts(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("facts") / "cluster-facts.yaml"
    proc = mlguard("facts", "--kubeconfig", str(cluster), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 namespaces, 2 nodes, 1 quotas, 3 running pods, 0 ScaledObjects" in proc.stderr
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


def test_an_old_snapshots_ownership_is_never_a_mere_name_prefix() -> None:
    """Issue 14: `llm` must not claim `llm-big`'s pods. A snapshot from an earlier `mlguard facts` keeps no uids:
    the suffix a controller gives its objects decides."""
    from policies.snapshot import owned_by_name

    def pod(kind: str, owner: str) -> dict:
        return {"metadata": {"name": "p", "ownerReferences": [{"kind": kind, "name": owner, "controller": True}]}}

    assert owned_by_name(pod("ReplicaSet", "llm-7d9f8b6c5"), "llm")
    assert owned_by_name(pod("Job", "nightly-29012345"), "nightly")
    assert owned_by_name(pod("StatefulSet", "lws1-0"), "lws1")
    assert owned_by_name(pod("StatefulSet", "llm"), "llm")
    assert not owned_by_name(pod("ReplicaSet", "llm-big-7d9f8b6c5"), "llm")
    assert not owned_by_name(pod("StatefulSet", "llm-big"), "llm")
    assert not owned_by_name(pod("Job", "nightly-big-29012345"), "nightly")
    assert not owned_by_name({"metadata": {"name": "p", "ownerReferences": [
        {"kind": "ReplicaSet", "name": "llm-7d9f8b6c5", "controller": False}]}}, "llm")


# ---- exact ownership and KEDA ScaledObjects ------------------------------------------------------------------------
SERVING = "serving"   # a staging namespace that only the cluster knows (labels from the snapshot)
STRICT = str(REPO / "policies/catalog/strict.yaml")   # gpu-scale-to-zero on in dev and staging (deny in staging)


def scaled_object(name: str, namespace: str, target: str, *, min_replicas: int | None = 0) -> dict:
    """A KEDA ScaledObject (keda.sh/v1alpha1, the CRD in ../shared/schemas/crds/keda/keda.sh_scaledobjects.yaml:
    spec.scaleTargetRef {apiVersion, kind, name}, minReplicaCount, triggers) as the API lists it."""
    spec: dict = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                  "maxReplicaCount": 4,
                  "triggers": [{"type": "prometheus", "metadata": {
                      "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
                      "query": f'sum(vllm:num_requests_waiting{{namespace="{namespace}"}})', "threshold": "8"},
                      "authenticationRef": {"name": "prom-creds"}}]}
    if min_replicas is not None:
        spec["minReplicaCount"] = min_replicas
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-so-{name}",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}, "spec": spec}


def serving_deployment(name: str, namespace: str = SERVING, *, gpus: int = 1, replicas: int = 1) -> dict:
    """A model-serving Deployment as a pull request holds it (apps/v1; label mlguard.io/model on the template)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, "mlguard.io/model": "mistral-7b"}},
                                  "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.2",
                                                           "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}}}


def write(path: Path, *objects: dict) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


def take_facts(api: FakeApi, directory: Path) -> tuple[Path, str]:
    assert api.server is not None
    kube = directory / "kubeconfig"
    api.write_kubeconfig(kube)
    out = directory / "cluster-facts.yaml"
    proc = mlguard("facts", "--kubeconfig", str(kube), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the snapshot goes to the file only
    return out, proc.stderr


@pytest.fixture(scope="module")
def keda_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeApi, Path]]:
    """team-c (staging, quota 16 GPUs): Deployment llm (its ReplicaSet llm-7d9f8b6c5, 1 GPU) and, all someone
    else's: Deployment llm-big (8 GPUs), a hand-made ReplicaSet `llm-vllm` (a name like llm's hash suffix, 2 GPUs),
    a ReplicaSet llm-5d orphaned by an earlier, deleted `llm` (another uid, 4 GPUs), a Job llm-2024 (1 GPU).
    team-d: a LeaderWorkerSet's chain (worker pod -> worker StatefulSet -> leader pod -> leader StatefulSet).
    serving (staging): ScaledObjects chat (-> chat, min 0) and summarize-so (-> summarize, min 2)."""
    api = FakeApi()
    api.start()
    try:
        # LeaderWorkerSet lws1 (leaderworkerset.x-k8s.io/v1): its leader StatefulSet `lws1` makes leader pod
        # `lws1-0`, which owns the worker StatefulSet `lws1-0`, whose pods are `lws1-0-<n>` (the LWS docs' shapes)
        api.add("namespaces", {"metadata": {"name": "team-d"}})
        lws = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "lws1",
               "uid": "uid-lws1", "controller": True}
        api.add("statefulsets", {"metadata": {"name": "lws1", "namespace": "team-d", "uid": "uid-sts-lws1",
                                              "ownerReferences": [lws]}, "spec": {}})
        leader = gpu_pod("lws1-0", "team-d", gpus=1, owner=("StatefulSet", "lws1"))
        leader["metadata"]["uid"] = "uid-lws1-0"
        leader["metadata"]["ownerReferences"][0]["uid"] = "uid-sts-lws1"
        api.add("pods", leader)
        api.add("statefulsets", {"metadata": {"name": "lws1-0", "namespace": "team-d", "uid": "uid-sts-lws1-0",
                                              "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "lws1-0",
                                                                   "uid": "uid-lws1-0", "controller": True}]},
                                 "spec": {}})
        worker = gpu_pod("lws1-0-1", "team-d", gpus=1, owner=("StatefulSet", "lws1-0"))
        worker["metadata"]["ownerReferences"][0]["uid"] = "uid-sts-lws1-0"
        api.add("pods", worker)
        for ns in ("team-c", SERVING):
            api.add("namespaces", {"metadata": {"name": ns, "labels": {"mlguard.io/environment": "staging"}}})
        api.add("resourcequotas", {"metadata": {"name": "gpu", "namespace": "team-c"},
                                   "spec": {"hard": {"requests.nvidia.com/gpu": "16"}}, "status": {}})
        for name in ("llm", "llm-big"):
            api.add("deployments", gpu_deployment(name, "team-c", gpus=1, replicas=1))
        api.add("replicasets", replicaset("llm-7d9f8b6c5", "team-c", owner=("Deployment", "llm")))
        api.add("replicasets", replicaset("llm-big-7d9f8b6c5", "team-c", owner=("Deployment", "llm-big")))
        api.add("replicasets", replicaset("llm-vllm", "team-c"))
        api.add("replicasets", replicaset("llm-5d", "team-c", owner=("Deployment", "llm"), owner_uid="uid-llm-before"))
        for pod_name, owner, gpus in (("llm-7d9f8b6c5-a", ("ReplicaSet", "llm-7d9f8b6c5"), 1),
                                      ("llm-big-7d9f8b6c5-a", ("ReplicaSet", "llm-big-7d9f8b6c5"), 8),
                                      ("llm-vllm-a", ("ReplicaSet", "llm-vllm"), 2),
                                      ("llm-5d-a", ("ReplicaSet", "llm-5d"), 4),
                                      ("llm-2024-a", ("Job", "llm-2024"), 1)):
            pod = gpu_pod(pod_name, "team-c", gpus=gpus, owner=owner)
            pod["metadata"]["uid"] = f"uid-{pod_name}"
            api.add("pods", pod)
        api.add("scaledobjects", scaled_object("chat", SERVING, "chat"))
        api.add("scaledobjects", scaled_object("summarize-so", SERVING, "summarize", min_replicas=2))
        out, stderr = take_facts(api, tmp_path_factory.mktemp("keda"))
        assert "3 namespaces, 0 nodes, 1 quotas, 7 running pods, 2 ScaledObjects" in stderr
        assert "not recorded" not in stderr
        yield api, out
    finally:
        api.stop()


@pytest.fixture(scope="module")
def keda_facts(keda_cluster: tuple[FakeApi, Path]) -> Path:
    return keda_cluster[1]


@pytest.fixture(scope="module")
def no_keda_facts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A cluster without KEDA's CRD (keda.sh answers 404), and an identity that may not list ReplicaSets."""
    api = FakeApi(with_keda=False)
    api.forbidden.add("replicasets")
    api.start()
    try:
        api.add("namespaces", {"metadata": {"name": SERVING, "labels": {"mlguard.io/environment": "staging"}}})
        yield take_facts(api, tmp_path_factory.mktemp("nokeda"))
    finally:
        api.stop()


def test_facts_record_the_owner_chain_and_scaled_objects_trimmed(keda_facts: Path) -> None:
    data = yaml.safe_load(keda_facts.read_text())
    owners = {(o["kind"], o["metadata"]["name"]): o for o in data["owners"]}
    assert set(owners) == {("Deployment", "llm"), ("Deployment", "llm-big"), ("ReplicaSet", "llm-7d9f8b6c5"),
                           ("ReplicaSet", "llm-big-7d9f8b6c5"), ("ReplicaSet", "llm-vllm"), ("ReplicaSet", "llm-5d"),
                           ("StatefulSet", "lws1"), ("StatefulSet", "lws1-0")}
    # identity, uid and owners only: no pod template (env values), annotations or replicas
    assert owners[("ReplicaSet", "llm-5d")] == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "llm-5d", "namespace": "team-c", "uid": "uid-llm-5d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm", "uid": "uid-llm-before",
             "controller": True}]}}
    assert owners[("Deployment", "llm")] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "metadata": {"name": "llm", "namespace": "team-c", "uid": "uid-llm"}}
    pod = next(p for p in data["pods"] if p["metadata"]["name"] == "llm-5d-a")
    assert pod["metadata"]["uid"] == "uid-llm-5d-a"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-llm-5d"
    # the webhook's own trim: target, floors, pause annotations; never triggers (queries, authentication refs)
    chat = next(so for so in data["scaledObjects"] if so["metadata"]["name"] == "chat")
    assert chat["apiVersion"] == "keda.sh/v1alpha1" and chat["kind"] == "ScaledObject"
    assert chat["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"},
                            "minReplicaCount": 0}
    assert "annotations" not in chat["metadata"] and "unavailable" not in data


def _findings(proc: subprocess.CompletedProcess[str], policy: str) -> list[dict]:
    assert proc.returncode in (0, 1), proc.stderr
    return [v for v in json.loads(proc.stdout)["violations"] if v["policy"] == policy]


def test_exact_ownership_counts_what_admission_counts(keda_facts: Path, tmp_path: Path) -> None:
    """llm (2 replicas + 1 surge, 1 GPU each) in team-c, quota 16: its own running pod is left out; llm-big's 8, the
    hand-made ReplicaSet llm-vllm's 2 (named like llm's hash suffix), the orphan of an earlier llm (another uid: 4)
    and the Job llm-2024's 1 are someone else's: 15 used, 1 left."""
    manifest = write(tmp_path / "llm.yaml", serving_deployment("llm", "team-c", replicas=2))
    proc = mlguard("check", "--format", "json", "--cluster-facts", str(keda_facts), str(manifest))
    [finding] = _findings(proc, "gpu-quota")
    assert finding["action"] == "deny"
    assert "allows 16 (requests.nvidia.com/gpu) and other workloads in `team-c` use 15, leaving 1" in \
        finding["message"]
    assert "cluster facts" not in proc.stderr  # a current snapshot: no note


def test_an_old_snapshot_is_read_by_names_with_a_note(keda_facts: Path, tmp_path: Path) -> None:
    """A file written by the previous `mlguard facts` (no owners, no uids, no scaledObjects) still works: pods are
    matched by the names controllers give (the approximation's blind spot: llm-vllm, the orphan llm-5d and the Job
    llm-2024 pass for llm's), the ScaledObjects are unknown, and stderr says both."""
    data = yaml.safe_load(keda_facts.read_text())
    for key in ("owners", "scaledObjects"):
        del data[key]
    for pod in data["pods"]:
        pod["metadata"].pop("uid", None)
        for ref in pod["metadata"].get("ownerReferences", []):
            ref.pop("uid"), ref.pop("apiVersion")
    old = tmp_path / "old-facts.yaml"
    old.write_text(yaml.safe_dump(data))
    manifest = write(tmp_path / "llm.yaml", serving_deployment("llm", "team-c", replicas=2),
                     serving_deployment("chat"))
    proc = mlguard("check", "--format", "json", "--policyset", STRICT, "--cluster-facts", str(old), str(manifest))
    # llm-vllm, llm-5d and the Job llm-2024 pass for llm's: only llm-big's 8 count, and llm's 3 fit (admission denies)
    assert [f for f in _findings(proc, "gpu-quota") if f["resource"]["name"] == "llm"] == []
    assert (f"mlguard: cluster facts {old} (taken {data['metadata']['takenAt']}): pods are matched to workloads by "
            "the names their controllers give, not by uid: it was written by an earlier `mlguard facts`, without "
            "owners; run `mlguard facts` again for exact ownership") in proc.stderr
    assert "the cluster's KEDA ScaledObjects are unknown" in proc.stderr
    scale = {f["resource"]["name"]: f for f in _findings(proc, "gpu-scale-to-zero")}
    assert set(scale) == {"llm", "chat"}  # chat's ScaledObject (min 0) is in the cluster, but this file cannot say
    assert all(f["action"] == "warn" and "could not see the cluster's ScaledObjects" in f["message"]
               for f in scale.values())


def test_a_scaled_object_only_in_the_cluster_takes_the_deployment_to_zero(keda_facts: Path, tmp_path: Path) -> None:
    """chat's ScaledObject lives in the cluster (min 0): CI now agrees with admission. Without the facts the checked
    set holds none: a finding, as before."""
    manifest = write(tmp_path / "chat.yaml", serving_deployment("chat"))
    assert _findings(mlguard("check", "--format", "json", "--policyset", STRICT, "--cluster-facts", str(keda_facts),
                             str(manifest)), "gpu-scale-to-zero") == []
    [alone] = _findings(mlguard("check", "--format", "json", "--policyset", STRICT, "--namespace-labels",
                                str(write(tmp_path / "labels.yaml", {SERVING: {"mlguard.io/environment": "staging"}})),
                                str(manifest)), "gpu-scale-to-zero")
    assert alone["action"] == "deny" and "no ScaledObject in the checked set targets it" in alone["message"]


def test_the_pull_requests_scaled_object_overrides_the_clusters(keda_facts: Path, tmp_path: Path) -> None:
    """The PR changes ScaledObject chat to minReplicaCount 1: that, not the cluster's min 0, is what will run."""
    mine = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", **scaled_object("chat", SERVING, "chat",
                                                                                      min_replicas=1)}
    manifest = write(tmp_path / "chat.yaml", serving_deployment("chat"), mine)
    [finding] = _findings(mlguard("check", "--format", "json", "--policyset", STRICT, "--cluster-facts",
                                  str(keda_facts), str(manifest)), "gpu-scale-to-zero")
    assert finding["action"] == "deny"
    assert "its ScaledObject `chat` keeps at least 1 replica(s)" in finding["message"]


def test_a_clusters_scaled_object_that_keeps_gpus_is_a_finding_in_ci(keda_facts: Path, tmp_path: Path) -> None:
    """summarize is held at 2 by the cluster's summarize-so: admission says so, and now CI does too (and names where
    it looked when no ScaledObject targets a workload)."""
    manifest = write(tmp_path / "serving.yaml", serving_deployment("summarize"), serving_deployment("translate"))
    found = {f["resource"]["name"]: f for f in _findings(mlguard(
        "check", "--format", "json", "--policyset", STRICT, "--cluster-facts", str(keda_facts), str(manifest)),
        "gpu-scale-to-zero")}
    assert set(found) == {"summarize", "translate"}
    assert "its ScaledObject `summarize-so` keeps at least 2 replica(s)" in found["summarize"]["message"]
    assert ("no ScaledObject in the checked set or the cluster facts targets it (ScaledObjects in the checked set or "
            "the cluster facts in serving: `chat` -> Deployment/chat, `summarize-so` -> Deployment/summarize)"
            ) in found["translate"]["message"]
    assert found["translate"]["action"] == "deny"


def test_without_keda_the_snapshot_says_unknown_and_ci_only_warns(no_keda_facts: tuple[Path, str],
                                                                  tmp_path: Path) -> None:
    out, stderr = no_keda_facts
    data = yaml.safe_load(out.read_text())
    assert yaml.safe_load(mlguard("facts", "--kubeconfig", str(out.parent / "kubeconfig")).stdout)["unavailable"] == \
        data["unavailable"]  # without -o, the snapshot on stdout
    assert "scaledObjects" not in data and "owners" not in data
    assert data["unavailable"] == {
        "scaledObjects": "the cluster does not serve keda.sh/v1alpha1 scaledobjects (KEDA not installed)",
        "owners": "this identity may not list replicasets, statefulsets or deployments (apps/v1) (403 Forbidden)"}
    assert ("mlguard facts: scaledObjects not recorded: the cluster does not serve keda.sh/v1alpha1 scaledobjects "
            "(KEDA not installed)") in stderr
    manifest = write(tmp_path / "chat.yaml", serving_deployment("chat"))
    proc = mlguard("check", "--format", "json", "--policyset", STRICT, "--cluster-facts", str(out), str(manifest))
    [finding] = _findings(proc, "gpu-scale-to-zero")
    assert finding["action"] == "warn" and "could not see the cluster's ScaledObjects" in finding["message"]
    assert "the cluster's KEDA ScaledObjects are unknown (the cluster does not serve keda.sh/v1alpha1" in proc.stderr
    assert "not by uid: this identity may not list replicasets" in proc.stderr
    # the checked set's own ScaledObject is what the pull request makes of it: known, and it takes chat to zero
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", **scaled_object("chat", SERVING, "chat")}
    write(manifest, serving_deployment("chat"), so)
    assert _findings(mlguard("check", "--format", "json", "--policyset", STRICT, "--cluster-facts", str(out),
                             str(manifest)), "gpu-scale-to-zero") == []


def test_the_snapshot_and_the_webhooks_cache_agree_on_every_workloads_pods(keda_cluster: tuple[FakeApi, Path],
                                                                            tmp_path: Path) -> None:
    """One walk (policies.owners) over the same cluster: the webhook's list+watch cache and the file `mlguard facts`
    wrote give the same GPU usage for every workload left out, and the same ScaledObjects."""
    from policies.gpu import GpuConfig
    from policies.model import Resource
    from policies.snapshot import ClusterSnapshot
    from webhook.cluster import ClusterCache, api_client

    api, facts = keda_cluster
    assert api.server is not None
    kube = tmp_path / "kubeconfig"
    api.write_kubeconfig(kube)
    cache = ClusterCache(api_client(kubeconfig=str(kube)), watch_timeout=5, backoff=0.05)
    cache.start()
    try:
        assert cache.wait_synced(10)
        snapshot = ClusterSnapshot.load(facts)
        gpu = GpuConfig()
        expected = {  # GPUs the others hold in the namespace
            ("team-c", "apps/v1", "Deployment", "llm"): 15, ("team-c", "apps/v1", "Deployment", "llm-big"): 8,
            ("team-c", "apps/v1", "ReplicaSet", "llm-vllm"): 14, ("team-c", "batch/v1", "CronJob", "llm"): 15,
            ("team-c", "batch/v1", "Job", "llm-2024"): 15, ("team-c", "v1", "Pod", "llm-5d-a"): 12,
            ("team-d", "leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "lws1"): 0,
            ("team-d", "apps/v1", "StatefulSet", "lws1-0"): 1, ("team-d", "apps/v1", "Deployment", "lws1"): 2}
        for (ns, api_version, kind, name), others in expected.items():
            workload = Resource(api_version, kind, ns, name)
            want = {"nvidia.com/gpu": others} if others else {}
            assert {k: int(v) for k, v in cache.gpu_usage(ns, exclude=workload, gpu=gpu).items()} == want, workload
            assert {k: int(v) for k, v in snapshot.gpu_usage(ns, exclude=[workload], gpu=gpu).items()} == want
        for target in ("chat", "summarize", "translate", None):
            assert snapshot.scaled_objects(SERVING, target) == cache.scaled_objects(SERVING, target)
    finally:
        cache.stop()
