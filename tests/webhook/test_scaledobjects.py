"""gpu-scale-to-zero at admission, with the REAL kubernetes client listing and watching KEDA ScaledObjects from a
local API server (tests/webhook/webhook_fakeapi.py): the cache keeps only what the policy reads; a missing or
min>0 ScaledObject only warns (a sync creates the Deployment first); where KEDA's CRD is absent the informer is
synced-and-absent and the policy warns that it could not see ScaledObjects, never denies; what is in the object
itself (KServe minReplicas) still denies."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from webhook_fakeapi import FakeApi
from webhook_testlib import review

from webhook.app import create_app
from webhook.cluster import ClusterCache, api_client, trim_scaledobject

POLICYSET = """\
apiVersion: mlguard.io/v1alpha1
kind: PolicySet
metadata: {name: scale-to-zero-test}
spec:
  policies:
    gpu-scale-to-zero:
      action: deny
      match: {environments: [dev]}
"""
NAMESPACE = {"metadata": {"name": "llm-dev", "labels": {"mlguard.io/environment": "dev"}}}
VLLM = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vllm", "namespace": "llm-dev"},
        "spec": {"selector": {"matchLabels": {"app": "vllm"}}, "template": {
            "metadata": {"labels": {"app": "vllm"}},
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.9.2",
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}
# keda.sh/v1alpha1 (https://keda.sh/docs/latest/reference/scaledobject-spec/), as the API server lists it
SCALED = {"metadata": {"name": "vllm", "namespace": "llm-dev", "annotations": {
              "kubectl.kubernetes.io/last-applied-configuration": "{...}", "team": "llm"},
              "managedFields": [{"manager": "kubectl"}]},
          "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"},
                   "minReplicaCount": 0, "maxReplicaCount": 2, "triggers": [{"type": "prometheus", "metadata": {
                       "serverAddress": "http://prometheus.monitoring.svc:9090", "query": "sum(x)",
                       "threshold": "8"}, "authenticationRef": {"name": "prom-creds"}}]},
          "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def kubeconfig_for(api: FakeApi, tmp_path: Path) -> str:
    assert api.server is not None
    path = tmp_path / "kubeconfig"
    api.write_kubeconfig(path)
    return str(path)


def start_api(*, with_keda: bool) -> FakeApi:
    fake = FakeApi(with_keda=with_keda)
    fake.start()
    fake.add("namespaces", NAMESPACE)
    return fake


@pytest.fixture()
def keda_api() -> Iterator[FakeApi]:
    fake = start_api(with_keda=True)
    yield fake
    fake.stop()


@pytest.fixture()
def no_keda_api() -> Iterator[FakeApi]:
    fake = start_api(with_keda=False)
    yield fake
    fake.stop()


def webhook(api: FakeApi, tmp_path: Path) -> Flask:
    policyset = tmp_path / "policyset.yaml"
    policyset.write_text(POLICYSET)
    app = create_app({"POLICYSET": str(policyset), "CLUSTER_CACHE": "true",
                      "KUBECONFIG": kubeconfig_for(api, tmp_path)})
    client = app.test_client()
    assert eventually(lambda: client.get("/readyz").status_code == 200, timeout=10)
    return app


def admit(app: Flask, obj: dict[str, Any]) -> dict[str, Any]:
    resp = app.test_client().post("/validate", json=review(obj))
    assert resp.status_code == 200
    answer: dict[str, Any] = resp.get_json()["response"]
    return answer


def test_the_cache_keeps_a_scaledobjects_target_and_floors_only(keda_api: FakeApi, tmp_path: Path) -> None:
    cache = ClusterCache(api_client(kubeconfig=kubeconfig_for(keda_api, tmp_path)), watch_timeout=5, backoff=0.05)
    cache.start()
    try:
        assert cache.wait_synced(10)
        assert cache.scaled_objects("llm-dev") == []   # KEDA is served, and knows none: an answer, not None
        keda_api.add("scaledobjects", SCALED)
        assert eventually(lambda: bool(cache.scaled_objects("llm-dev")))
        (kept,) = cache.scaled_objects("llm-dev") or []
        assert kept == {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                        "metadata": {"name": "vllm", "namespace": "llm-dev", "resourceVersion": kept["metadata"]
                                     ["resourceVersion"]},
                        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"},
                                 "minReplicaCount": 0}}
        keda_api.delete("scaledobjects", SCALED)
        assert eventually(lambda: cache.scaled_objects("llm-dev") == [])
    finally:
        cache.stop()


def test_pause_annotations_are_kept_and_triggers_are_not() -> None:
    obj = {**SCALED, "metadata": {**SCALED["metadata"], "annotations": {"autoscaling.keda.sh/paused-replicas": "1",
                                                                        "other": "x"}}}
    kept = trim_scaledobject(obj)
    assert kept["metadata"]["annotations"] == {"autoscaling.keda.sh/paused-replicas": "1"}
    assert "triggers" not in kept["spec"] and "maxReplicaCount" not in kept["spec"]


def test_admission_warns_until_the_scaledobject_is_there_then_admits_quietly(keda_api: FakeApi,
                                                                            tmp_path: Path) -> None:
    app = webhook(keda_api, tmp_path)
    try:
        first = admit(app, VLLM)
        assert first["allowed"] is True   # never denied for what a sync may create a moment later
        (warning,) = first["warnings"]
        # the verdict and its cause within the 256 characters kubectl shows
        head = ("gpu-scale-to-zero: spec.replicas: Deployment `vllm` serves a model on GPUs and cannot scale to zero: "
                "no ScaledObject in the cluster targets it")
        assert warning.startswith(head)
        keda_api.add("scaledobjects", {**SCALED, "spec": {**SCALED["spec"], "minReplicaCount": 1}})
        cache = app.extensions["mlguard"].cache
        assert eventually(lambda: bool(cache.scaled_objects("llm-dev")))
        floor = admit(app, VLLM)
        assert floor["allowed"] is True and "keeps at least 1 replica(s)" in floor["warnings"][0]
        keda_api.modify("scaledobjects", SCALED)
        assert eventually(lambda: (cache.scaled_objects("llm-dev") or [{}])[0].get("spec", {})
                          .get("minReplicaCount") == 0)
        quiet = admit(app, VLLM)
        assert quiet["allowed"] is True and not quiet.get("warnings")
    finally:
        app.extensions["mlguard"].stop()


def test_without_kedas_crd_the_webhook_is_ready_and_warns_it_could_not_see(no_keda_api: FakeApi,
                                                                          tmp_path: Path) -> None:
    app = webhook(no_keda_api, tmp_path)
    try:
        status = app.test_client().get("/readyz").get_json()["cache"]["resources"]["scaledobjects"]
        assert status["synced"] and status["absent"]
        answer = admit(app, VLLM)
        assert answer["allowed"] is True
        (warning,) = answer["warnings"]
        assert "could not see the cluster's ScaledObjects" in warning
        # what the object says itself is still judged in full: KServe's default minReplicas is 1
        isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": "llama", "namespace": "llm-dev"},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"},
                                                 "storageUri": "hf://meta-llama/Llama-3.1-8B-Instruct",
                                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}}}}
        denied = admit(app, isvc)
        assert denied["allowed"] is False
        assert "spec.predictor.minReplicas" in denied["status"]["message"]
    finally:
        app.extensions["mlguard"].stop()
