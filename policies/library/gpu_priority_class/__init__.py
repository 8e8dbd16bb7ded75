"""gpu-priority-class: a GPU pod runs at one of the PriorityClasses allowed for its namespace.

Per-namespace lists come from the PolicySet's overrides (match by namespaces, environments or
labels), so `allowed` is a plain list here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.registry import Policy, register
from policies.templates import pod_field_finding
from policies.workload import Workload


def _choices(allowed: list[str]) -> str:
    return ", ".join(allowed) if allowed else "(none: this namespace may not run GPU pods)"


@register
class GpuPriorityClass(Policy):
    id = "gpu-priority-class"
    title = "GPU pods use an allowed PriorityClass"
    severity = "medium"
    version = "1.1.0"
    description = (
        "A GPU pod sets spec.priorityClassName to one of the PriorityClasses allowed for its namespace (`allowed`; "
        "per-namespace lists through the PolicySet's overrides). A pod without one gets the cluster's globalDefault "
        "PriorityClass: name it in `globalDefault` to let such pods through when that class is allowed.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "allowed": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
            "globalDefault": {"type": ["string", "null"],
                              "description": "The cluster's globalDefault PriorityClass, if it has one."},
        },
    }
    defaults = {"allowed": ["inference-high", "batch-low"], "globalDefault": None}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        allowed = [str(a) for a in params["allowed"]]
        default = params.get("globalDefault")
        for i, tpl in enumerate(workload.templates):
            if not workload.uses_gpu(i, ctx.gpu):
                continue
            path = tpl.at("priorityClassName")
            name = tpl.spec.get("priorityClassName")
            who = f"{workload.resource.kind} `{workload.resource.name}`" + (
                f" ({tpl.name})" if len(workload.templates) > 1 else "")
            if not name:
                if default and default in allowed:
                    continue
                got = f"gets the cluster default `{default}`, which is not allowed here" if default else \
                    "sets no priorityClassName"
                yield pod_field_finding(tpl, path, f"{who} uses GPUs but {got}; set {path} to one of: "
                                        f"{_choices(allowed)}")
            elif name not in allowed:
                yield pod_field_finding(tpl, path, f"{who} uses GPUs at PriorityClass `{name}`, which is not allowed "
                                        f"in namespace `{workload.resource.namespace}`; set {path} to one of: "
                                        f"{_choices(allowed)}")
