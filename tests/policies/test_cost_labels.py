"""cost-labels beyond the sample suite: bad value patterns and the configured GPU names."""

from __future__ import annotations

import pytest

from policies.engine import evaluate
from policies.policyset import PolicySetError, parse_policyset

HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"


def _pod(resources: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "a", "labels": labels or {}},
            "spec": {"containers": [{"name": "s", "image": "s", "resources": resources}]}}


def test_an_invalid_value_pattern_is_refused_when_the_policyset_loads() -> None:
    with pytest.raises(PolicySetError) as err:
        parse_policyset(HEAD + "spec:\n  policies:\n    cost-labels: {params: {valuePatterns: {team: '('}}}\n")
    assert "spec.policies.cost-labels.params.valuePatterns.team (line 6): '(' is not a 'regex'" in err.value.errors


def test_gpu_resource_names_come_from_the_policyset() -> None:
    custom = parse_policyset(HEAD + "spec:\n  gpu: {resourceNames: [example.com/npu]}\n"
                             "  policies:\n    cost-labels: {action: deny}\n")
    npu = _pod({"limits": {"example.com/npu": 1}})
    nvidia = _pod({"limits": {"nvidia.com/gpu": 1}})
    assert evaluate([npu], custom, point="ci").denied
    assert not evaluate([nvidia], custom, point="ci").violations


def test_empty_label_list_turns_the_check_into_a_no_op() -> None:
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    cost-labels: {params: {labels: []}}\n")
    assert not evaluate([_pod({"limits": {"nvidia.com/gpu": 1}})], ps, point="ci").violations
