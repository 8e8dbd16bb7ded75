"""gpu-companion-resources: a GPU container sets cpu and memory requests and a memory limit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.gpu import container_gpus
from policies.model import Finding
from policies.registry import Policy, register
from policies.workload import Workload, join

REQUIRED = (("requests", "cpu"), ("requests", "memory"), ("limits", "memory"))


@register
class GpuCompanionResources(Policy):
    id = "gpu-companion-resources"
    title = "GPU containers size their CPU and memory"
    severity = "medium"
    version = "1.0.0"
    description = ("A container that holds a GPU also requests cpu and memory and limits memory, so the "
                   "scheduler places it where the GPU can be fed and a leak cannot take the node's memory.")

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        for tpl in workload.templates:
            for ref in tpl.containers(sections=("containers", "initContainers")):
                if not container_gpus(ref.container, ctx.gpu):
                    continue
                missing = [(s, r) for s, r in REQUIRED if r not in (ref.resources.get(s) or {})]
                if missing:
                    what = ", ".join(f"{s}.{r}" for s, r in missing)
                    yield Finding(join(ref.path, "resources"),
                                  f"container `{ref.name}` holds a GPU but does not set {what}; add "
                                  f"{what} sized for the model server (e.g. requests.cpu: \"4\", "
                                  "requests.memory: 32Gi, limits.memory: 32Gi)")
