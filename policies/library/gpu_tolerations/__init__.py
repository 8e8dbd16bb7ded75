"""gpu-tolerations: GPU pods tolerate the GPU taints; nothing else does (no squatting on GPU nodes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext, bound_node
from policies.model import Finding
from policies.mutations import tolerates
from policies.registry import Policy, register
from policies.selectors import label_selector_matches
from policies.templates import PodTemplate, pod_field_finding
from policies.workload import Workload


def _taint_name(taint: Mapping[str, str]) -> str:
    return f"{taint['key']}:{taint.get('effect', '')}".rstrip(":")


@register
class GpuTolerations(Policy):
    id = "gpu-tolerations"
    title = "GPU taints are tolerated by GPU pods and only by them"
    severity = "high"
    version = "1.2.0"
    description = ("A pod that uses a GPU (a GPU resource above zero, a DRA GPU claim, or GPU devices injected by "
                   "annotation) tolerates the configured GPU node taint(s); a pod that uses no GPU must not "
                   "tolerate them, or it squats on GPU nodes and starves GPU work. A pod whose DRA claim cannot be "
                   "resolved is not judged a squatter: it gets a warning that names the claim. Runtime templates "
                   "(ServingRuntime, TrainingRuntime, LLMInferenceServiceConfig) may tolerate the taint for the "
                   "GPUs their users add. A pod that uses no GPU and names a GPU node in spec.nodeName (a node "
                   "with a configured GPU taint or the GPU node label) squats too: nodeName skips the scheduler and "
                   "the kubelet does not check NoSchedule taints. Whether the node is a GPU node is read from the "
                   "webhook's node cache, `mlguard check --cluster-facts` or Node objects in the checked set; where "
                   "the node cannot be seen the nodeName is a warning; a Pod's nodeName is judged at CREATE only "
                   "(it cannot change after). System workloads (device plugin, DCGM exporter, node exporters) are "
                   "allowlisted by namespace (and labels within it): a label alone never exempts.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "systemAllowlist": {
                "description": "System workloads that may tolerate the GPU taints without a GPU: each entry names "
                               "namespaces (required: a label alone never exempts, a tenant can label its own pod) "
                               "and may narrow them by pod labels.",
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "namespaces": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        },
    }
    allowlist_params = ("systemAllowlist",)
    defaults = {"systemAllowlist": [
        # NVIDIA GPU operator (its operands run in its namespace; OpenShift's OperatorHub uses nvidia-gpu-operator),
        # and the standalone device plugin's Helm chart in its documented namespace
        {"namespaces": ["gpu-operator", "nvidia-gpu-operator", "nvidia-device-plugin"]},
        # the standalone dcgm-exporter Helm chart installed next to Prometheus
        {"namespaces": ["monitoring"], "labels": {"app.kubernetes.io/name": "dcgm-exporter"}},
        # prometheus-community's prometheus-node-exporter chart (kube-prometheus-stack), in its usual namespace
        {"namespaces": ["monitoring"], "labels": {"app.kubernetes.io/name": "prometheus-node-exporter"}},
        # kube-prometheus (manifests/nodeExporter-daemonset.yaml): namespace monitoring, name node-exporter
        {"namespaces": ["monitoring"], "labels": {"app.kubernetes.io/name": "node-exporter"}},
        # GKE's managed DCGM exporter (GKE's device plugin runs in kube-system, which is always exempt)
        {"namespaces": ["gke-managed-system"], "labels": {"app.kubernetes.io/name": "gke-managed-dcgm-exporter"}},
    ]}

    def _allowlisted(self, workload: Workload, labels: Mapping[str, str], params: Mapping[str, Any]) -> bool:
        """An entry allowlists the workload in one of its namespaces (and with its labels, when it names some);
        an entry without namespaces allowlists nothing (the loader refuses it too)."""
        for entry in params["systemAllowlist"]:
            # names, not globs: the exported ValidatingAdmissionPolicy compares them as the API server sees them
            if not entry.get("namespaces") or workload.resource.namespace not in entry["namespaces"]:
                continue
            if "labels" not in entry or label_selector_matches({"matchLabels": entry["labels"]}, labels):
                return True
        return False

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        taints = list(ctx.gpu.taints)
        for i, tpl in enumerate(workload.templates):
            tolerations = tpl.spec.get("tolerations")
            path = tpl.at("tolerations")
            if workload.uses_gpu(i, ctx.gpu):
                missing = [t for t in taints if not tolerates(tolerations, t)]
                if not missing:
                    continue
                names = ", ".join(_taint_name(t) for t in missing)
                if ctx.mutations.get("tolerations"):
                    if ctx.point != "audit":  # what runs was admitted: the mutation has had its say
                        yield pod_field_finding(tpl, path, f"toleration for {names} will be added at admission",
                                                note=True)
                else:
                    example = missing[0]
                    yield pod_field_finding(tpl, path, f"{self._who(tpl)} uses a GPU but does not tolerate {names}; "
                                            "it cannot schedule on GPU nodes: add a toleration {key: "
                                            f"{example['key']}, operator: Exists, effect: "
                                            f"{example.get('effect', 'NoSchedule')}}}")
                continue
            tolerated = [t for t in taints if tolerates(tolerations, t)]
            labels = {**workload.labels, **tpl.labels}
            if self._allowlisted(workload, labels, params):
                continue
            unknown = workload.gpu_unknown(i, ctx.gpu)
            if not (workload.resource.kind == "Pod" and ctx.request is not None and ctx.request.operation != "CREATE"):
                # a Pod's nodeName cannot change after CREATE (the API server refuses it; the scheduler sets
                # it through pods/binding): judged once, so an update to a pod the scheduler placed on an
                # untainted GPU node is never refused for it
                yield from self._node_name(workload, tpl, unknown, ctx)
            if not tolerated:
                continue
            taint_names = ", ".join(_taint_name(t) for t in tolerated)
            if unknown is not None:
                if tpl.pods > 0:  # a runtime's template is judged where it runs
                    what = "claim" if workload.unresolved_claims.get(i) else "object"
                    yield Finding(path, f"{self._who(tpl)} tolerates {taint_names} and {unknown}, so whether it "
                                  f"uses a GPU is unknown; if the {what} gives it no GPU the pod squats on GPU nodes: "
                                  f"check the {what} (or include it in the checked set)", resource=tpl.resource,
                                  action="warn")
                continue
            wildcard = any(isinstance(t, Mapping) and t.get("operator") == "Exists" and not t.get("key")
                           for t in tolerations or [])
            why = "tolerates every taint (operator Exists without a key), including" if wildcard else "tolerates"
            yield pod_field_finding(tpl, path, f"{self._who(tpl)} uses no GPU but {why} {taint_names}; it would "
                                    "squat on GPU nodes: remove the toleration, or request a GPU if it needs one")

    def _node_name(self, workload: Workload, tpl: PodTemplate, unknown: str | None,
                   ctx: EvalContext) -> Iterator[Finding]:
        """A pod that uses no GPU bound to a node by spec.nodeName: a squatter when that node is a GPU node."""
        bound = bound_node(tpl.spec, ctx.facts, ctx.gpu)
        if bound is None:
            return
        named = tpl.resource or workload.resource
        who = f"{named.kind} `{named.name}`" + (f" ({tpl.role or tpl.name})" if len(workload.templates) > 1 else "")
        node, marks = bound
        path = tpl.at("nodeName")
        bypass = ("spec.nodeName skips the scheduler and the kubelet does not check NoSchedule taints, so the GPU "
                  "taint does not keep it off")
        fix = ("remove spec.nodeName (let the scheduler place it, or pin it to a CPU node with a nodeSelector), "
               "or request a GPU if it needs one")
        if marks is None:
            where = ("the webhook's node cache does not hold that node" if ctx.point == "admission" else
                     "no Node of that name in the checked set or in --cluster-facts")
            yield Finding(path, f"{who} uses no GPU and is bound to node `{node}` by spec.nodeName; "
                          f"whether that is a GPU node cannot be seen here ({where}); {bypass}: if it is one the pod "
                          f"squats on it: {fix}", resource=tpl.resource, action="warn")
            return
        if not marks:
            return
        if unknown is not None:
            yield Finding(path, f"{who} is bound to GPU node `{node}` ({', '.join(marks)}) by "
                          f"spec.nodeName and {unknown}, so whether it uses a GPU is unknown; {bypass}: if it gets "
                          f"no GPU it squats on the node", resource=tpl.resource, action="warn")
            return
        yield pod_field_finding(tpl, path, f"{who} uses no GPU but is bound to GPU node `{node}` "
                                f"({', '.join(marks)}) by spec.nodeName; {bypass}: it would squat on the GPU node: "
                                f"{fix}")

    @staticmethod
    def _who(tpl: PodTemplate) -> str:
        return tpl.role or "pod"
