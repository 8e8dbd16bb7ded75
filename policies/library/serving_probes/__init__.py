"""serving-probes: a model-serving workload probes its serving container (readiness + liveness/startup)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from policies.context import EvalContext
from policies.gpu import GpuConfig, container_gpus
from policies.model import Finding
from policies.registry import Policy, register
from policies.workload import MODEL_LABEL, ContainerRef, PodTemplate, Workload

HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
KSERVE_CONTAINER = "kserve-container"  # KServe's name for the model server container


def container_name(ref: ContainerRef, tpl: PodTemplate) -> str:
    """The container's name as `kubectl logs -c` knows it (KServe runs its model as `kserve-container`)."""
    return ref.name


def serving_templates(workload: Workload) -> list[PodTemplate]:
    """Templates that serve the model (``policies.serving``): those labelled `mlguard.io/model` (all of them
    when the object itself carries the label), a serving kind's serving templates, or those a PolicySet's
    spec.serving.selector matches. A LeaderWorkerSet serves from its leader; its workers take no traffic."""
    return workload.serving_templates()


def serving_containers(tpl: PodTemplate, *, names: Sequence[str], gpu: GpuConfig,
                       claims: bool = False) -> tuple[list[ContainerRef], str]:
    """The container(s) that serve the model and why they were chosen.

    In order: a name from the policy's ``containerNames``; the pod's default-container annotation;
    the KServe model container; the only container; the container(s) holding a GPU; the first
    container that declares ports; the first container.
    """
    app = list(tpl.containers(sections=("containers",)))
    if not app:
        return [], ""
    named = [c for c in app if c.name in names]
    if named:
        return named, "named in the policy's containerNames"
    default = tpl.annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    chosen = [c for c in app if default and c.name == default]
    if chosen:
        return chosen, f"named by the {DEFAULT_CONTAINER_ANNOTATION} annotation"
    kserve = [c for c in app if c.default_name == KSERVE_CONTAINER or c.name == KSERVE_CONTAINER]
    if kserve:
        return kserve[:1], "the KServe model container"
    if len(app) == 1:
        return app, "the only container"
    holding = [c for c in app if container_gpus(c.container, gpu) or (claims and c.resources.get("claims"))]
    if holding:
        return holding, "the container that holds the GPU"
    with_ports = [c for c in app if c.container.get("ports")]
    if with_ports:
        return with_ports[:1], "the first container with ports"
    return app[:1], "the first container"


def _handler(probe: Any) -> bool:
    return isinstance(probe, Mapping) and any(isinstance(probe.get(h), Mapping) for h in HANDLERS)


@register
class ServingProbes(Policy):
    id = "serving-probes"
    title = "Model servers have readiness and liveness/startup probes"
    severity = "medium"
    version = "1.1.0"
    description = ("A model-serving workload (label mlguard.io/model, a serving kind such as a KServe "
                   "InferenceService or LLMInferenceService or a RayService with Serve, or a match of the "
                   "PolicySet's spec.serving.selector, e.g. a vLLM image) "
                   "sets a readinessProbe and a livenessProbe or startupProbe on its serving container, so"
                   " traffic only reaches a loaded model and a hung server is restarted. A probe must name"
                   " a handler (httpGet, tcpSocket, exec or grpc). The serving container is the one named "
                   "in containerNames, else the one named by the kubectl.kubernetes.io/default-container "
                   "annotation, else the KServe model container, else the only container, else the "
                   "container(s) holding a GPU, else the first with ports. A LeaderWorkerSet is judged on "
                   "its leader template. A probe the container leaves out is not a finding where something else "
                   "supplies it: KServe's LLMInferenceServiceConfig presets, KubeRay's probe injection.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "containerNames": {
                "description": "Names of serving containers, checked before any guess.",
                "type": "array", "items": {"type": "string", "minLength": 1},
            },
        },
    }
    defaults = {"containerNames": []}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        for tpl in serving_templates(workload):
            index = workload.templates.index(tpl)
            refs, why = serving_containers(tpl, names=params["containerNames"], gpu=ctx.gpu,
                                           claims=bool(workload.claim_gpus.get(index)))
            if not refs:
                yield Finding(tpl.at("containers"),
                              f"{tpl.name} serves model {self._model(workload, tpl)!r} but has no "
                              "containers; add the model server container with its probes",
                              resource=tpl.resource)
                continue
            for ref in refs:
                yield from self._probes(ref, why, tpl)

    @staticmethod
    def _model(workload: Workload, tpl: PodTemplate) -> str:
        serving = workload.serving
        return str(tpl.labels.get(MODEL_LABEL) or (serving.model if serving else None) or "")

    @staticmethod
    def _probes(ref: ContainerRef, why: str, tpl: PodTemplate) -> Iterator[Finding]:
        who = f"serving container `{container_name(ref, tpl)}` ({why})"
        for field in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = ref.container.get(field)
            if probe is not None and not _handler(probe):
                yield Finding(ref.at(field),
                              f"{who} sets {field} without a handler; give it one of "
                              f"{', '.join(HANDLERS)} (e.g. httpGet: {{path: /health, port: http}})",
                              resource=tpl.resource)
        if ref.container.get("readinessProbe") is None and not ref.fills("readinessProbe"):
            yield Finding(ref.at("readinessProbe"),
                          f"{who} has no readinessProbe; add readinessProbe (e.g. httpGet: {{path: /health, "
                          "port: http}}) so traffic only reaches a pod whose model is loaded",
                          resource=tpl.resource)
        if ref.container.get("livenessProbe") is None and ref.container.get("startupProbe") is None \
                and not ref.fills("livenessProbe"):
            yield Finding(ref.at("livenessProbe"),
                          f"{who} has neither a livenessProbe nor a startupProbe; add a startupProbe that "
                          "allows for model loading (e.g. httpGet /health, periodSeconds: 10, "
                          "failureThreshold: 60) and/or a livenessProbe so a hung server is restarted",
                          resource=tpl.resource)
