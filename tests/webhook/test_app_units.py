"""In-process tests of the app (Flask's test client) and the pure parts: fail-closed policies,
dry-run, bounded warnings, the response builder, settings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from webhook_testlib import TEST_POLICYSET, container, pod, pod_spec, review, too_many

from policies.context import ManifestFacts
from policies.registry import all_policies
from webhook.app import create_app
from webhook.config import ConfigError, WebhookConfig
from webhook.review import Decision, ReviewError, build_response, clip_warning, parse_review

QUOTA = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": "team-a"},
         "spec": {"hard": {"requests.nvidia.com/gpu": "100"}}}


def _app(**config: object):
    """In-process app; cluster facts from a manifest set holding team-a's GPU quota."""
    app = create_app({"POLICYSET": str(TEST_POLICYSET), **config}, facts=ManifestFacts([QUOTA]))
    return app, app.test_client()


def _validate(client, body: dict) -> dict:
    resp = client.post("/validate", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["response"]


BAD = pod("bad", spec=pod_spec(too_many("a")))


def test_a_policy_that_raises_denies_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = all_policies()["gpu-companion-resources"]

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(type(policy), "check", boom)
    app, client = _app()
    before = REGISTRY.get_sample_value("mlguard_policy_errors_total", {"policy": "gpu-companion-resources"}) or 0
    good = pod("good", spec=pod_spec(container("a", gpus=1)))
    resp = _validate(client, review(good))
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 403
    assert resp["status"]["message"] == (
        "gpu-companion-resources: : policy gpu-companion-resources failed: RuntimeError('kaboom') "
        "(https://github.com/mlguard/mlguard/blob/main/runbooks/admission-denied.md#gpu-companion-resources)")
    after = REGISTRY.get_sample_value("mlguard_policy_errors_total", {"policy": "gpu-companion-resources"})
    assert after == before + 1
    # the other policies kept running: gpu-limits still reports its own violation
    both = _validate(client, review(BAD))
    assert both["status"]["message"].count("\n") == 1
    assert both["status"]["message"].startswith("gpu-limits: spec.containers[0].resources.limits: ")
    app.extensions["mlguard"].stop()


def test_dry_run_setting_turns_denies_into_warn_and_audit() -> None:
    app, client = _app(DRY_RUN="true")
    resp = _validate(client, review(BAD))
    assert resp["allowed"] is True
    assert resp["warnings"][0].startswith("gpu-limits: spec.containers[0].resources.limits: ")
    assert resp["auditAnnotations"]["gpu-limits"].startswith("spec.containers[0].resources.limits: ")
    assert app.test_client().get("/readyz").get_json()["dryRun"] is True
    app.extensions["mlguard"].stop()


def test_policyset_dry_run_does_the_same(tmp_path: Path) -> None:
    text = TEST_POLICYSET.read_text().replace("  defaultAction: deny\n", "  defaultAction: deny\n  dryRun: true\n")
    path = tmp_path / "dry.yaml"
    path.write_text(text)
    app = create_app({"POLICYSET": str(path)})
    resp = _validate(app.test_client(), review(BAD))
    assert resp["allowed"] is True and "gpu-limits" in resp["auditAnnotations"]
    app.extensions["mlguard"].stop()


def test_break_glass_users_from_the_policyset(tmp_path: Path) -> None:
    text = TEST_POLICYSET.read_text().replace("    groups: [platform-oncall]\n",
                                              "    groups: [platform-oncall]\n    users: [sre-jane]\n")
    path = tmp_path / "bg.yaml"
    path.write_text(text)
    app = create_app({"POLICYSET": str(path)})
    obj = pod("bg", spec=BAD["spec"], annotations={"mlguard.io/break-glass": "outage"})
    client = app.test_client()
    assert _validate(client, review(obj, user="sre-jane", groups=()))["allowed"] is True
    assert _validate(client, review(obj, user="sre-joe", groups=()))["allowed"] is False
    app.extensions["mlguard"].stop()


def test_warnings_are_bounded_and_short() -> None:
    app, client = _app(MAX_WARNINGS="3")
    many = pod("many", spec=pod_spec(*[container(f"c{i}", gpus=1, companions=False) for i in range(6)]))
    resp = _validate(client, review(many))
    assert resp["allowed"] is True
    assert len(resp["warnings"]) == 3
    assert resp["warnings"][-1] == "... and 4 more mlguard warnings"
    assert all(len(w) <= 256 for w in resp["warnings"])
    app.extensions["mlguard"].stop()


def test_clip_warning() -> None:
    assert clip_warning("a\nb   c") == "a b c"
    long = clip_warning("x" * 300)
    assert len(long) == 256 and long.endswith("…")


def test_build_response_is_the_wire_format() -> None:
    patch = [{"op": "add", "path": "/spec/runtimeClassName", "value": "nvidia"}]
    out = build_response("u-1", Decision(allowed=True, warnings=("w",), audit_annotations={"p": "v"}, patch=patch))
    assert out == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
        "uid": "u-1", "allowed": True, "warnings": ["w"], "auditAnnotations": {"p": "v"}, "patchType": "JSONPatch",
        "patch": base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()}}
    denied = build_response("u-2", Decision(allowed=False, code=403, message="m"))
    assert denied["response"] == {"uid": "u-2", "allowed": False, "status": {"code": 403, "message": "m"}}
    assert build_response("u-3", Decision(allowed=True, patch=[]))["response"] == {"uid": "u-3", "allowed": True}


def test_parse_review_keeps_the_uid_for_errors() -> None:
    body = review(BAD)
    body["request"]["operation"] = "NOPE"
    with pytest.raises(ReviewError) as err:
        parse_review(json.dumps(body).encode())
    assert err.value.uid == body["request"]["uid"] and err.value.status == 400


def test_settings_from_environment_and_mapping() -> None:
    cfg = WebhookConfig.load({"dry_run": "true"}, environ={"MLGUARD_WEBHOOK_NAMESPACE": "ops",
                                                          "MLGUARD_WEBHOOK_MAX_BODY_BYTES": "2048"})
    assert (cfg.namespace, cfg.dry_run, cfg.max_body_bytes) == ("ops", True, 2048)
    assert cfg.policyset.name == "baseline.yaml"
    with pytest.raises(ConfigError, match="MLGUARD_WEBHOOK_DRY_RUN: expected true or false"):
        WebhookConfig.load({"DRY_RUN": "maybe"}, environ={})
    with pytest.raises(ConfigError, match="MLGUARD_WEBHOOK_MAX_BODY_BYTES: expected an integer"):
        WebhookConfig.load({}, environ={"MLGUARD_WEBHOOK_MAX_BODY_BYTES": "7MiB"})


def test_invalid_policyset_at_start_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nspec:\n  policies:\n    nope: {}\n")
    app = create_app({"POLICYSET": str(path)})
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    detail = ready.get_json()
    assert detail["policyset"] is None
    assert any("unknown policy 'nope'" in e for e in detail["refused"]["errors"])
    resp = client.post("/validate", json=review(BAD))
    assert resp.status_code == 503 and "no valid PolicySet" in resp.get_json()["error"]
    app.extensions["mlguard"].stop()


def test_excluded_objects_are_neither_checked_nor_mutated(tmp_path: Path) -> None:
    text = TEST_POLICYSET.read_text().replace("  exemptions:\n",
                                              "  exclude:\n    namespaces: [sandbox]\n  exemptions:\n")
    path = tmp_path / "exclude.yaml"
    path.write_text(text)
    app = create_app({"POLICYSET": str(path)}, facts=ManifestFacts([QUOTA]))
    client = app.test_client()
    sandboxed = pod("s", namespace="sandbox", spec=BAD["spec"])
    resp = client.post("/mutate", json=review(sandboxed, uid="m1")).get_json()["response"]
    assert resp == {"uid": "m1", "allowed": True}
    inside = client.post("/mutate", json=review(pod("t", spec=BAD["spec"]), uid="m2")).get_json()["response"]
    assert "patch" in inside
    checked = client.post("/validate", json=review(sandboxed, uid="v1")).get_json()["response"]
    assert checked == {"uid": "v1", "allowed": True}
    app.extensions["mlguard"].stop()
