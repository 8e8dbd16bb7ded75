"""eval-gate: a model-serving workload carries a signed eval attestation that is for it, current,
and meets the environment's promotion criteria."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from policies.attestation import (
    ATTESTATION_ANNOTATION,
    CRITERION_SCHEMA,
    DIGEST_ANNOTATION,
    MODEL_LABEL,
    QUANTIZATION_ANNOTATION,
    VERSION_ANNOTATION,
    Criterion,
    GateResult,
    Keyring,
    Subject,
    check_attestation,
    image_digest,
    keyring_for,
    parse_duration,
)
from policies.context import EvalContext
from policies.model import Finding
from policies.owners import controlled
from policies.registry import Policy, register
from policies.serving import Serving
from policies.workload import PodTemplate, Workload


def subject_of(tpl: PodTemplate, serving: Serving | None = None, *, namespace: str | None = None,
               environment: str | None = None) -> Subject:
    """What a pod template says it serves: model (its label, else the name the workload's fields give:
    server arguments, KServe storageUri, ...), version, artifact, quantization, image digests."""
    def text(value: Any) -> str | None:
        return None if value is None else str(value)  # CI may see an unquoted YAML number

    images = []
    containers = []
    for ref in tpl.containers(sections=("containers",)):
        image = ref.container.get("image")
        digest = image_digest(image) if isinstance(image, str) else None
        if digest:
            images.append(digest)
        containers.append((ref.name, str(image)))
    model, source = text(tpl.labels.get(MODEL_LABEL)), f"label {MODEL_LABEL}"
    label_source = source
    if model is None and serving is not None and serving.model is not None and serving.model_source != label_source:
        # no label anywhere: the name the workload's own fields give (a label on the object alone does not
        # count: the pods must carry it)
        model, source = serving.model, serving.model_source
    return Subject(model=model,
                   version=text(tpl.annotations.get(VERSION_ANNOTATION)),
                   artifact_digest=text(tpl.annotations.get(DIGEST_ANNOTATION)),
                   quantization=text(tpl.annotations.get(QUANTIZATION_ANNOTATION)),
                   image_digests=tuple(images), model_source=source, namespace=namespace,
                   environment=environment, containers=tuple(containers))


def controller_pod(workload: Workload, ctx: EvalContext) -> bool:
    """A Pod that a controller (ReplicaSet, StatefulSet, Job, ...) made from its template, by a controller
    reference that may be believed (policies.owners: a forged one does not count)."""
    return workload.resource.kind == "Pod" and controlled(workload.obj, workload.resource.namespace, ctx)


# the keys mlguard reads, matched exactly: a key that differs only in case is a mistake (or an attempt to look
# labelled without being bound), never the key
EXACT_KEYS = {k.lower(): k for k in (MODEL_LABEL, ATTESTATION_ANNOTATION, VERSION_ANNOTATION, DIGEST_ANNOTATION,
                                     QUANTIZATION_ANNOTATION)}


def near_miss_keys(workload: Workload) -> Iterator[Finding]:
    """A label or annotation key that is one of mlguard's but for its case (``mlguard.io/Model``)."""
    for tpl in workload.templates:
        for section, keys in (("labels", tpl.labels), ("annotations", tpl.annotations)):
            for key in keys:
                meant = EXACT_KEYS.get(str(key).lower())
                if meant is not None and key != meant:
                    yield Finding(tpl.meta_at(f"{section}.{key}"),
                                  f"{section[:-1]} key {key} is not {meant}: keys are case-sensitive, so mlguard does "
                                  f"not read it (and eval-gate does not see this workload as labelled); rename it "
                                  f"to {meant}", resource=tpl.resource)


def serving_templates(workload: Workload) -> list[PodTemplate]:
    """The templates the gate checks (``policies.serving``): those labelled with a model (all of them when
    only the object carries the label: each then fails step 3 for want of it), a serving kind's serving
    templates, or those the PolicySet's spec.serving.selector matches."""
    return workload.serving_templates()


def _path(tpl: PodTemplate, problem_field: str, serving: Serving | None = None) -> str:
    if problem_field == "model":
        if MODEL_LABEL not in tpl.labels and serving is not None and serving.model is not None and \
                serving.model_source != f"label {MODEL_LABEL}" and serving.model_path:
            return serving.model_path
        return tpl.meta_at(f"labels.{MODEL_LABEL}")
    if problem_field == "image" or problem_field.startswith("image:"):
        name = problem_field.partition(":")[2]
        refs = list(tpl.containers(sections=("containers",)))
        hit = next((r for r in refs if r.name == name), refs[0] if refs else None)
        return hit.at("image") if hit else tpl.at("containers")
    key = {"version": VERSION_ANNOTATION, "artifact_digest": DIGEST_ANNOTATION,
           "quantization": QUANTIZATION_ANNOTATION}.get(problem_field, ATTESTATION_ANNOTATION)
    return tpl.meta_at(f"annotations.{key}")


def identity(tpl: PodTemplate, subject: Subject, attestation: str | None) -> str:
    """What an eval-gate finding is about, for UPDATE comparisons (onlyNewViolations): the model, version,
    artifact digest and quantization the template names, every container's image, and the attestation itself.
    An UPDATE that changes any of them gets a finding of its own, never one excused by the old object's."""
    images = [str(ref.container.get("image")) for ref in tpl.containers()]
    digest = hashlib.sha256(attestation.encode()).hexdigest() if attestation is not None else "-"
    return json.dumps([subject.model, subject.version, subject.artifact_digest, subject.quantization, images, digest])


def findings_of(result: GateResult, tpl: PodTemplate, serving: Serving | None = None, *,
                about: str | None = None) -> Iterator[Finding]:
    for problem in result.problems:
        yield Finding(_path(tpl, problem.field, serving),
                      f"eval attestation rejected at step {result.step} ({result.step_name}): {problem.message}",
                      resource=tpl.resource, identity=about)


@register
class EvalGate(Policy):
    id = "eval-gate"
    title = "Model-serving workloads carry a signed, matching, current eval attestation that passed"
    severity = "high"
    version = "1.2.0"
    description = ("A model-serving workload (label mlguard.io/model on the pod template; a serving kind such as "
                   "a KServe InferenceService; or a match of the PolicySet's spec.serving.selector, e.g. a vLLM "
                   "image, whose model is named by its server arguments or KServe storageUri) carries annotation "
                   "mlguard.io/eval-attestation made by `mlguard eval sign`. The gate checks, in order, and names "
                   "the first that fails: 1 the annotation is present and parses; 2 the Ed25519 signature "
                   "verifies with a configured, unrevoked key (spec.evalKeys); 3 it is for this model, version, "
                   "artifact digest, quantization, for the image of every app container (when it names one) and "
                   "for this namespace or its environment (the scope it was signed for); 4 it is not expired, "
                   "nor issued in the future beyond clockSkewSeconds, nor valid for longer than maxValidity (90d) "
                   "(a Pod re-created by its controller is not refused for expiry unless expireControllerPods); 5 "
                   "its metrics meet the promotion criteria (set per environment with overrides). An fp16 pass does "
                   "not admit an awq-int4 deployment. Label and annotation keys are matched exactly: mlguard.io/Model "
                   "is a finding, and in the requireModelLabel environments (prod) a workload that serves a model "
                   "without the label mlguard.io/model is one too.")
    runbook = "runbooks/eval-attestation-rejected.md"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "criteria": {"type": "array", "items": CRITERION_SCHEMA},
            "clockSkewSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
            "maxValidity": {
                "type": "string", "pattern": "^[0-9]+[smhdw]$",
                "description": "The longest validity (expires_at - issued_at) an attestation may have, e.g. 90d; "
                               "a longer-lived one is refused at step 4.",
            },
            "requireModelLabel": {
                "type": "array", "items": {"type": "string", "minLength": 1},
                "description": "Environments where a model-serving workload found by its kind or image must also "
                               "carry the label mlguard.io/model on its pod template (the name the attestation "
                               "binds to).",
            },
            "expireControllerPods": {
                "type": "boolean",
                "description": "Refuse a Pod created by a controller (a controller ownerReference believed by "
                               "policies/owners.py) when its "
                               "attestation has expired. Off by default: the controller's template was gated "
                               "when it was created or updated, and a node drain must not take a model down.",
            },
        },
    }
    defaults = {
        "criteria": [
            {"metric": "accuracy", "op": "ge", "metric_ref": "baseline_accuracy"},
            {"metric": "regressions", "op": "eq", "value": 0},
        ],
        "clockSkewSeconds": 300,
        "maxValidity": "90d",
        "requireModelLabel": ["prod"],
        "expireControllerPods": False,
    }

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        yield from near_miss_keys(workload)
        templates = serving_templates(workload)
        if not templates:
            return
        if ctx.keys is None:
            keyring = keyring_for(ctx.policyset)
        elif isinstance(ctx.keys, Keyring):
            keyring = ctx.keys
        else:
            raise TypeError(f"EvalContext.keys must be a policies.attestation.Keyring, not {type(ctx.keys).__name__}")
        criteria = [Criterion.from_dict(c) for c in params["criteria"]]
        skew = timedelta(seconds=params["clockSkewSeconds"])
        max_validity = parse_duration(params["maxValidity"])
        namespace = workload.resource.namespace
        enforce_expiry = params["expireControllerPods"] or not controller_pod(workload, ctx)
        for tpl in templates:
            raw = tpl.annotations.get(ATTESTATION_ANNOTATION)
            text = None if raw is None else str(raw)
            subject = subject_of(tpl, workload.serving, namespace=namespace, environment=ctx.environment)
            if MODEL_LABEL not in tpl.labels and ctx.environment in params["requireModelLabel"]:
                yield Finding(tpl.meta_at(f"labels.{MODEL_LABEL}"),
                              f"{tpl.role or 'pod template'} serves a model ({subject.model_source}: "
                              f"{subject.model or 'unnamed'}) in environment {ctx.environment} without the label "
                              f"{MODEL_LABEL}; add label {MODEL_LABEL}: {subject.model or '<model name>'} to the pod "
                              "template, the name its eval attestation is bound to", resource=tpl.resource,
                              identity=identity(tpl, subject, text))
            result = check_attestation(text, keyring=keyring, subject=subject, criteria=criteria, clock_skew=skew,
                                       enforce_expiry=enforce_expiry, max_validity=max_validity)
            if not result.ok:
                yield from findings_of(result, tpl, workload.serving, about=identity(tpl, subject, text))
