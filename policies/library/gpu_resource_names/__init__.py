"""gpu-resource-names: only the GPU resource names (and DRA device classes) allowed for the namespace."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.gpu import DRA_QUOTA_SUFFIX
from policies.model import Finding
from policies.quantity import QuantityError, parse_quantity
from policies.registry import Policy, register
from policies.workload import Workload, join


def _zero(value: Any) -> bool:
    try:
        return parse_quantity(value) == 0
    except QuantityError:
        return False


def _allowed(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@register
class GpuResourceNames(Policy):
    id = "gpu-resource-names"
    title = "Only the GPU kinds allowed for the namespace"
    severity = "medium"
    version = "1.1.0"
    description = ("Containers ask only for GPU resource names allowed for their namespace (for example MIG "
                   "slices only in inference-small namespaces, no full GPUs there); DRA claims use only "
                   "allowed device classes. Per-namespace lists come from the PolicySet's overrides. A zero quantity "
                   "asks for nothing and is not judged.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "allowed": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "allowedDeviceClasses": {"type": "array", "items": {"type": "string", "minLength": 1}},
        },
    }
    defaults = {"allowed": ["nvidia.com/gpu", "nvidia.com/gpu.shared", "amd.com/gpu"],
                "allowedDeviceClasses": ["*"]}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        allowed = list(params["allowed"])
        for i, tpl in enumerate(workload.templates):
            for ref in tpl.containers():
                for section in ("limits", "requests"):
                    values = ref.resources.get(section) or {}
                    if not isinstance(values, Mapping):
                        continue
                    for name in values:
                        if isinstance(name, str) and ctx.gpu.is_gpu_resource(name) and not _allowed(name, allowed) \
                                and not _zero(values[name]):
                            yield Finding(join(ref.at("resources"), section),
                                          f"container `{ref.name}` asks for {name}, which namespace "
                                          f"{workload.resource.namespace} does not allow; use one of: "
                                          f"{', '.join(allowed) or 'no GPU resources'}")
                            break  # one finding per name is enough: limits and requests say the same
            for key in workload.claim_gpus.get(i, {}):
                device_class = key.removesuffix(DRA_QUOTA_SUFFIX)
                if not _allowed(device_class, list(params["allowedDeviceClasses"])):
                    yield Finding(tpl.at("resourceClaims"),
                                  f"a resource claim requests device class {device_class}, which namespace "
                                  f"{workload.resource.namespace} does not allow; use one of: "
                                  f"{', '.join(params['allowedDeviceClasses'])}")
