"""The cluster cache with the REAL kubernetes client against a local HTTP server that serves the
API's list and watch JSON (tests/webhook/webhook_fakeapi.py): list, then a chunked watch stream
of ``{"type": ..., "object": ...}`` lines; a watch connection that DROPS mid-stream and must be
resumed from the last resourceVersion seen (no re-list); a resume that gets 410 Gone and must
re-list; an API that does not serve resource.k8s.io; a list that fails (not synced: /readyz 503).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from webhook_fakeapi import FakeApi
from webhook_testlib import TEST_POLICYSET, gpu_deployment, gpu_pod

from policies.gpu import GpuConfig
from policies.model import Resource
from webhook.admission import LWS_SIZE_ANNOTATION
from webhook.app import create_app
from webhook.cluster import POD_ANNOTATIONS, ClusterCache, api_client

GPU = GpuConfig()
ANYONE = Resource("v1", "Pod", "team-a", "nobody")


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture()
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    fake.start()
    fake.add("namespaces", {"metadata": {"name": "team-a", "labels": {"mlguard.io/environment": "prod"}}})
    fake.add("resourcequotas", {"metadata": {"name": "gpus", "namespace": "team-a"},
                                "spec": {"hard": {"requests.nvidia.com/gpu": "8"}}})
    fake.add("pods", gpu_pod("web-6b-1", "team-a", gpus=2, owner=("ReplicaSet", "web-6b")))
    fake.add("pods", gpu_pod("done-1", "team-a", gpus=4, owner=("Job", "done"), phase="Failed"))
    yield fake
    fake.stop()


def kubeconfig_for(api: FakeApi, tmp_path: Path) -> str:
    assert api.server is not None
    path = tmp_path / "kubeconfig"
    api.write_kubeconfig(path)
    return str(path)


@pytest.fixture()
def cache(api: FakeApi, tmp_path: Path) -> Iterator[ClusterCache]:
    c = ClusterCache(api_client(kubeconfig=kubeconfig_for(api, tmp_path)), watch_timeout=5, backoff=0.05)
    c.start()
    assert c.wait_synced(10)
    yield c
    c.stop()


def test_list_fills_the_cache(cache: ClusterCache) -> None:
    assert cache.namespace_labels("team-a") == {"mlguard.io/environment": "prod"}
    assert cache.namespace_labels("nowhere") is None
    assert [q["metadata"]["name"] for q in cache.quotas("team-a")] == ["gpus"]
    assert cache.quotas("team-a")[0]["kind"] == "ResourceQuota"  # list items get their kind back
    # the Failed pod holds nothing; the pods of the workload under review are not counted
    assert cache.gpu_usage("team-a", exclude=ANYONE, gpu=GPU) == {"nvidia.com/gpu": Decimal(2)}
    # web-6b-1 is a pod of the Pod itself when under review; a Deployment `web` does not own it by its name alone
    # (its ReplicaSet web-6b is not cached), so it counts: stricter, never more lenient
    assert cache.gpu_usage("team-a", exclude=Resource("v1", "Pod", "team-a", "web-6b-1"), gpu=GPU) == {}
    web = Resource("apps/v1", "Deployment", "team-a", "web")
    assert cache.gpu_usage("team-a", exclude=web, gpu=GPU) == {"nvidia.com/gpu": Decimal(2)}


def test_watch_events_update_the_cache(api: FakeApi, cache: ClusterCache) -> None:
    added = api.add("pods", gpu_pod("other-0", "team-a", gpus=3, owner=("StatefulSet", "other")))
    assert eventually(lambda: cache.gpu_usage("team-a", exclude=ANYONE, gpu=GPU) == {"nvidia.com/gpu": 5})
    added["status"]["phase"] = "Succeeded"
    api.modify("pods", added)
    assert eventually(lambda: cache.gpu_usage("team-a", exclude=ANYONE, gpu=GPU) == {"nvidia.com/gpu": 2})
    api.modify("namespaces", {"metadata": {"name": "team-a", "labels": {"mlguard.io/environment": "dev"}}})
    assert eventually(lambda: cache.namespace_labels("team-a") == {"mlguard.io/environment": "dev"})
    api.delete("resourcequotas", {"metadata": {"name": "gpus", "namespace": "team-a"}})
    assert eventually(lambda: cache.quotas("team-a") == [])


def test_dropped_watch_resumes_from_the_last_resource_version(api: FakeApi, cache: ClusterCache) -> None:
    """The watch connection is cut mid-stream (no terminating chunk): the informer resumes with
    ``resourceVersion`` = the last version it saw and does NOT list again; events made while it
    was away are delivered by the resumed watch."""
    api.add("pods", gpu_pod("a-1", "team-a", gpus=1, owner=("ReplicaSet", "a-1x")))
    assert eventually(lambda: "a-1" in cache.pods.in_namespace("team-a"))
    seen = cache.pods.resource_version
    lists_before = len(api.list_requests("pods"))
    api.drop_watches()
    api.add("pods", gpu_pod("b-1", "team-a", gpus=1, owner=("ReplicaSet", "b-1x")))  # while dropped
    assert eventually(lambda: "b-1" in cache.pods.in_namespace("team-a"))
    assert eventually(lambda: len(api.watch_requests("pods")) >= 2)
    resumed = api.watch_requests("pods")[-1]
    assert resumed["resourceVersion"] == seen, api.watch_requests("pods")
    assert len(api.list_requests("pods")) == lists_before
    assert cache.pods.resumes >= 1
    assert cache.gpu_usage("team-a", exclude=ANYONE, gpu=GPU) == {"nvidia.com/gpu": 4}


def test_410_gone_relists(api: FakeApi, cache: ClusterCache) -> None:
    """After a compaction the resume gets the API server's ERROR event with a 410 Status: list again."""
    lists_before = len(api.list_requests("pods"))
    api.compact()
    api.drop_watches()
    api.add("pods", gpu_pod("c-1", "team-a", gpus=1, owner=("ReplicaSet", "c-1x")))
    assert eventually(lambda: len(api.list_requests("pods")) > lists_before)
    assert eventually(lambda: "c-1" in cache.pods.in_namespace("team-a"))
    assert cache.pods.relists_410 >= 1
    assert cache.synced


def test_api_without_dra_is_synced_and_absent(tmp_path: Path) -> None:
    fake = FakeApi(with_dra=False)
    fake.start()
    try:
        c = ClusterCache(api_client(kubeconfig=kubeconfig_for(fake, tmp_path)), watch_timeout=5, backoff=0.05)
        c.start()
        try:
            assert c.wait_synced(10)
            assert c.claims.absent and c.claim_templates.absent
            assert c.resolve_claim("team-a", "x", False) is None
        finally:
            c.stop()
    finally:
        fake.stop()


def test_dra_claim_templates_count_as_gpus(api: FakeApi, cache: ClusterCache) -> None:
    api.add("resourceclaimtemplates", {"metadata": {"name": "one-gpu", "namespace": "team-a"}, "spec": {"spec": {
        "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 2}}]}}}})
    assert eventually(lambda: cache.resolve_claim("team-a", "one-gpu", True) is not None)
    api.add("pods", {"metadata": {"name": "dra-0", "namespace": "team-a"}, "spec": {
        "containers": [{"name": "c", "image": "i", "resources": {"claims": [{"name": "gpu"}]}}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]}, "status": {"phase": "Pending"}})
    key = "gpu.nvidia.com.deviceclass.resource.k8s.io/devices"
    assert eventually(lambda: cache.gpu_usage("team-a", exclude=ANYONE, gpu=GPU).get(key) == 2)


def test_not_synced_means_not_ready(api: FakeApi, tmp_path: Path) -> None:
    api.fail_lists.add("pods")
    app = create_app({"POLICYSET": str(TEST_POLICYSET), "CLUSTER_CACHE": "true",
                      "KUBECONFIG": kubeconfig_for(api, tmp_path)})
    state = app.extensions["mlguard"]
    try:
        client = app.test_client()
        time.sleep(0.3)
        resp = client.get("/readyz")
        assert resp.status_code == 503
        detail = resp.get_json()
        assert detail["ready"] is False
        assert detail["cache"]["resources"]["pods"]["synced"] is False
        assert detail["policyset"]["name"] == "webhook-test"
        api.fail_lists.discard("pods")
        assert eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
    finally:
        state.stop()


def test_cache_keeps_what_policies_read_and_no_more(api: FakeApi, cache: ClusterCache) -> None:
    """Other pods' env values, commands, labels, annotations, cpu and memory, terminated pods, and
    every object's managedFields and kubectl last-applied copy never reach the cache; a workload
    keeps its template (a Rollout may reference it)."""
    last_applied = {"kubectl.kubernetes.io/last-applied-configuration": "{...the whole object...}",
                    "deployment.kubernetes.io/revision": "3"}
    managed = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]
    pod = gpu_pod("secretive-1", "team-a", gpus=1, owner=("ReplicaSet", "secretive-5c"))
    pod["metadata"].update({"annotations": last_applied, "managedFields": managed})
    pod["spec"]["containers"][0].update({"env": [{"name": "HF_TOKEN", "value": "hf_abc"}], "command": ["serve"]})
    pod["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    api.add("pods", pod)
    dep = gpu_deployment("secretive", "team-a", gpus=1, replicas=1)
    dep["metadata"].update({"annotations": last_applied, "managedFields": managed})
    dep["status"] = {"replicas": 1}
    api.add("deployments", dep)
    assert eventually(lambda: "secretive-1" in cache.pods.in_namespace("team-a")
                      and cache.resolve_object("team-a", "Deployment", "secretive") is not None)
    cached = cache.pods.in_namespace("team-a")["secretive-1"]
    # extended resources only (every GPU resource name is domain-qualified), no container name
    assert cached["spec"] == {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    assert set(cached["metadata"]) == {"name", "namespace", "resourceVersion", "ownerReferences"}
    # owners with their uids: ownership is matched by uid (issue 14)
    assert cached["metadata"]["ownerReferences"] == [{"kind": "ReplicaSet", "name": "secretive-5c",
                                                      "uid": "uid-secretive-5c", "controller": True}]
    assert cached["status"] == {"phase": "Running"}
    assert "done-1" not in cache.pods.in_namespace("team-a")   # a Failed pod holds nothing: not kept
    deployment = cache.resolve_object("team-a", "Deployment", "secretive")
    assert deployment is not None and deployment["kind"] == "Deployment"
    assert deployment["metadata"]["uid"] == "uid-secretive"  # what an owner reference is checked against
    assert deployment["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "3"}
    assert "managedFields" not in deployment["metadata"] and "status" not in deployment
    assert deployment["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "SECRET", "value": "x"}]
    assert cache.resolve_object("team-a", "ConfigMap", "secretive") is None
    assert cache.resolve_object("team-a", "Deployment", "nowhere") is None


def test_pod_ownership_follows_cached_replicasets(api: FakeApi, cache: ClusterCache) -> None:
    """A pod belongs to a Deployment through its ReplicaSet's controller, matched by uid, never by a name
    prefix (issue 14): the pods of `web-canary` are not `web`'s, `llm` does not claim `llm-big`'s. A pod whose
    ReplicaSet the cache lacks counts as someone else's (stricter, never more lenient)."""
    def rs(name: str, deployment: str, revision: str, *, deployment_uid: str | None = None) -> dict:
        return {"metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "annotations": {
            "deployment.kubernetes.io/revision": revision}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
             "uid": deployment_uid or f"uid-{deployment}", "controller": True}]},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    api.add("deployments", gpu_deployment("web", "team-a", gpus=1, replicas=1))
    api.add("deployments", gpu_deployment("llm", "team-a", gpus=1, replicas=1))
    api.add("replicasets", rs("web-canary-7f", "web-canary", "1"))
    api.add("replicasets", rs("web-5d", "web", "1"))
    api.add("replicasets", rs("web-6e", "web", "2"))
    api.add("replicasets", rs("llm-big-8c", "llm-big", "1"))
    # a ReplicaSet that names `web` but belongs to an earlier `web`, deleted and re-created (another uid)
    api.add("replicasets", rs("web-old", "web", "1", deployment_uid="uid-web-before"))
    api.add("pods", gpu_pod("web-canary-7f-x", "team-a", gpus=2, owner=("ReplicaSet", "web-canary-7f")))
    api.add("pods", gpu_pod("web-6e-y", "team-a", gpus=1, owner=("ReplicaSet", "web-6e")))
    api.add("pods", gpu_pod("llm-big-8c-z", "team-a", gpus=4, owner=("ReplicaSet", "llm-big-8c")))
    api.add("pods", gpu_pod("web-old-w", "team-a", gpus=8, owner=("ReplicaSet", "web-old")))
    assert eventually(lambda: len(cache.pods.in_namespace("team-a")) == 5 and len(cache.owned_replicasets(
        "team-a", "Deployment", "web")) == 3 and cache.resolve_object("team-a", "Deployment", "llm") is not None)
    web = Resource("apps/v1", "Deployment", "team-a", "web")
    # web's own pod (1) is left out; the seed's web-6b-1 (2 GPUs, its ReplicaSet not cached), web-canary's (2),
    # llm-big's (4) and the old web's (8) count
    assert cache.gpu_usage("team-a", exclude=web, gpu=GPU) == {"nvidia.com/gpu": Decimal(16)}
    llm = Resource("apps/v1", "Deployment", "team-a", "llm")
    assert cache.gpu_usage("team-a", exclude=llm, gpu=GPU) == {"nvidia.com/gpu": Decimal(17)}  # all of them
    assert [p["metadata"]["name"] for p in cache.workload_pods("team-a", "Deployment", "llm")] == []
    assert [p["metadata"]["name"] for p in cache.workload_pods("team-a", "Deployment", "web")] == ["web-6e-y"]
    assert [p["metadata"]["name"] for p in cache.workload_pods("team-a", "Deployment", "web-canary")] == \
        ["web-canary-7f-x"]


def test_a_cronjobs_jobs_are_its_own_by_their_scheduled_names(api: FakeApi, cache: ClusterCache) -> None:
    api.add("pods", gpu_pod("nightly-29012345-abcde", "team-a", gpus=2, owner=("Job", "nightly-29012345")))
    api.add("pods", gpu_pod("nightly-big-29012345-q", "team-a", gpus=4, owner=("Job", "nightly-big-29012345")))
    assert eventually(lambda: len(cache.pods.in_namespace("team-a")) == 3)
    nightly = Resource("batch/v1", "CronJob", "team-a", "nightly")
    assert [p["metadata"]["name"] for p in cache.workload_pods("team-a", "CronJob", "nightly")] == \
        ["nightly-29012345-abcde"]
    assert cache.gpu_usage("team-a", exclude=nightly, gpu=GPU) == {"nvidia.com/gpu": Decimal(6)}


def test_runtime_class_existence(api: FakeApi, cache: ClusterCache) -> None:
    assert cache.runtime_class_exists("nvidia") is False
    api.add("runtimeclasses", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    assert eventually(lambda: cache.runtime_class_exists("nvidia") is True)


def test_readyz_warns_while_the_runtime_class_is_missing(api: FakeApi, tmp_path: Path) -> None:
    """The test PolicySet sets mutations.runtimeClassName: nvidia. Without that RuntimeClass in the
    cluster the webhook stays ready (it works) but warns, in /readyz and the gauge, until it exists."""
    app = create_app({"POLICYSET": str(TEST_POLICYSET), "CLUSTER_CACHE": "true",
                      "KUBECONFIG": kubeconfig_for(api, tmp_path)})
    state = app.extensions["mlguard"]
    try:
        client = app.test_client()
        assert eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
        detail = client.get("/readyz").get_json()
        assert detail["ready"] is True
        assert len(detail["warnings"]) == 1
        assert detail["warnings"][0].startswith("mutations.runtimeClassName sets runtimeClassName nvidia on GPU Pods, "
                                                "but the cluster has no RuntimeClass nvidia")
        assert "runbooks/runtimeclass-missing.md" in detail["warnings"][0]
        assert b"mlguard_runtimeclass_missing 1.0" in client.get("/metrics").data
        api.add("runtimeclasses", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
        assert eventually(lambda: "warnings" not in client.get("/readyz").get_json())
        assert b"mlguard_runtimeclass_missing 0.0" in client.get("/metrics").data
    finally:
        state.stop()


def test_replicasets_keep_a_template_only_when_no_deployment_holds_it(api: FakeApi, cache: ClusterCache) -> None:
    """A Deployment's ReplicaSets (up to 10 old ones each) keep metadata and replicas; a Rollout's keep
    their template, the one a /scale of the Rollout is sized by."""
    template = {"spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}

    def rs(name: str, kind: str, owner: str) -> dict:
        return {"metadata": {"name": name, "namespace": "team-a", "ownerReferences": [
            {"apiVersion": "x", "kind": kind, "name": owner, "uid": f"uid-{owner}", "controller": True}]},
            "spec": {"replicas": 3, "template": template}}
    api.add("replicasets", rs("web-5d", "Deployment", "web"))
    api.add("replicasets", rs("llm-7c", "Rollout", "llm"))
    assert eventually(lambda: len(cache.replicasets.in_namespace("team-a")) == 2)
    assert cache.resolve_object("team-a", "ReplicaSet", "web-5d")["spec"] == {"replicas": 3}
    assert cache.owned_replicasets("team-a", "Rollout", "llm")[0]["spec"]["template"] == template


def test_the_pod_annotations_kept_are_the_ones_admission_reads() -> None:
    assert POD_ANNOTATIONS == (LWS_SIZE_ANNOTATION,)


def test_readyz_warns_when_rbac_does_not_grant_nodes_or_configmaps(tmp_path: Path) -> None:
    """A ClusterRole older than the webhook: the API refuses to list nodes and configmaps (403). The cache
    syncs without them (the webhook keeps serving), reports them absent, and /readyz says what that costs."""
    fake = FakeApi()
    fake.forbidden = {"nodes", "configmaps"}
    fake.start()
    app = create_app({"POLICYSET": str(TEST_POLICYSET), "CLUSTER_CACHE": "true",
                      "KUBECONFIG": kubeconfig_for(fake, tmp_path)})
    state = app.extensions["mlguard"]
    try:
        client = app.test_client()
        assert eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
        detail = client.get("/readyz").get_json()
        assert detail["cache"]["resources"]["nodes"]["absent"] and detail["cache"]["resources"]["configmaps"]["absent"]
        [warning] = [w for w in detail["warnings"] if "may not list" in w]
        assert warning.startswith("the cluster cache may not list nodes and configmaps, so a pod's spec.nodeName is "
                                  "only a warning (gpu-tolerations); NVIDIA_VISIBLE_DEVICES from a ConfigMap is "
                                  "unresolved")
        assert "kustomize/base/webhook/rbac.yaml" in warning and "runbooks/admission-denied.md" in warning
    finally:
        state.stop()
        fake.stop()
