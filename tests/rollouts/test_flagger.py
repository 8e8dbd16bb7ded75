"""Flagger webhooks over HTTP with Flagger's request body and the status mapping per hook type.

Flagger (v1.44.0, pkg/controller/webhook.go callWebhook) reads any status above 202 as "no"; what
"no" costs depends on the hook type (scheduler.go runAnalysis and scheduler_hooks.go): a failed
check on rollout and pre-rollout hooks, a hold on confirm-* hooks, and on a rollback hook a 2xx is
the signal to roll back.
"""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from rollouts.app import create_app
from rollouts.flagger import STATUS, RevisionClock

pytestmark = pytest.mark.integration


def flagger_body(name: str, metadata: dict[str, str], *, namespace: str = "ml-serving",
                 checksum: str = "7f4c2a5b9d") -> dict:
    # The body Flagger's webhook client sends (CanaryWebhookPayload, pkg/apis/flagger/v1beta1).
    return {"name": name, "namespace": namespace, "phase": "Progressing", "checksum": checksum,
            "metadata": metadata}


def call(server, check: str, body: dict) -> requests.Response:
    resp = requests.post(f"{server.url}/v1/flagger/{check}", json=body, timeout=15)
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp


def hash_meta(pair, *, hook: str = "rollout", **extra):
    return {"hook": hook, "hash_label": "rollouts_pod_template_hash", "stable": pair[0], "canary": pair[1],
            "preset": "vllm", "window": "1h", "step": "1m", **extra}


class AgedRevisions:
    """The provider in-process, its clock under the test's control: a revision is first seen 50
    minutes before the call that matters (a revision seen for the first time has no window yet)."""

    def __init__(self, config: dict) -> None:
        self.app = create_app(config)
        self.now = dt.datetime.now(dt.UTC)
        self.app.extensions["mlguard_analysis"].clock = lambda: self.now
        self.client = self.app.test_client()

    def post(self, check: str, meta: dict, checksum: str):
        self.now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=50)
        self.client.post(f"/v1/flagger/{check}", json=flagger_body("chat", meta, checksum=checksum))
        self.now = dt.datetime.now(dt.UTC)
        return self.client.post(f"/v1/flagger/{check}", json=flagger_body("chat", meta, checksum=checksum))


def test_mapping_per_hook_type():
    assert STATUS["rollout"] == {"pass": 200, "inconclusive": 200, "fail": 412}
    for hook in ("pre-rollout", "confirm-rollout", "confirm-traffic-increase", "confirm-promotion"):
        assert STATUS[hook] == {"pass": 200, "inconclusive": 409, "fail": 412}
    assert "rollback" not in STATUS


def test_first_sight_of_a_revision_is_inconclusive_and_never_counts(server, lib):
    # Flagger's app label is the same in every revision: a window may not reach back before this
    # revision, and a revision seen for the first time has no window yet.
    resp = call(server, "latency", flagger_body("chat", hash_meta(lib.VLLM_SLOW), checksum="first-sight"))
    body = resp.json()
    assert resp.status_code == 200 and body["verdict"] == "inconclusive"
    assert body["method"] == "revision-window" and body["flagger"]["counts_as_failed_check"] is False


def test_sample_checks_via_flagger_hooks(server, lib):
    meta = {"store": "local", "baseline": "eval/baseline.jsonl", "canary": "eval/canary-worse.jsonl"}
    fail = call(server, "eval-score", flagger_body("chat", {**meta, "hook": "pre-rollout"}))
    assert fail.status_code == 412 and fail.json()["flagger"]["counts_as_failed_check"] is True
    meta["canary"] = "eval/canary-same.jsonl"
    assert call(server, "eval-score", flagger_body("chat", {**meta, "hook": "pre-rollout"})).status_code == 200
    meta["canary"] = "eval/canary-partial.jsonl"  # 20 items: too few
    pre = call(server, "eval-score", flagger_body("chat", {**meta, "hook": "pre-rollout"}))
    assert pre.status_code == 409 and pre.json()["verdict"] == "inconclusive"
    rollout = call(server, "eval-score", flagger_body("chat", {**meta, "hook": "rollout"}))
    assert rollout.status_code == 200 and rollout.json()["verdict"] == "inconclusive"  # never counted
    promotion = call(server, "eval-score", flagger_body("chat", {**meta, "hook": "confirm-promotion"}))
    assert promotion.status_code == 409 and promotion.json()["flagger"]["counts_as_failed_check"] is False


@pytest.mark.parametrize("body", [
    {}, {"name": "chat"}, {"name": "Chat!", "namespace": "x", "checksum": "a"},
    {"name": "chat", "namespace": "x", "checksum": "a", "metadata": {"a": {"b": 1}, "hook": "rollout"}},
    {"name": "chat", "namespace": "x", "metadata": {"hook": "rollout"}},  # no checksum
    {"name": "chat", "namespace": "x", "checksum": "a", "metadata": {"preset": "vllm"}},  # no hook
    {"name": "chat", "namespace": "x", "checksum": "a", "metadata": {"hook": "event"}},
    [1]])
def test_bad_flagger_body_is_400(server, body):
    assert call(server, "latency", body).status_code == 400


def test_rollback_hook_is_refused(server, lib):
    resp = call(server, "latency", flagger_body("chat", hash_meta(lib.VLLM_GOOD, hook="rollback")))
    assert resp.status_code == 400 and "never wire mlguard" in resp.json()["error"]["message"]


def test_label_value_comes_from_metadata_never_the_canary_name(server, prometheus, lib):
    # No label_value (nor canary/stable): refused, not guessed from the Canary's name.
    resp = call(server, "error-rate", flagger_body("chat", {"hook": "rollout", "preset": "vllm"}))
    assert resp.status_code == 400 and "label_value" in resp.json()["error"]["message"]
    # label_value selects app=<value> and app=<value>-primary whatever the Canary is called.
    meta = {"hook": "rollout", "label_value": lib.FLAGGER_APPS["healthy"], "preset": "vllm", "window": "1h"}
    provider = AgedRevisions({"prometheus_url": prometheus.url})
    resp = provider.post("error-rate", meta, checksum="label-from-metadata")
    body = resp.get_json()
    assert resp.status_code == 200 and body["verdict"] == "pass", body
    assert body["samples"]["canary"] > 1000 and body["samples"]["baseline"] > 1000
    assert 3000 <= body["flagger"]["window_seconds"] <= 3005  # the revision's 50 minutes, not more
    # A Prometheus check on a pre-rollout hook could never see canary traffic: refused.
    pre = call(server, "error-rate", flagger_body("chat", {**meta, "hook": "pre-rollout"}))
    assert pre.status_code == 400 and "pre-rollout" in pre.json()["error"]["message"]


def test_window_is_cut_to_the_revision(prometheus, lib):
    provider = AgedRevisions({"prometheus_url": prometheus.url})
    meta = {"hook": "rollout", "label_value": lib.FLAGGER_APPS["healthy"], "preset": "vllm", "window": "6h"}
    provider.now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    provider.client.post("/v1/flagger/latency", json=flagger_body("chat", meta, checksum="cut"))
    provider.now = dt.datetime.now(dt.UTC)
    body = provider.client.post("/v1/flagger/latency", json=flagger_body("chat", meta, checksum="cut")).get_json()
    assert 20 * 60 <= body["flagger"]["window_seconds"] <= 20 * 60 + 5  # not the 6h asked for
    assert body["details"]["window_seconds"] == body["flagger"]["window_seconds"]
    # requests of the primary (2 pods at 5 req/s), this revision's 20 minutes only (90 minutes would be 54,000)
    assert body["samples"]["baseline"] <= 2 * 5 * 21 * 60


def test_flagger_source_down_is_5xx(lib):
    provider = AgedRevisions({"prometheus_url": f"http://127.0.0.1:{lib.free_port()}"})
    assert provider.post("latency", hash_meta(lib.VLLM_GOOD), checksum="down").status_code == 503


def test_flagger_calls_are_counted(server, lib):
    call(server, "eval-score", flagger_body("chat", {"hook": "rollout", "store": "local",
                                                     "baseline": "eval/baseline.jsonl",
                                                     "canary": "eval/canary-worse.jsonl"}))
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert any(line.startswith("mlguard_analysis_requests_total{") and 'caller="flagger"' in line
               and 'verdict="fail"' in line for line in text.splitlines())


def test_revision_clock_bounds_windows_to_the_revision():
    clock = RevisionClock(forget_after=3600, max_entries=2)
    key = ("ml", "chat", "abc")
    assert clock.age(key, now=1000.0) == 0.0
    assert clock.age(key, now=1600.0) == 600.0  # the same revision ten minutes later
    assert clock.age(("ml", "chat", "def"), now=1700.0) == 0.0  # a new revision starts its own window
    assert clock.age(key, now=1700.0 + 3601) == 0.0  # not seen for an hour: starts again
    clock.age(("ml", "other", "x"), now=9000.0)
    clock.age(("ml", "other", "y"), now=9001.0)
    assert len(clock._seen) == 2  # bounded
