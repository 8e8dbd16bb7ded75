"""Issue 14, part B, attacked from outside as a tenant would: exemptions an object grants itself.

A running webhook (gunicorn, TLS) serving the shipped baseline catalog, and `mlguard check` on the same
manifests, must judge a tenant's object fully whatever labels, owner references or namespace labels it carries.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from webhook_testlib import REPO, WebhookServer, review

pytestmark = pytest.mark.integration
BASELINE = REPO / "policies/catalog/baseline.yaml"
DIGEST = "registry.example.com/tools@sha256:" + "a" * 64
COST = {"team": "search", "cost-center": "cc-1234"}


def exporter_impostor(namespace: str = "team-a") -> dict[str, Any]:
    """The issue's attack: a tenant pod labelled as NVIDIA's DCGM exporter that sets NVIDIA_VISIBLE_DEVICES=all,
    mounts the host's /dev, runs privileged and tolerates every taint."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "not-an-exporter", "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "dcgm-exporter", **COST}},
            "spec": {"tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "shell", "image": DIGEST,
                                     "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                                     "securityContext": {"privileged": True},
                                     "volumeMounts": [{"name": "dev", "mountPath": "/host/dev"}]}],
                     "volumes": [{"name": "dev", "hostPath": {"path": "/dev"}}]}}


def node_exporter_impostor(namespace: str = "team-a") -> dict[str, Any]:
    """A CPU pod labelled as prometheus-node-exporter that tolerates the GPU taint: a squatter on GPU nodes."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "squatter", "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "prometheus-node-exporter", **COST}},
            "spec": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "c", "image": DIGEST,
                                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}


@pytest.fixture(scope="module")
def baseline_server(tls: Any, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    """gunicorn over TLS serving the shipped baseline catalog, its cluster cache on the fake API."""
    work = tmp_path_factory.mktemp("baseline-webhook")
    policyset = work / "baseline.yaml"
    # the shipped baseline, with the TEST-ONLY public key the eval-gate samples are signed with
    text = BASELINE.read_text()
    keys = yaml.safe_load((REPO / "policies/library/eval_gate/tests/suite.yaml").read_text())["policyset"]["evalKeys"]
    assert "    files: [/etc/mlguard/eval-keys]" in text
    policyset.write_text(text.replace("    files: [/etc/mlguard/eval-keys]",
                                      "    keys: " + json.dumps(keys["keys"])))
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset,
                        env={"MLGUARD_WEBHOOK_CLUSTER_CACHE": "true", "MLGUARD_WEBHOOK_KUBECONFIG": str(kubeconfig)},
                        workers=1, threads=2)
    try:
        srv.wait("/readyz")
        yield srv
    finally:
        srv.stop()


def check(tmp_path: Path, *objects: dict[str, Any], policyset: Path = BASELINE) -> tuple[int, str]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    out = subprocess.run([sys.executable, "-m", "policies.cli", "check", str(path), "--policyset", str(policyset)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_a_tenant_pod_labelled_dcgm_exporter_is_denied_at_admission(baseline_server: WebhookServer) -> None:
    out = baseline_server.admit("/validate", review(exporter_impostor()))
    assert out["allowed"] is False
    message = out["status"]["message"]
    for expected in ("gpu-isolation: spec.containers[0].env[0].value: container `shell` sets "
                     "NVIDIA_VISIBLE_DEVICES=all",
                     "gpu-isolation: spec.volumes[0].hostPath.path: volume `dev` mounts host path /dev",
                     "gpu-isolation: spec.containers[0].securityContext.privileged:",
                     "gpu-tolerations: spec.tolerations: pod uses no GPU but tolerates every taint",
                     "runbooks/admission-denied.md#gpu-isolation", "runbooks/admission-denied.md#gpu-tolerations"):
        assert expected in message, message


def test_a_tenant_pod_labelled_node_exporter_squats_no_gpu_node(baseline_server: WebhookServer,
                                                                 tmp_path: Path) -> None:
    out = baseline_server.admit("/validate", review(node_exporter_impostor()))
    assert out["allowed"] is False
    assert "gpu-tolerations: spec.tolerations: pod uses no GPU but tolerates nvidia.com/gpu:NoSchedule" in \
        out["status"]["message"]
    code, text = check(tmp_path, node_exporter_impostor())
    assert code == 1 and "DENY  gpu-tolerations  Pod/team-a/squatter" in text, text


def test_the_same_attack_is_denied_by_mlguard_check(tmp_path: Path) -> None:
    for policyset in (BASELINE, REPO / "policies/catalog/strict.yaml"):
        code, text = check(tmp_path, exporter_impostor(), policyset=policyset)
        assert code == 1, text
        assert "DENY  gpu-isolation  Pod/team-a/not-an-exporter" in text, text
        assert "DENY  gpu-tolerations  Pod/team-a/not-an-exporter" in text, text


def test_the_label_still_exempts_within_the_namespace_it_names(baseline_server: WebhookServer,
                                                                 tmp_path: Path) -> None:
    """The catalogs' allowlists keep working for the real installations they name: the standalone
    dcgm-exporter chart in monitoring (by label within the namespace), the GPU operator's namespace."""
    real = exporter_impostor("monitoring")
    real["metadata"]["name"] = "dcgm-exporter-x7k2p"
    code, text = check(tmp_path, real)
    assert code == 0 and "0 denied" in text, text
    operator = copy.deepcopy(real)
    operator["metadata"]["namespace"] = "gpu-operator"
    del operator["metadata"]["labels"]["app.kubernetes.io/name"]
    code, text = check(tmp_path, operator)
    assert code == 0 and "0 denied" in text, text
    # the label in monitoring exempts from isolation only what it names: another label there does not
    other = copy.deepcopy(real)
    other["metadata"]["labels"]["app.kubernetes.io/name"] = "grafana"
    assert baseline_server.admit("/validate", review(other))["allowed"] is False


# ---- owner references ------------------------------------------------------------------------------------------
FORGED = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "my-controller",
           "uid": "6f1d2c3b-aaaa-4bbb-8ccc-0123456789ab", "controller": True}]


def big_deployment(replicas: int, *, namespace: str = "quota-1000", owners: list | None = FORGED) -> dict[str, Any]:
    """replicas x 8 GPUs, the issue's 200 x 8 against a quota of 1000, with a forged controller reference."""
    container = {"name": "server", "image": DIGEST,
                 "resources": {"limits": {"nvidia.com/gpu": "8", "memory": "64Gi"},
                               "requests": {"cpu": "8", "memory": "64Gi"}}}
    meta: dict[str, Any] = {"name": "big", "namespace": namespace, "labels": {"app": "big"}}
    if owners is not None:
        meta["ownerReferences"] = copy.deepcopy(owners)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "strategy": {"type": "Recreate"},
                     "selector": {"matchLabels": {"app": "big"}},
                     "template": {"metadata": {"labels": {"app": "big", **COST}},
                                  "spec": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                            "effect": "NoSchedule"}],
                                           "containers": [container]}}}}


@pytest.fixture(scope="module")
def quota_namespace(fake_api: Any, baseline_server: WebhookServer) -> str:
    """A namespace with a 1000-GPU quota, known to the webhook's cache."""
    fake_api.add("namespaces", {"metadata": {"name": "quota-1000",
                                             "labels": {"kubernetes.io/metadata.name": "quota-1000"}}})
    fake_api.add("resourcequotas", {"metadata": {"name": "gpus", "namespace": "quota-1000"},
                                    "spec": {"hard": {"requests.nvidia.com/gpu": "1000"}}})
    end = time.monotonic() + 10
    while time.monotonic() < end:  # until the cache has the quota: 100 x 8 fits, and says so
        if baseline_server.admit("/validate", review(big_deployment(100)))["allowed"]:
            return "quota-1000"
        time.sleep(0.1)
    raise AssertionError("the webhook's cache never saw the quota-1000 namespace")


def test_a_forged_controller_reference_skips_no_quota_look_ahead(baseline_server: WebhookServer, quota_namespace: str,
                                                                 tmp_path: Path) -> None:
    out = baseline_server.admit("/validate", review(big_deployment(200), user="mallory"))
    assert out["allowed"] is False, out
    message = out["status"]["message"]
    assert ("gpu-quota: spec.replicas: Deployment `big` needs 1600 nvidia.com/gpu at full size (200 pods x 8) but "
            "ResourceQuota `gpus` allows 1000") in message, message
    assert "runbooks/gpu-quota-exhausted.md" in message or "admission-denied.md#gpu-quota" in message, message
    # offline, the same manifests with the ConfigMap the reference names and the quota: denied the same way
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "my-controller", "namespace": "quota-1000", "uid": FORGED[0]["uid"]}}
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": "quota-1000"},
             "spec": {"hard": {"requests.nvidia.com/gpu": "1000"}}}
    code, text = check(tmp_path, configmap, quota, big_deployment(200))
    assert code == 1 and "DENY  gpu-quota  Deployment/quota-1000/big" in text, text
    assert "needs 1600 nvidia.com/gpu at full size" in text, text


def test_a_forged_reference_to_a_real_workload_needs_its_uid(baseline_server: WebhookServer,
                                                             quota_namespace: str) -> None:
    """The cache holds team-a's Deployment llm (uid uid-llm): a reference to it with another uid is not believed."""
    wrong_uid = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm", "uid": "not-llms", "controller": True}]
    out = baseline_server.admit("/validate", review(big_deployment(200, owners=wrong_uid), user="mallory"))
    assert out["allowed"] is False and "needs 1600 nvidia.com/gpu" in out["status"]["message"]


def test_a_bare_batch_pod_with_a_forged_owner_gets_the_deadline_warning(baseline_server: WebhookServer) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "train", "namespace": "team-a", "labels": COST,
                        "ownerReferences": copy.deepcopy(FORGED)},
           "spec": {"restartPolicy": "Never",
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "c", "image": DIGEST, "resources": {
                        "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"},
                        "requests": {"cpu": "1", "memory": "8Gi"}}}]}}
    def said(out: dict[str, Any]) -> list[str]:  # team-a is prod: every finding denies there
        return [*(out.get("warnings") or []), *(out.get("status") or {}).get("message", "").split("\n")]

    out = baseline_server.admit("/validate", review(pod, user="mallory"))
    assert out["allowed"] is False
    assert any(line.startswith("gpu-job-deadline: spec.activeDeadlineSeconds:") for line in said(out)), out
    # the same pod asked for by the Job controller, with a Job owner, is the Job's business
    by_job = copy.deepcopy(pod)
    by_job["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u-j",
                                              "controller": True}]
    out = baseline_server.admit("/validate", review(by_job, user="system:serviceaccount:kube-system:job-controller"))
    assert not any(line.startswith("gpu-job-deadline") for line in said(out)), out


# ---- onlyNewViolations by identity and amount ----------------------------------------------------------------------
def gpu_deployment_of(gpus: int, *, annotations: dict[str, str] | None = None, image: str = DIGEST) -> dict[str, Any]:
    tpl_meta: dict[str, Any] = {"labels": {"app": "llm", **COST}}
    if annotations:
        tpl_meta["labels"]["mlguard.io/model"] = "llama-chat"
        tpl_meta["annotations"] = dict(annotations)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "grow", "namespace": "team-a"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "llm"}},
                     "template": {"metadata": tpl_meta, "spec": {"containers": [{
                         "name": "server", "image": image,
                         "resources": {"limits": {"nvidia.com/gpu": str(gpus), "memory": "64Gi"},
                                       "requests": {"cpu": "8", "memory": "64Gi"}}}]}}}}


def said(out: dict[str, Any]) -> list[str]:
    return [*(out.get("warnings") or []), *(out.get("status") or {}).get("message", "").split("\n")]


def test_a_container_with_9_gpus_may_not_grow_to_64(baseline_server: WebhookServer) -> None:
    nine, sixty_four = gpu_deployment_of(9), gpu_deployment_of(64)
    out = baseline_server.admit("/validate", review(sixty_four, operation="UPDATE", old=nine))
    assert out["allowed"] is False
    limits = [line for line in said(out) if line.startswith("gpu-limits:")]
    assert any("container `server` asks for 64 nvidia.com/gpu, more than the 8 allowed per container" in line
               for line in limits), out
    # the other way (64 -> 9) is a shrink: gpu-limits finds nothing new
    back = baseline_server.admit("/validate", review(nine, operation="UPDATE", old=sixty_four))
    assert not [line for line in said(back) if line.startswith("gpu-limits:")], back


def test_after_expiry_an_update_cannot_swap_the_model_under_a_garbage_attestation(
        baseline_server: WebhookServer) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from policies.attestation import sign_report

    key = load_pem_private_key((REPO / "policies/library/eval_gate/tests/keys/TEST-ONLY-a.private.pem").read_bytes(),
                               password=None)
    image = "registry.example.com/vllm@sha256:" + "1" * 64
    report = {"model": {"name": "llama-chat", "version": "3.1.0", "artifact_uri": "s3://models/llama-chat/3.1.0",
                        "artifact_digest": "sha256:" + "a" * 64, "quantization": "fp16"},
              "serving_image_digest": "sha256:" + "1" * 64,
              "dataset": {"name": "chat-validation-v7", "digest": "sha256:" + "d" * 64},
              "metrics": {"accuracy": 0.9, "baseline_accuracy": 0.86, "p95_latency_ms": 143.0, "regressions": 0},
              "evaluator": {"version": "2.4.1"}}
    expired = sign_report(report, key, now=datetime.now(UTC) - timedelta(days=60),  # type: ignore[arg-type]
                          expires_in=timedelta(days=30), scope={"namespaces": ["team-a"]})
    fields = {"mlguard.io/model-version": "3.1.0", "mlguard.io/artifact-digest": "sha256:" + "a" * 64,
              "mlguard.io/quantization": "fp16"}
    before = gpu_deployment_of(1, annotations={**fields, "mlguard.io/eval-attestation": expired}, image=image)
    gate = "eval-gate:"
    # it was valid once: today it fails at step 4 (expired) only
    out = baseline_server.admit("/validate", review(before))
    assert any(line.startswith("eval-gate:") and "step 4 (validity)" in line for line in said(out)), out
    # a scale of the unchanged workload is not refused for the old, expired attestation
    scaled = copy.deepcopy(before)
    scaled["spec"]["replicas"] = 2
    out = baseline_server.admit("/validate", review(scaled, operation="UPDATE", old=before))
    assert not [line for line in said(out) if line.startswith(gate)], out
    # a new version, artifact and image under a garbage attestation is refused (team-a is prod: eval-gate denies)
    swapped = gpu_deployment_of(1, annotations={"mlguard.io/model-version": "4.0.0",
                                                "mlguard.io/artifact-digest": "sha256:" + "9" * 64,
                                                "mlguard.io/quantization": "fp16",
                                                "mlguard.io/eval-attestation": "garbage"},
                                image="registry.example.com/evil@sha256:" + "2" * 64)
    out = baseline_server.admit("/validate", review(swapped, operation="UPDATE", old=before))
    assert out["allowed"] is False
    assert any(line.startswith("eval-gate: spec.template.metadata.annotations.mlguard.io/eval-attestation: eval "
                               "attestation rejected at step 1") and "eval-attestation-rejected.md" in line
               for line in said(out)), out


# ---- the retired namespace opt-out label ---------------------------------------------------------------------------
def test_a_namespace_labelled_mlguard_ignore_is_checked_and_warned(baseline_server: WebhookServer, fake_api: Any,
                                                                  tmp_path: Path) -> None:
    """Issue 14: `mlguard.io/ignore=true` could be set by anyone who may label a namespace. It exempts nothing now;
    the PolicySet's spec.exemptions.namespaces is the list, and the warning says so."""
    fake_api.add("namespaces", {"metadata": {"name": "opted-out", "labels": {
        "kubernetes.io/metadata.name": "opted-out", "mlguard.io/ignore": "true"}}})
    attack = exporter_impostor("opted-out")
    end = time.monotonic() + 10
    out = baseline_server.admit("/validate", review(attack))
    while not any("mlguard.io/ignore" in w for w in out.get("warnings") or []) and time.monotonic() < end:
        time.sleep(0.1)  # until the cache has the namespace's labels
        out = baseline_server.admit("/validate", review(attack))
    assert out["allowed"] is False and "gpu-isolation:" in out["status"]["message"]
    [warning] = [w for w in out["warnings"] if "mlguard.io/ignore" in w]
    assert warning.startswith("namespace opted-out carries mlguard.io/ignore=true, which no longer exempts it")
    assert "spec.exemptions.namespaces" in warning and "runbooks/admission-denied.md#namespace-exemptions" in warning
    # offline the same: the Namespace object in the checked set, its label noted, the pod denied
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "opted-out", "labels": {"mlguard.io/ignore": "true"}}}
    code, text = check(tmp_path, namespace, exporter_impostor("opted-out"))
    assert code == 1 and "DENY  gpu-isolation  Pod/opted-out/not-an-exporter" in text, text
    assert "carries mlguard.io/ignore=true, which no longer exempts it" in text, text
