"""The evaluation path shared by the CLI and the webhook."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policies.engine import evaluate, evaluate_object, new_violations
from policies.policyset import parse_policyset
from policies.registry import _REGISTRY, Policy

HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"


def pod(gpu_requests: int | None = None, gpu_limits: int | None = None, ns: str = "team-a") -> dict:
    res: dict = {}
    if gpu_requests is not None:
        res["requests"] = {"nvidia.com/gpu": gpu_requests}
    if gpu_limits is not None:
        res["limits"] = {"nvidia.com/gpu": gpu_limits}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
            "spec": {"containers": [{"name": "s", "image": "s", "resources": res}]}}


class Exploding(Policy):
    id = "test-exploding"
    title = "raises"

    def check(self, workload, params, ctx):
        raise RuntimeError("boom")


@pytest.fixture
def exploding():
    _REGISTRY[Exploding.id] = Exploding()
    yield
    del _REGISTRY[Exploding.id]


def test_a_policy_that_raises_denies_and_the_others_still_run(exploding) -> None:
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    test-exploding: {action: warn}\n    gpu-limits: {}\n")
    result = evaluate_object(pod(gpu_requests=1), ps, point="admission")
    assert result.errors == ["test-exploding"]
    failed = [v for v in result.violations if v.policy == "test-exploding"]
    assert failed[0].action == "deny" and "policy test-exploding failed: RuntimeError('boom')" in failed[0].message
    assert any(v.policy == "gpu-limits" for v in result.violations)


def test_exempt_namespaces_skip_everything() -> None:
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    gpu-limits: {}\n")
    report = evaluate([pod(gpu_requests=1, ns="kube-system")], ps, point="ci")
    assert not report.violations and report.exempt[0][1] == "namespace kube-system is always exempt"
    own = evaluate_object(pod(gpu_requests=1, ns="mlguard-system"), ps, point="admission",
                          own_namespace="mlguard-system")
    assert own.exempt_reason and not own.violations


def test_global_match_and_exclude() -> None:
    ps = parse_policyset(HEAD + "spec:\n  match: {namespaces: [team-*]}\n  exclude: [{namespaces: [team-legacy]}]\n"
                         "  policies:\n    gpu-limits: {}\n")
    assert evaluate([pod(gpu_requests=1)], ps, point="ci").denied
    assert not evaluate([pod(gpu_requests=1, ns="other")], ps, point="ci").violations
    assert not evaluate([pod(gpu_requests=1, ns="team-legacy")], ps, point="ci").violations


def test_only_new_violations_at_update() -> None:
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    gpu-limits: {onlyNewViolations: true}\n")
    old = evaluate_object(pod(gpu_requests=1), ps, point="admission")
    same = evaluate_object(pod(gpu_requests=1), ps, point="admission")
    assert old.violations and new_violations(same, old) == []       # an old violation does not block
    clean_old = evaluate_object(pod(gpu_limits=1), ps, point="admission")
    assert new_violations(same, clean_old) == same.violations        # a new one does


def test_quota_amounts_only_block_growth() -> None:
    from policies.engine import Evaluated
    from policies.model import Resource, Violation

    r = Resource("apps/v1", "Deployment", "ns", "d")

    def ev(n: int | None, identity: str = "needs # GPUs at full size") -> Evaluated:
        v = Violation("gpu-quota", "deny", r, "spec.replicas", f"needs {n} GPUs at full size", "x",
                      amount=None if n is None else Decimal(n), identity=identity)
        return Evaluated(r, [v], [], None, frozenset({"gpu-quota"}), [])

    assert new_violations(ev(12), ev(16)) == []          # scale-down: allowed
    assert new_violations(ev(16), ev(16)) == []          # unchanged: allowed
    assert len(new_violations(ev(20), ev(16))) == 1      # scale-up beyond: denied
    assert len(new_violations(ev(20), ev(None))) == 1    # an amount where there was none: new
    assert len(new_violations(ev(12), ev(16, identity="another finding"))) == 1  # another thing found: new


def test_a_container_growing_from_9_to_64_gpus_is_new() -> None:
    """Issue 14: onlyNewViolations matched by policy and path only, so a container with 9 GPUs (over the limit of
    8, admitted before the policy) could grow to 64 at UPDATE. The amount makes it new; shrinking stays old."""
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    gpu-limits: {onlyNewViolations: true, "
                         "params: {maxPerContainer: 8, maxPerPod: 128}}\n")
    nine, sixty_four, eight_plus = (evaluate_object(pod(gpu_limits=n), ps, point="admission") for n in (9, 64, 12))
    assert [v.amount for v in nine.violations] == [Decimal(9)]
    [grown] = new_violations(sixty_four, nine)
    assert grown.path == "spec.containers[0].resources.limits" and "asks for 64 nvidia.com/gpu" in grown.message
    assert new_violations(eight_plus, sixty_four) == []   # 64 -> 12: still over, but less: the UPDATE may pass
    assert new_violations(nine, nine) == []


def test_notes_are_not_violations() -> None:
    ps = parse_policyset(HEAD + "spec:\n  mutations: {tolerations: true}\n  policies:\n    gpu-tolerations: {}\n")
    report = evaluate([pod(gpu_limits=1)], ps, point="ci")
    assert not report.violations
    assert [n.message for n in report.notes] == ["toleration for nvidia.com/gpu:NoSchedule will be added at admission"]
    # the audit judges what was admitted already: no note about what admission will add, and no finding
    audited = evaluate([pod(gpu_limits=1)], ps, point="audit")
    assert not audited.violations and not audited.notes


def test_workload_ref_findings_name_the_deployment_once() -> None:
    from policies.context import ManifestFacts

    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ml"},
                  "spec": {"replicas": 0, "template": {"spec": pod(gpu_requests=1)["spec"]}}}
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r", "namespace": "ml"},
               "spec": {"replicas": 2, "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    gpu-limits: {}\n")
    report = evaluate([deployment, rollout], ps, point="ci", facts=ManifestFacts([deployment, rollout]))
    assert [str(v.resource) for v in report.violations] == ["Deployment/ml/web"]


def test_check_notes_every_mutation_admission_will_apply() -> None:
    ps = parse_policyset(HEAD + "spec:\n  mutations: {tolerations: true, defaultNodeClass: NVIDIA-L4, "
                         "runtimeClassName: nvidia}\n  policies:\n    gpu-tolerations: {}\n")
    report = evaluate([pod(gpu_limits=1)], ps, point="ci")
    assert not report.violations
    assert sorted((n.policy, n.message) for n in report.notes) == [
        ("gpu-tolerations", "toleration for nvidia.com/gpu:NoSchedule will be added at admission"),
        ("mutation", "nodeSelector nvidia.com/gpu.product=NVIDIA-L4 will be added at admission"),
        ("mutation", "runtimeClassName nvidia will be set at admission"),
    ]
    assert not evaluate([pod()], ps, point="ci").notes  # no GPU: nothing is mutated


@pytest.mark.parametrize(("action", "expected"), [
    ("{ci: 'off', admission: deny}", "deny"),        # the audit reports what admission would do
    ("{admission: warn, audit: 'off'}", None),       # unless the set says otherwise for the audit
    ("{ci: deny, admission: deny, audit: warn}", "warn"),
    ("{ci: warn}", "deny"),                          # a point not named is deny, as at ci and admission
    ("warn", "warn"),
])
def test_the_audit_point_takes_its_own_action_else_admissions(action: str, expected: str | None) -> None:
    ps = parse_policyset(HEAD + f"spec:\n  policies:\n    gpu-limits: {{action: {action}}}\n")
    got = evaluate_object(pod(gpu_requests=1), ps, point="audit").violations
    assert [v.action for v in got] == ([expected] if expected else [])


def test_at_the_audit_a_policy_that_raises_is_an_error_result_not_a_verdict(exploding) -> None:
    ps = parse_policyset(HEAD + "spec:\n  policies:\n    test-exploding: {action: warn}\n")
    [audited] = evaluate_object(pod(gpu_limits=1), ps, point="audit").violations
    [admitted] = evaluate_object(pod(gpu_limits=1), ps, point="admission").violations
    assert audited.error and not admitted.error and admitted.action == "deny"
    assert evaluate_object(pod(gpu_limits=1), ps, point="audit").checked == ("test-exploding",)
