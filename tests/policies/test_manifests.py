"""Reading manifests: objects with their lines, Lists, what is not an object, and a field's own line."""

from __future__ import annotations

import pytest

from policies.locate import compose_span, exists, tokens, walk
from policies.manifests import ManifestError, parse_documents


def test_lists_and_multi_document_yaml_with_lines() -> None:
    text = """apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: []}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: c}
"""
    docs = parse_documents(text, "x.yaml").objects
    assert [(d.obj["metadata"]["name"], d.line) for d in docs] == [("a", 4), ("b", 5), ("c", 9)]


def test_documents_that_are_not_objects_are_reported_each_with_its_line_and_skipped() -> None:
    parsed = parse_documents("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\njust: data\n---\n- a\n- b\n"
                             "---\nkind: Pod\n", "x.yaml")
    assert [o.obj["metadata"]["name"] for o in parsed.objects] == ["p"]
    assert [(s.line, s.reason) for s in parsed.skipped] == [
        (5, "not a Kubernetes object (no apiVersion and no kind)"),
        (7, "not a Kubernetes object (a list, not a mapping with apiVersion and kind)"),
        (10, "not a Kubernetes object (no apiVersion)")]


def test_text_that_is_not_yaml_is_an_error_with_its_line() -> None:
    with pytest.raises(ManifestError, match=r"x.yaml:2: not valid YAML"):
        parse_documents("a: b\n  c: : d\n", "x.yaml")


DEPLOYMENT = """# leading comment
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: vllm
  annotations:
    mlguard.io/model: llama
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: sidecar
          image: envoy
        - name: server
          image: vllm
          resources:
            requests: {nvidia.com/gpu: 1}
"""


def _line(text: str, index: int, path: str, judged: object = None) -> tuple[int, int]:
    located = parse_documents(text, "x.yaml").objects[index]
    node, offset = compose_span(located.span)
    toks = tokens(judged or located.obj, path)
    hit = walk(node, toks, judged or located.obj, offset=offset)
    assert hit is not None
    return hit.line, hit.depth


def test_a_field_is_located_on_its_own_line_in_a_multi_document_file() -> None:
    assert _line(DEPLOYMENT, 1, "spec.replicas") == (14, 2)
    assert _line(DEPLOYMENT, 1, "spec.template.spec.containers[1].resources.requests") == (23, 7)
    # a missing field: the nearest parent that holds it
    assert _line(DEPLOYMENT, 1, "spec.template.spec.containers[1].resources.limits") == (22, 6)
    # a key with dots stays one key
    assert _line(DEPLOYMENT, 1, "metadata.annotations.mlguard.io/model") == (12, 3)


def test_list_items_are_matched_by_name_when_the_judged_object_orders_them_differently() -> None:
    judged = {"spec": {"template": {"spec": {"containers": [{"name": "server"}, {"name": "sidecar"}]}}}}
    assert _line(DEPLOYMENT, 1, "spec.template.spec.containers[0].image", judged)[0] == 21
    assert _line(DEPLOYMENT, 1, "spec.template.spec.containers[1].image", judged)[0] == 19


def test_tokens_keep_dotted_keys_and_indices() -> None:
    obj = {"metadata": {"annotations": {"mlguard.io/model": "x"}}, "spec": {"containers": [{"name": "a"}]}}
    assert tokens(obj, "metadata.annotations.mlguard.io/model") == ["metadata", "annotations", "mlguard.io/model"]
    assert tokens(obj, "spec.containers[0].resources.limits") == ["spec", "containers", 0, "resources", "limits"]
    assert exists(obj, ["spec", "containers", 0, "name"]) and not exists(obj, ["spec", "containers", 1])


def test_list_items_are_located_inside_their_list() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n" \
           "  spec:\n    containers: []\n"
    assert _line(text, 0, "spec.containers") == (8, 2)


TRICKY = """apiVersion: v1
kind: ConfigMap
metadata: {name: tricky, labels: &labels {a: "1", b: on}}
data:
  octal: 010
  hex: 0x1F
  big: 123456789012345678901234567890
  negative: -3
  float: 1.5e3
  inf: .inf
  sexagesimal: 1:30
  bools: [yes, No, TRUE, off, y]
  nulls: [~, null, ""]
  when: 2026-11-20T10:00:00Z
  day: 2026-11-20
  bin: !!binary aGVsbG8=
  quoted: "007"
  alias: *labels
  merged:
    <<: *labels
    c: 3
  "key with: colon": 1
  ? [complex, key]
  : x
"""


def test_the_parser_builds_exactly_what_pyyaml_builds() -> None:
    import yaml

    text = TRICKY.replace("  ? [complex, key]\n  : x\n", "")
    [located] = parse_documents(text, "x.yaml").objects
    assert located.obj == yaml.safe_load(text)
    assert located.obj["data"]["octal"] == 8 and located.obj["data"]["sexagesimal"] == 90
    assert located.obj["data"]["merged"] == {"a": "1", "b": True, "c": 3}
    with pytest.raises(ManifestError, match=r"x\.yaml:23: not valid YAML: found unhashable key"):
        parse_documents(TRICKY, "x.yaml")   # refused as PyYAML refuses it
