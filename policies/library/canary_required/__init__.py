"""canary-required: model serving goes through an Argo Rollout canary that runs an analysis."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.owners import controlled
from policies.registry import Policy, register
from policies.workload import MODEL_LABEL, Workload, join

CANARY = "spec.strategy.canary"
ALL_METRICS = (".*", ".+", "*")
HOW = ("a canary strategy that runs an analysis (a step `- analysis: {templates: [{templateName: ...}]}` in "
       f"{CANARY}.steps, or a background analysis in {CANARY}.analysis)")


@dataclass(frozen=True)
class Analysis:
    """One analysis of a canary: a step's or the background one."""

    path: str
    spec: Mapping[str, Any]

    @property
    def templates(self) -> list[tuple[str, bool]]:
        out = []
        for t in self.spec.get("templates") or []:
            if isinstance(t, Mapping) and isinstance(t.get("templateName"), str) and t["templateName"]:
                out.append((t["templateName"], bool(t.get("clusterScope", False))))
        return out

    @property
    def dry_run_only(self) -> bool:
        """Every metric in dry-run (``dryRun: [{metricName: .*}]``): it can never fail the canary."""
        entries = self.spec.get("dryRun") or []
        return any(isinstance(d, Mapping) and d.get("metricName") in ALL_METRICS for d in entries)

    def problem(self) -> str | None:
        if not self.templates:
            return "names no AnalysisTemplate; list one in templates (templateName)"
        if self.dry_run_only:
            return ("runs every metric in dryRun, so it can never fail the canary; "
                    "remove the dryRun entry `.*`")
        return None


def canary_analyses(canary: Mapping[str, Any]) -> list[Analysis]:
    """The background analysis and every step analysis of a canary strategy, with their paths."""
    found = []
    if isinstance(canary.get("analysis"), Mapping):
        found.append(Analysis(join(CANARY, "analysis"), canary["analysis"]))
    steps = canary.get("steps")
    for j, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, Mapping) and isinstance(step.get("analysis"), Mapping):
            found.append(Analysis(join(join(join(CANARY, "steps"), j), "analysis"), step["analysis"]))
    return found


@register
class CanaryRequired(Policy):
    id = "canary-required"
    title = "Model serving rolls out through an analysed Argo canary"
    severity = "high"
    version = "1.2.0"
    description = ("In the namespaces where the policy applies (select them with the policy's match, e.g. "
                   "an environment or a namespace label), a model-serving workload (label "
                   "mlguard.io/model, a serving kind such as a KServe InferenceService or LLMInferenceService or "
                   "a RayService with Serve, or a match of the PolicySet's spec.serving.selector, e.g. a vLLM "
                   "image) is an argoproj.io Rollout whose canary strategy runs an analysis — a"
                   " step analysis or a background analysis that names a template and is not all dry-run —"
                   " instead of a bare Deployment (or any other kind in `kinds`). A Deployment managed by "
                   "a Rollout through spec.workloadRef passes, and so do objects created by a controller "
                   "(a controller ownerReference, believed only from the controller's own identity or with the owner "
                   "known: policies/owners.py). analysisTemplates optionally requires one of the named "
                   "(Cluster)AnalysisTemplates, e.g. mlguard's own checks.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "kinds": {
                "description": "Kinds that must not serve a model on their own.",
                "type": "array", "items": {"type": "string", "minLength": 1},
            },
            "analysisTemplates": {
                "description": "Template names (globs); when set, some analysis must use one of them.",
                "type": "array", "items": {"type": "string", "minLength": 1},
            },
        },
    }
    defaults = {"kinds": ["Pod", "ReplicaSet", "Deployment", "StatefulSet", "InferenceService",
                          "LeaderWorkerSet", "LLMInferenceService", "RayService", "Service"],
                "analysisTemplates": []}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        if not workload.is_model_serving():
            return
        res = workload.resource
        model = self._model(workload)
        if res.kind == "Rollout":
            yield from self._rollout(workload, model, params["analysisTemplates"])
            return
        if res.kind not in params["kinds"] or controlled(workload.obj, res.namespace, ctx):
            return
        if ctx.facts.referenced_by_rollout(res.namespace, res.kind, res.name):
            return
        yield Finding("kind", self._bare_message(res.kind, res.name, res.namespace, model))

    @staticmethod
    def _model(workload: Workload) -> str:
        for labels in [workload.labels, *(t.labels for t in workload.templates)]:
            if labels.get(MODEL_LABEL):
                return str(labels[MODEL_LABEL])
        serving = workload.serving
        return serving.model if serving is not None and serving.model else "<unnamed>"

    @staticmethod
    def _bare_message(kind: str, name: str, namespace: str, model: str) -> str:
        head = (f"{kind} `{name}` serves model {model} in namespace {namespace}, which requires canaries, "
                "but no Argo Rollout manages it; ")
        if kind == "Deployment":
            return head + (f"convert it to an argoproj.io/v1alpha1 Rollout with {HOW}, or add a Rollout "
                           f"with spec.workloadRef {{apiVersion: apps/v1, kind: Deployment, name: {name}}} "
                           "and such a strategy")
        tail = f"serve the model from an argoproj.io/v1alpha1 Rollout with {HOW}"
        if kind == "InferenceService":
            tail += " (KServe's canaryTrafficPercent runs no analysis)"
        if kind in ("InferenceService", "LeaderWorkerSet", "LLMInferenceService", "RayService", "Service"):
            tail += f", or exclude kind {kind} from canary-required in the PolicySet if you accept that"
        return head + tail

    @staticmethod
    def _rollout(workload: Workload, model: str, wanted: Sequence[str]) -> Iterator[Finding]:
        name = workload.resource.name
        strategy = (workload.obj.get("spec") or {}).get("strategy")
        strategy = strategy if isinstance(strategy, Mapping) else {}
        canary = strategy.get("canary")
        who = f"Rollout `{name}` serves model {model}"
        if not isinstance(canary, Mapping):
            if isinstance(strategy.get("blueGreen"), Mapping):
                yield Finding("spec.strategy.blueGreen", f"{who} with a blueGreen strategy; replace "
                              f"spec.strategy.blueGreen with {HOW}")
            else:
                yield Finding("spec.strategy", f"{who} without a canary strategy; set {HOW}")
            return
        analyses = canary_analyses(canary)
        gating = [a for a in analyses if a.problem() is None]
        if not analyses:
            yield Finding(CANARY, f"{who} with a canary that runs no analysis, so a bad model is promoted "
                          f"unchecked; add {HOW}")
            return
        if not gating:
            for a in analyses:
                yield Finding(a.path, f"{who}; its analysis at {a.path} {a.problem()}")
            return
        used = sorted({t for a in gating for t, _ in a.templates})
        if wanted and not any(fnmatch.fnmatchcase(t, w) for t in used for w in wanted):
            yield Finding(CANARY, f"{who} with a canary whose analyses use {', '.join(used)}, none of the "
                          f"required templates ({', '.join(wanted)}); add an analysis whose templateName is "
                          "one of them")
