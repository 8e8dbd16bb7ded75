"""Safety properties of the rendered ValidatingWebhookConfiguration / MutatingWebhookConfiguration."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kustomize_testlib import NAMESPACE, Obj, Renders, find, labels_match, one

EXPECTED_FAILURE_POLICY = {"dev": "Ignore", "staging": "Fail", "prod": "Fail"}
MAX_TIMEOUT_S = 5
# Worst case for one API request: the mutating webhook may be called twice (reinvocation),
# the validating webhook once. The API server's own request timeout is 60 s by default.
MAX_TOTAL_BUDGET_S = 10

EXPECTED_VALIDATING_RESOURCES = {
    ("", "pods"), ("", "pods/ephemeralcontainers"), ("", "resourcequotas"),
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("apps", "deployments/scale"), ("apps", "replicasets/scale"), ("apps", "statefulsets/scale"),
    ("batch", "jobs"), ("batch", "cronjobs"),
    ("argoproj.io", "rollouts"), ("argoproj.io", "rollouts/scale"),
    ("serving.kserve.io", "inferenceservices"),
    ("leaderworkerset.x-k8s.io", "leaderworkersets"), ("leaderworkerset.x-k8s.io", "leaderworkersets/scale"),
    ("serving.kserve.io", "llminferenceservices"), ("serving.kserve.io", "llminferenceserviceconfigs"),
    ("serving.kserve.io", "servingruntimes"),
    ("ray.io", "rayclusters"), ("ray.io", "rayservices"), ("ray.io", "rayjobs"),
    ("kubeflow.org", "pytorchjobs"), ("kubeflow.org", "tfjobs"), ("kubeflow.org", "mpijobs"),
    ("kubeflow.org", "paddlejobs"), ("kubeflow.org", "xgboostjobs"), ("kubeflow.org", "jaxjobs"),
    ("trainer.kubeflow.org", "trainjobs"), ("trainer.kubeflow.org", "trainingruntimes"),
    ("jobset.x-k8s.io", "jobsets"), ("serving.knative.dev", "services"), ("serving.knative.dev", "configurations"),
    ("batch.volcano.sh", "jobs"), ("argoproj.io", "workflows"), ("argoproj.io", "workflowtemplates"),
    ("argoproj.io", "cronworkflows"),
}


def webhooks(objs: list[Obj]) -> list[tuple[str, Obj]]:
    out = []
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        out += [(kind, hook) for hook in one(objs, kind, "mlguard")["webhooks"]]
    return out


def covered(hook: Obj) -> set[tuple[str, str]]:
    return {(group, resource) for rule in hook["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"]}


def test_both_configurations_have_one_webhook_each(renders: Renders, overlay: str) -> None:
    objs = renders(f"kustomize/overlays/{overlay}")
    assert len(one(objs, "ValidatingWebhookConfiguration", "mlguard")["webhooks"]) == 1
    assert len(one(objs, "MutatingWebhookConfiguration", "mlguard")["webhooks"]) == 1


def test_failure_policy_per_overlay(renders: Renders, overlay: str) -> None:
    for kind, hook in webhooks(renders(f"kustomize/overlays/{overlay}")):
        assert hook["failurePolicy"] == EXPECTED_FAILURE_POLICY[overlay], (overlay, kind)


def test_protocol_settings(renders: Renders, overlay: str) -> None:
    for kind, hook in webhooks(renders(f"kustomize/overlays/{overlay}")):
        assert hook["admissionReviewVersions"] == ["v1"], kind
        assert hook["sideEffects"] in ("None", "NoneOnDryRun"), kind
        assert hook["matchPolicy"] == "Equivalent", kind
        assert 1 <= hook["timeoutSeconds"] <= MAX_TIMEOUT_S, kind
        assert "url" not in hook["clientConfig"], "the webhook is reached through its Service"
        service = hook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service.get("port", 443)) == (
            "mlguard-webhook", NAMESPACE, 443)
        expected_path = "/validate" if kind.startswith("Validating") else "/mutate"
        assert service["path"] == expected_path
        assert hook["name"].endswith(".mlguard.io")


def test_timeouts_stay_well_under_the_api_server_budget(renders: Renders, overlay: str) -> None:
    objs = renders(f"kustomize/overlays/{overlay}")
    mutating = one(objs, "MutatingWebhookConfiguration", "mlguard")["webhooks"]
    validating = one(objs, "ValidatingWebhookConfiguration", "mlguard")["webhooks"]
    worst = 2 * sum(h["timeoutSeconds"] for h in mutating) + sum(h["timeoutSeconds"] for h in validating)
    assert worst <= MAX_TOTAL_BUDGET_S


def test_mutation_is_pods_at_create_only_and_reinvoked(renders: Renders, overlay: str) -> None:
    hook = one(renders(f"kustomize/overlays/{overlay}"), "MutatingWebhookConfiguration", "mlguard")["webhooks"][0]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert covered(hook) == {("", "pods")}
    assert [r["operations"] for r in hook["rules"]] == [["CREATE"]]
    assert all(r["scope"] == "Namespaced" for r in hook["rules"])


def test_validation_rules_cover_every_workload_kind_and_only_namespaced(
    renders: Renders, overlay: str,
) -> None:
    hook = one(renders(f"kustomize/overlays/{overlay}"), "ValidatingWebhookConfiguration", "mlguard")["webhooks"][0]
    assert covered(hook) == EXPECTED_VALIDATING_RESOURCES
    for rule in hook["rules"]:
        assert rule["scope"] == "Namespaced"
        assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["apiVersions"]


# ---------------------------------------------------------------------------------------------
# namespaceSelector: kube-system and mlguard's own namespace can never be selected


def selectors(objs: list[Obj]) -> list[dict]:
    return [hook["namespaceSelector"] for _, hook in webhooks(objs)]


@pytest.mark.parametrize("protected", ["kube-system", NAMESPACE, "cert-manager"])
def test_namespace_selector_never_selects_protected_namespaces(
    renders: Renders, overlay: str, protected: str,
) -> None:
    for selector in selectors(renders(f"kustomize/overlays/{overlay}")):
        # The exemption must be by the immutable name label, not by a label someone can remove.
        assert any(e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
                   and protected in e["values"] for e in selector.get("matchExpressions", []))
        assert not labels_match(selector, {"kubernetes.io/metadata.name": protected})


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(
    st.sampled_from(["mlguard.io/ignore", "mlguard.io/environment", "team", "a", "kubernetes.io/os"]),
    st.sampled_from(["true", "false", "", "dev", "prod", "x"]), max_size=4))
def test_protected_namespaces_stay_unselected_whatever_their_other_labels(
    renders: Renders, extra: dict[str, str],
) -> None:
    for overlay in ("dev", "prod"):
        for selector in selectors(renders(f"kustomize/overlays/{overlay}")):
            for protected in ("kube-system", NAMESPACE, "cert-manager"):
                assert not labels_match(selector, {**extra, "kubernetes.io/metadata.name": protected})


def test_team_namespaces_are_selected_whatever_their_labels(renders: Renders, overlay: str) -> None:
    """No namespace label opts out (issue 14: the retired mlguard.io/ignore could be set by anyone who may label a
    namespace); the PolicySet's spec.exemptions.namespaces is the one list of exempt namespaces."""
    teams = find(renders("kustomize/examples/gpu-platform"), "Namespace")
    assert teams
    for selector in selectors(renders(f"kustomize/overlays/{overlay}")):
        assert [e["key"] for e in selector.get("matchExpressions", [])] == ["kubernetes.io/metadata.name"]
        assert not selector.get("matchLabels")
        for ns in teams:
            # The API server sets kubernetes.io/metadata.name on every namespace.
            labels = {**ns["metadata"]["labels"], "kubernetes.io/metadata.name": ns["metadata"]["name"]}
            assert labels_match(selector, labels), ns["metadata"]["name"]
            assert labels_match(selector, {**labels, "mlguard.io/ignore": "true"})


def test_own_namespace_object_carries_no_opt_out_label(renders: Renders) -> None:
    ns = one(renders("kustomize/overlays/prod"), "Namespace", NAMESPACE)
    assert "mlguard.io/ignore" not in ns["metadata"]["labels"]


# ---------------------------------------------------------------------------------------------
# matchConditions, evaluated with a real CEL interpreter


def _user(username: str, groups: list[str] | None = None) -> dict:
    info: dict = {"username": username}
    if groups is not None:
        info["groups"] = groups
    return info


def _pod(owner_kind: str | None = None) -> dict:
    meta: dict = {"name": "p", "namespace": "team-a"}
    if owner_kind:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "o", "uid": "1",
                                   "controller": True, "blockOwnerDeletion": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}


def _matches(hook: Obj, user: dict, obj: dict, *, operation: str = "CREATE",
             resource: tuple[str, str] = ("", "pods"), sub_resource: str = "") -> bool:
    """True when every matchCondition holds, i.e. the API server would call the webhook."""
    import celpy  # cel-python, a test dependency: evaluates the matchConditions as the API server would
    env = celpy.Environment()
    group, name = resource
    request = {"userInfo": user, "operation": operation,
               "resource": {"group": group, "version": "v1", "resource": name}, "subResource": sub_resource}
    activation = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj)}
    results = []
    for condition in hook.get("matchConditions", []):
        program = env.program(env.compile(condition["expression"]))
        result = program.evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), (condition["name"], result)
        results.append(bool(result))
    return all(results)


NODE = _user("system:node:gpu-node-1", ["system:nodes", "system:authenticated"])
CONTROLLER_MANAGER = _user("system:kube-controller-manager", ["system:authenticated"])
SCHEDULER = _user("system:kube-scheduler", ["system:authenticated"])
KUBE_SYSTEM_SA = _user("system:serviceaccount:kube-system:generic-garbage-collector",
                       ["system:serviceaccounts", "system:serviceaccounts:kube-system"])
RS_CONTROLLER = _user("system:serviceaccount:kube-system:replicaset-controller",
                      ["system:serviceaccounts", "system:serviceaccounts:kube-system"])
ARGOCD = _user("system:serviceaccount:argocd:argocd-application-controller",
               ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"])
ROLLOUTS = _user("system:serviceaccount:argo-rollouts:argo-rollouts", ["system:serviceaccounts"])
FLAGGER = _user("system:serviceaccount:flagger-system:flagger", ["system:serviceaccounts"])
OTHER_ROLLOUTS_SA = _user("system:serviceaccount:argo-rollouts:dashboard", ["system:serviceaccounts"])
HUMAN = _user("alice@example.com", ["platform", "system:authenticated"])
NO_GROUPS = _user("bob@example.com")


@pytest.mark.parametrize("user,called", [
    (NODE, False), (CONTROLLER_MANAGER, False), (SCHEDULER, False), (KUBE_SYSTEM_SA, False),
    (RS_CONTROLLER, False), (ARGOCD, True), (ROLLOUTS, True), (HUMAN, True), (NO_GROUPS, True),
], ids=["node", "controller-manager", "scheduler", "kube-system-sa", "replicaset-controller", "argocd",
        "argo-rollouts", "human", "no-groups"])
def test_validating_match_conditions(renders: Renders, user: dict, called: bool) -> None:
    hook = one(renders("kustomize/overlays/prod"), "ValidatingWebhookConfiguration", "mlguard")["webhooks"][0]
    assert _matches(hook, user, _pod()) is called


@pytest.mark.parametrize("user,owner,called", [
    (NODE, None, False),                      # mirror pods of static pods
    (SCHEDULER, None, False),
    (KUBE_SYSTEM_SA, None, False),
    (RS_CONTROLLER, "ReplicaSet", True),      # Deployment / Rollout pods must be mutated
    (CONTROLLER_MANAGER, "Job", True),        # controllers sharing the manager's identity
    (CONTROLLER_MANAGER, "DaemonSet", False),  # node infrastructure starts before mlguard can
    (_user("system:serviceaccount:kube-system:daemon-set-controller"), "DaemonSet", False),
    (HUMAN, None, True),
    (HUMAN, "DaemonSet", True),               # an owner reference the tenant wrote itself skips nothing
    (ARGOCD, "DaemonSet", True),
    (RS_CONTROLLER, "DaemonSet", True),
], ids=["node", "scheduler", "kube-system-sa", "replicaset-pod", "job-pod-shared-identity",
        "daemonset-pod", "daemonset-controller", "human-pod", "forged-daemonset-owner", "argocd-forged-owner",
        "rs-controller-daemonset-owner"])
def test_mutating_match_conditions(renders: Renders, user: dict, owner: str | None, called: bool) -> None:
    hook = one(renders("kustomize/overlays/prod"), "MutatingWebhookConfiguration", "mlguard")["webhooks"][0]
    assert _matches(hook, user, _pod(owner)) is called


def test_match_conditions_are_identical_across_overlays(renders: Renders) -> None:
    seen = {
        overlay: [(kind, hook.get("matchConditions"), hook["namespaceSelector"])
                  for kind, hook in webhooks(renders(f"kustomize/overlays/{overlay}"))]
        for overlay in ("dev", "staging", "prod")
    }
    assert seen["dev"] == seen["staging"] == seen["prod"]


def _workload(kind: str, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w", "namespace": "team-a",
                                                                 "labels": labels or {}}}


@pytest.mark.parametrize(("user", "operation", "resource", "sub", "called"), [
    # aborts and rollbacks are UPDATEs of ReplicaSets (Argo Rollouts) and Deployments (Flagger)
    (ROLLOUTS, "UPDATE", ("apps", "replicasets"), "", False),
    (ROLLOUTS, "UPDATE", ("apps", "replicasets"), "scale", False),
    (ROLLOUTS, "UPDATE", ("apps", "deployments"), "", False),  # workloadRef scale-down
    (FLAGGER, "UPDATE", ("apps", "deployments"), "", False),  # promotion, scale to zero
    (FLAGGER, "UPDATE", ("apps", "deployments"), "scale", False),
    # what stays validated
    (ROLLOUTS, "CREATE", ("apps", "replicasets"), "", True),  # a new canary ReplicaSet
    (FLAGGER, "CREATE", ("apps", "deployments"), "", True),  # the primary Deployment
    (ROLLOUTS, "UPDATE", ("apps", "statefulsets"), "", True),
    (ROLLOUTS, "UPDATE", ("argoproj.io", "rollouts"), "", True),
    (OTHER_ROLLOUTS_SA, "UPDATE", ("apps", "replicasets"), "", True),
    (HUMAN, "UPDATE", ("apps", "replicasets"), "scale", True),
    (ARGOCD, "UPDATE", ("apps", "deployments"), "", True),
], ids=["rollouts-rs", "rollouts-rs-scale", "rollouts-deploy", "flagger-deploy", "flagger-deploy-scale",
        "rollouts-rs-create", "flagger-deploy-create", "rollouts-sts", "rollouts-rollout", "other-sa-in-ns",
        "human-scale", "argocd-update"])
def test_progressive_delivery_controllers_update_without_the_webhook(
    renders: Renders, user: dict, operation: str, resource: tuple[str, str], sub: str, called: bool,
) -> None:
    """An mlguard outage (failurePolicy Fail) must not block an abort or a rollback; the exemption is
    by authenticated username, so no object (labels, owner references) can claim it."""
    hook = one(renders("kustomize/overlays/prod"), "ValidatingWebhookConfiguration", "mlguard")["webhooks"][0]
    kind = {"replicasets": "ReplicaSet", "deployments": "Deployment", "statefulsets": "StatefulSet",
            "rollouts": "Rollout"}[resource[1]]
    claims = {"app.kubernetes.io/managed-by": "argo-rollouts", "rollouts-pod-template-hash": "abc"}
    assert _matches(hook, user, _workload(kind, claims), operation=operation, resource=resource,
                    sub_resource=sub) is called
