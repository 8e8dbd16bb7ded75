"""Real AdmissionReviews against gunicorn over TLS (2 workers), cluster cache on the fake API.

Pods, Deployments, Rollouts and CronJobs; CREATE, UPDATE with oldObject, the scale subresource,
dryRun; exact responses, patches applied with jsonpatch, warnings, audit annotations, metrics.
"""

from __future__ import annotations

import copy
import http.client
import json
import ssl
import time

import jsonpatch
import pytest
from webhook_testlib import (
    COST,
    TEST_POLICYSET,
    WebhookServer,
    container,
    cronjob,
    deployment,
    metric,
    patch_of,
    pod,
    pod_spec,
    review,
    rollout,
    scale_review,
    too_many,
)

from policies.engine import evaluate_object
from policies.policyset import load_policyset

pytestmark = pytest.mark.integration
POLICYSET = load_policyset(TEST_POLICYSET)


def expected_denial(obj: dict, policy: str = "gpu-limits") -> str:
    """The message the CLI's evaluation path gives for ``policy`` (one evaluation path)."""
    result = evaluate_object(obj, POLICYSET, point="admission")
    return "\n".join(v.line() for v in result.violations if v.action == "deny" and v.policy == policy)


def limits_lines(resp: dict) -> str:
    """The gpu-limits lines of a denial (a 9-GPU pod may also be over the quota)."""
    return "\n".join(line for line in resp["status"]["message"].split("\n") if line.startswith("gpu-limits: "))


def test_pod_create_denied_with_every_violation_listed(server: WebhookServer) -> None:
    bad = pod("trainer", spec=pod_spec(too_many("a"), container("b", gpus=12)))
    body = review(bad)
    resp = server.admit("/validate", body)
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 403
    lines = limits_lines(resp).split("\n")
    assert limits_lines(resp) == expected_denial(bad)
    assert len(lines) >= 2
    assert lines[0].startswith("gpu-limits: spec.containers[0].resources.limits: ")
    assert lines[0].endswith("(https://github.com/mlguard/mlguard/blob/main/runbooks/admission-denied.md#gpu-limits)")
    assert any(line.startswith("gpu-limits: spec.containers[1].resources.limits") for line in lines)


def test_deployment_allowed_with_warning_and_audit_annotation(server: WebhookServer) -> None:
    spec = pod_spec(container("server", gpus=1, companions=False))
    dep = deployment("web", replicas=2, spec=spec, labels={})
    resp = server.admit("/validate", review(dep))
    assert resp["allowed"] is True
    assert "status" not in resp
    assert len(resp["warnings"]) == 1
    warning = resp["warnings"][0]
    assert warning.startswith("gpu-companion-resources: spec.template.spec.containers[0].resources: ")
    assert len(warning) <= 256
    assert set(resp["auditAnnotations"]) == {"cost-labels"}
    assert resp["auditAnnotations"]["cost-labels"].startswith("spec.template.metadata.labels: ")
    assert "patch" not in resp


def test_clean_deployment_is_allowed_plainly(server: WebhookServer) -> None:
    resp = server.admit("/validate", review(deployment("clean", replicas=2)))
    assert resp == {"uid": resp["uid"], "allowed": True}


@pytest.mark.parametrize(("make", "path"), [
    (rollout, "spec.template.spec.containers[0].resources.limits"),
    (cronjob, "spec.jobTemplate.spec.template.spec.containers[0].resources.limits"),
    (deployment, "spec.template.spec.containers[0].resources.limits"),
])
def test_controllers_denied_at_their_template_path(server: WebhookServer, make, path: str) -> None:
    obj = make(spec=pod_spec(too_many("server")))
    resp = server.admit("/validate", review(obj))
    assert resp["allowed"] is False
    assert limits_lines(resp) == expected_denial(obj)
    assert resp["status"]["message"].startswith(f"gpu-limits: {path}: ")


def test_custom_resource_with_gpus_in_requests_only_is_denied(server: WebhookServer) -> None:
    """For a custom resource the API server does not validate the pod template: mlguard's deny for a
    GPU in requests only is the one that fires (for a Pod or a Deployment the API server refuses it
    before any webhook, see tests/e2e)."""
    obj = rollout(spec=pod_spec(container("server", gpus=None, requests_gpus=1)))
    resp = server.admit("/validate", review(obj))
    assert resp["allowed"] is False
    assert resp["status"]["message"] == expected_denial(obj)
    assert resp["status"]["message"].startswith("gpu-limits: spec.template.spec.containers[0].resources.limits: "
                                                "container `server` sets nvidia.com/gpu in requests (1) but not in "
                                                "limits")


def test_update_is_not_blocked_by_an_old_violation(server: WebhookServer) -> None:
    old = deployment("legacy", spec=pod_spec(too_many("server")))
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["release"] = "2"
    new["spec"]["replicas"] = 1  # a scale-down and a label change
    resp = server.admit("/validate", review(new, operation="UPDATE", old=old))
    assert resp["allowed"] is True, resp
    # the same object at CREATE is denied: the old violation is what UPDATE forgave
    assert server.admit("/validate", review(new))["allowed"] is False


def test_update_that_adds_a_violation_is_denied_for_the_new_one_only(server: WebhookServer) -> None:
    old = deployment("legacy", spec=pod_spec(too_many("server")))
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"].append(container("sidecar", gpus=10))
    resp = server.admit("/validate", review(new, operation="UPDATE", old=old))
    assert resp["allowed"] is False
    lines = resp["status"]["message"].split("\n")
    # the sidecar's own limit (and what it adds to the pod and the quota), never the old containers[0]
    assert any("containers[1]" in line for line in lines), lines
    assert not any("containers[0]" in line for line in lines), lines


def test_dry_run_request_is_evaluated_the_same(server: WebhookServer) -> None:
    bad = pod("dry", spec=pod_spec(too_many("a")))
    wet = server.admit("/validate", review(bad))
    dry = server.admit("/validate", review(bad, dry_run=True))
    assert dry["allowed"] is wet["allowed"] is False
    assert dry["status"] == wet["status"]


def test_delete_connect_and_status_are_allowed(server: WebhookServer) -> None:
    bad = pod("gone", spec=pod_spec(too_many("a")))
    assert server.admit("/validate", review(None, operation="DELETE", old=bad))["allowed"] is True
    status_update = review(bad, operation="UPDATE", old=bad, subresource="status")
    assert server.admit("/validate", status_update)["allowed"] is True


@pytest.mark.parametrize("namespace", ["mlguard-system", "kube-system", "exempt-lab"])
def test_exempt_namespaces(server: WebhookServer, namespace: str) -> None:
    bad = pod("x", namespace=namespace, spec=pod_spec(too_many("a")))
    resp = server.admit("/validate", review(bad))
    assert resp == {"uid": resp["uid"], "allowed": True}


def test_break_glass_from_a_member_allows_and_audits(server: WebhookServer) -> None:
    bad = pod("urgent", spec=pod_spec(too_many("a")),
              annotations={"mlguard.io/break-glass": "INC-4711 restore serving"})
    before = server.metrics()
    body = review(bad, user="oncall-bob", groups=("platform-oncall",))
    resp = server.admit("/validate", body)
    assert resp["allowed"] is True
    assert resp["warnings"][0].startswith("break-glass by oncall-bob: denied by gpu-limits but allowed")
    assert any(w.startswith("gpu-limits: spec.containers[0].resources.limits") for w in resp["warnings"])
    assert resp["auditAnnotations"]["break-glass"] == "user oncall-bob lifted gpu-limits: INC-4711 restore serving"
    after = server.metrics()
    assert metric(after, "mlguard_break_glass_total", policy="gpu-limits") == \
        metric(before, "mlguard_break_glass_total", policy="gpu-limits") + 1
    deadline = time.monotonic() + 5
    logged: list[dict] = []
    while not logged and time.monotonic() < deadline:
        logged = [x for x in server.log_lines() if x.get("uid") == body["request"]["uid"]
                  and x.get("event") == "break_glass"]
        time.sleep(0.05)
    assert logged and logged[0]["user"] == "oncall-bob" and logged[0]["policies"] == ["gpu-limits"]


def test_break_glass_from_anyone_else_changes_nothing_and_says_so(server: WebhookServer) -> None:
    bad = pod("urgent", spec=pod_spec(too_many("a")),
              annotations={"mlguard.io/break-glass": "I am in a hurry"})
    resp = server.admit("/validate", review(bad, user="mallory", groups=("developers",)))
    assert resp["allowed"] is False
    assert resp["status"]["message"] == expected_denial(bad) + (
        "\nbreak-glass annotation mlguard.io/break-glass ignored: user mallory is not in a break-glass group "
        "(platform-oncall)")


def test_namespace_without_gpu_quota_is_denied(server: WebhookServer) -> None:
    dep = deployment("web", namespace="team-b")
    resp = server.admit("/validate", review(dep))
    assert resp["allowed"] is False
    assert resp["status"]["message"].startswith("gpu-quota: metadata.namespace: Deployment `web` uses nvidia.com/gpu "
                                                "but no ResourceQuota in namespace `team-b`")
    assert resp["status"]["message"].endswith("(https://github.com/mlguard/mlguard/blob/main/runbooks/gpu-quota-exhausted.md)")


def test_quota_look_ahead_uses_live_usage_from_the_watch(server: WebhookServer, fake_api) -> None:
    """team-a allows 16 GPUs; running pods of other workloads hold 3 (llm 2, other 1; the finished
    job's 4 do not count). 11 replicas + 3 surge = 14 > 13 left: denied. When the watch reports
    other-0 deleted, 14 <= 14: allowed."""
    dep = deployment("big", replicas=11)
    resp = server.admit("/validate", review(dep))
    assert resp["allowed"] is False
    assert "needs 14 nvidia.com/gpu" in resp["status"]["message"]
    assert "other workloads in `team-a` use 3, leaving 13" in resp["status"]["message"]
    other = fake_api.objects["pods"][("team-a", "other-0")]
    fake_api.delete("pods", other)
    try:
        deadline = time.monotonic() + 10
        allowed = 0
        while time.monotonic() < deadline and allowed < 6:  # both workers must have seen it
            allowed = allowed + 1 if server.admit("/validate", review(dep))["allowed"] else 0
            time.sleep(0.02)
        assert allowed >= 6
    finally:
        restored = dict(other)
        restored["metadata"] = {k: v for k, v in other["metadata"].items() if k != "resourceVersion"}
        fake_api.add("pods", restored)
    deadline = time.monotonic() + 10
    denied = 0
    while time.monotonic() < deadline and denied < 6:
        denied = denied + 1 if not server.admit("/validate", review(dep))["allowed"] else 0
        time.sleep(0.02)
    assert denied >= 6


def test_scale_subresource_quota_look_ahead(server: WebhookServer) -> None:
    """Scaling is sized by the workload's own template from the cache: llm (1 GPU a pod), and idle,
    which has no pod at all (2 GPUs a pod)."""
    up = server.admit("/validate", scale_review("deployments", "llm", "team-a", replicas=14, old_replicas=2))
    assert up["allowed"] is False
    assert up["status"]["message"].startswith("gpu-quota: spec.replicas: Deployment `llm` needs 18 nvidia.com/gpu")
    small = server.admit("/validate", scale_review("deployments", "llm", "team-a", replicas=3, old_replicas=2))
    assert small["allowed"] is True
    down = server.admit("/validate", scale_review("deployments", "llm", "team-a", replicas=1, old_replicas=14))
    assert down["allowed"] is True
    unknown = server.admit("/validate", scale_review("deployments", "ghost", "team-a", replicas=50, old_replicas=1))
    assert unknown["allowed"] is True
    assert unknown["warnings"][0].startswith("gpu-quota: deployments/ghost in team-a is not in the webhook's cache")
    idle = server.admit("/validate", scale_review("deployments", "idle", "team-a", replicas=7, old_replicas=0))
    assert idle["allowed"] is False
    assert idle["status"]["message"].startswith("gpu-quota: spec.replicas: Deployment `idle` needs 18 nvidia.com/gpu")


def test_mutate_gpu_pod_patch_applies_and_is_idempotent(server: WebhookServer) -> None:
    gpu_pod = pod("m", spec=pod_spec(container("a", gpus=1)))
    resp = server.admit("/mutate", review(gpu_pod))
    assert resp["allowed"] is True
    ops = patch_of(resp)
    patched = jsonpatch.apply_patch(gpu_pod, ops)
    assert patched["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert patched["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert patched["spec"]["runtimeClassName"] == "nvidia"
    assert {k: v for k, v in patched["spec"].items() if k not in ("tolerations", "nodeSelector",
                                                                  "runtimeClassName")} == gpu_pod["spec"]
    again = server.admit("/mutate", review(patched))
    assert again == {"uid": again["uid"], "allowed": True}


def test_mutate_leaves_what_it_need_not_touch(server: WebhookServer) -> None:
    cpu_pod = pod("cpu", spec=pod_spec(container("a", gpus=None)))
    assert patch_of(server.admit("/mutate", review(cpu_pod))) == []
    selected = pod("sel", spec={**pod_spec(container("a", gpus=1)),
                                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                                "runtimeClassName": "custom"})
    ops = patch_of(server.admit("/mutate", review(selected)))
    assert [op["path"] for op in ops] == ["/spec/tolerations"]
    dep = deployment("web")
    assert patch_of(server.admit("/mutate", review(dep))) == []          # controllers are never mutated
    update = server.admit("/mutate", review(pod("u"), operation="UPDATE", old=pod("u")))
    assert patch_of(update) == []                                        # CREATE only


def test_metrics_move(server: WebhookServer) -> None:
    before = server.metrics()
    bad = pod("metered", spec=pod_spec(too_many("a")))
    server.admit("/validate", review(bad))
    warn = deployment("warned", spec=pod_spec(container("s", gpus=1, companions=False)), labels=COST)
    server.admit("/validate", review(warn))
    server.post("/validate", {"nope": True})
    after = server.metrics()

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("mlguard_admission_requests_total", operation="CREATE", kind="Pod", decision="denied") == 1
    assert moved("mlguard_admission_requests_total", operation="CREATE", kind="Deployment", decision="warned") == 1
    assert moved("mlguard_admission_requests_total", operation="unknown", kind="unknown", decision="error") == 1
    assert moved("mlguard_violations_total", policy="gpu-limits", action="deny") == 1
    assert moved("mlguard_violations_total", policy="gpu-companion-resources", action="warn") == 1
    assert moved("mlguard_admission_duration_seconds_count") == 2
    # every worker's cache syncs on its own: one may still be listing on a loaded machine (the gauge is the
    # workers' minimum); it must get there
    synced, deadline = metric(after, "mlguard_cache_synced"), time.monotonic() + 20
    while synced != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        synced = metric(server.metrics(), "mlguard_cache_synced")
    assert synced == 1
    assert metric(after, "mlguard_policyset_refused") == 0
    assert metric(after, "mlguard_policyset_reloads_total", result="success") >= 1


def test_decision_log_line(server: WebhookServer) -> None:
    bad = pod("logged", spec=pod_spec(too_many("a")))
    body = review(bad, user="carol")
    server.admit("/validate", body)
    uid = body["request"]["uid"]
    deadline = time.monotonic() + 5
    line = None
    while line is None and time.monotonic() < deadline:
        line = next((x for x in server.log_lines() if x.get("uid") == uid and x.get("event") == "decision"), None)
        time.sleep(0.05)
    assert line is not None
    assert {k: line[k] for k in ("kind", "namespace", "name", "user", "operation", "decision", "policies")} == {
        "kind": "Pod", "namespace": "team-a", "name": "logged", "user": "carol", "operation": "CREATE",
        "decision": "denied", "policies": ["gpu-limits"]}
    assert isinstance(line["duration_ms"], float)


def test_health_and_readiness_detail(server: WebhookServer) -> None:
    assert server.session.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = server.session.get(server.url + "/readyz")
    assert ready.status_code == 200
    detail = ready.json()
    assert detail["ready"] is True
    assert detail["policyset"]["name"] == "webhook-test"
    assert detail["policyset"]["digest"] == POLICYSET.digest
    assert "refused" not in detail
    assert detail["cache"]["synced"] is True
    assert detail["cache"]["resources"]["pods"]["synced"] is True


def test_keep_alive_serves_many_reviews_on_one_connection(server: WebhookServer) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    try:
        conn.connect()
        sock = conn.sock
        for i in range(5):
            body = review(pod(f"k{i}"))
            conn.request("POST", "/validate", body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["response"]["uid"] == body["request"]["uid"]
            assert conn.sock is sock  # the same TLS connection, never reopened
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        conn.close()
