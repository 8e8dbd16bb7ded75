"""Regenerate the eval-gate samples: ``python policies/library/eval_gate/tests/make_samples.py``.

The keys under ``keys/`` are TEST-ONLY keys, committed so the samples can be rebuilt; they sign
nothing but these samples and must never be configured in a real PolicySet. Output is
deterministic (Ed25519 signatures are, and the issue time is fixed): re-running changes nothing.
Valid samples expire ten years after ``ISSUED``.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.attestation import (
    b64url_decode,
    b64url_encode,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_pem,
    sign_report,
)

HERE = Path(__file__).parent
KEYS = HERE / "keys"
ISSUED = datetime(2026, 11, 23, tzinfo=UTC)
TEN_YEARS = timedelta(days=3653)

IMAGE = "sha256:" + "1" * 64
OTHER_IMAGE = "sha256:" + "2" * 64
ART_FP16 = "sha256:" + "a" * 64
ART_AWQ = "sha256:" + "b" * 64
DATASET = "sha256:" + "d" * 64


def committed_test_key(name: str) -> Any:
    """A committed TEST-ONLY key, made on first use."""
    KEYS.mkdir(exist_ok=True)
    private = KEYS / f"TEST-ONLY-{name}.private.pem"
    public = KEYS / f"TEST-ONLY-{name}.public.pem"
    if not private.exists():
        key = generate_private_key()
        private.write_bytes(private_key_pem(key))
        public.write_bytes(public_key_pem(key.public_key()))
    return load_private_key(private.read_bytes(), source=str(private))


def report(*, quantization: str = "fp16", image: str | None = IMAGE, name: str = "llama-chat",
           **metrics: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": {"name": name, "version": "3.1.0",
                  "artifact_uri": f"s3://models/llama-chat/3.1.0/{quantization}",
                  "artifact_digest": ART_FP16 if quantization == "fp16" else ART_AWQ,
                  "quantization": quantization},
        "dataset": {"name": "chat-validation-v7", "digest": DATASET},
        "metrics": {"accuracy": 0.871, "baseline_accuracy": 0.862, "p95_latency_ms": 143.0, "regressions": 0,
                    **metrics},
        "evaluator": {"name": "mlguard-eval-harness", "version": "2.4.1"},
    }
    if image:
        out["serving_image_digest"] = image
    return out


# where the samples are deployed: every attestation names the namespaces it may be used in
SCOPE = {"namespaces": ["ml-dev", "ml-staging", "ml-prod"]}
# the samples stay valid for ten years, so the suite raises eval-gate's maxValidity (default 90d) to match
MAX_VALIDITY = "3653d"


def sign(rep: dict[str, Any], key: Any, *, issued: datetime = ISSUED, valid: timedelta = TEN_YEARS,
         scope: dict[str, list[str]] | None = SCOPE) -> str:
    return sign_report(rep, key, now=issued, expires_in=valid, scope=scope)


def template(attestation: str | None, *, quantization: str = "fp16", version: str = "3.1.0",
             model: str = "llama-chat", digest: str | None = None, image: str = IMAGE,
             extra: dict[str, str] | None = None) -> dict[str, Any]:
    annotations = {"mlguard.io/model-version": version,
                   "mlguard.io/artifact-digest": digest or (ART_FP16 if quantization == "fp16" else ART_AWQ),
                   "mlguard.io/quantization": quantization, **(extra or {})}
    if attestation is not None:
        annotations["mlguard.io/eval-attestation"] = attestation
    return {
        "metadata": {"labels": {"app": model, "mlguard.io/model": model}, "annotations": annotations},
        "spec": {"containers": [{"name": "server", "image": f"registry.example.com/vllm@{image}",
                                 "ports": [{"containerPort": 8000}]}]},
    }


def obj(kind: str, namespace: str, name: str, tpl: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {**meta, **copy.deepcopy(tpl["metadata"])}, "spec": tpl["spec"]}
    selector = {"matchLabels": {"app": tpl["metadata"]["labels"]["app"]}}
    if kind == "CronJob":
        job_tpl = copy.deepcopy(tpl)
        job_tpl["spec"]["restartPolicy"] = "Never"
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_tpl}}}}
    api = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "Rollout": "argoproj.io/v1alpha1"}[kind]
    spec: dict[str, Any] = {"replicas": 1, "selector": selector, "template": tpl}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    if kind == "Rollout":
        spec["strategy"] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "10m"}}]}}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


def controller_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A Pod as a ReplicaSet creates it from an admitted template."""
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-7d4b9",
                                           "uid": "6a1f0e1c-0000-4000-8000-000000000001", "controller": True}]
    return pod


def two_containers(tpl: dict[str, Any]) -> dict[str, Any]:
    """The attested server plus a second app container on an image nobody evaluated."""
    tpl["spec"]["containers"].append({"name": "proxy", "image": "registry.example.com/proxy:1.0"})
    return tpl


def capital_label(tpl: dict[str, Any]) -> dict[str, Any]:
    labels = tpl["metadata"]["labels"]
    labels["mlguard.io/Model"] = labels.pop("mlguard.io/model")
    return tpl


def tamper(attestation: str) -> str:
    """Raise the accuracy in the payload and keep the old signature."""
    payload, sig, kid = attestation.split(".")
    text = b64url_decode(payload).decode().replace('"accuracy":0.871', '"accuracy":0.991')
    assert '"accuracy":0.991' in text
    return f"{b64url_encode(text.encode())}.{sig}.{kid}"


def main() -> None:
    key_a, key_b, key_revoked = committed_test_key("a"), committed_test_key("b"), committed_test_key("revoked")
    # a key nobody configured: derived from a fixed seed so the samples are reproducible
    unknown = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"mlguard eval-gate unknown test key").digest())
    good = sign(report(), key_a)
    awq = sign(report(quantization="awq-int4"), key_a)

    allowed = [
        obj("Pod", "ml-dev", "chat-pod", template(good)),
        obj("Deployment", "ml-prod", "chat", template(good)),
        obj("Rollout", "ml-prod", "chat-awq", template(awq, quantization="awq-int4")),
        obj("StatefulSet", "ml-dev", "chat-rotated", template(sign(report(), key_b))),
        obj("Deployment", "ml-staging", "chat-slow",
            template(sign(report(p95_latency_ms=320.0, accuracy=0.862), key_a))),
        obj("Deployment", "ml-dev", "no-image-named", template(sign(report(image=None), key_a), image=OTHER_IMAGE)),
        obj("Deployment", "ml-prod", "chat-prod-scoped", template(sign(report(), key_a,
                                                                       scope={"environments": ["prod"]}))),
        controller_pod(obj("Pod", "ml-prod", "chat-7d4b9-x2k4q",
                           template(sign(report(), key_a, issued=datetime(2024, 1, 1, tzinfo=UTC),
                                         valid=timedelta(days=30))))),
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ml-prod"},
         "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
             "metadata": {"labels": {"app": "web"}},
             "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}},
    ]
    past = datetime(2024, 1, 1, tzinfo=UTC)
    denied = [
        obj("Pod", "ml-dev", "hand-written", template(None, extra={"eval-passed": "true"})),
        obj("Deployment", "ml-dev", "garbled", template("eval-passed")),
        obj("Deployment", "ml-dev", "tampered", template(tamper(good))),
        obj("Rollout", "ml-dev", "unknown-key", template(sign(report(), unknown))),
        obj("StatefulSet", "ml-dev", "revoked-key", template(sign(report(), key_revoked))),
        obj("Deployment", "ml-dev", "wrong-model", template(good, model="mistral-chat")),
        obj("CronJob", "ml-dev", "wrong-version", template(good, version="3.2.0")),
        obj("Deployment", "ml-dev", "wrong-digest", template(good, digest="sha256:" + "c" * 64)),
        obj("Rollout", "ml-prod", "fp16-pass-on-awq", template(good, quantization="awq-int4")),
        obj("Deployment", "ml-dev", "wrong-image", template(good, image=OTHER_IMAGE)),
        obj("Pod", "ml-dev", "expired", template(sign(report(), key_a, issued=past, valid=timedelta(days=30)))),
        obj("Deployment", "ml-dev", "future-dated",
            template(sign(report(), key_a, issued=datetime(2100, 1, 1, tzinfo=UTC)))),
        obj("Deployment", "ml-prod", "slow-in-prod", template(sign(report(p95_latency_ms=250.0), key_a))),
        obj("StatefulSet", "ml-prod", "equal-to-baseline-in-prod", template(sign(report(accuracy=0.862), key_a))),
        obj("Deployment", "ml-dev", "regressed", template(sign(report(regressions=3), key_a))),
        # issue 14: copied to another namespace, signed for none, valid for 100,000 days, a second container on
        # another image, the model label spelled with a capital M
        obj("Deployment", "ml-dev", "copied-from-prod", template(sign(report(), key_a,
                                                                       scope={"namespaces": ["ml-prod"]}))),
        obj("Deployment", "ml-dev", "unscoped", template(sign(report(), key_a, scope=None))),
        obj("Deployment", "ml-dev", "hundred-thousand-days", template(sign(report(), key_a,
                                                                            valid=timedelta(days=100_000)))),
        obj("Deployment", "ml-dev", "second-container-elsewhere", two_containers(template(good))),
        obj("Deployment", "ml-dev", "capital-model-label", capital_label(template(good))),
        obj("Pod", "ml-prod", "no-latency-metric",
            template(sign({**report(), "metrics": {"accuracy": 0.9, "baseline_accuracy": 0.8, "regressions": 0}},
                          key_a))),
    ]
    header = "# Generated by make_samples.py (signed with the TEST-ONLY keys in keys/); do not edit by hand.\n"
    for name, docs in (("allowed.yaml", allowed), ("denied.yaml", denied)):
        (HERE / name).write_text(header + yaml.safe_dump_all(docs, sort_keys=False, width=10_000))

    pub = {n: (KEYS / f"TEST-ONLY-{n}.public.pem").read_text() for n in ("a", "b", "revoked")}
    ids = {n: key_id(k.public_key()) for n, k in (("a", key_a), ("b", key_b), ("revoked", key_revoked))}
    prod = [{"metric": "accuracy", "op": "gt", "metric_ref": "baseline_accuracy"},
            {"metric": "p95_latency_ms", "op": "lt", "value": 200},
            {"metric": "regressions", "op": "eq", "value": 0}]
    staging = [{"metric": "accuracy", "op": "ge", "metric_ref": "baseline_accuracy"},
               {"metric": "p95_latency_ms", "op": "lt", "value": 500},
               {"metric": "regressions", "op": "eq", "value": 0}]
    step = "eval attestation rejected at step"
    ann = "spec.template.metadata.annotations.mlguard.io/eval-attestation"
    cases = [
        {"name": "pod-valid-attestation", "file": "allowed.yaml", "resource": "Pod/ml-dev/chat-pod", "expect": "pass"},
        {"name": "deployment-meets-prod-criteria", "file": "allowed.yaml", "resource": "Deployment/ml-prod/chat",
         "expect": "pass"},
        {"name": "rollout-awq-with-its-own-attestation", "file": "allowed.yaml",
         "resource": "Rollout/ml-prod/chat-awq", "expect": "pass"},
        {"name": "statefulset-signed-by-second-active-key", "file": "allowed.yaml",
         "resource": "StatefulSet/ml-dev/chat-rotated", "expect": "pass"},
        {"name": "staging-criteria-are-looser", "file": "allowed.yaml", "resource": "Deployment/ml-staging/chat-slow",
         "expect": "pass"},
        {"name": "image-not-named-is-not-checked", "file": "allowed.yaml",
         "resource": "Deployment/ml-dev/no-image-named", "expect": "pass"},
        {"name": "controller-pod-of-expired-attestation-is-not-evicted", "file": "allowed.yaml",
         "resource": "Pod/ml-prod/chat-7d4b9-x2k4q", "expect": "pass",
         "request": {"user": "system:serviceaccount:kube-system:replicaset-controller"}},
        # the same controller reference in a tenant's request (the owner not in the webhook's cache): not believed
        {"name": "pod-claiming-a-controller-is-refused-for-expiry", "file": "allowed.yaml",
         "resource": "Pod/ml-prod/chat-7d4b9-x2k4q", "request": {"user": "alice"}, "expect": "fail",
         "contains": [f"{step} 4 (validity)"]},
        {"name": "attestation-scoped-to-its-environment", "file": "allowed.yaml",
         "resource": "Deployment/ml-prod/chat-prod-scoped", "expect": "pass"},
        {"name": "not-model-serving-untouched", "file": "allowed.yaml", "resource": "Deployment/ml-prod/web",
         "expect": "pass"},
        {"name": "pod-hand-written-flag", "file": "denied.yaml", "resource": "Pod/ml-dev/hand-written",
         "expect": "fail", "contains": [f"{step} 1 (annotation)", "counts for nothing"],
         "paths": ["metadata.annotations.mlguard.io/eval-attestation"]},
        {"name": "deployment-garbled", "file": "denied.yaml", "resource": "Deployment/ml-dev/garbled",
         "expect": "fail", "contains": [f"{step} 1 (annotation)", "does not parse"], "paths": [ann]},
        {"name": "deployment-tampered", "file": "denied.yaml", "resource": "Deployment/ml-dev/tampered",
         "expect": "fail", "contains": [f"{step} 2 (signature)", "altered after signing"], "paths": [ann]},
        {"name": "rollout-unknown-key", "file": "denied.yaml", "resource": "Rollout/ml-dev/unknown-key",
         "expect": "fail", "contains": [f"{step} 2 (signature)", "not a configured eval key"]},
        {"name": "statefulset-revoked-key", "file": "denied.yaml", "resource": "StatefulSet/ml-dev/revoked-key",
         "expect": "fail", "contains": [f"{step} 2 (signature)", f"key {ids['revoked']}, which is revoked"]},
        {"name": "deployment-wrong-model", "file": "denied.yaml", "resource": "Deployment/ml-dev/wrong-model",
         "expect": "fail", "contains": [f"{step} 3 (subject)", "'mistral-chat'"],
         "paths": ["spec.template.metadata.labels.mlguard.io/model"]},
        {"name": "cronjob-wrong-version", "file": "denied.yaml", "resource": "CronJob/ml-dev/wrong-version",
         "expect": "fail", "contains": [f"{step} 3 (subject)", "'3.2.0'"],
         "paths": ["spec.jobTemplate.spec.template.metadata.annotations.mlguard.io/model-version"]},
        {"name": "deployment-wrong-artifact-digest", "file": "denied.yaml",
         "resource": "Deployment/ml-dev/wrong-digest", "expect": "fail", "contains": [f"{step} 3 (subject)"],
         "paths": ["spec.template.metadata.annotations.mlguard.io/artifact-digest"]},
        {"name": "rollout-fp16-pass-does-not-admit-awq", "file": "denied.yaml",
         "resource": "Rollout/ml-prod/fp16-pass-on-awq", "expect": "fail",
         "contains": ["a quantized artifact needs its own evaluation"],
         "paths": ["spec.template.metadata.annotations.mlguard.io/quantization"]},
        {"name": "deployment-wrong-image", "file": "denied.yaml", "resource": "Deployment/ml-dev/wrong-image",
         "expect": "fail", "contains": [f"{step} 3 (subject)", "serving image"],
         "paths": ["spec.template.spec.containers[0].image"]},
        {"name": "pod-expired", "file": "denied.yaml", "resource": "Pod/ml-dev/expired", "expect": "fail",
         "contains": [f"{step} 4 (validity)", "expired at 2024-01-31T00:00:00Z"]},
        {"name": "deployment-future-dated", "file": "denied.yaml", "resource": "Deployment/ml-dev/future-dated",
         "expect": "fail", "contains": [f"{step} 4 (validity)", "in the future"]},
        {"name": "prod-p95-latency-too-high", "file": "denied.yaml", "resource": "Deployment/ml-prod/slow-in-prod",
         "expect": "fail", "contains": [f"{step} 5 (criteria)", "p95_latency_ms is 250"]},
        {"name": "prod-accuracy-must-beat-baseline", "file": "denied.yaml",
         "resource": "StatefulSet/ml-prod/equal-to-baseline-in-prod", "expect": "fail",
         "contains": ["the promotion criterion is accuracy > baseline_accuracy (0.862)"]},
        {"name": "regressions-not-zero", "file": "denied.yaml", "resource": "Deployment/ml-dev/regressed",
         "expect": "fail", "contains": ["regressions is 3, the promotion criterion is regressions == 0"]},
        {"name": "pod-metric-missing", "file": "denied.yaml", "resource": "Pod/ml-prod/no-latency-metric",
         "expect": "fail", "contains": ["metric 'p95_latency_ms' is not in the attestation"]},
        {"name": "attestation-copied-to-another-namespace", "file": "denied.yaml",
         "resource": "Deployment/ml-dev/copied-from-prod", "expect": "fail",
         "contains": [f"{step} 3 (subject)", "issued for namespaces ml-prod, not for namespace ml-dev"],
         "paths": [ann]},
        {"name": "attestation-for-no-namespace", "file": "denied.yaml", "resource": "Deployment/ml-dev/unscoped",
         "expect": "fail", "contains": [f"{step} 3 (subject)", "names no namespace or environment"]},
        {"name": "validity-over-max", "file": "denied.yaml", "resource": "Deployment/ml-dev/hundred-thousand-days",
         "expect": "fail", "contains": [f"{step} 4 (validity)", "valid for 100000 days", "maxValidity"]},
        {"name": "every-app-container-runs-the-attested-image", "file": "denied.yaml",
         "resource": "Deployment/ml-dev/second-container-elsewhere", "expect": "fail",
         "contains": [f"{step} 3 (subject)", "container `proxy` runs registry.example.com/proxy:1.0"],
         "paths": ["spec.template.spec.containers[1].image"]},
        {"name": "label-keys-are-case-sensitive", "file": "denied.yaml",
         "resource": "Deployment/ml-dev/capital-model-label", "expect": "fail",
         "contains": ["label key mlguard.io/Model is not mlguard.io/model"],
         "paths": ["spec.template.metadata.labels.mlguard.io/Model"]},
    ]
    suite = {
        "policy": "eval-gate",
        "namespaceLabels": {"ml-dev": {"mlguard.io/environment": "dev"},
                            "ml-staging": {"mlguard.io/environment": "staging"},
                            "ml-prod": {"mlguard.io/environment": "prod"}},
        "policyset": {
            "evalKeys": {"keys": [{"keyId": ids[n], "publicKey": pub[n]} for n in ("a", "b", "revoked")],
                         "revoked": [ids["revoked"]]},
            "policy": {"params": {"maxValidity": MAX_VALIDITY},
                       "overrides": [{"match": {"environments": ["prod"]}, "params": {"criteria": prod}},
                                     {"match": {"environments": ["staging"]}, "params": {"criteria": staging}}]},
        },
        "cases": cases,
    }
    (HERE / "suite.yaml").write_text(header + yaml.safe_dump(suite, sort_keys=False, width=10_000))
    kinds(suite, key_a, header)


LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def vllm_deployment(name: str, attestation: str | None, model: str = LLAMA) -> dict[str, Any]:
    """A vLLM Deployment without the mlguard.io/model label (vLLM docs, "Deploying with Kubernetes"): it serves
    a model by its image, and names the model in its arguments."""
    tpl = template(attestation)
    del tpl["metadata"]["labels"]["mlguard.io/model"]
    tpl["spec"]["containers"] = [{"name": "vllm", "image": f"vllm/vllm-openai@{IMAGE}",
                                  "args": ["--model", model, "--max-model-len", "8192"]}]
    return obj("Deployment", "ml-dev", name, tpl)


def kinds(base_suite: dict[str, Any], key: Any, header: str) -> None:
    """kinds/: model serving found without the label (a vLLM image, the serving kinds), bound by the model its
    fields name. KServe serving.kserve.io/v1beta1 InferenceService (docs/samples/v1beta1/huggingface) and
    v1alpha2 LLMInferenceService (docs/samples/llmisvc) carry the annotations on the object (KServe copies them
    to the pods; an LLMInferenceService through spec.annotations)."""
    out = HERE / "kinds"
    out.mkdir(exist_ok=True)
    good = sign(report(name=LLAMA), key)
    annotations = {"mlguard.io/model-version": "3.1.0", "mlguard.io/artifact-digest": ART_FP16,
                   "mlguard.io/quantization": "fp16"}
    allowed = [vllm_deployment("vllm-unlabelled", good)]
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "hf-llama", "namespace": "ml-dev"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"},
                                             "storageUri": "hf://meta-llama/Llama-3.1-8B-Instruct",
                                             "resources": {"limits": {"nvidia.com/gpu": "1"}}}}}}
    llmisvc = {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
               "metadata": {"name": "llama", "namespace": "ml-dev"},
               "spec": {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "name": LLAMA},
                        "annotations": annotations,
                        "template": {"containers": [{"name": "main",
                                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}
    denied = [vllm_deployment("vllm-other-model", good, model="mistralai/Mistral-7B-Instruct-v0.3"),
              vllm_deployment("vllm-unattested", None), isvc, llmisvc]
    allowed.append({**copy.deepcopy(llmisvc), "metadata": {"name": "llama-attested", "namespace": "ml-dev"}})
    # the image comes from KServe's presets, which are not in the checked set: an attestation that names no
    # serving image (an image-pinned one would be refused: the gate cannot see the image)
    allowed[-1]["spec"]["annotations"] = {**annotations,
                                          "mlguard.io/eval-attestation": sign(report(name=LLAMA, image=None), key)}
    step = "eval attestation rejected at step"
    cases = [
        {"name": "vllm-deployment-bound-by-its-model-argument", "file": "allowed.yaml",
         "resource": "Deployment/ml-dev/vllm-unlabelled", "expect": "pass"},
        {"name": "llminferenceservice-bound-by-spec-model-name", "file": "allowed.yaml",
         "resource": "LLMInferenceService/ml-dev/llama-attested", "expect": "pass"},
        {"name": "vllm-deployment-serves-another-model", "file": "denied.yaml",
         "resource": "Deployment/ml-dev/vllm-other-model", "expect": "fail",
         "contains": [f"{step} 3 (subject)", "argument --model of container `vllm` is "
                                            "'mistralai/Mistral-7B-Instruct-v0.3'"],
         "paths": ["spec.template.spec.containers[0].args"]},
        {"name": "vllm-deployment-without-attestation", "file": "denied.yaml",
         "resource": "Deployment/ml-dev/vllm-unattested", "expect": "fail", "contains": [f"{step} 1 (annotation)"],
         "paths": ["spec.template.metadata.annotations.mlguard.io/eval-attestation"]},
        {"name": "inferenceservice-serves-without-label", "file": "denied.yaml",
         "resource": "InferenceService/ml-dev/hf-llama", "expect": "fail", "contains": [f"{step} 1 (annotation)"],
         "paths": ["metadata.annotations.mlguard.io/eval-attestation"]},
        {"name": "llminferenceservice-without-attestation", "file": "denied.yaml",
         "resource": "LLMInferenceService/ml-dev/llama", "expect": "fail", "contains": [f"{step} 1 (annotation)"],
         "paths": ["spec.annotations.mlguard.io/eval-attestation"]},
    ]
    for name, docs in (("allowed.yaml", allowed), ("denied.yaml", denied)):
        (out / name).write_text(header + yaml.safe_dump_all(docs, sort_keys=False, width=10_000))
    suite = {**{k: v for k, v in base_suite.items() if k != "cases"}, "cases": cases}
    (out / "suite.yaml").write_text(header + yaml.safe_dump(suite, sort_keys=False, width=10_000))


if __name__ == "__main__":
    main()
