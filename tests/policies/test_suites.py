"""Every policy's sample cases (policies/library/*/tests/suite.yaml) run through pytest too."""

from __future__ import annotations

import pytest

from policies.registry import all_policies
from policies.testing import LIBRARY, find_suites, run_all, run_suite

CONTROLLERS = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "Rollout",
               "InferenceService", "LeaderWorkerSet"}
RESULTS = run_all()


@pytest.mark.parametrize("result", RESULTS, ids=[f"{r.policy}:{r.name}" for r in RESULTS])
def test_case(result) -> None:
    assert result.ok, result.detail


@pytest.mark.parametrize("policy_id", sorted(all_policies()))
def test_every_policy_has_allowed_and_denied_cases_for_pods_and_three_controllers(policy_id: str) -> None:
    mine = [r for r in RESULTS if r.policy == policy_id]
    assert mine, f"{policy_id} has no sample cases under {LIBRARY}"
    deniable = all_policies()[policy_id].denies_kinds
    for expect in ("pass", "fail"):
        kinds = {k for r in mine if r.expect == expect for k in r.kinds}
        assert "Pod" in kinds, f"{policy_id}: no bare Pod case expecting {expect}"
        assert kinds & {"Rollout", "CronJob"}, f"{policy_id}: no Rollout or CronJob case expecting {expect}"
        if expect == "fail" and deniable is not None:
            # a policy that can deny only some kinds (gpu-job-deadline) has a denied case for each of them
            assert deniable <= kinds, f"{policy_id}: no denied case for {sorted(deniable - kinds)}"
        else:
            assert len(kinds & CONTROLLERS) >= 3, f"{policy_id}: {expect} cases cover only {sorted(kinds)}"


def test_every_kind_in_the_extractor_table_has_allowed_and_denied_cases() -> None:
    """Each kind the extractor knows (KServe, KubeRay, Kubeflow, Trainer, JobSet, Knative, Volcano, Argo
    Workflows, ...) is judged by some policy on an allowed and on a denied sample."""
    from policies.kinds import TABLE

    kinds = {kind for _, kind in TABLE}
    for expect in ("pass", "fail"):
        covered = {k for r in RESULTS if r.expect == expect for k in r.kinds}
        assert kinds <= covered, f"no {expect} case for {sorted(kinds - covered)}"


def test_a_wrong_expectation_is_reported(tmp_path) -> None:
    """The runner itself can fail: a denied sample marked `pass` is reported with the violation."""
    src = LIBRARY / "gpu_limits" / "tests"
    (tmp_path / "denied.yaml").write_text((src / "denied.yaml").read_text())
    (tmp_path / "suite.yaml").write_text(
        "policy: gpu-limits\ncases:\n  - {name: wrong, file: denied.yaml, resource: Pod/team-a/requests-only, "
        "expect: pass}\n")
    [result] = list(run_suite(tmp_path / "suite.yaml"))
    assert not result.ok
    assert "expected pass, got: gpu-limits: spec.containers[1].resources.limits" in result.detail


def test_suites_are_found_for_each_policy_dir() -> None:
    suites = find_suites(LIBRARY)
    dirs = {s.relative_to(LIBRARY).parts[0] for s in suites}
    packages = {p.name for p in LIBRARY.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= dirs, f"policy packages without a suite: {sorted(packages - dirs)}"
