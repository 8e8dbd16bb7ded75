"""eval-gate: a model-serving workload carries a signed eval attestation that is for it, current,
and meets the environment's promotion criteria."""

from __future__ import annotations

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
)
from policies.context import EvalContext
from policies.model import Finding
from policies.registry import Policy, register
from policies.serving import Serving
from policies.workload import PodTemplate, Workload


def subject_of(tpl: PodTemplate, serving: Serving | None = None) -> Subject:
    """What a pod template says it serves: model (its label, else the name the workload's fields give:
    server arguments, KServe storageUri, ...), version, artifact, quantization, image digests."""
    def text(value: Any) -> str | None:
        return None if value is None else str(value)  # CI may see an unquoted YAML number

    images = []
    for ref in tpl.containers(sections=("containers",)):
        image = ref.container.get("image")
        digest = image_digest(image) if isinstance(image, str) else None
        if digest:
            images.append(digest)
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
                   image_digests=tuple(images), model_source=source)


def controller_pod(workload: Workload) -> bool:
    """A Pod that a controller (ReplicaSet, StatefulSet, Job, ...) made from its template."""
    if workload.resource.kind != "Pod":
        return False
    owners = (workload.obj.get("metadata") or {}).get("ownerReferences") or []
    return isinstance(owners, list) and any(isinstance(o, Mapping) and o.get("controller") is True for o in owners)


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
    if problem_field == "image":
        first = next(iter(tpl.containers(sections=("containers",))), None)
        return first.at("image") if first else tpl.at("containers")
    key = {"version": VERSION_ANNOTATION, "artifact_digest": DIGEST_ANNOTATION,
           "quantization": QUANTIZATION_ANNOTATION}.get(problem_field, ATTESTATION_ANNOTATION)
    return tpl.meta_at(f"annotations.{key}")


def findings_of(result: GateResult, tpl: PodTemplate, serving: Serving | None = None) -> Iterator[Finding]:
    for problem in result.problems:
        yield Finding(_path(tpl, problem.field, serving),
                      f"eval attestation rejected at step {result.step} ({result.step_name}): {problem.message}",
                      resource=tpl.resource)


@register
class EvalGate(Policy):
    id = "eval-gate"
    title = "Model-serving workloads carry a signed, matching, current eval attestation that passed"
    severity = "high"
    version = "1.1.0"
    description = ("A model-serving workload (label mlguard.io/model on the pod template; a serving kind such as "
                   "a KServe InferenceService; or a match of the PolicySet's spec.serving.selector, e.g. a vLLM "
                   "image, whose model is named by its server arguments or KServe storageUri) carries annotation "
                   "mlguard.io/eval-attestation made by `mlguard eval sign`. The gate checks, in order, and names "
                   "the first that fails: 1 the annotation is present and parses; 2 the Ed25519 signature "
                   "verifies with a configured, unrevoked key (spec.evalKeys); 3 it is for this model, version, "
                   "artifact digest, quantization and (when named) serving image digest; 4 it is not expired "
                   "nor issued in the future beyond clockSkewSeconds (a Pod re-created by its controller is "
                   "not refused for expiry unless expireControllerPods); 5 its metrics meet the promotion criteria "
                   "(set per environment with overrides). An fp16 pass does not admit an awq-int4 deployment.")
    runbook = "runbooks/eval-attestation-rejected.md"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "criteria": {"type": "array", "items": CRITERION_SCHEMA},
            "clockSkewSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
            "expireControllerPods": {
                "type": "boolean",
                "description": "Refuse a Pod created by a controller (ownerReference controller: true) when its "
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
        "expireControllerPods": False,
    }

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
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
        enforce_expiry = params["expireControllerPods"] or not controller_pod(workload)
        for tpl in templates:
            raw = tpl.annotations.get(ATTESTATION_ANNOTATION)
            text = None if raw is None else str(raw)
            result = check_attestation(text, keyring=keyring, subject=subject_of(tpl, workload.serving),
                                       criteria=criteria, clock_skew=skew, enforce_expiry=enforce_expiry)
            if not result.ok:
                yield from findings_of(result, tpl, workload.serving)
