"""gpu-tolerations: GPU pods tolerate the GPU taints; nothing else does (no squatting on GPU nodes)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.mutations import tolerates
from policies.registry import Policy, register
from policies.selectors import label_selector_matches
from policies.workload import Workload, join


def _taint_name(taint: Mapping[str, str]) -> str:
    return f"{taint['key']}:{taint.get('effect', '')}".rstrip(":")


@register
class GpuTolerations(Policy):
    id = "gpu-tolerations"
    title = "GPU taints are tolerated by GPU pods and only by them"
    severity = "high"
    version = "1.0.0"
    description = ("A pod that uses a GPU tolerates the configured GPU node taint(s); a pod that uses no GPU "
                   "must not tolerate them, or it squats on GPU nodes and starves GPU work. System workloads "
                   "(device plugin, DCGM exporter, node exporters) are allowlisted by namespace and labels.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "systemAllowlist": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "namespaces": {"type": "array", "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        },
    }
    defaults = {"systemAllowlist": [
        {"namespaces": ["gpu-operator", "nvidia-gpu-operator", "nvidia-device-plugin"]},
        {"labels": {"app.kubernetes.io/name": "dcgm-exporter"}},
        {"labels": {"app.kubernetes.io/name": "nvidia-device-plugin"}},
        {"labels": {"app.kubernetes.io/name": "prometheus-node-exporter"}},
    ]}

    def _allowlisted(self, workload: Workload, labels: Mapping[str, str], params: Mapping[str, Any]) -> bool:
        for entry in params["systemAllowlist"]:
            ns_ok = "namespaces" not in entry or workload.resource.namespace in entry["namespaces"]
            labels_ok = "labels" not in entry or label_selector_matches({"matchLabels": entry["labels"]}, labels)
            if ns_ok and labels_ok and ("namespaces" in entry or "labels" in entry):
                return True
        return False

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        taints = list(ctx.gpu.taints)
        for i, tpl in enumerate(workload.templates):
            tolerations = tpl.spec.get("tolerations")
            path = join(tpl.spec_path, "tolerations")
            if workload.uses_gpu(i, ctx.gpu):
                missing = [t for t in taints if not tolerates(tolerations, t)]
                if not missing:
                    continue
                names = ", ".join(_taint_name(t) for t in missing)
                if ctx.mutations.get("tolerations"):
                    yield Finding(path, f"toleration for {names} will be added at admission", note=True)
                else:
                    example = missing[0]
                    yield Finding(path, f"pod uses a GPU but does not tolerate {names}; it cannot schedule on "
                                  f"GPU nodes: add a toleration {{key: {example['key']}, operator: Exists, "
                                  f"effect: {example.get('effect', 'NoSchedule')}}}")
            else:
                tolerated = [t for t in taints if tolerates(tolerations, t)]
                labels = {**workload.labels, **tpl.labels}
                if tolerated and not self._allowlisted(workload, labels, params):
                    wildcard = any(isinstance(t, Mapping) and t.get("operator") == "Exists" and not t.get("key")
                                   for t in tolerations or [])
                    why = "tolerates every taint (operator Exists without a key), including" if wildcard \
                        else "tolerates"
                    yield Finding(path, f"pod uses no GPU but {why} {', '.join(_taint_name(t) for t in tolerated)};"
                                  " it would squat on GPU nodes: remove the toleration, or request a GPU if it "
                                  "needs one")
