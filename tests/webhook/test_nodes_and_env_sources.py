"""Issue 14 from outside: real AdmissionReviews over TLS to gunicorn serving the baseline catalog, its
cluster cache fed by the local list/watch API (webhook_fakeapi.py, the real kubernetes client).

- spec.nodeName to a GPU node (by the GPU taint or the GPU node label, read from the webhook's node
  cache) without a GPU is denied by gpu-tolerations; a node the cache does not hold is a warning; a node
  that appears later through the watch is judged at once.
- NVIDIA_VISIBLE_DEVICES from a ConfigMap (envFrom, configMapKeyRef) is read from the webhook's
  ConfigMap cache, a fieldRef from the pod's own annotations; a Secret is never read: unresolvedEnv
  decides (baseline warn; deny in the namespace this test's PolicySet gives the strict choice), and a pod
  that seems unable to reach a GPU node is warned either way.

One server (1 worker, as deployed with the cache), so /readyz's informer resourceVersions say exactly
what the worker that answers has seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from webhook_fakeapi import FakeApi
from webhook_testlib import COST, REPO, WebhookServer, container, deployment, pod, review

pytestmark = pytest.mark.integration
RUNBOOK = "https://github.com/mlguard/mlguard/blob/main/runbooks/admission-denied.md"
STRICT_NS = "team-strict"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def quota(ns: str) -> dict[str, Any]:
    return {"metadata": {"name": "gpus", "namespace": ns}, "spec": {"hard": {"requests.nvidia.com/gpu": "64"}}}


@pytest.fixture(scope="module")
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    fake.start()
    for ns in ("team-a", STRICT_NS, "mlguard-system", "kube-system"):
        fake.add("namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})
        fake.add("resourcequotas", quota(ns))
    fake.add("nodes", {"metadata": {"name": "gpu-tainted", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
                       "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
                       "status": {"capacity": {"nvidia.com/gpu": "4"}, "images": [{"names": ["big"]}] * 50}})
    fake.add("nodes", {"metadata": {"name": "gpu-labelled", "labels": {"nvidia.com/gpu.product": "NVIDIA-A10G"}}})
    fake.add("nodes", {"metadata": {"name": "cpu-1", "labels": {"kubernetes.io/os": "linux"}},
                       "spec": {"taints": [{"key": "dedicated", "value": "etl", "effect": "NoSchedule"}]}})
    for ns in ("team-a", STRICT_NS):
        fake.add("configmaps", {"metadata": {"name": "devices", "namespace": ns, "annotations": {"note": "x" * 500}},
                                "data": {"NVIDIA_VISIBLE_DEVICES": "all", "quiet": " void ", "pair": "0,1",
                                         "config.yaml": "model: llama\n" * 2000},
                                "binaryData": {"blob": "AAAA"}})
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(api: FakeApi, tls: Any,  # tests/webhook/conftest.py's Tls (conftest modules are not importable by name)
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    """The baseline catalog as shipped, plus one override: gpu-isolation's unresolvedEnv is deny in STRICT_NS
    (the strict catalog's choice), so both settings are exercised by one server."""
    work = tmp_path_factory.mktemp("nodes-env")
    data = yaml.safe_load((REPO / "policies/catalog/baseline.yaml").read_text())
    data["spec"]["policies"]["gpu-isolation"].setdefault("overrides", []).append(
        {"match": {"namespaces": [STRICT_NS]}, "params": {"unresolvedEnv": "deny"}})
    policyset = work / "policyset.yaml"
    policyset.write_text(yaml.safe_dump(data, sort_keys=False))
    kube = work / "kubeconfig"
    assert api.server is not None
    api.write_kubeconfig(kube)
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset,
                        workers=1,
                        env={"MLGUARD_WEBHOOK_CLUSTER_CACHE": "true", "MLGUARD_WEBHOOK_KUBECONFIG": str(kube)})
    try:
        srv.wait("/readyz")
        yield srv
    finally:
        srv.stop()


def seen(server: WebhookServer, resource: str, obj: dict[str, Any], timeout: float = 10) -> None:
    """Until the (one) worker's informer for ``resource`` has reached ``obj``'s resourceVersion."""
    target = int(obj["metadata"]["resourceVersion"])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = server.session.get(server.url + "/readyz", timeout=5).json()
        rv = body["cache"]["resources"][resource]["resourceVersion"]
        if rv is not None and int(rv) >= target:
            return
        time.sleep(0.05)
    raise AssertionError(f"the webhook's {resource} cache never reached {target}")


def lines(resp: dict[str, Any], policy: str) -> list[str]:
    """The policy's lines of a denial, then of the warnings."""
    message = (resp.get("status") or {}).get("message") or ""
    denied = [ln for ln in message.split("\n") if ln.startswith(f"{policy}: ")]
    return denied + [w for w in resp.get("warnings") or [] if w.startswith(f"{policy}: ")]


def cpu(name: str = "etl", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/etl@sha256:" + "b" * 64,
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}, **extra}


# ---- nodeName -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("node", "marks"), [
    ("gpu-tainted", "taint nvidia.com/gpu:NoSchedule, label nvidia.com/gpu.product=NVIDIA-L4"),
    ("gpu-labelled", "label nvidia.com/gpu.product=NVIDIA-A10G"),
])
def test_a_cpu_pod_bound_to_a_gpu_node_is_denied(server: WebhookServer, node: str, marks: str) -> None:
    resp = server.admit("/validate", review(pod("etl", spec={"nodeName": node, "containers": [cpu()]})))
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    assert lines(resp, "gpu-tolerations") == [
        f"gpu-tolerations: spec.nodeName: Pod `etl` uses no GPU but is bound to GPU node `{node}` ({marks}) by "
        "spec.nodeName; spec.nodeName skips the scheduler and the kubelet does not check NoSchedule taints, so the "
        "GPU taint does not keep it off: it would squat on the GPU node: remove spec.nodeName (let the scheduler "
        "place it, or pin it to a CPU node with a nodeSelector), or request a GPU if it needs one "
        f"({RUNBOOK}#gpu-tolerations)"]


def test_a_deployment_template_bound_to_a_gpu_node_is_denied(server: WebhookServer) -> None:
    dep = deployment("etl", spec={"nodeName": "gpu-tainted", "containers": [cpu()]})
    resp = server.admit("/validate", review(dep))
    assert resp["allowed"] is False
    [line] = lines(resp, "gpu-tolerations")
    assert line.startswith("gpu-tolerations: spec.template.spec.nodeName: Deployment `etl` uses no GPU but is bound to "
                           "GPU node "
                           "`gpu-tainted`")


def test_gpu_pods_and_cpu_nodes_pass(server: WebhookServer) -> None:
    gpu = pod("llm", spec={"nodeName": "gpu-tainted", "containers": [container()], "tolerations": [GPU_TOLERATION]})
    assert lines(server.admit("/validate", review(gpu)), "gpu-tolerations") == []
    plain = pod("etl", spec={"nodeName": "cpu-1", "containers": [cpu()]})
    resp = server.admit("/validate", review(plain))
    assert resp["allowed"] is True and lines(resp, "gpu-tolerations") == []


def test_a_node_the_cache_does_not_hold_warns_until_the_watch_brings_it(server: WebhookServer, api: FakeApi) -> None:
    unknown = pod("etl", spec={"nodeName": "gpu-new", "containers": [cpu()]})
    resp = server.admit("/validate", review(unknown))
    assert resp["allowed"] is True
    [warning] = lines(resp, "gpu-tolerations")
    assert "bound to node `gpu-new` by spec.nodeName; whether that is a GPU node cannot be seen here (the " \
           "webhook's node cache does not hold that node)" in warning
    added = api.add("nodes", {"metadata": {"name": "gpu-new"},
                              "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}})
    seen(server, "nodes", added)
    resp = server.admit("/validate", review(unknown))
    assert resp["allowed"] is False
    assert "bound to GPU node `gpu-new` (taint nvidia.com/gpu:NoSchedule)" in lines(resp, "gpu-tolerations")[0]


# ---- environment from elsewhere ------------------------------------------------------------------------
def visible(value_from: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": value_from}]


@pytest.mark.parametrize(("extra", "path", "says"), [
    ({"envFrom": [{"configMapRef": {"name": "devices"}}]}, "spec.containers[1].envFrom[0]",
     "container `sidecar` of Pod `llm` gets NVIDIA_VISIBLE_DEVICES=all from ConfigMap `devices` (envFrom)"),
    ({"env": visible({"configMapKeyRef": {"name": "devices", "key": "pair"}})}, "spec.containers[1].env[0].valueFrom",
     "container `sidecar` of Pod `llm` sets NVIDIA_VISIBLE_DEVICES=0,1 (from ConfigMap `devices` key `pair`)"),
    ({"env": visible({"fieldRef": {"fieldPath": "metadata.annotations['gpus']"}})},
     "spec.containers[1].env[0].valueFrom",
     "container `sidecar` of Pod `llm` sets NVIDIA_VISIBLE_DEVICES=all (from the pod's own field "
     "metadata.annotations['gpus'])"),
])
def test_device_lists_from_elsewhere_are_denied(server: WebhookServer, extra: dict, path: str, says: str) -> None:
    """A CPU sidecar next to a GPU server, its device list from a ConfigMap or the pod's own annotation."""
    obj = pod("llm", spec={"containers": [container(), cpu("sidecar", **extra)], "tolerations": [GPU_TOLERATION]},
              annotations={"gpus": "all"})
    resp = server.admit("/validate", review(obj))
    assert resp["allowed"] is False
    [line] = lines(resp, "gpu-isolation")
    assert line.startswith(f"gpu-isolation: {path}: {says} without a GPU request, which hands it GPUs other pods "
                           "were allocated;")
    assert line.endswith(f"({RUNBOOK}#gpu-isolation)")


def test_harmless_values_from_the_cache_pass(server: WebhookServer) -> None:
    quiet = cpu("sidecar", env=visible({"configMapKeyRef": {"name": "devices", "key": "quiet"}}))
    absent = cpu("other", env=visible({"configMapKeyRef": {"name": "devices", "key": "no-such-key"}}))
    obj = pod("llm", spec={"containers": [container(), quiet, absent], "tolerations": [GPU_TOLERATION]},
              labels={**COST})
    resp = server.admit("/validate", review(obj))
    assert resp["allowed"] is True and lines(resp, "gpu-isolation") == []


def test_a_configmap_changed_through_the_watch_is_judged_at_once(server: WebhookServer, api: FakeApi) -> None:
    obj = pod("llm", spec={"containers": [container(), cpu("sidecar", env=visible(
        {"configMapKeyRef": {"name": "later", "key": "devices"}}))], "tolerations": [GPU_TOLERATION]})
    before = server.admit("/validate", review(obj))   # not created yet: unresolved, baseline warns
    assert before["allowed"] is True
    assert "ConfigMap `later` key `devices`, which is not in the webhook's ConfigMap cache" in \
        lines(before, "gpu-isolation")[0]
    made = api.add("configmaps", {"metadata": {"name": "later", "namespace": "team-a"}, "data": {"devices": "void"}})
    seen(server, "configmaps", made)
    assert lines(server.admit("/validate", review(obj)), "gpu-isolation") == []
    changed = api.modify("configmaps", {"metadata": {"name": "later", "namespace": "team-a"},
                                        "data": {"devices": "GPU-" + "0" * 80}})
    seen(server, "configmaps", changed)
    resp = server.admit("/validate", review(obj))
    assert resp["allowed"] is False
    # the cache keeps 64 characters of a value: enough to judge it and to show it
    assert f"sets NVIDIA_VISIBLE_DEVICES=GPU-{'0' * 60} (from ConfigMap `later` key `devices`)" in \
        lines(resp, "gpu-isolation")[0]


@pytest.mark.parametrize(("namespace", "gpu_server", "spec_extra", "action", "unreachable"), [
    ("team-a", True, {"tolerations": [GPU_TOLERATION]}, "warn", False),    # baseline: unresolvedEnv warn
    (STRICT_NS, True, {"tolerations": [GPU_TOLERATION]}, "deny", False),   # unresolvedEnv deny
    (STRICT_NS, False, {"nodeName": "gpu-tainted"}, "deny", False),        # a GPU node by nodeName reaches GPUs
    (STRICT_NS, False, {}, "warn", True),                                  # seems unable to reach a GPU node
])
def test_a_secret_is_governed_by_unresolved_env(server: WebhookServer, namespace: str, gpu_server: bool,
                                                spec_extra: dict, action: str, unreachable: bool) -> None:
    agent = cpu("agent", env=visible({"secretKeyRef": {"name": "gpu-list", "key": "devices"}}))
    obj = pod("agent", namespace, spec={"containers": [container(), agent] if gpu_server else [agent], **spec_extra})
    resp = server.admit("/validate", review(obj))
    [line] = lines(resp, "gpu-isolation")
    index = 1 if gpu_server else 0
    assert (f"gpu-isolation: spec.containers[{index}].env[0].valueFrom: container `agent` of Pod `agent` takes "
            "NVIDIA_VISIBLE_DEVICES from Secret `gpu-list` key `devices`, whose values the webhook never "
            "reads;") in line
    # a warning the API server forwards is clipped to 256 characters (the policy tests read the whole text)
    if unreachable:
        assert line.endswith("…")
    else:
        assert "seems unable to reach a GPU node" not in line
    if action == "deny":
        assert resp["allowed"] is False and line in resp["status"]["message"].split("\n")
    else:
        assert line in resp["warnings"] and resp["allowed"] is True


def test_an_envfrom_secret_under_strict_is_denied_and_the_fix_admits(server: WebhookServer) -> None:
    spec: dict[str, Any] = {"containers": [container(), cpu("agent", envFrom=[{"secretRef": {"name": "hf"}}])],
                            "tolerations": [GPU_TOLERATION]}
    resp = server.admit("/validate", review(pod("llm", STRICT_NS, spec=spec)))
    assert resp["allowed"] is False
    assert "take the Secret's keys one by one with env[].valueFrom.secretKeyRef instead of envFrom" in \
        lines(resp, "gpu-isolation")[0]
    spec["containers"][1] = cpu("agent", env=[{"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "hf", "key": "token"}}}])
    resp = server.admit("/validate", review(pod("llm", STRICT_NS, spec=spec)))
    assert resp["allowed"] is True and lines(resp, "gpu-isolation") == []


def test_the_cache_keeps_configmaps_and_nodes_trimmed(api: FakeApi, tmp_path: Path) -> None:
    """What the webhook holds of a ConfigMap and a Node: no annotations, binaryData, status; values cut."""
    from webhook.cluster import CONFIGMAP_VALUE_CHARS, ClusterCache, api_client

    assert api.server is not None
    kube = tmp_path / "kubeconfig"
    api.write_kubeconfig(kube)
    cache = ClusterCache(api_client(kubeconfig=str(kube)), watch_timeout=5, backoff=0.05)
    cache.start()
    try:
        assert cache.wait_synced(10)
        cm = cache.resolve_object("team-a", "ConfigMap", "devices")
        assert cm is not None
        assert cm["metadata"] == {"name": "devices", "namespace": "team-a",
                                  "resourceVersion": cm["metadata"]["resourceVersion"]}
        assert cm["data"]["quiet"] == "void" and cm["data"]["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert len(cm["data"]["config.yaml"]) == CONFIGMAP_VALUE_CHARS and "binaryData" not in cm
        assert cache.resolve_object("team-a", "Secret", "anything") is None
        node = cache.node("gpu-tainted")
        assert node == {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "gpu-tainted", "resourceVersion": node["metadata"]["resourceVersion"],
            "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}}, "spec": {"taints": [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}
        assert cache.node("nowhere") is None
        # large kinds are listed in pages of 100 (a ConfigMap may hold 1 MiB): a page is bounded before trimming
        assert {q.get("limit") for q in api.list_requests("configmaps")} == {"100"}
        assert {q.get("limit") for q in api.list_requests("nodes")} == {"100"}
        assert {q.get("limit") for q in api.list_requests("pods")} == {"500"}
    finally:
        cache.stop()


def test_a_configmap_with_more_keys_than_the_cache_keeps(server: WebhookServer, api: FakeApi) -> None:
    """Keys past the cache's bound are counted, not kept: a reference to one is unresolved (baseline: a
    warning), never read as unset; a key the cache kept is still judged."""
    from webhook.cluster import CONFIGMAP_MAX_KEYS

    data = {f"key-{i:04d}": "void" for i in range(CONFIGMAP_MAX_KEYS + 10)}
    data["zzz-devices"] = "all"   # sorted after the kept keys
    made = api.add("configmaps", {"metadata": {"name": "huge", "namespace": "team-a"}, "data": data})
    seen(server, "configmaps", made)
    late = pod("llm", spec={"containers": [container(), cpu("sidecar", env=visible(
        {"configMapKeyRef": {"name": "huge", "key": "zzz-devices"}}))], "tolerations": [GPU_TOLERATION]})
    resp = server.admit("/validate", review(late))
    assert resp["allowed"] is True
    assert "which has more keys than the webhook's cache keeps of one ConfigMap" in lines(resp, "gpu-isolation")[0]
    kept = pod("llm", spec={"containers": [container(), cpu("sidecar", env=visible(
        {"configMapKeyRef": {"name": "huge", "key": "key-0000"}}))], "tolerations": [GPU_TOLERATION]})
    assert lines(server.admit("/validate", review(kept)), "gpu-isolation") == []



def test_an_update_that_turns_the_annotation_into_a_device_list_is_denied(server: WebhookServer) -> None:
    """A fieldRef is read from the object under review: an UPDATE that changes the pod's own annotation from
    void to all (the container gets the new value when it restarts) is judged on the new value."""
    sidecar = cpu("sidecar", env=visible({"fieldRef": {"fieldPath": "metadata.annotations['gpus']"}}))
    spec = {"containers": [container(), sidecar], "tolerations": [GPU_TOLERATION]}
    old = pod("llm", spec=spec, annotations={"gpus": "void"})
    new = pod("llm", spec=spec, annotations={"gpus": "all"})
    assert server.admit("/validate", review(old))["allowed"] is True
    resp = server.admit("/validate", review(new, operation="UPDATE", old=old))
    assert resp["allowed"] is False
    assert "sets NVIDIA_VISIBLE_DEVICES=all (from the pod's own field metadata.annotations['gpus'])" in \
        lines(resp, "gpu-isolation")[0]


def test_a_pod_update_is_not_judged_on_the_node_it_was_bound_to(server: WebhookServer) -> None:
    """A Pod's nodeName is immutable after CREATE (the scheduler sets it through pods/binding): a CPU pod
    the scheduler put on an untainted, labelled GPU node must stay updatable (labels, annotations)."""
    scheduled = pod("etl", spec={"nodeName": "gpu-labelled", "containers": [cpu()]})
    relabelled = pod("etl", spec={"nodeName": "gpu-labelled", "containers": [cpu()]}, labels={**COST, "v": "2"})
    resp = server.admit("/validate", review(relabelled, operation="UPDATE", old=scheduled))
    assert resp["allowed"] is True and lines(resp, "gpu-tolerations") == []
    # the same pod at CREATE, bound by its author: denied
    assert server.admit("/validate", review(relabelled))["allowed"] is False
