"""Canonical inputs at the webhook (issue 14, item 9), each attacked from outside over TLS: the
request's namespace and kind are authoritative, deep nesting is a 400, denials are bounded, and
the LeaderWorkerSet scale subresource gets the GPU quota look-ahead."""

from __future__ import annotations

import json
import re
import time

import pytest
from webhook_fakeapi import FakeApi
from webhook_testlib import WebhookServer, container, deployment, pod, pod_spec, review, scale_review

pytestmark = pytest.mark.integration
BAD = pod("bad", namespace="team-a", spec=pod_spec(container("a", gpus=None, requests_gpus=1)))


def post(server: WebhookServer, path: str, body: object) -> tuple[int, dict]:
    resp = server.session.post(server.url + path, data=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"}, timeout=30)
    return resp.status_code, resp.json()


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_object_namespace_differing_from_the_request_is_400(server: WebhookServer, path: str) -> None:
    # the API server says team-a; the object claims the exempt kube-system
    body = review(BAD, namespace="team-a")
    body["request"]["object"]["metadata"]["namespace"] = "kube-system"
    status, out = post(server, path, body)
    assert status == 400
    assert "request.object.metadata.namespace 'kube-system' differs from request.namespace 'team-a'" in out["error"]
    # the same object with the namespace left out (as at CREATE) is judged in the request's namespace
    del body["request"]["object"]["metadata"]["namespace"]
    assert server.admit("/validate", body)["allowed"] is False


def test_object_kind_differing_from_the_request_is_400(server: WebhookServer) -> None:
    body = review(BAD)
    body["request"]["object"]["kind"] = "ConfigMap"  # a kind mlguard does not check, claimed by the object
    status, out = post(server, "/validate", body)
    assert status == 400 and "request.object.kind 'ConfigMap' differs from request.kind.kind 'Pod'" in out["error"]
    body = review(deployment("d"), operation="UPDATE", old=deployment("d"))
    body["request"]["oldObject"]["apiVersion"] = "apps/v1beta1"
    status, out = post(server, "/validate", body)
    assert status == 400 and "request.oldObject.apiVersion 'apps/v1beta1' differs" in out["error"]


@pytest.mark.parametrize("depth", [129, 1000, 5000])
def test_deep_nesting_is_a_400_not_a_500(server: WebhookServer, depth: int) -> None:
    body = review(pod("deep", spec=pod_spec(container("a", gpus=1))))
    body["request"]["object"]["spec"]["deep"] = "DEEP"
    # built as text: json.dumps itself would recurse
    raw = json.dumps(body).replace('"DEEP"', "[" * depth + '"x"' + "]" * depth).encode()
    resp = server.session.post(server.url + "/validate", data=raw, headers={"Content-Type": "application/json"},
                               timeout=30)
    assert resp.status_code == 400, resp.text[:300]
    assert "levels deep; at most 128 are accepted" in resp.json()["error"]
    # nesting as deep as real objects go is fine
    shallow = review(pod("ok", spec=pod_spec(container("a", gpus=1))))
    shallow["request"]["object"]["spec"]["extra"] = json.loads("[" * 100 + "]" * 100)
    assert server.admit("/validate", shallow)["uid"] == shallow["request"]["uid"]


def test_a_denial_for_10000_containers_is_bounded(server: WebhookServer) -> None:
    many = pod("many", spec=pod_spec(*[container(f"c{i}", gpus=None, requests_gpus=1) for i in range(10_000)]))
    resp = server.session.post(server.url + "/validate", json=review(many), timeout=60)
    assert resp.status_code == 200
    assert len(resp.content) < 64 * 1024, len(resp.content)  # was 2.1 MB
    out = resp.json()["response"]
    assert out["allowed"] is False
    lines = out["status"]["message"].split("\n")
    assert len(lines) == 21 and lines[0].startswith("gpu-limits: spec.containers[0].resources")
    more = re.fullmatch(r"\.\.\. and (\d+) more findings \(run `mlguard check` on the manifest to see them all\)",
                        lines[-1])
    assert more and int(more.group(1)) >= 9980, lines[-1]  # one gpu-limits finding per container, and others


def test_leaderworkerset_scale_gets_the_quota_look_ahead(server: WebhookServer, fake_api: FakeApi) -> None:
    """An LWS of 2 groups x 4 pods x 1 GPU in a namespace with a 16-GPU quota: 3 groups fit, 5 do not."""
    fake_api.add("namespaces", {"metadata": {"name": "team-lws",
                                             "labels": {"kubernetes.io/metadata.name": "team-lws"}}})
    fake_api.add("resourcequotas", {"metadata": {"name": "gpus", "namespace": "team-lws"},
                                    "spec": {"hard": {"requests.nvidia.com/gpu": "16"}}})
    # LeaderWorkerSet's own shape (sigs.k8s.io/lws, docs/concepts): a leader StatefulSet `lws1` owned by the
    # LeaderWorkerSet makes the leader pods `lws1-<group>`; each leader pod owns its group's worker StatefulSet
    # `lws1-<group>`, whose pods are `lws1-<group>-<worker>`. Ownership is followed by uid through the cache.
    fake_api.add("statefulsets", {"metadata": {"name": "lws1", "namespace": "team-lws", "uid": "u-sts-lws1",
                                               "ownerReferences": [{"apiVersion": "leaderworkerset.x-k8s.io/v1",
                                                                    "kind": "LeaderWorkerSet", "name": "lws1",
                                                                    "uid": "u-lws1", "controller": True}]},
                                  "spec": {"replicas": 2}})
    for group in range(2):
        fake_api.add("statefulsets", {"metadata": {"name": f"lws1-{group}", "namespace": "team-lws",
                                                   "uid": f"u-sts-lws1-{group}",
                                                   "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                                                        "name": f"lws1-{group}",
                                                                        "uid": f"u-pod-lws1-{group}",
                                                                        "controller": True}]},
                                      "spec": {"replicas": 3}})
        for worker in range(4):
            name = f"lws1-{group}" + (f"-{worker}" if worker else "")
            owner = ({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "lws1", "uid": "u-sts-lws1"} if not worker
                     else {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": f"lws1-{group}",
                           "uid": f"u-sts-lws1-{group}"})
            fake_api.add("pods", {
                "metadata": {"name": name, "namespace": "team-lws", "uid": f"u-pod-{name}",
                             "labels": {"team": "search", "leaderworkerset.sigs.k8s.io/name": "lws1"},
                             "annotations": {"leaderworkerset.sigs.k8s.io/size": "4"},
                             "ownerReferences": [{**owner, "controller": True}]},
                "spec": {"containers": [{"name": "w", "image": "img", "resources": {
                    "limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]},
                "status": {"phase": "Running"}})

    def scale(replicas: int) -> dict:
        body = scale_review("deployments", "lws1", "team-lws", replicas=replicas, old_replicas=2)
        body["request"]["resource"] = {"group": "leaderworkerset.x-k8s.io", "version": "v1",
                                       "resource": "leaderworkersets"}
        return server.admit("/validate", body)

    def judged_on_the_quota(answer: dict) -> bool:
        # the cache picks the quota and the pods up from its watch; until it holds the quota the answer is
        # "no ResourceQuota limits nvidia.com/gpu" (also a denial), until it holds the pods an allow
        return not answer["allowed"] and "needs" in answer["status"]["message"]

    deadline = time.monotonic() + 10
    up = scale(5)
    while not judged_on_the_quota(up) and time.monotonic() < deadline:
        time.sleep(0.1)
        up = scale(5)
    assert up["allowed"] is False
    assert "LeaderWorkerSet `lws1` needs 20 nvidia.com/gpu" in up["status"]["message"], up["status"]["message"]
    assert scale(3)["allowed"] is True


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("text", [
    "{}", "[]", '"[[[{"', '{"a": "]]]}}}[[[", "b": [[1], {"c": [2]}]}', '{"k\\"[": ["\\\\", "[{"]}',
    "[" * 128 + "]" * 128, "[" * 129 + "]" * 129, '{"s": "' + "[" * 300 + '", "d": ' + "[" * 5 + "]" * 5 + "}",
    "[" + ",".join(["[]"] * 200) + "]",  # many brackets, shallow: past the quick bound, still depth 2
])
def test_nesting_depth_is_exact_and_ignores_brackets_in_strings(text: str) -> None:
    from webhook.review import MAX_NESTING, nesting_depth

    depth = _depth(json.loads(text))
    found = nesting_depth(text.encode())
    # below the quick bound (opening brackets outside and inside strings) the answer may be 0: never too deep
    assert found == depth or (found == 0 and text.count("[") + text.count("{") <= MAX_NESTING)
    assert (found > MAX_NESTING) == (depth > MAX_NESTING)
