"""gpu-job-deadline and gpu-priority-class beyond their samples: parameters and helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from policies.engine import evaluate_object
from policies.library.gpu_job_deadline import human_duration
from policies.policyset import parse_policyset


def policyset(policy: str, params: Mapping[str, Any] | None = None):
    return parse_policyset(yaml.safe_dump({
        "apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": "t"},
        "spec": {"policies": {policy: {"action": "deny", "params": dict(params or {})}}}}))


def job(**spec: Any) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "team-a"},
            "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "t", "image": "t", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}


def gpu_pod(**spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
            "spec": {**spec, "containers": [{"name": "s", "image": "s",
                                             "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59, "59s"), (3600, "1h"), (90061, "1d1h1m1s"),
                                               (604800, "7d")])
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(("params", "spec", "paths"), [
    ({}, {"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60}, []),
    ({"maxActiveDeadlineSeconds": 1800}, {"activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60},
     ["spec.activeDeadlineSeconds"]),
    ({"requireTtlSecondsAfterFinished": False}, {"activeDeadlineSeconds": 3600}, []),
    ({}, {"activeDeadlineSeconds": 0, "ttlSecondsAfterFinished": -1},
     ["spec.activeDeadlineSeconds", "spec.ttlSecondsAfterFinished"]),
    ({}, {"activeDeadlineSeconds": True, "ttlSecondsAfterFinished": 0}, ["spec.activeDeadlineSeconds"]),
])
def test_job_deadline_params(params: dict, spec: dict, paths: list[str]) -> None:
    result = evaluate_object(job(**spec), policyset("gpu-job-deadline", params), point="ci")
    assert [v.path for v in result.violations] == paths


def test_bare_pods_can_be_left_out() -> None:
    batch = gpu_pod(restartPolicy="Never")
    assert evaluate_object(batch, policyset("gpu-job-deadline"), point="ci").violations
    assert not evaluate_object(batch, policyset("gpu-job-deadline", {"checkBarePods": False}),
                               point="ci").violations


@pytest.mark.parametrize(("params", "spec", "expected"), [
    ({"globalDefault": "batch-low"}, {}, None),
    ({"globalDefault": "best-effort"}, {}, "gets the cluster default `best-effort`, which is not allowed here"),
    ({"allowed": []}, {"priorityClassName": "batch-low"},
     "to one of: (none: this namespace may not run GPU pods)"),
    ({"allowed": ["batch-low"]}, {"priorityClassName": "batch-low"}, None),
])
def test_priority_class_params(params: dict, spec: dict, expected: str | None) -> None:
    result = evaluate_object(gpu_pod(**spec), policyset("gpu-priority-class", params), point="ci")
    if expected is None:
        assert not result.violations
    else:
        [violation] = result.violations
        assert expected in violation.message and violation.path == "spec.priorityClassName"


def test_priority_class_params_are_validated() -> None:
    with pytest.raises(ValueError, match="allowed"):
        policyset("gpu-priority-class", {"allowed": "inference-high"})
