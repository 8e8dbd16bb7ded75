"""What a real kube-apiserver does with mlguard's answers: denials, warnings, mutations, break-glass."""

from __future__ import annotations

import json

import yaml
from conftest import QUOTA_GPUS, Env, eventually, wait_cached
from e2e_cluster import WEBHOOK_NAMESPACE, deployment_for_120, objects_of, render
from e2e_objects import GPU_TOLERATION, container, deployment, job, pod, pod_template, rollout

DENIED = 'admission webhook "validate.mlguard.io" denied the request'


def decisions_for(env: Env, namespace: str, kind: str) -> list[dict]:
    return [d for d in env.webhook.decisions() if d.get("namespace") == namespace and d.get("kind") == kind]


def pods_of(env: Env, namespace: str, app: str) -> list[dict]:
    return env.admin.items("pods", namespace, "-l", f"app={app}")


def wait_pods_cached(env: Env, namespace: str, app: str, count: int) -> list[dict]:
    pods = eventually(lambda: (p := pods_of(env, namespace, app)) and len(p) == count and p,
                      what=f"{count} pods of {app} made by the controllers")
    newest = max(pods, key=lambda p: int(p["metadata"]["resourceVersion"]))
    wait_cached(env, "pods", newest)
    return pods


def test_requests_only_gpus_denied_by_mlguard_for_a_custom_resource_by_the_api_server_for_builtins(
        env: Env, ns: str) -> None:
    """The API server's own validation refuses a non-overcommitable resource in requests only for the
    built-in kinds, before any validating webhook runs; for a custom resource only mlguard catches it."""
    crd = env.alice.apply(rollout("llm", ns, template=pod_template("llm", container(requests_only=True))))
    assert not crd.ok
    assert DENIED in crd.stderr
    assert "gpu-limits" in crd.stderr and "nvidia.com/gpu" in crd.stderr and "limits" in crd.stderr

    builtin = env.alice.apply(deployment("web", ns, template=pod_template("web", container(requests_only=True))))
    assert not builtin.ok
    assert builtin.stderr.count("* ") <= 1, builtin.stderr   # refused for this one reason
    assert "Limit must be set for non overcommitable resources" in builtin.stderr
    assert "mlguard" not in builtin.stderr
    # refused before validation webhooks: mlguard never saw the Deployment
    assert decisions_for(env, ns, "Rollout"), "the Rollout went through the webhook"
    assert not decisions_for(env, ns, "Deployment")


def test_quota_look_ahead_with_live_usage_denies_what_resourcequota_would_admit(env: Env, ns: str) -> None:
    """3 of the 4 GPUs are held by running pods: a second Deployment of 2 GPUs is denied at once.
    ResourceQuota alone admits the Deployment and leaves its ReplicaSet failing to create pods."""
    assert env.alice.apply(deployment("first", ns, replicas=3)).ok
    wait_pods_cached(env, ns, "first", 3)

    second = env.alice.apply(deployment("second", ns, replicas=2))
    assert not second.ok
    assert DENIED in second.stderr and "gpu-quota" in second.stderr
    assert f"{QUOTA_GPUS}" in second.stderr and "3" in second.stderr   # the quota and the live usage

    # the same Deployment in a namespace the PolicySet exempts (spec.exemptions.namespaces: "*-exempt"):
    # accepted, and the quota bites only when its ReplicaSet creates the pod that does not fit
    other = ns + "-exempt"
    env.admin.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
                     {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": other},
                      "spec": {"hard": {"requests.nvidia.com/gpu": str(QUOTA_GPUS)}}}])
    try:
        eventually(lambda: env.admin.get("resourcequota", "gpus", other, quiet=True).get("status", {}).get("hard"),
                   what="the quota controller to compute the opt-out namespace's quota")
        assert env.alice.apply(deployment("first", other, replicas=3)).ok
        eventually(lambda: len(pods_of(env, other, "first")) == 3, what="3 pods in the opt-out namespace")
        accepted = env.alice.apply(deployment("second", other, replicas=2))
        assert accepted.ok, accepted.output
        events = eventually(lambda: [e for e in env.admin.items("events", other)
                                     if e.get("reason") == "FailedCreate" and "exceeded quota" in e.get("message", "")],
                            what="a FailedCreate event of the ReplicaSet")
        env.admin.transcript.note(f"ReplicaSet event in {other}: {events[0]['message']}")
        assert len(pods_of(env, other, "second")) < 2
    finally:
        env.admin.run("delete", "namespace", other, "--wait=false", quiet=True)


def test_the_retired_namespace_opt_out_label_exempts_nothing(env: Env, ns: str) -> None:
    """mlguard.io/ignore=true on a namespace (anyone who may label a namespace can set it) no longer keeps mlguard
    away: the API server calls the webhook, the webhook judges, and kubectl shows a warning that says where
    exemptions live now."""
    env.admin.run("label", "namespace", ns, "mlguard.io/ignore=true", quiet=True)
    wait_cached(env, "namespaces", env.admin.get("namespace", ns, quiet=True))
    sneaky = pod_template("tool", container("tool", gpus=None, env={"NVIDIA_VISIBLE_DEVICES": "all"}))
    result = env.alice.apply(deployment("tool", ns, template=sneaky))
    assert not result.ok
    assert DENIED in result.stderr and "gpu-isolation" in result.stderr
    assert "carries mlguard.io/ignore=true, which no longer exempts it" in result.stderr, result.stderr
    assert "spec.exemptions.namespaces" in result.stderr


def test_gpu_isolation_deny_for_a_pod_reaching_gpus_it_did_not_request(env: Env, ns: str) -> None:
    """NVIDIA_VISIBLE_DEVICES=all in a container without a GPU: valid for the API server, denied by mlguard."""
    sneaky = pod_template("tool", container("tool", gpus=None, env={"NVIDIA_VISIBLE_DEVICES": "all"}))
    result = env.alice.apply(deployment("tool", ns, template=sneaky))
    assert not result.ok
    assert DENIED in result.stderr and "gpu-isolation" in result.stderr and "NVIDIA_VISIBLE_DEVICES" in result.stderr


def test_cpu_job_squatting_on_the_gpu_taint_denied(env: Env, ns: str) -> None:
    squatter = pod_template("etl", container("etl", gpus=None), tolerations=[GPU_TOLERATION])
    result = env.alice.apply(job("etl", ns, template=squatter))
    assert not result.ok
    assert DENIED in result.stderr and "gpu-tolerations" in result.stderr and "squat" in result.stderr


def test_warnings_shown_by_kubectl_on_apply_and_server_dry_run(env: Env, ns: str) -> None:
    """A GPU Deployment without cost labels: cost-labels warns. kubectl prints the API server's
    Warning headers on apply and on --dry-run=server; the dry run stores nothing."""
    unlabelled = deployment("web", ns, template=pod_template("web", labels=None))
    unlabelled["metadata"]["labels"] = {"app": "web"}
    dry = env.alice.apply(unlabelled, "--dry-run=server")
    assert dry.ok, dry.output
    assert any(w.startswith("cost-labels:") for w in dry.warnings), dry.stderr
    assert "(server dry run)" in dry.stdout
    assert not env.alice.run("get", "deployment", "web", "-n", ns).ok

    real = env.alice.apply(unlabelled)
    assert real.ok, real.output
    assert [w for w in real.warnings if w.startswith("cost-labels:")] == \
        [w for w in dry.warnings if w.startswith("cost-labels:")]
    assert env.alice.get("deployment", "web", ns)["metadata"]["name"] == "web"


def test_stored_pods_carry_the_mutation_bare_and_controller_made(env: Env, ns: str) -> None:
    """GPU pods get the GPU toleration at admission: a Pod a user creates, and the pods the
    ReplicaSet controller creates for a Deployment (whose own template stays as applied)."""
    assert env.alice.apply(pod("bare", ns, container())).ok
    stored = env.alice.get("pod", "bare", ns)
    assert GPU_TOLERATION in stored["spec"]["tolerations"]

    assert env.alice.apply(deployment("served", ns, replicas=2)).ok
    made = wait_pods_cached(env, ns, "served", 2)
    for p in made:
        assert p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert GPU_TOLERATION in p["spec"]["tolerations"], json.dumps(p["spec"])
    template = env.alice.get("deployment", "served", ns)["spec"]["template"]["spec"]
    assert GPU_TOLERATION not in (template.get("tolerations") or [])   # workloads are never mutated
    mutated = [d for d in decisions_for(env, ns, "Pod") if d.get("endpoint") == "mutate" and d.get("patched")]
    assert {d["user"] for d in mutated} >= {"alice", "system:kube-controller-manager"}


def test_break_glass_honoured_for_the_group_only_and_audited(env: Env, ns: str) -> None:
    reason = "INC-4711 restore the embedding service"
    tpl = pod_template("tool", container("tool", gpus=None, env={"NVIDIA_VISIBLE_DEVICES": "all"}))
    obj = deployment("tool", ns, template=tpl, annotations={"mlguard.io/break-glass": reason})

    outsider = env.alice.apply(obj)
    assert not outsider.ok
    assert "gpu-isolation" in outsider.stderr
    assert "break-glass annotation mlguard.io/break-glass ignored: user alice is not in a break-glass group" \
        in outsider.stderr

    oncall = env.oncall.apply(obj)
    assert oncall.ok, oncall.output
    assert any(w.startswith("break-glass by bob: denied by gpu-isolation but allowed") for w in oncall.warnings)

    def audited() -> list[dict]:
        return [e for e in env.cp.audit_events()
                if (e.get("objectRef") or {}).get("namespace") == ns and e.get("verb") == "create"
                and (e.get("objectRef") or {}).get("resource") == "deployments"
                and e.get("stage") == "ResponseComplete"]
    events = eventually(audited, what="the audit event of the Deployment's creation")
    annotations = events[-1].get("annotations") or {}
    env.admin.transcript.note(f"audit annotations: {json.dumps(annotations)}")
    assert annotations.get("validate.mlguard.io/break-glass") == \
        f"user bob lifted gpu-isolation: {reason}"
    assert events[-1]["user"]["username"] == "bob"


def test_analysis_provider_untouched(env: Env) -> None:
    """The analysis provider's own objects, from the prod overlay, go into mlguard's namespace:
    admitted as exempt, its controller-made pods not mutated.

    On 1.20 they first meet the API's schema: kustomize/base targets Kubernetes 1.30+ (preStop
    ``sleep``, ``matchLabelKeys``), which kubectl's validation against a 1.20 server refuses; the
    server, with validation off, drops ``sleep`` and then refuses the empty preStop handler. With
    those two 1.30 fields removed (`deployment_for_120`) the objects go in."""
    prod = render("overlays/prod")
    objects = [o for o in objects_of(prod, "ServiceAccount", "Service", "ConfigMap", "Deployment")
               if "analysis" in o["metadata"]["name"]]
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Service", "ConfigMap", "Deployment"}
    strict = env.admin.apply(objects)
    assert not strict.ok and 'unknown field "sleep"' in strict.stderr and "matchLabelKeys" in strict.stderr
    unvalidated = env.admin.apply(objects, "--validate=false")
    assert not unvalidated.ok and "preStop: Required value: must specify a handler type" in unvalidated.stderr
    result = env.admin.apply([deployment_for_120(o) if o["kind"] == "Deployment" else o for o in objects])
    assert result.ok, result.output
    selector = objects_of(objects, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    pods = eventually(lambda: env.admin.items("pods", WEBHOOK_NAMESPACE, "-l", labels),
                      what="the analysis provider's pods")
    for p in pods:
        assert GPU_TOLERATION not in (p["spec"].get("tolerations") or [])
    # 1.20 sets no kubernetes.io/metadata.name label, so the API server calls the webhook for its own namespace;
    # the webhook exempts it (no namespace label opts out any more)
    own = [d for d in env.webhook.decisions() if d.get("namespace") == WEBHOOK_NAMESPACE]
    assert all(d["allowed"] and "exempt" in (d.get("reason") or "") for d in own), own


def test_kube_system_reaches_the_webhook_on_120_and_is_exempted_by_mlguard(env: Env) -> None:
    """kube-system has no kubernetes.io/metadata.name label before 1.21, so the shipped
    namespaceSelector does not keep it away: only the PolicySet's own exemption protects it."""
    labels = env.admin.get("namespace", "kube-system")["metadata"].get("labels") or {}
    assert "kubernetes.io/metadata.name" not in labels
    tool = pod("node-debug", "kube-system", container("debug", gpus=None, env={"NVIDIA_VISIBLE_DEVICES": "all"}))
    result = env.admin.apply(tool)
    assert result.ok, result.output
    seen = [d for d in env.webhook.decisions() if d.get("namespace") == "kube-system" and d.get("kind") == "Pod"]
    assert {d["endpoint"] for d in seen} == {"validate", "mutate"}, seen
    assert all(d["allowed"] and "exempt" in (d.get("reason") or "") for d in seen), seen
    env.admin.run("delete", "pod", "node-debug", "-n", "kube-system", "--wait=false", quiet=True)


def test_mlguard_facts_reads_the_live_cluster_and_ci_agrees_with_admission(env: Env, ns: str) -> None:
    """`mlguard facts`, with the webhook's own read-only identity, snapshots the live cluster; with that
    snapshot `mlguard check` (CI) denies the Deployment that admission denies, for the same live usage."""
    assert env.alice.apply(deployment("first", ns, replicas=3)).ok
    wait_pods_cached(env, ns, "first", 3)
    snapshot = env.workdir / f"facts-{ns}.yaml"
    facts = env.mlguard("facts", "--kubeconfig", str(env.webhook.kubeconfig), "-o", str(snapshot))
    assert facts.ok, facts.output
    data = yaml.safe_load(snapshot.read_text())
    assert {"name": ns, "labels": {}} in [{"name": n["name"], "labels": n.get("labels") or {}}
                                         for n in data["namespaces"]]
    assert [q["spec"]["hard"] for q in data["resourceQuotas"] if q["metadata"]["namespace"] == ns] == \
        [{"requests.nvidia.com/gpu": str(QUOTA_GPUS)}]
    assert len([p for p in data["pods"] if p["metadata"]["namespace"] == ns]) == 3
    # the owner chain as kube-controller-manager wrote it: each pod -> its ReplicaSet (by uid) -> Deployment `first`
    owners = {(o["kind"], o["metadata"]["name"]): o for o in data["owners"] if o["metadata"]["namespace"] == ns}
    rs_uids = {o["metadata"]["uid"] for (kind, _), o in owners.items() if kind == "ReplicaSet"
               and o["metadata"]["ownerReferences"][0]["uid"] == owners[("Deployment", "first")]["metadata"]["uid"]}
    assert rs_uids and all(p["metadata"]["uid"] and p["metadata"]["ownerReferences"][0]["uid"] in rs_uids
                           for p in data["pods"] if p["metadata"]["namespace"] == ns)
    assert isinstance(data["scaledObjects"], list) and "unavailable" not in data  # the webhook's RBAC lists them all

    second = deployment("second", ns, replicas=2)
    manifest = env.workdir / f"second-{ns}.yaml"
    manifest.write_text(yaml.safe_dump(second))
    ci = env.mlguard("check", str(manifest), "--cluster-facts", str(snapshot),
                     "--policyset", str(env.policyset))
    assert ci.returncode == 1, ci.output
    admission = env.alice.apply(second)
    assert not admission.ok and DENIED in admission.stderr
    ci_quota = [line for line in ci.stdout.splitlines() if "gpu-quota" in line]
    assert ci_quota, ci.stdout
    # the same finding in both places: the workload at full size against the quota and the live usage
    assert "Deployment `second` needs 3 nvidia.com/gpu" in ci.stdout and \
        "Deployment `second` needs 3 nvidia.com/gpu" in admission.stderr
