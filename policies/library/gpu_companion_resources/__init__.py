"""gpu-companion-resources: a GPU container sets cpu and memory requests and a memory limit.

Kubernetes copies a limit into the request when the request is not set (for every resource), so a
cpu or memory limit alone satisfies the request requirement.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.gpu import container_gpus
from policies.model import Finding
from policies.registry import Policy, register
from policies.workload import Workload

REQUIRED = (("requests", "cpu"), ("requests", "memory"), ("limits", "memory"))


def _set(resources: Mapping[str, Any], section: str, name: str) -> bool:
    values = resources.get(section)
    return isinstance(values, Mapping) and name in values


@register
class GpuCompanionResources(Policy):
    id = "gpu-companion-resources"
    title = "GPU containers size their CPU and memory"
    severity = "medium"
    version = "1.1.0"
    description = ("A container that holds a GPU (a zero quantity is none) also requests cpu and memory and limits "
                   "memory, so the scheduler places it where the GPU can be fed and a leak cannot take the node's "
                   "memory. A limit without a request counts as the request (Kubernetes copies it).")

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        for tpl in workload.templates:
            for ref in tpl.containers(sections=("containers", "initContainers")):
                if not container_gpus(ref.container, ctx.gpu):
                    continue
                res = ref.resources
                missing = [(s, r) for s, r in REQUIRED
                           if not _set(res, s, r) and not (s == "requests" and _set(res, "limits", r))]
                if missing:
                    what = ", ".join(f"{s}.{r}" for s, r in missing)
                    yield Finding(ref.at("resources"),
                                  f"container `{ref.name}` holds a GPU but does not set {what}; add "
                                  f"{what} sized for the model server (e.g. requests.cpu: \"4\", "
                                  "requests.memory: 32Gi, limits.memory: 32Gi)", resource=tpl.resource)
