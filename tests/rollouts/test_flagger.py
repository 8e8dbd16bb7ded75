"""Flagger webhooks over HTTP with Flagger's request body and the documented status mapping."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration


def flagger_body(name: str, metadata: dict[str, str], *, namespace: str = "ml-serving") -> dict:
    # The body Flagger's webhook client sends (CanaryWebhookPayload).
    return {"name": name, "namespace": namespace, "phase": "Progressing",
            "checksum": "7f4c2a5b9d", "metadata": metadata}


def call(server, check: str, body: dict) -> requests.Response:
    resp = requests.post(f"{server.url}/v1/flagger/{check}", json=body, timeout=15)
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp


def hash_meta(lib, pair, **extra):
    return {"hash_label": "rollouts_pod_template_hash", "stable": pair[0], "canary": pair[1],
            "preset": "vllm", "window": "1h", "step": "1m", **extra}


def test_pass_is_200(server, lib):
    resp = call(server, "error-rate", flagger_body("chat", hash_meta(lib, lib.VLLM_GOOD)))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["verdict"] == "pass"
    assert body["flagger"] == {"canary": "ml-serving/chat", "phase": "Progressing", "checksum": "7f4c2a5b9d",
                               "status": 200}


def test_fail_is_412(server, lib):
    resp = call(server, "latency", flagger_body("chat", hash_meta(lib, lib.VLLM_SLOW)))
    assert resp.status_code == 412 and resp.json()["verdict"] == "fail"


def test_inconclusive_is_409_never_a_pass(server, lib):
    resp = call(server, "latency", flagger_body("chat", hash_meta(lib, lib.VLLM_NEW)))
    assert resp.status_code == 409 and resp.json()["verdict"] == "inconclusive"
    assert resp.status_code > 202  # Flagger counts anything above 202 as a failed check


def test_flagger_default_selectors_use_app_label(server, lib):
    # No series carry app="chat"/"chat-primary": the defaults are applied, and no data never passes.
    resp = call(server, "error-rate", flagger_body("chat", {"preset": "vllm", "window": "1h"}))
    assert resp.status_code == 409
    assert resp.json()["samples"] == {"baseline": 0, "canary": 0}


def test_sample_checks_via_flagger(server, lib):
    meta = {"store": "local", "baseline": "eval/baseline.jsonl", "canary": "eval/canary-worse.jsonl"}
    assert call(server, "eval-score", flagger_body("chat", meta)).status_code == 412
    meta["canary"] = "eval/canary-same.jsonl"
    assert call(server, "eval-score", flagger_body("chat", meta)).status_code == 200


@pytest.mark.parametrize("body", [{}, {"name": "chat"}, {"name": "Chat!", "namespace": "x"},
                                  {"name": "chat", "namespace": "x", "metadata": {"a": {"b": 1}}}, [1]])
def test_bad_flagger_body_is_400(server, body):
    resp = call(server, "latency", body)
    assert resp.status_code == 400


def test_flagger_source_down_is_5xx(dead_prometheus_server, lib):
    resp = call(dead_prometheus_server, "latency", flagger_body("chat", hash_meta(lib, lib.VLLM_GOOD)))
    assert resp.status_code == 503


def test_flagger_calls_are_counted(server, lib):
    call(server, "latency", flagger_body("chat", hash_meta(lib, lib.VLLM_SLOW)))
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert any(line.startswith("mlguard_analysis_requests_total{") and 'caller="flagger"' in line
               and 'verdict="fail"' in line for line in text.splitlines())
