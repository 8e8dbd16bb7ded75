"""gpu-limits: GPU resources are set in limits, requests equal limits, whole numbers, bounded."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.quantity import QuantityError, format_quantity, is_whole, parse_quantity
from policies.registry import Policy, register
from policies.workload import Workload, join


@register
class GpuLimits(Policy):
    id = "gpu-limits"
    title = "GPU limits are set, whole and bounded"
    severity = "high"
    version = "1.2.0"
    description = ("A container that asks for a GPU resource (any configured name: nvidia.com/gpu, MIG slices, "
                   "time-sliced nvidia.com/gpu.shared, amd.com/gpu) sets it in limits; if requests is set too it "
                   "equals the limit; quantities are whole; at most maxPerContainer per container and maxPerPod "
                   "per pod (DRA GPU claims included). Zero is no GPU and needs no limit. Every pod-carrying kind "
                   "is checked (KubeRay, Kubeflow, JobSet, Trainer, KServe, Knative, Volcano, Argo Workflows, and "
                   "any kind found by the generic search). Where each part fires: for a Pod and the built-in "
                   "workloads (Deployment, StatefulSet, Job, ...) the API server itself refuses a GPU in "
                   "requests only, unequal requests and limits, or a fraction ('Limit must be set for non "
                   "overcommitable resources') before any webhook runs, so at admission this policy denies "
                   "those only in custom resources (Rollout, InferenceService, RayCluster, ...), whose "
                   "pod templates the API server does not validate; mlguard check denies them for every kind "
                   "in CI, before a sync fails. The per-container and per-pod maximums fire everywhere.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "maxPerContainer": {"type": "integer", "minimum": 1},
            "maxPerPod": {"type": "integer", "minimum": 1},
        },
    }
    defaults = {"maxPerContainer": 8, "maxPerPod": 8}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        for i, tpl in enumerate(workload.templates):
            for ref in tpl.containers():
                requests = ref.resources.get("requests") or {}
                limits = ref.resources.get("limits") or {}
                res_path = ref.at("resources")
                names = [n for n in {**requests, **limits} if isinstance(n, str) and ctx.gpu.is_gpu_resource(n)]
                for name in sorted(names):
                    yield from self._container(ref.name, name, requests, limits, res_path, params)
            total = sum(workload.pod_gpus(i, ctx.gpu).values(), Decimal(0))
            if total > params["maxPerPod"]:
                yield Finding(tpl.spec_path, f"pod asks for {format_quantity(total)} GPUs in all, more than the "
                              f"{params['maxPerPod']} allowed per pod; split the model across pods "
                              "(e.g. a LeaderWorkerSet) or ask for fewer GPUs", amount=total,
                              identity="GPUs per pod over maxPerPod")

    @staticmethod
    def _container(container: str, name: str, requests: Mapping[str, Any], limits: Mapping[str, Any],
                   res_path: str, params: Mapping[str, Any]) -> Iterator[Finding]:
        def parse(section: str, value: Any) -> Decimal | None:
            try:
                return parse_quantity(value)
            except QuantityError:
                return None

        lim = parse("limits", limits[name]) if name in limits else None
        req = parse("requests", requests[name]) if name in requests else None
        for section, raw, parsed in (("limits", limits.get(name), lim), ("requests", requests.get(name), req)):
            if raw is None:
                continue
            where = join(res_path, section)
            if parsed is None:
                yield Finding(where, f"container `{container}` sets {name}: {raw!r}, which is not a quantity; "
                              f"use a whole number such as {section}.{name}: 1")
                return
            if not is_whole(parsed) or parsed < 0:
                yield Finding(where, f"container `{container}` sets {name}: {raw} in {section}; GPUs are whole "
                              f"devices: use a whole number (0 for none)")
                return
        if name not in limits and req == 0:
            return  # a request of zero asks for no GPU: nothing to limit
        if name not in limits:
            yield Finding(join(res_path, "limits"),
                          f"container `{container}` sets {name} in requests ({requests[name]}) but not in limits; "
                          f"add limits.{name}: {requests[name]}")
            return
        if req is not None and lim is not None and req != lim:
            yield Finding(join(res_path, "requests"),
                          f"container `{container}` requests {name}: {requests[name]} but limits it to "
                          f"{limits[name]}; GPUs cannot be overcommitted: set requests equal to limits "
                          f"({limits[name]}) or drop the request")
        if lim is not None and lim > params["maxPerContainer"]:
            yield Finding(join(res_path, "limits"),
                          f"container `{container}` asks for {format_quantity(lim)} {name}, more than the "
                          f"{params['maxPerContainer']} allowed per container", amount=lim,
                          identity=f"container {container}: {name} over maxPerContainer")
