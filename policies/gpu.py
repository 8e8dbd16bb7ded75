"""What counts as a GPU: extended resource names (with patterns), DRA device classes, taints.

A quantity of zero is no GPU, everywhere (``nvidia.com/gpu: 0`` asks for none).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from policies.quantity import QuantityError, parse_quantity

DEFAULT_RESOURCE_NAMES = ("nvidia.com/gpu", "nvidia.com/mig-*", "nvidia.com/gpu.shared", "amd.com/gpu")
# NVIDIA's DRA driver (k8s-dra-driver-gpu, demo/specs/quickstart: full GPUs, MIG slices, GPUs passed through
# to VMs with vfio-pci) and AMD's (gpu.amd.com)
DEFAULT_DEVICE_CLASSES = ("gpu.nvidia.com", "mig.nvidia.com", "vfio.gpu.nvidia.com", "gpu.amd.com")
DEFAULT_TAINTS = ({"key": "nvidia.com/gpu", "effect": "NoSchedule"},)
DRA_QUOTA_SUFFIX = ".deviceclass.resource.k8s.io/devices"


@dataclass(frozen=True)
class GpuConfig:
    """The PolicySet's `spec.gpu`: shared by every policy."""

    resource_names: tuple[str, ...] = DEFAULT_RESOURCE_NAMES
    device_classes: tuple[str, ...] = DEFAULT_DEVICE_CLASSES
    taints: tuple[Mapping[str, str], ...] = DEFAULT_TAINTS
    node_label: str = "nvidia.com/gpu.product"
    _cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> GpuConfig:
        spec = spec or {}
        return cls(
            resource_names=tuple(spec.get("resourceNames", DEFAULT_RESOURCE_NAMES)),
            device_classes=tuple(spec.get("deviceClasses", DEFAULT_DEVICE_CLASSES)),
            taints=tuple(spec.get("taints", DEFAULT_TAINTS)),
            node_label=spec.get("nodeLabel", "nvidia.com/gpu.product"),
        )

    def is_gpu_resource(self, name: str) -> bool:
        """True for a configured GPU resource name; patterns such as ``nvidia.com/mig-*`` match."""
        hit = self._cache.get(name)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.resource_names)
            self._cache[name] = hit
        return hit

    def is_gpu_device_class(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.device_classes)

    def node_marks(self, node: Mapping[str, Any]) -> list[str]:
        """What makes a Node a GPU node, as a message names it: each configured GPU taint it carries
        (``nvidia.com/gpu:NoSchedule``) and the GPU node label (``nvidia.com/gpu.product=NVIDIA-L4``).
        Empty for a node that has neither."""
        marks: list[str] = []
        spec = node.get("spec")
        taints = spec.get("taints") if isinstance(spec, Mapping) else None
        for taint in taints if isinstance(taints, list) else []:
            if not isinstance(taint, Mapping):
                continue
            for want in self.taints:
                effect_ok = not want.get("effect") or taint.get("effect") == want["effect"]
                value_ok = "value" not in want or taint.get("value", "") == want["value"]
                if taint.get("key") == want["key"] and effect_ok and value_ok:
                    marks.append(f"taint {taint.get('key')}:{taint.get('effect', '')}".rstrip(":"))
                    break
        meta = node.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        if isinstance(labels, Mapping) and self.node_label in labels:
            marks.append(f"label {self.node_label}={labels[self.node_label]}")
        return marks


def dra_quota_name(device_class: str) -> str:
    """The ResourceQuota key that limits DRA devices of a class."""
    return f"{device_class}{DRA_QUOTA_SUFFIX}"


def container_gpus(container: Mapping[str, Any], gpu: GpuConfig) -> dict[str, Decimal]:
    """GPU resources a container asks for: limits win, requests where no limit is set.

    Zero is no GPU and is left out; so are unparseable quantities (`gpu-limits` reports them, and
    `asks_for_gpu` counts them as a request).
    """
    found = _gpu_quantities(container, gpu)
    return {k: v for k, v in found.items() if v is not None and v > 0} if found else {}


def asks_for_gpu(container: Mapping[str, Any], gpu: GpuConfig) -> bool:
    """True when the container names a GPU resource with a positive or unparseable quantity (the
    intent is a GPU even when the number is wrong); ``nvidia.com/gpu: 0`` is no GPU."""
    return any(v is None or v > 0 for v in _gpu_quantities(container, gpu).values())


def _gpu_quantities(container: Mapping[str, Any], gpu: GpuConfig) -> dict[str, Decimal | None]:
    resources = container.get("resources")
    if not isinstance(resources, dict | Mapping):
        return {}
    out: dict[str, Decimal | None] = {}
    for section in ("requests", "limits"):
        values = resources.get(section)
        if not values or not isinstance(values, dict | Mapping):
            continue
        for name, value in values.items():
            if isinstance(name, str) and gpu.is_gpu_resource(name):
                try:
                    out[name] = parse_quantity(value)
                except QuantityError:
                    out[name] = None
    return out


def claim_devices(claim_spec: Mapping[str, Any], gpu: GpuConfig) -> dict[str, Decimal]:
    """GPU devices a ResourceClaim spec requests, keyed by the DRA quota name of the class.

    Understands resource.k8s.io v1 and v1beta2 (``requests[].exactly`` / ``firstAvailable``), v1beta1 and
    v1alpha3 (``requests[].deviceClassName``) and the legacy v1alpha2 (``spec.resourceClassName``, one
    device: its count lives in driver parameters). ``allocationMode: All`` counts as one device (the count
    is decided by the node; `gpu-limits` flags it).
    """
    if not isinstance(claim_spec, Mapping):
        return {}
    out: dict[str, Decimal] = {}
    legacy = claim_spec.get("resourceClassName")
    if isinstance(legacy, str) and gpu.is_gpu_device_class(legacy):
        out[dra_quota_name(legacy)] = Decimal(1)
    devices = claim_spec.get("devices")
    requests = devices.get("requests") if isinstance(devices, Mapping) else None
    for request in requests if isinstance(requests, list) else []:
        if not isinstance(request, Mapping):
            continue
        candidates: list[Mapping[str, Any]] = []
        first = request.get("firstAvailable")
        if isinstance(request.get("exactly"), Mapping):
            candidates.append(request["exactly"])
        elif isinstance(first, list) and first:
            candidates.extend(r for r in first[:1] if isinstance(r, Mapping))
        else:
            candidates.append(request)
        for sub in candidates:
            cls_name = sub.get("deviceClassName")
            if isinstance(cls_name, str) and gpu.is_gpu_device_class(cls_name):
                count = sub.get("count", 1) if sub.get("allocationMode", "ExactCount") == "ExactCount" else 1
                number = count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
                key = dra_quota_name(cls_name)
                out[key] = out.get(key, Decimal(0)) + Decimal(number)
    return out
