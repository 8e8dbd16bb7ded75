"""GPUs that reach a container by pod annotation rather than by a resource request.

- CDI device annotations: a pod annotation under ``cdi.k8s.io/`` or ``nvidia.cdi.k8s.io/`` whose value
  lists fully-qualified CDI device names (``vendor.com/class=name``, comma-separated, per the Container
  Device Interface spec). A runtime that passes pod annotations to its containers (containerd's
  ``pod_annotations``, the NVIDIA runtime's ``cdi.annotation-prefixes``) hands those devices to every
  container of the pod: no container is named.
- GKE's NRI device injector (GoogleCloudPlatform/container-engine-accelerators, nri_device_injector): the
  annotation ``devices.gke.io/container.<name>`` holds a YAML list of ``- path: /dev/...`` device nodes
  injected into container ``<name>`` (GKE's GPUDirect-TCPXO pages use it to give the RxDM sidecar
  /dev/nvidia0..7).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

CDI_PREFIXES = ("cdi.k8s.io/", "nvidia.cdi.k8s.io/")
GKE_PREFIX = "devices.gke.io/container."
# CDI device kinds ("vendor/class") that are GPUs: NVIDIA's (nvidia.com/gpu, nvidia.com/mig,
# k8s.device-plugin.nvidia.com/gpu, ...), AMD's (amd.com/gpu), and any vendor's class "gpu"
CDI_GPU_KINDS = ("nvidia.com/*", "*.nvidia.com/*", "amd.com/*", "*/gpu")
# device nodes of GPUs: NVIDIA's /dev/nvidia* (and /dev/nvidia-caps/...), DRM render nodes, AMD's KFD
GPU_DEVICE_NODES = ("/dev/nvidia*", "/dev/dri", "/dev/kfd")
_PATH = re.compile(r"path\s*:\s*['\"]?([^'\"\s,}]+)")
MAX_PARSED = 256 * 1024  # the API server caps a pod's annotations at 256 KiB in all; longer text is only scanned


@dataclass(frozen=True)
class InjectedDevice:
    """A GPU device an annotation hands to a container."""

    annotation: str   # the annotation key
    device: str       # the CDI device name or the device node path
    container: str | None  # the container named by the annotation; None for every container of the pod

    def describe(self) -> str:
        return f"{self.device} (annotation {self.annotation})"


def _cdi_devices(value: str) -> list[str]:
    return [d.strip() for d in value.split(",") if "=" in d and d.strip()]


def is_gpu_cdi_device(name: str, kinds: tuple[str, ...] = CDI_GPU_KINDS) -> bool:
    kind = name.split("=", 1)[0].strip()
    return any(fnmatch.fnmatchcase(kind, pattern) for pattern in kinds)


def is_gpu_device_node(path: str, patterns: tuple[str, ...] = GPU_DEVICE_NODES) -> bool:
    norm = posixpath.normpath("/" + path.strip()).replace("//", "/")
    return any(fnmatch.fnmatchcase(norm, p) or fnmatch.fnmatchcase(norm, p.rstrip("/") + "/*") for p in patterns)


def _device_paths(value: str) -> list[str]:
    """The ``path`` of each device in a GKE/NRI device list; a list that does not parse is scanned for
    ``path:`` entries instead (the injector is lenient, so are we: an unparsable value still counts)."""
    parsed: Any = None
    if len(value) <= MAX_PARSED:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = None
    if isinstance(parsed, list):
        return [str(d["path"]) for d in parsed if isinstance(d, Mapping) and d.get("path") is not None]
    return _PATH.findall(value)


def injected_gpu_devices(annotations: Mapping[str, Any], *, cdi_kinds: tuple[str, ...] = CDI_GPU_KINDS,
                         device_nodes: tuple[str, ...] = GPU_DEVICE_NODES) -> list[InjectedDevice]:
    """Every GPU device a pod's annotations inject, with the container each goes to."""
    out: list[InjectedDevice] = []
    for key, raw in annotations.items():
        if not isinstance(key, str) or not isinstance(raw, str):
            continue
        if key.startswith(CDI_PREFIXES):
            out.extend(InjectedDevice(key, d, None) for d in _cdi_devices(raw) if is_gpu_cdi_device(d, cdi_kinds))
        elif key.startswith(GKE_PREFIX) and len(key) > len(GKE_PREFIX):
            name = key[len(GKE_PREFIX):]
            out.extend(InjectedDevice(key, p, name) for p in _device_paths(raw) if is_gpu_device_node(p, device_nodes))
    return out
