"""A kind mlguard does not know is never passed in silence: its pod templates are found wherever they sit and
every policy judges them exactly as it judges the same pod spec in a bare Pod, at the template's real path, with
a note that says the template was checked generically. A PolicySet can register a kind's template paths."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.context import ManifestFacts
from policies.engine import EXTRACTOR, evaluate
from policies.kinds import GENERIC_NOTE
from policies.policyset import parse_policyset
from policies.workload import extract

# every policy whose verdict is about pod templates (gpu-job-deadline, canary-required are about kinds)
POLICYSET = parse_policyset("""apiVersion: mlguard.io/v1alpha1
kind: PolicySet
spec:
  defaultAction: deny
  policies:
    gpu-limits: {params: {maxPerContainer: 4, maxPerPod: 4}}
    gpu-resource-names: {}
    gpu-companion-resources: {}
    gpu-tolerations: {}
    gpu-node-selection: {params: {allowedClasses: [NVIDIA-L4]}}
    gpu-isolation: {params: {gpuContainers: true}}
    gpu-priority-class: {}
    gpu-quota: {}
    cost-labels: {}
    image-digest: {params: {appliesTo: gpu}}
    serving-probes: {}
    eval-gate: {}
""")
GPU_VALUES = st.sampled_from([0, 1, 2, 5, "1", "0.5", "bad"])
IMAGES = st.sampled_from(["vllm/vllm-openai:v0.9.2", "ghcr.io/acme/app:1.0", "nginx",
                          "registry.example.com/m@sha256:" + "a" * 64])


@st.composite
def containers(draw: Any, prefix: str) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        c: dict[str, Any] = {"name": f"{prefix}{i}", "image": draw(IMAGES)}
        limits: dict[str, Any] = {}
        requests: dict[str, Any] = {}
        if draw(st.booleans()):
            limits[draw(st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "amd.com/gpu"]))] = \
                draw(GPU_VALUES)
        if draw(st.booleans()):
            requests["nvidia.com/gpu"] = draw(GPU_VALUES)
        if draw(st.booleans()):
            limits["memory"] = "8Gi"
        if draw(st.booleans()):
            requests["cpu"] = "2"
        if limits or requests:
            c["resources"] = {k: v for k, v in (("limits", limits), ("requests", requests)) if v}
        if draw(st.booleans()):
            c["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": draw(st.sampled_from(["all", "void", "0"]))}]
        if draw(st.booleans()):
            c["readinessProbe"] = {"httpGet": {"path": "/health", "port": 8000}}
        if draw(st.booleans()):
            c["securityContext"] = {"privileged": True}
        out.append(c)
    return out


@st.composite
def pod_specs(draw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": draw(containers("c"))}
    if draw(st.booleans()):
        spec["initContainers"] = draw(containers("init"))
    if draw(st.booleans()):
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if draw(st.booleans()):
        spec["nodeSelector"] = {"nvidia.com/gpu.product": draw(st.sampled_from(["NVIDIA-L4", "NVIDIA-H100-80GB"]))}
    if draw(st.booleans()):
        spec["priorityClassName"] = draw(st.sampled_from(["inference-high", "default"]))
    if draw(st.booleans()):
        spec["volumes"] = [{"name": "dev", "hostPath": {"path": draw(st.sampled_from(["/dev/nvidia0", "/data"]))}}]
    return spec


LABELS = st.fixed_dictionaries({}, optional={"team": st.just("ml"), "cost-center": st.just("cc-1"),
                                             "mlguard.io/model": st.just("llama")})
KEYS = st.sampled_from(["spec", "roles", "worker", "pods", "podTemplate", "runner", "x", "deployment"])


@st.composite
def embeddings(draw: Any) -> tuple[list[str | int], bool]:
    """Where the template sits (keys and list indexes under the object) and whether it is a bare PodSpec."""
    if draw(st.integers(0, 4)) == 0:
        return ["spec"], True  # the kind's spec is itself a pod spec
    path: list[str | int] = ["spec"]
    for _ in range(draw(st.integers(0, 4))):
        path.append(draw(KEYS))
        if draw(st.integers(0, 3)) == 0:
            path.append(draw(st.integers(0, 2)))
    path.append("template")
    return path, draw(st.booleans())


def _dotted(path: list[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _embed(path: list[str | int], value: Any) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node: Any = root
    for here, nxt in zip(path, [*path[1:], None], strict=True):
        child: Any = value if nxt is None else ([] if isinstance(nxt, int) else {})
        if isinstance(here, int):
            node.extend({"filler": True} for _ in range(here))  # earlier items: no pod template
            node.append(child)
        else:
            node[here] = child
        node = child
    return root


def _findings(objects: list[dict[str, Any]]) -> tuple[list[tuple[str, str, str, str]], Any]:
    report = evaluate(objects, POLICYSET, point="ci", facts=ManifestFacts(objects))
    return [(v.policy, v.action, v.path, v.message) for v in report.violations], report


def _normalise(message: str, kind: str, name: str) -> str:
    message = message.replace(f"{kind} `{name}`", "<object>")
    return message.replace("the pod template holds", "the pod holds")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=pod_specs(), labels=LABELS, where=embeddings())
def test_a_pod_spec_in_an_unknown_kind_gets_the_findings_of_a_bare_pod(spec: dict[str, Any], labels: dict[str, str],
                                                                       where: tuple[list[str | int], bool]) -> None:
    path, bare = where
    top_spec = path == ["spec"]
    pod_labels = labels if top_spec or not bare else {}  # a bare PodSpec carries no labels
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "ml", **({"labels": pod_labels} if pod_labels else {})},
           "spec": spec}
    if top_spec:  # a kind whose spec is a pod spec: its metadata is the pod's
        widget = {"apiVersion": "example.com/v1", "kind": "Widget",
                  "metadata": {"name": "w", "namespace": "ml", "labels": labels}, "spec": spec}
        spec_path, meta_path = "spec", "metadata"
    else:
        template = spec if bare else {"metadata": {"labels": labels}, "spec": spec}
        widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ml"},
                  **_embed(path, template)}
        spec_path = _dotted(path) if bare else f"{_dotted(path)}.spec"
        meta_path = f"{_dotted(path)}.metadata"

    def moved(p: str) -> str:
        if p == "metadata.namespace":
            return p  # the object's own namespace (gpu-quota: no ResourceQuota there)
        if p == "spec" or p.startswith(("spec.", "spec[")):
            return spec_path + p[len("spec"):]
        if p.startswith("metadata"):
            return meta_path + p[len("metadata"):]
        return p

    def unmoved(message: str) -> str:  # paths quoted in a message, back to the Pod's
        if spec_path == "spec":
            return message
        return message.replace(meta_path, "metadata").replace(spec_path, "spec")

    want, _ = _findings([pod])
    got, report = _findings([widget])
    assert sorted((pol, act, p, unmoved(_normalise(m, "Widget", "w"))) for pol, act, p, m in got) == sorted(
        (pol, act, moved(p), _normalise(m, "Pod", "p")) for pol, act, p, m in want)
    notes = [n for n in report.notes if n.policy == EXTRACTOR]
    assert [n.path for n in notes] == [spec_path] and GENERIC_NOTE in notes[0].message


def test_the_search_is_bounded() -> None:
    """A deeply nested or huge object is walked only so far (no unbounded read): templates past the depth limit
    or the node budget are not found, and a note says where the walk stopped."""
    template = {"spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}
    deep: dict[str, Any] = {"template": template}
    for _ in range(30):
        deep = {"x": deep}
    found = extract({"apiVersion": "e.com/v1", "kind": "Deep", "spec": deep}, gpu=POLICYSET.gpu)
    assert found.templates == [] and "larger than the generic search reads" in found.notes[0][1]
    assert found.notes[0][0] == "spec" + ".x" * 12
    wide = {"apiVersion": "e.com/v1", "kind": "Wide",
            "spec": {"items": [{"k": i} for i in range(50_000)] + [{"template": template}]}}
    found = extract(wide, gpu=POLICYSET.gpu)
    assert found.templates == [] and found.notes[0][0].startswith("spec.items[")


def test_a_registered_kind_is_checked_at_its_paths_with_its_multiplicity() -> None:
    ps = parse_policyset("""apiVersion: mlguard.io/v1alpha1
kind: PolicySet
spec:
  workloadKinds:
    - group: example.com
      kind: Trainer
      serving: false
      templates:
        - {path: "spec.roles[*].podTemplate", name: role, multiplicity: ["spec.roles[*].replicas", spec.nodes]}
        - {path: spec.launcher, podSpec: true, multiplicity: 1}
  policies:
    gpu-limits: {}
""")
    obj = {"apiVersion": "example.com/v1", "kind": "Trainer", "metadata": {"name": "t", "namespace": "ml"},
           "spec": {"nodes": 2, "launcher": {"containers": [{"name": "l", "image": "i"}]},
                    "roles": [{"replicas": 3, "podTemplate": {"spec": {"containers": [
                        {"name": "w", "image": "i", "resources": {"requests": {"nvidia.com/gpu": 1}}}]}}},
                              {"podTemplate": {"spec": {"containers": [
                                  {"name": "w", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 2}}}]}}}]}}
    workload = extract(obj, gpu=ps.gpu, config=ps.workloads)
    assert [(t.spec_path, t.pods) for t in workload.templates] == [
        ("spec.roles[0].podTemplate.spec", 6), ("spec.roles[1].podTemplate.spec", 2), ("spec.launcher", 1)]
    assert workload.full_size_gpus(ps.gpu) == {"nvidia.com/gpu": Decimal(6 * 1 + 2 * 2)}
    assert not workload.generic and not workload.notes
    report = evaluate([obj], ps, point="ci")
    assert [v.path for v in report.violations] == ["spec.roles[0].podTemplate.spec.containers[0].resources.limits"]
    assert not report.notes  # registered: no generic note
    # the same object without the registration is still checked, generically and with a note
    generic = evaluate([obj], parse_policyset("apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nspec:\n  "
                                              "policies: {gpu-limits: {}}\n"), point="ci")
    assert [v.path for v in generic.violations] == [v.path for v in report.violations]
    assert any(re.search(GENERIC_NOTE, n.message) for n in generic.notes)
