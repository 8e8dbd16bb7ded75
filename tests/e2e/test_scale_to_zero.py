"""gpu-scale-to-zero behind a real kube-apiserver with KEDA's ScaledObject CRD installed (keda.sh/v1alpha1, from
../shared/schemas/crds/keda): the webhook lists and watches ScaledObjects through its own read-only RBAC, warns
while no ScaledObject takes a GPU model server to zero, and is quiet once one does; `mlguard check --cluster-facts`
with a snapshot `mlguard facts` took (with the webhook's identity) agrees at each step."""

from __future__ import annotations

import json

import yaml
from conftest import Env, reload_policyset, wait_cached
from e2e_cluster import WEBHOOK_NAMESPACE
from e2e_objects import container, deployment, pod_template

POLICY = "gpu-scale-to-zero"


def scaled_object(name: str, namespace: str, *, min_replicas: int) -> dict:
    """keda.sh/v1alpha1 (https://keda.sh/docs/latest/reference/scaledobject-spec/), a cron trigger."""
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicaCount": min_replicas, "maxReplicaCount": 1,
                     "triggers": [{"type": "cron", "metadata": {"timezone": "UTC", "start": "0 7 * * 1-5",
                                                                "end": "0 20 * * 1-5", "desiredReplicas": "1"}}]}}


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:") and POLICY in line]


def ci_findings(env: Env, ns: str, server: dict) -> list[dict]:
    """`mlguard facts` with the webhook's read-only identity, then `mlguard check --cluster-facts` of the server
    alone (its ScaledObject is not in the checked set) with the served PolicySet: the gpu-scale-to-zero findings."""
    snapshot = env.workdir / f"facts-scale-{ns}.yaml"
    facts = env.mlguard("facts", "--kubeconfig", str(env.webhook.kubeconfig), "-o", str(snapshot))
    assert facts.ok, facts.output
    manifest = env.workdir / f"server-{ns}.yaml"
    manifest.write_text(yaml.safe_dump(server))
    ci = env.mlguard("check", "--format", "json", "--cluster-facts", str(snapshot), "--policyset",
                     str(env.policyset), str(manifest))
    assert ci.returncode in (0, 1), ci.output
    return [v for v in json.loads(ci.stdout)["violations"] if v["policy"] == POLICY]


def test_the_webhook_reads_scaledobjects_and_warns_until_one_scales_the_server_to_zero(env: Env, ns: str) -> None:
    sa = f"system:serviceaccount:{WEBHOOK_NAMESPACE}:mlguard-webhook"
    answer = env.admin.run("auth", "can-i", "watch", "scaledobjects.keda.sh", "-A", "--as", sa)
    assert answer.stdout.strip() == "yes", answer.output
    _, ready = env.webhook.get("/readyz")
    status = ready["cache"]["resources"]["scaledobjects"]
    assert status["synced"] and not status["absent"], status

    assert env.admin.run("label", "namespace", ns, "mlguard.io/environment=dev").ok
    wait_cached(env, "namespaces", env.admin.get("namespace", ns))
    server = deployment("llm", ns, template=pod_template("llm", container(), labels={
        "team": "search", "cost-center": "cc-1234", "mlguard.io/model": "mistral-7b"}))

    def on(spec: dict) -> None:
        spec["policies"][POLICY] = {"action": "deny", "match": {"environments": ["dev"]}}
        spec["policyCount"] = len(spec["policies"])

    with reload_policyset(env, on):
        first = env.alice.apply(server)
        assert first.ok, first.output   # admitted: its ScaledObject may come later in the same sync
        assert [f["action"] for f in ci_findings(env, ns, server)] == ["deny"]  # CI denies: none in the cluster
        (warning,) = warnings_of(first.stderr)
        assert warning.startswith(f"Warning: {POLICY}: spec.replicas: Deployment `llm` serves a model on GPUs and "
                                  "cannot scale to zero: no ScaledObject in the cluster targets it"), warning

        kept = env.admin.apply(scaled_object("llm", ns, min_replicas=1))
        assert kept.ok, kept.output
        wait_cached(env, "scaledobjects", env.admin.get("scaledobject", "llm", ns))
        server["metadata"]["annotations"] = {"e2e/revision": "2"}
        floor = env.alice.apply(server)
        assert floor.ok and "keeps at least 1 replica(s)" in " ".join(warnings_of(floor.stderr)), floor.output
        (held,) = ci_findings(env, ns, server)   # the cluster's ScaledObject, seen by CI through the snapshot
        assert "its ScaledObject `llm` keeps at least 1 replica(s)" in held["message"], held

        assert env.admin.apply(scaled_object("llm", ns, min_replicas=0)).ok
        wait_cached(env, "scaledobjects", env.admin.get("scaledobject", "llm", ns))
        server["metadata"]["annotations"] = {"e2e/revision": "3"}
        quiet = env.alice.apply(server)
        assert quiet.ok and warnings_of(quiet.stderr) == [], quiet.output
        assert ci_findings(env, ns, server) == []   # the ScaledObject lives only in the cluster: CI passes too
