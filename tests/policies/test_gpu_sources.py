"""Every way a GPU reaches a pod: extended resources (zero is none), DRA claims in every resource.k8s.io shape
(an unresolved claim is unknown, never "no GPU"), and devices injected by CDI or GKE annotations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml

from policies.context import ManifestFacts
from policies.devices import injected_gpu_devices
from policies.engine import evaluate
from policies.gpu import GpuConfig, asks_for_gpu, claim_devices, container_gpus
from policies.policyset import CATALOG, load_policyset
from policies.workload import extract

GPU = GpuConfig()
KEY = "{}.deviceclass.resource.k8s.io/devices"


@pytest.mark.parametrize(("claim_spec", "want"), [
    # resource.k8s.io/v1 and v1beta2: requests[].exactly
    ({"devices": {"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 2}}]}},
     {"gpu.nvidia.com": 2}),
    # v1: firstAvailable (the first, preferred, alternative counts)
    ({"devices": {"requests": [{"name": "g", "firstAvailable": [
        {"name": "big", "deviceClassName": "gpu.nvidia.com"},
        {"name": "slice", "deviceClassName": "mig.nvidia.com"}]}]}},
     {"gpu.nvidia.com": 1}),
    # v1beta1 / v1alpha3: requests[].deviceClassName; allocationMode All counts as one
    ({"devices": {"requests": [{"name": "g", "deviceClassName": "mig.nvidia.com", "allocationMode": "All"}]}},
     {"mig.nvidia.com": 1}),
    ({"devices": {"requests": [{"name": "vm", "exactly": {"deviceClassName": "vfio.gpu.nvidia.com"}}]}},
     {"vfio.gpu.nvidia.com": 1}),
    ({"devices": {"requests": [{"name": "amd", "exactly": {"deviceClassName": "gpu.amd.com", "count": 4}}]}},
     {"gpu.amd.com": 4}),
    # v1alpha2 (Kubernetes 1.26-1.30): the claim names a ResourceClass; its count is in driver parameters
    ({"resourceClassName": "gpu.nvidia.com", "parametersRef": {"kind": "GpuClaimParameters", "name": "two"}},
     {"gpu.nvidia.com": 1}),
    # not a GPU class
    ({"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "rdma.example.com"}}]}}, {}),
    ({"resourceClassName": "fpga.example.com"}, {}),
])
def test_claim_shapes_and_default_device_classes(claim_spec: dict[str, Any], want: dict[str, int]) -> None:
    assert claim_devices(claim_spec, GPU) == {KEY.format(k): Decimal(v) for k, v in want.items()}


def test_zero_is_no_gpu_and_an_unparseable_quantity_is_a_request() -> None:
    zero = {"resources": {"limits": {"nvidia.com/gpu": 0}, "requests": {"nvidia.com/gpu": "0"}}}
    assert container_gpus(zero, GPU) == {} and not asks_for_gpu(zero, GPU)
    bad = {"resources": {"limits": {"nvidia.com/gpu": "two"}}}
    assert container_gpus(bad, GPU) == {} and asks_for_gpu(bad, GPU)


def test_gpu_zero_is_no_gpu_in_every_policy() -> None:
    """A CPU pod that writes nvidia.com/gpu: 0 gets no GPU finding from any policy of the strict catalog (it used
    to be denied by gpu-limits and treated as a GPU pod by four others)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api", "namespace": "web"},
           "spec": {"containers": [{"name": "api", "image": "registry.example.com/api@sha256:" + "a" * 64,
                                    "resources": {"limits": {"nvidia.com/gpu": 0, "cpu": "1", "memory": "1Gi"},
                                                  "requests": {"nvidia.com/gpu": 0}}}]}}
    report = evaluate([pod], load_policyset(CATALOG / "strict.yaml"), point="ci", facts=ManifestFacts([pod]))
    assert report.violations == [] and not report.policy_errors
    workload = extract(pod, gpu=GPU)
    assert not workload.uses_gpu(0, GPU) and workload.full_size_gpus(GPU) == {}


def test_an_unresolved_claim_is_unknown_never_no_gpu() -> None:
    pod = yaml.safe_load("""
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ml}
spec:
  containers: [{name: c, image: i, resources: {claims: [{name: g}]}}]
  resourceClaims: [{name: g, resourceClaimTemplateName: elsewhere}, {name: h}]
""")
    workload = extract(pod, gpu=GPU, resolve_claim=ManifestFacts([pod]).resolve_claim)
    assert not workload.uses_gpu(0, GPU)
    reason = workload.gpu_unknown(0, GPU)
    assert reason is not None and "`g` (ResourceClaimTemplate `elsewhere`)" in reason and "`h`" in reason
    assert workload.claim_states[0] == {"g": None, "h": None}
    assert any("could not be resolved" in m for _, m in workload.notes)


def test_cdi_annotations_reach_every_container_gke_the_named_one() -> None:
    devices = injected_gpu_devices({
        "cdi.k8s.io/a": "nvidia.com/gpu=0, nvidia.com/gpu=GPU-1234,example.com/nic=eth0",
        "nvidia.cdi.k8s.io/b": "k8s.device-plugin.nvidia.com/gpu=all",
        "cdi.k8s.io/amd": "amd.com/gpu=1",
        "devices.gke.io/container.rxdm": "- path: /dev/nvidia0\n- path: /dev/nvidiactl\n- path: /dev/fuse\n",
        "devices.gke.io/container.broken": "- path: /dev/nvidia1\n  major: [",  # not YAML: scanned for paths
        "example.com/other": "nvidia.com/gpu=all",
    })
    assert [(d.annotation, d.device, d.container) for d in devices] == [
        ("cdi.k8s.io/a", "nvidia.com/gpu=0", None), ("cdi.k8s.io/a", "nvidia.com/gpu=GPU-1234", None),
        ("nvidia.cdi.k8s.io/b", "k8s.device-plugin.nvidia.com/gpu=all", None),
        ("cdi.k8s.io/amd", "amd.com/gpu=1", None),
        ("devices.gke.io/container.rxdm", "/dev/nvidia0", "rxdm"),
        ("devices.gke.io/container.rxdm", "/dev/nvidiactl", "rxdm"),
        ("devices.gke.io/container.broken", "/dev/nvidia1", "broken")]


def test_injected_devices_make_a_gpu_pod() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "annotations": {"devices.gke.io/container.side": "- path: /dev/nvidia0"}},
           "spec": {"containers": [{"name": "main", "image": "i"}, {"name": "side", "image": "s"}]}}
    workload = extract(pod, gpu=GPU)
    assert workload.uses_gpu(0, GPU) and workload.full_size_gpus(GPU) == {}  # a GPU, not a counted one
    assert [(ref.name, [d.device for d in devs]) for ref, devs in workload.injected(0)] == [("side", ["/dev/nvidia0"])]
