"""What the webhook's cache must know, against the real API server: workloads for /scale and a
Rollout's workloadRef, RuntimeClasses, and only through the project's read-only RBAC."""

from __future__ import annotations

from conftest import QUOTA_GPUS, Env, eventually, reload_policyset, wait_cached
from e2e_cluster import WEBHOOK_SERVICE_ACCOUNT
from e2e_objects import container, deployment, pod, pod_template, rollout
from test_admission import DENIED, wait_pods_cached


def test_scale_beyond_the_quota_is_denied_sized_by_the_workload_template(env: Env, ns: str) -> None:
    """kubectl scale goes through the /scale subresource: the Scale has no pod template, the
    webhook sizes it by the Deployment's own (from its cache), with or without running pods."""
    assert env.alice.apply(deployment("web", ns, replicas=1)).ok
    wait_pods_cached(env, ns, "web", 1)
    wait_cached(env, "deployments", env.alice.get("deployment", "web", ns, quiet=True))

    too_many = env.alice.run("scale", "deployment", "web", "-n", ns, f"--replicas={QUOTA_GPUS + 2}")
    assert not too_many.ok
    assert DENIED in too_many.stderr and "gpu-quota" in too_many.stderr
    assert env.alice.get("deployment", "web", ns, quiet=True)["spec"]["replicas"] == 1

    fits = env.alice.run("scale", "deployment", "web", "-n", ns, "--replicas=3")
    assert fits.ok, fits.output

    # a Deployment with no pod at all (0 replicas): only its template can size the scale
    assert env.alice.apply(deployment("idle", ns, replicas=0, template=pod_template("idle", container(gpus=2)))).ok
    wait_cached(env, "deployments", env.alice.get("deployment", "idle", ns, quiet=True))
    idle = env.alice.run("scale", "deployment", "idle", "-n", ns, "--replicas=2")
    assert not idle.ok
    assert DENIED in idle.stderr and "gpu-quota" in idle.stderr and "Deployment `idle`" in idle.stderr


def test_rollout_workload_ref_resolved_at_admission(env: Env, ns: str) -> None:
    """A Rollout that takes its pod template from a Deployment (workloadRef) is judged on that
    template: its size against the quota, and what the template does."""
    assert env.alice.apply(deployment("llm-base", ns, replicas=0)).ok
    wait_cached(env, "deployments", env.alice.get("deployment", "llm-base", ns, quiet=True))
    big = env.alice.apply(rollout("llm", ns, replicas=QUOTA_GPUS + 1, workload_ref="llm-base"))
    assert not big.ok
    assert DENIED in big.stderr and "gpu-quota" in big.stderr and "Rollout `llm`" in big.stderr
    small = env.alice.apply(rollout("llm", ns, replicas=2, workload_ref="llm-base"))
    assert small.ok, small.output


def test_runtime_class_missing_warns_then_clears(env: Env, ns: str) -> None:
    """mutations.runtimeClassName naming a RuntimeClass the cluster lacks: the API server refuses
    every GPU Pod with a message that does not mention mlguard; the webhook says why in /readyz."""
    with reload_policyset(env, lambda spec: spec["mutations"].update({"runtimeClassName": "nvidia"})):
        _, ready = env.webhook.get("/readyz")
        assert ready["ready"] is True
        assert any(w.startswith("mutations.runtimeClassName sets runtimeClassName nvidia on GPU Pods, but the "
                                "cluster has no RuntimeClass nvidia") for w in ready.get("warnings", [])), ready
        refused = env.alice.apply(pod("gpu", ns, container()))
        assert not refused.ok
        assert 'RuntimeClass "nvidia" not found' in refused.stderr and "mlguard" not in refused.stderr
        assert env.webhook.metric("mlguard_runtimeclass_missing") == 1

        created = env.admin.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                   "metadata": {"name": "nvidia"}, "handler": "nvidia"})
        assert created.ok, created.output
        try:
            eventually(lambda: "warnings" not in env.webhook.get("/readyz")[1], what="the warning to clear")
            admitted = env.alice.apply(pod("gpu", ns, container()))
            assert admitted.ok, admitted.output
            assert env.alice.get("pod", "gpu", ns, quiet=True)["spec"]["runtimeClassName"] == "nvidia"
            assert env.webhook.metric("mlguard_runtimeclass_missing") == 0
        finally:
            env.admin.run("delete", "runtimeclass", "nvidia", quiet=True)


def test_the_webhook_reads_through_the_projects_read_only_rbac(env: Env) -> None:
    """The webhook's cache runs as its ServiceAccount, bound to kustomize/base/webhook/rbac.yaml:
    it lists what it caches (ConfigMaps and Nodes too) and can write nothing, nor read Secrets."""
    who = ["--as", WEBHOOK_SERVICE_ACCOUNT]
    for verb, resource, expected in (
            ("list", "pods", "yes"), ("watch", "deployments.apps", "yes"), ("list", "replicasets.apps", "yes"),
            ("list", "runtimeclasses.node.k8s.io", "yes"), ("get", "pods", "no"), ("create", "pods", "no"),
            ("list", "secrets", "no"), ("get", "secrets", "no"), ("list", "configmaps", "yes"),
            ("watch", "nodes", "yes"), ("get", "configmaps", "no"), ("patch", "deployments.apps", "no")):
        answer = env.admin.run("auth", "can-i", verb, resource, "-A", *who)
        assert answer.stdout.strip() == expected, (verb, resource, answer.output)
    _, ready = env.webhook.get("/readyz")
    resources = ready["cache"]["resources"]
    assert all(resources[r]["synced"] and not resources[r]["absent"]
               for r in ("namespaces", "pods", "resourcequotas", "deployments", "replicasets", "statefulsets",
                         "runtimeclasses", "nodes", "configmaps")), resources
    assert resources["resourceclaims"]["absent"]   # no resource.k8s.io in 1.20: synced without it
