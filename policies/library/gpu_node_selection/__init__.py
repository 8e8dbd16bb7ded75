"""gpu-node-selection: a GPU pod selects an allowed GPU class by nodeSelector or required node affinity."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.mutations import selected_node_classes
from policies.registry import Policy, register
from policies.templates import pod_field_finding
from policies.workload import Workload


@register
class GpuNodeSelection(Policy):
    id = "gpu-node-selection"
    title = "GPU pods select an allowed GPU class"
    severity = "medium"
    version = "1.1.0"
    description = ("A GPU pod selects its GPU class through nodeSelector or required node affinity on the "
                   "configured label (default nvidia.com/gpu.product), and the class is allowed for the "
                   "namespace, so a 7B model does not land on an H100 meant for training.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "allowedClasses": {"type": "array", "items": {"type": "string", "minLength": 1}},
        },
    }
    defaults = {"allowedClasses": ["*"]}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        label = ctx.gpu.node_label
        allowed = list(params["allowedClasses"])
        for i, tpl in enumerate(workload.templates):
            if not workload.uses_gpu(i, ctx.gpu):
                continue
            classes = selected_node_classes(tpl.spec, label)
            if classes is None:
                default = ctx.mutations.get("defaultNodeClass")
                if default and any(fnmatch.fnmatchcase(default, p) for p in allowed):
                    yield pod_field_finding(tpl, tpl.at("nodeSelector"),
                                            f"nodeSelector {label}={default} will be added at admission", note=True)
                    continue
                who = f"{tpl.role} selects" if tpl.role else "GPU pod selects"
                yield pod_field_finding(tpl, tpl.at("nodeSelector"),
                                        f"{who} no GPU class; add nodeSelector {label}: <class> "
                                        f"(allowed here: {', '.join(allowed)})")
                continue
            bad = [c for c in classes if not any(fnmatch.fnmatchcase(c, p) for p in allowed)]
            if bad:
                where = "nodeSelector" if label in (tpl.spec.get("nodeSelector") or {}) else "affinity"
                yield pod_field_finding(tpl, tpl.at(where),
                                        f"GPU class {', '.join(bad)} is not allowed in namespace "
                                        f"{workload.resource.namespace}; select one of: {', '.join(allowed)}")
