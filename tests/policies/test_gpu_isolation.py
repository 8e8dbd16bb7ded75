"""gpu-isolation beyond its samples: value and path tables, unverifiable values, configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from policies.context import OMITTED_KEYS, ManifestFacts
from policies.engine import evaluate_object
from policies.library.gpu_isolation import device_host_path, exposes_devices, under
from policies.policyset import PolicySetError, parse_policyset

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


def test_an_unseen_configmap_is_a_warning_under_unresolved_env_warn() -> None:
    sidecar = {"name": "agent", "image": "a", "envFrom": [{"configMapRef": {"name": "elsewhere"}}]}
    result = evaluate_object(pod(GPU_SERVER, sidecar), policyset(), point="ci", facts=ManifestFacts([]))
    assert [v.action for v in result.violations] == ["warn"]
    said = [n.message for n in result.notes] + [v.message for v in result.violations]
    assert len(said) == 1 and "ConfigMap `elsewhere` (envFrom), which is not in the checked set" in said[0]
    assert "add env NVIDIA_VISIBLE_DEVICES=void" in said[0]


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists"}
GPU_NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}
CPU_NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-1", "labels": {"pool": "cpu"}}}


@pytest.mark.parametrize(("setting", "spec", "action"), [
    # a CPU pod that seems unable to land on GPU nodes: warned whatever the setting (issue 14: it was silent)
    ("warn", {}, "warn"),
    ("deny", {}, "warn"),
    ("deny", {"nodeName": "cpu-1"}, "warn"),
    # a pod that can reach a GPU node: unresolvedEnv decides
    ("warn", {"tolerations": [GPU_TOLERATION]}, "warn"),
    ("deny", {"tolerations": [GPU_TOLERATION]}, "deny"),
    ("deny", {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}, "deny"),
    ("deny", {"nodeName": "gpu-1"}, "deny"),            # bound to a GPU node: the kubelet ignores the taint
    ("deny", {"nodeName": "unknown-node"}, "deny"),     # a node nobody here knows may be one
])
def test_unseen_values_by_reach_and_unresolved_env(setting: str, spec: dict, action: str) -> None:
    cpu = {"name": "api", "image": "a", "env": [
        {"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"configMapKeyRef": {"name": "elsewhere", "key": "k"}}}]}
    result = evaluate_object(pod(cpu, **spec), policyset({"unresolvedEnv": setting}), point="ci",
                             facts=ManifestFacts([GPU_NODE, CPU_NODE]))
    assert [v.action for v in result.violations] == [action], result.violations
    assert "ConfigMap `elsewhere` key `k`, which is not in the checked set" in result.violations[0].message
    assert ("seems unable to reach a GPU node" in result.violations[0].message) is (
        not spec or spec.get("nodeName") == "cpu-1")


def test_the_old_warn_unresolved_parameter_is_refused_by_name() -> None:
    with pytest.raises(PolicySetError, match="warnUnresolved"):
        policyset({"warnUnresolved": "never"})


def cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "team-a"}, "data": data}


def env_from(value_from: dict) -> dict:
    return {"name": "api", "image": "a", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": value_from}]}


@pytest.mark.parametrize(("value_from", "meta", "expected"), [
    # the pod's own labels and annotations: read from the object under review
    ({"fieldRef": {"fieldPath": "metadata.annotations['devices']"}}, {"annotations": {"devices": "all"}}, "deny"),
    ({"fieldRef": {"fieldPath": "metadata.annotations['devices']"}}, {"annotations": {"devices": "void"}}, None),
    ({"fieldRef": {"fieldPath": "metadata.labels['gpus']"}}, {"labels": {"gpus": "0"}}, "deny"),
    ({"fieldRef": {"fieldPath": "metadata.labels['gpus']"}}, {}, None),           # a missing label gives ""
    ({"fieldRef": {"fieldPath": "metadata.namespace"}}, {}, "deny"),              # "team-a" is not void
    ({"fieldRef": {"fieldPath": "spec.serviceAccountName"}}, {}, "deny"),         # "default"
    ({"fieldRef": {"fieldPath": "status.podIP"}}, {}, "warn"),                    # only the running pod knows
    ({"fieldRef": {"fieldPath": "metadata.uid"}}, {}, "warn"),
    # a resource field is a number: the toolkit reads it as a GPU index
    ({"resourceFieldRef": {"resource": "limits.cpu"}}, {}, "deny"),
    # ConfigMaps of the checked set are read
    ({"configMapKeyRef": {"name": "devices", "key": "list"}}, {}, "deny"),
    ({"configMapKeyRef": {"name": "devices", "key": "off"}}, {}, None),
    ({"configMapKeyRef": {"name": "devices", "key": "absent"}}, {}, None),        # the kubelet sets nothing
    ({"configMapKeyRef": {"name": "elsewhere", "key": "list"}}, {}, "warn"),
    ({"secretKeyRef": {"name": "elsewhere", "key": "list"}}, {}, "warn"),
])
def test_values_from_elsewhere(value_from: dict, meta: dict, expected: str | None) -> None:
    obj = pod(env_from(value_from))
    obj["metadata"].update(meta)
    result = evaluate_object(obj, policyset(), point="ci", facts=ManifestFacts([cm("devices", list="0,1", off="void")]))
    assert [v.action for v in result.violations] == ([expected] if expected else []), result.violations
    assert all(v.path == "spec.containers[0].env[0].valueFrom" for v in result.violations)


def test_a_partly_cached_configmap_is_unresolved_for_the_keys_it_left_out() -> None:
    """The webhook's cache keeps so many keys of a ConfigMap and counts the rest (OMITTED_KEYS): a key that
    is not there may be one of them, so its value is unknown, never "unset"."""
    partial = {**cm("big", kept="void"), OMITTED_KEYS: 3}
    for key, expected in (("kept", []), ("maybe", ["warn"])):
        result = evaluate_object(pod(env_from({"configMapKeyRef": {"name": "big", "key": key}})), policyset(),
                                 point="ci", facts=ManifestFacts([partial]))
        assert [v.action for v in result.violations] == expected
    from_all = evaluate_object(pod({"name": "a", "image": "a", "envFrom": [{"configMapRef": {"name": "big"}}]}),
                               policyset(), point="ci", facts=ManifestFacts([partial]))
    assert [v.action for v in from_all.violations] == ["warn"]
    assert "more keys than the webhook's cache keeps" in from_all.violations[0].message


def test_an_envfrom_secret_is_denied_under_strict_with_a_fix_that_resolves_it() -> None:
    tolerating = {"tolerations": [GPU_TOLERATION]}
    agent = {"name": "agent", "image": "a", "envFrom": [{"secretRef": {"name": "hf"}}]}
    ps = policyset({"unresolvedEnv": "deny"})
    [violation] = evaluate_object(pod(agent, **tolerating), ps, point="ci", facts=ManifestFacts([])).violations
    assert violation.action == "deny" and violation.path == "spec.containers[0].envFrom[0]"
    assert "Secret `hf` (envFrom)" in violation.message and "secretKeyRef instead of envFrom" in violation.message
    fixed = {**agent, "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]}
    assert not evaluate_object(pod(fixed, **tolerating), ps, point="ci", facts=ManifestFacts([])).violations
    keys = {"name": "agent", "image": "a", "env": [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}
    assert not evaluate_object(pod(keys, **tolerating), ps, point="ci", facts=ManifestFacts([])).violations


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
