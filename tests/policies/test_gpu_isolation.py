"""gpu-isolation beyond its samples: value and path tables, unverifiable values, configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from policies.context import ManifestFacts
from policies.engine import evaluate_object
from policies.library.gpu_isolation import device_host_path, exposes_devices, under
from policies.policyset import parse_policyset

PATTERNS = ["/dev/nvidia*", "/dev/dri", "/dev/kfd"]


def policyset(params: Mapping[str, Any] | None = None, gpu: Mapping[str, Any] | None = None):
    spec: dict[str, Any] = {"policies": {"gpu-isolation": {"action": "deny", "params": dict(params or {})}}}
    if gpu:
        spec["gpu"] = dict(gpu)
    return parse_policyset(yaml.safe_dump({"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet",
                                           "metadata": {"name": "t"}, "spec": spec}))


def pod(*containers: dict, **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
            "spec": {"containers": list(containers), **spec}}


GPU_SERVER = {"name": "server", "image": "s", "resources": {"limits": {"nvidia.com/gpu": 1}}}


@pytest.mark.parametrize(("value", "exposes"), [
    ("all", True), ("0", True), ("0,1", True), ("GPU-1f2e3d4c-0000-1111-2222-333344445555", True),
    ("MIG-4b8e7a2c-1111-2222-3333-444455556666", True), ("/var/run/nvidia-container-devices", True),
    ("void", False), ("none", False), ("", False), (" VOID ", False), ("None", False),
])
def test_which_values_expose_devices(value: str, exposes: bool) -> None:
    assert exposes_devices(value) is exposes


@pytest.mark.parametrize(("path", "inside"), [
    ("/var/run/nvidia-container-devices", True), ("/var/run/nvidia-container-devices/", True),
    ("/var/run/nvidia-container-devices/GPU-1", True), ("//var/run//nvidia-container-devices/all", True),
    ("/var/run/nvidia-container-devices-other", False), ("/var/run", False),
    ("/var/run/x/../nvidia-container-devices/all", True),
])
def test_under(path: str, inside: bool) -> None:
    assert under(path, "/var/run/nvidia-container-devices") is inside


@pytest.mark.parametrize(("path", "pattern"), [
    ("/dev/nvidia0", "/dev/nvidia*"), ("/dev/nvidiactl", "/dev/nvidia*"), ("/dev/nvidia-caps/nvidia-cap1",
                                                                          "/dev/nvidia*"),
    ("/dev/dri", "/dev/dri"), ("/dev/dri/card0", "/dev/dri"), ("/dev/kfd", "/dev/kfd"),
    ("/dev", "/dev/nvidia*"), ("/dev/", "/dev/nvidia*"), ("/", "/dev/nvidia*"),
    ("/dev/../dev/nvidia0", "/dev/nvidia*"),
    ("/dev/shm", None), ("/dev/fuse", None), ("/var/lib/models", None), ("/device", None), ("", None),
])
def test_device_host_paths(path: str, pattern: str | None) -> None:
    assert device_host_path(path, PATTERNS) == pattern


def test_an_unseen_configmap_is_at_most_a_warning_for_a_gpu_reachable_pod() -> None:
    sidecar = {"name": "agent", "image": "a", "envFrom": [{"configMapRef": {"name": "elsewhere"}}]}
    result = evaluate_object(pod(GPU_SERVER, sidecar), policyset(), point="ci", facts=ManifestFacts([]))
    assert all(v.action == "warn" for v in result.violations), result.violations
    said = [n.message for n in result.notes] + [v.message for v in result.violations]
    assert len(said) == 1 and "ConfigMap `elsewhere` (envFrom), which cannot be seen here" in said[0]
    assert "add env NVIDIA_VISIBLE_DEVICES=void" in said[0]


@pytest.mark.parametrize(("setting", "spec", "reported"), [
    ("gpu-reachable", {}, False),                      # a CPU pod that cannot land on GPU nodes
    ("always", {}, True),
    ("gpu-reachable", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, True),
    ("gpu-reachable", {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}, True),
    ("never", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, False),
])
def test_when_unseen_values_are_reported(setting: str, spec: dict, reported: bool) -> None:
    cpu = {"name": "api", "image": "a", "env": [
        {"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {"name": "elsewhere", "key": "k"}}}]}
    result = evaluate_object(pod(cpu, **spec), policyset({"warnUnresolved": setting}), point="ci",
                             facts=ManifestFacts([]))
    assert not [v for v in result.violations if v.action == "deny"]
    assert bool(result.notes or result.violations) is reported


def test_an_explicit_env_entry_overrides_envfrom() -> None:
    sidecar = {"name": "agent", "image": "a", "envFrom": [{"configMapRef": {"name": "elsewhere"}}],
               "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]}
    result = evaluate_object(pod(GPU_SERVER, sidecar), policyset(), point="ci", facts=ManifestFacts([]))
    assert not result.violations and not result.notes


def test_the_last_envfrom_source_wins() -> None:
    maps = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": "team-a"},
             "data": {"NVIDIA_VISIBLE_DEVICES": v}} for n, v in (("first", "all"), ("second", "void"))]
    order = [{"configMapRef": {"name": "first"}}, {"configMapRef": {"name": "second"}}]
    ok = evaluate_object(pod({"name": "a", "image": "a", "envFrom": order}), policyset(), point="ci",
                         facts=ManifestFacts(maps))
    assert not ok.violations
    bad = evaluate_object(pod({"name": "a", "image": "a", "envFrom": order[::-1]}), policyset(), point="ci",
                          facts=ManifestFacts(maps))
    assert [v.path for v in bad.violations] == ["spec.containers[0].envFrom[1]"]


def test_a_secret_value_never_appears_in_a_message() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "team-a"},
              "stringData": {"NVIDIA_VISIBLE_DEVICES": "GPU-topsecret"}}
    ref = {"secretKeyRef": {"name": "s", "key": "NVIDIA_VISIBLE_DEVICES"}}
    cpu = {"name": "api", "image": "a", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": ref}]}
    [violation] = evaluate_object(pod(cpu), policyset(), point="ci", facts=ManifestFacts([secret])).violations
    assert "topsecret" not in violation.message and "Secret `s`" in violation.message


def test_configured_gpu_names_and_env_names() -> None:
    """A container holding a configured accelerator may set the variable; another variable can be guarded."""
    gaudi = {"name": "server", "image": "s", "resources": {"limits": {"habana.ai/gaudi": 1}},
             "env": [{"name": "HABANA_VISIBLE_DEVICES", "value": "all"}]}
    cpu = {"name": "side", "image": "s", "env": [{"name": "HABANA_VISIBLE_DEVICES", "value": "all"}]}
    ps = policyset({"envNames": ["HABANA_VISIBLE_DEVICES"]}, gpu={"resourceNames": ["habana.ai/gaudi"]})
    result = evaluate_object(pod(gaudi, cpu), ps, point="ci", facts=ManifestFacts([]))
    assert [v.path for v in result.violations] == ["spec.containers[1].env[0].value"]


def test_a_gpu_container_mounting_the_device_list_is_refused_too() -> None:
    server = {**GPU_SERVER, "volumeMounts": [{"name": "d", "mountPath": "/var/run/nvidia-container-devices/all"}]}
    [violation] = evaluate_object(pod(server, volumes=[{"name": "d", "emptyDir": {}}]), policyset(),
                                  point="ci").violations
    assert "beyond its allocation" in violation.message


def test_an_unresolvable_claim_gets_the_benefit_of_the_doubt() -> None:
    server = {"name": "server", "image": "s", "resources": {"claims": [{"name": "gpu"}]},
              "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}
    spec = {"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "not-in-the-set"}]}
    assert not evaluate_object(pod(server, **spec), policyset(), point="ci", facts=ManifestFacts([])).violations


def test_a_workloadref_template_is_reported_on_the_deployment() -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llm", "namespace": "team-a"},
           "spec": {"replicas": 0, "template": {"spec": {"containers": [
               GPU_SERVER, {"name": "dbg", "image": "d", "securityContext": {"privileged": True}}]}}}}
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "llm", "namespace": "team-a"},
               "spec": {"replicas": 2, "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"}}}
    [violation] = evaluate_object(rollout, policyset(), point="ci", facts=ManifestFacts([dep, rollout])).violations
    assert str(violation.resource) == "Deployment/team-a/llm"
    assert violation.path == "spec.template.spec.containers[1].securityContext.privileged"


def test_privileged_next_to_a_specific_gpu_toleration() -> None:
    agent = {"name": "agent", "image": "a", "securityContext": {"privileged": True}}
    spec = {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    [violation] = evaluate_object(pod(agent, **spec), policyset(), point="ci").violations
    assert "pod that tolerates the GPU taint nvidia.com/gpu;" in violation.message
    spec = {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}
    assert not evaluate_object(pod(agent, **spec), policyset(), point="ci").violations


def test_gpu_containers_can_be_guarded_too() -> None:
    server = {**GPU_SERVER, "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}
    assert not evaluate_object(pod(server), policyset(), point="ci").violations
    [violation] = evaluate_object(pod(server), policyset({"gpuContainers": True}), point="ci").violations
    assert violation.path == "spec.containers[0].env[0].value"
    assert "although the device plugin sets it" in violation.message
    assert "remove it and let the device plugin set it" in violation.message
    void = {**GPU_SERVER, "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]}
    assert not evaluate_object(pod(void), policyset({"gpuContainers": True}), point="ci").violations
