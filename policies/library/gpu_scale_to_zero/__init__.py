"""gpu-scale-to-zero: non-critical GPU model serving can scale to zero when nobody uses it.

What counts as scaling to zero, per kind (upstream shapes and defaults, read from their docs and CRDs):

- Deployment, StatefulSet, ReplicaSet, Argo Rollout, LeaderWorkerSet (kinds with a ``/scale``): a KEDA
  ``ScaledObject`` (keda.sh/v1alpha1, https://keda.sh/docs/latest/reference/scaledobject-spec/) in the same
  namespace whose ``spec.scaleTargetRef`` names the workload (``apiVersion`` defaults to apps/v1, ``kind`` to
  Deployment) with ``minReplicaCount: 0`` (KEDA's default when left out) or ``idleReplicaCount: 0``, and not
  paused (``autoscaling.keda.sh/paused: "true"``, or ``autoscaling.keda.sh/paused-replicas`` other than 0).
- Knative Service / Configuration (serving.knative.dev/v1, docs/serving/autoscaling/scale-bounds.md): the
  revision template's ``autoscaling.knative.dev/min-scale`` (legacy ``minScale``) is "0"; left out, Knative's
  default is 0 with the KPA class (a note says the cluster's ``config-autoscaler`` decides; the parameter
  ``knativeExplicitMinScale`` makes it a finding); the HPA class (``autoscaling.knative.dev/class:
  hpa.autoscaling.knative.dev``) never scales to zero.
- KServe InferenceService (serving.kserve.io/v1beta1, the CRD's ``spec.<component>.minReplicas``; KServe's
  default is 1): every component with GPUs sets ``minReplicas: 0``.
- KServe LLMInferenceService (serving.kserve.io/v1alpha1 and v1alpha2 CRDs: ``spec.scaling.minReplicas`` is at
  least 1): ``spec.scaling.keda.idleReplicaCount: 0`` or ``spec.scaling.wva.keda.idleReplicaCount: 0`` (and the
  same under ``spec.prefill`` when the prefill stage has GPUs).
- A bare Pod cannot scale at all (nothing brings it back): a finding. Other kinds (RayService, kinds mlguard
  does not know) get a note that they were not judged.

Where the ScaledObject is looked for: in CI, in the checked set (``mlguard check``) and, with
``--cluster-facts``, in the cluster's ScaledObjects that `mlguard facts` recorded (the checked set's definition
wins for a name both hold); at admission, in the webhook's cluster cache. At admission a finding about
ScaledObjects is capped at warn: a GitOps sync or ``kubectl apply -f dir`` creates the Deployment before its
ScaledObject (custom resources come last), so the cache cannot have it yet; the pull request's check is where it
denies. When ScaledObjects cannot be seen at all (no cache, KEDA's CRD not installed, cache not synced, a
snapshot that could not list them) the finding says so and only warns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from policies.context import EvalContext, ScaleKnowledge
from policies.kinds import KNATIVE_MIN, group_of
from policies.model import Action, Finding, Resource
from policies.owners import controlled
from policies.registry import Policy, register
from policies.templates import as_map, join
from policies.workload import Workload

KEDA = "keda.sh"
KEDA_PAUSED = "autoscaling.keda.sh/paused"
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
KNATIVE = "serving.knative.dev"
KNATIVE_CLASS = "autoscaling.knative.dev/class"
KNATIVE_HPA = "hpa.autoscaling.knative.dev"
KSERVE = "serving.kserve.io"
# kinds KEDA scales through their /scale subresource (apiVersion KEDA needs in scaleTargetRef)
SCALABLE = {("apps", "Deployment"): "apps/v1", ("apps", "StatefulSet"): "apps/v1", ("apps", "ReplicaSet"): "apps/v1",
            ("argoproj.io", "Rollout"): "argoproj.io/v1alpha1",
            ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): "leaderworkerset.x-k8s.io/v1"}
KSERVE_PARTS = ("predictor", "transformer", "explainer")
ANNOTATIONS = "spec.template.metadata.annotations"


def _int(value: Any) -> int | None:
    """A replica count as KEDA/KServe write it (an int), or a Knative annotation's string; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _replicas_zero(obj: Mapping[str, Any]) -> bool:
    """``spec.replicas: 0`` written down: the workload holds no GPU now, there is nothing to scale down."""
    return _int(as_map(obj.get("spec")).get("replicas")) == 0


def _target(so: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of a ScaledObject's scaleTargetRef, with KEDA's defaults filled in."""
    ref = as_map(as_map(so.get("spec")).get("scaleTargetRef"))
    return (str(ref.get("apiVersion") or "apps/v1"), str(ref.get("kind") or "Deployment"), str(ref.get("name") or ""))


def _so_name(so: Mapping[str, Any]) -> str:
    return str(as_map(so.get("metadata")).get("name") or "<unnamed>")


def _so_problem(so: Mapping[str, Any]) -> str | None:
    """Why a ScaledObject that targets the workload does not take it to zero (None: it does)."""
    annotations = as_map(as_map(so.get("metadata")).get("annotations"))
    paused = annotations.get(KEDA_PAUSED_REPLICAS)
    if paused is not None:  # KEDA holds the target at that count
        return None if _int(paused) == 0 else (
            f"is paused at {paused} replica(s) (annotation {KEDA_PAUSED_REPLICAS}); remove the annotation so KEDA "
            "scales it again")
    if str(annotations.get(KEDA_PAUSED, "")).lower() == "true" and paused is None:
        return f"is paused (annotation {KEDA_PAUSED}: \"true\"); remove the annotation so KEDA scales it again"
    spec = as_map(so.get("spec"))
    low = _int(spec.get("minReplicaCount"))
    idle = _int(spec.get("idleReplicaCount"))
    if low is None or low == 0 or idle == 0:  # KEDA's minReplicaCount defaults to 0
        return None
    return (f"keeps at least {low} replica(s) (spec.minReplicaCount: {low}, no spec.idleReplicaCount: 0); set "
            "spec.minReplicaCount: 0, or spec.idleReplicaCount: 0 to keep the minimum only while a trigger is active")


@register
class GpuScaleToZero(Policy):
    id = "gpu-scale-to-zero"
    title = "Non-critical GPU model serving can scale to zero"
    severity = "low"
    version = "1.2.0"
    runbook = "runbooks/gpu-scale-to-zero.md"
    description = (
        "A model-serving workload with GPUs (label mlguard.io/model, a serving kind, or spec.serving.selector) can "
        "scale to zero when idle: a Deployment, StatefulSet, ReplicaSet, Argo Rollout or LeaderWorkerSet is the "
        "scaleTargetRef of a KEDA ScaledObject (keda.sh/v1alpha1) with minReplicaCount 0 (KEDA's default) or "
        "idleReplicaCount 0, not paused; a Knative Service sets autoscaling.knative.dev/min-scale \"0\" on its "
        "revision template (or leaves it to Knative's default of 0; never the HPA class); a KServe "
        "InferenceService sets minReplicas 0 on each GPU component; an LLMInferenceService sets "
        "spec.scaling.keda.idleReplicaCount 0 (or wva.keda). A bare Pod is a finding; spec.replicas 0 passes. "
        "Which workloads are non-critical is the PolicySet's choice, by namespace only: the policy's match "
        "(strict.yaml: environments dev and staging) and exclude; nothing on the workload exempts it. In CI the "
        "ScaledObject must be in the checked set, or in the cluster with --cluster-facts (the checked set's wins "
        "for the same name); at admission the webhook's cache is asked and a finding about ScaledObjects only "
        "warns (the ScaledObject of a sync may arrive after its Deployment), and so does every finding when the "
        "ScaledObjects cannot be seen (KEDA's CRD absent, no cache, a snapshot without them). Off in baseline.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "knativeExplicitMinScale": {
                "description": "Require autoscaling.knative.dev/min-scale: \"0\" written on a Knative revision "
                               "template instead of relying on Knative's default (the cluster's config-autoscaler).",
                "type": "boolean",
            },
        },
    }
    defaults = {"knativeExplicitMinScale": False}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        serving = workload.serving
        # created by a controller (a ReplicaSet's pods, a Deployment's ReplicaSets): its owner is what scales; an owner
        # reference is believed only from the controller itself or with the owner known (policies.owners)
        if serving is None or controlled(workload.obj, workload.resource.namespace, ctx):
            return
        gpu_parts = {workload.templates[i].name for i in serving.templates if workload.uses_gpu(i, ctx.gpu)}
        if not gpu_parts:
            return
        res = workload.resource
        group = group_of(workload.obj)
        if (group, res.kind) in SCALABLE:
            if _replicas_zero(workload.obj) or ctx.facts.referenced_by_rollout(res.namespace, res.kind, res.name):
                return  # at zero already; or its Rollout is what KEDA scales (and is checked itself)
            yield from self._keda(workload, group, ctx)
        elif group == KNATIVE:
            yield from self._knative(workload, params)
        elif group == KSERVE and res.kind == "InferenceService":
            yield from self._inference_service(workload, gpu_parts)
        elif group == KSERVE and res.kind == "LLMInferenceService":
            yield from self._llm_inference_service(workload, gpu_parts)
        elif group == "" and res.kind == "Pod":
            yield Finding("kind", f"Pod `{res.name}` serves a model on GPUs and cannot scale to zero: a bare Pod "
                          f"cannot scale at all (namespace {res.namespace} asks GPU serving to scale to zero); run it "
                          "from a Deployment and add a KEDA ScaledObject (keda.sh/v1alpha1) with scaleTargetRef "
                          "{kind: Deployment, name: ...} and minReplicaCount: 0")
        else:
            yield Finding("kind", f"gpu-scale-to-zero does not judge how a {res.kind} scales to zero; not checked "
                          "(a KEDA ScaledObject can scale kinds with a /scale subresource)", note=True)

    # ---- KEDA -----------------------------------------------------------------------------------
    def _keda(self, workload: Workload, group: str, ctx: EvalContext) -> Iterator[Finding]:
        res = workload.resource
        api_version = SCALABLE[(group, res.kind)]
        me = Resource(res.api_version, res.kind, res.namespace, res.name)  # a Rollout's finding names the Rollout
        wanted = (f"a KEDA ScaledObject (keda.sh/v1alpha1) in namespace {res.namespace} with spec.scaleTargetRef "
                  f"{{apiVersion: {api_version}, kind: {res.kind}, name: {res.name}}} and minReplicaCount: 0")
        # kubectl shows the first 256 characters of a warning: the verdict and its cause come first
        head = f"{res.kind} `{res.name}` serves a model on GPUs"
        facts = ctx.facts if isinstance(ctx.facts, ScaleKnowledge) else None
        found = facts.scaled_objects(res.namespace, res.name) if facts is not None else None  # by target name
        if facts is None or found is None:
            yield Finding("spec.replicas", f"{head}; whether it can scale to zero is unknown: mlguard could not see "
                          "the cluster's ScaledObjects here (KEDA's API not served, or the cache has not listed them); "
                          f"check that {wanted} exists",
                          resource=me, action="warn")
            return
        cap: Action | None = "warn" if ctx.point == "admission" else None
        source = getattr(facts, "scale_source", None)  # CI: the checked set, and the cluster facts when given
        where = ("in the cluster" if ctx.point == "admission"
                 else source() if callable(source) else "in the checked set")
        mine = [so for so in found if self._targets(so, res)]
        if not mine:
            near = [so for so in found if _target(so)[2] == res.name and _target(so)[1].lower() == res.kind.lower()]
            if near:
                so = near[0]
                written = as_map(as_map(so.get("spec")).get("scaleTargetRef")).get("apiVersion")
                shown = f"{_target(so)[0]}{'' if written else ' (KEDA default)'}"
                yield Finding("spec.replicas", f"{head} and cannot scale to zero: ScaledObject `{_so_name(so)}` "
                              f"names it with scaleTargetRef apiVersion {shown}, so KEDA looks for another object; set "
                              f"spec.scaleTargetRef.apiVersion: {api_version}", resource=me, action=cap)
                return
            every = facts.scaled_objects(res.namespace) or ()
            if not every:
                seen = f" (no ScaledObject {where} in {res.namespace})"
            elif ctx.point == "admission":  # the requester may not be allowed to read them: a count, no names
                seen = f" ({len(every)} ScaledObject(s) {where} in {res.namespace} target other workloads)"
            else:  # the checked set is the author's own files
                others = ", ".join(f"`{_so_name(so)}` -> {_target(so)[1]}/{_target(so)[2]}" for so in every[:5])
                seen = f" (ScaledObjects {where} in {res.namespace}: {others}{', ...' if len(every) > 5 else ''})"
            late = (" (applied in the same sync? it may not be in the cluster yet, so this only warns; `mlguard "
                    "check` of the pull request, with the ScaledObject in the checked set, is where it is enforced)"
                    ) if ctx.point == "admission" else ""
            yield Finding("spec.replicas", f"{head} and cannot scale to zero: no ScaledObject {where} targets "
                          f"it{seen}{late}; add {wanted} "
                          "(kustomize/examples/keda-scale-to-zero)", resource=me, action=cap)
            return
        problems = [(so, _so_problem(so)) for so in mine]
        if any(p is None for _, p in problems):
            return
        for so, problem in problems:
            yield Finding("spec.replicas", f"{head} and cannot scale to zero: its ScaledObject `{_so_name(so)}` "
                          f"{problem}", resource=me, action=cap)

    @staticmethod
    def _targets(so: Mapping[str, Any], res: Resource) -> bool:
        api_version, kind, name = _target(so)
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        return name == res.name and kind.lower() == res.kind.lower() and group == res.group

    # ---- Knative --------------------------------------------------------------------------------
    @staticmethod
    def _knative(workload: Workload, params: Mapping[str, Any]) -> Iterator[Finding]:
        res = workload.resource
        annotations = as_map(as_map(as_map(as_map(workload.obj.get("spec")).get("template")).get("metadata"))
                             .get("annotations"))
        head = f"Knative {res.kind} `{res.name}` serves a model on GPUs"
        if annotations.get(KNATIVE_CLASS) == KNATIVE_HPA:
            yield Finding(join(ANNOTATIONS, KNATIVE_CLASS), f"{head} and cannot scale to zero: the HPA "
                          f"autoscaler class ({KNATIVE_CLASS}: {KNATIVE_HPA}) never does; remove {KNATIVE_CLASS} "
                          "(the default KPA class) and set autoscaling.knative.dev/min-scale: \"0\"")
            return
        for key in KNATIVE_MIN:
            if key in annotations:
                value = _int(annotations[key])
                if value == 0:
                    return
                shown = f"\"{annotations[key]}\""
                yield Finding(join(ANNOTATIONS, key), f"{head} and cannot scale to zero: {key}: {shown} keeps "
                              f"{'that many' if value is None else value} revision pod(s) with GPUs when idle; "
                              "set autoscaling.knative.dev/min-scale: \"0\"")
                return
        message = (f"{head} and may not scale to zero: it sets no autoscaling.knative.dev/min-scale, so it does only "
                   "under Knative's default (KPA class, config-autoscaler enable-scale-to-zero: true and no "
                   "cluster-wide min-scale); set "
                   "autoscaling.knative.dev/min-scale: \"0\" on the revision template to say so")
        yield Finding(ANNOTATIONS, message, note=not params["knativeExplicitMinScale"])

    # ---- KServe ---------------------------------------------------------------------------------
    @staticmethod
    def _inference_service(workload: Workload, gpu_parts: set[str]) -> Iterator[Finding]:
        res = workload.resource
        spec = as_map(workload.obj.get("spec"))
        for part in KSERVE_PARTS:
            if part not in gpu_parts and f"{part} worker" not in gpu_parts:
                continue
            value = as_map(spec.get(part)).get("minReplicas")
            if _int(value) == 0:
                continue
            path = f"spec.{part}.minReplicas"
            said = f"sets {path}: {value}" if value is not None else f"leaves {path} unset (KServe's default is 1)"
            yield Finding(path, f"InferenceService `{res.name}` serves a model on GPUs and cannot scale to zero: its "
                          f"{part} {said}; set {path}: 0")

    @staticmethod
    def _llm_inference_service(workload: Workload, gpu_parts: set[str]) -> Iterator[Finding]:
        res = workload.resource
        spec = as_map(workload.obj.get("spec"))
        stages: Sequence[tuple[str, str, Mapping[str, Any]]] = (
            ("main", "spec", spec), ("prefill", "spec.prefill", as_map(spec.get("prefill"))))
        for label, base, stage in stages:
            if label not in gpu_parts and f"{label} worker" not in gpu_parts:
                continue
            scaling = as_map(stage.get("scaling"))
            idles = (as_map(scaling.get("keda")).get("idleReplicaCount"),
                     as_map(as_map(scaling.get("wva")).get("keda")).get("idleReplicaCount"))
            if any(_int(v) == 0 for v in idles):
                continue
            path = join(base, "scaling")
            said = "has no spec.scaling" if not scaling else "sets no idleReplicaCount: 0"
            yield Finding(path, f"LLMInferenceService `{res.name}` serves a model on GPUs and cannot scale to zero: "
                          f"its {label} stage "
                          f"{said.replace('spec.scaling', path)} (minReplicas is at least 1); set "
                          f"{path}.keda.idleReplicaCount: 0 (or {path}.wva.keda.idleReplicaCount: 0) with a trigger")
