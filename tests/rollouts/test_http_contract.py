"""The HTTP contract through gunicorn: JSON everywhere, error statuses, probes, body limits."""

from __future__ import annotations

import json
import time

import pytest
import requests

pytestmark = pytest.mark.integration


def test_probes(server):
    assert requests.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{server.url}/readyz", timeout=5).json()
    assert ready["status"] == "ready"
    assert ready["config"]["sampleStores"] == ["local", "web"]
    assert "broken_latency" in ready["config"]["queries"]
    kinds = {(s["source"], s.get("kind")) for s in ready["sources"]}
    assert kinds == {("prometheus", None), ("sample-store", "directory"), ("sample-store", "http")}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/analyses/no-such-check", 404), ("GET", "/nothing-here", 404),
     ("PUT", "/v1/analyses/latency", 405), ("GET", "/v1/flagger/latency", 405),
     ("OPTIONS", "/v1/analyses/latency", 405)],
)
def test_errors_are_json_never_html(server, method, path, status):
    resp = requests.request(method, f"{server.url}{path}", timeout=5)
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["error"]["status"] == status and "verdict" not in body
    assert "<html" not in resp.text.lower() and "Traceback" not in resp.text


def test_unknown_check_names_the_known_ones(server):
    body = requests.get(f"{server.url}/v1/analyses/drift", timeout=5).json()
    assert body["error"]["type"] == "unknown_check"
    assert "input-drift" in body["error"]["message"]


def test_body_too_large_is_413(server):
    resp = requests.post(f"{server.url}/v1/analyses/latency", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 413
    assert resp.json()["error"]["status"] == 413


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b'{"window": {"nested": 1}}'])
def test_bad_json_body_is_400(server, body):
    resp = requests.post(f"{server.url}/v1/analyses/latency", data=body,
                         headers={"Content-Type": "application/json"}, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "bad_parameter"


def test_parameter_in_query_and_body_is_refused(server):
    resp = requests.post(f"{server.url}/v1/analyses/latency?window=1h", json={"window": "2h"}, timeout=5)
    assert resp.status_code == 400 and "both" in resp.json()["error"]["message"]


def test_repeated_parameter_is_refused(server):
    resp = requests.get(f"{server.url}/v1/analyses/latency?window=1h&window=2h", timeout=5)
    assert resp.status_code == 400 and "window" in resp.json()["error"]["message"]


def test_logs_are_structured_json(server, lib):
    lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS))
    requests.get(f"{server.url}/v1/analyses/nope", timeout=5)
    deadline = time.monotonic() + 5
    while True:  # the access log line is written just after the response is sent
        lines = [line for line in server.log.read_text().splitlines() if line.strip()]
        entries = [json.loads(line) for line in lines]  # every line is one JSON object
        analyses = [e for e in entries if e.get("msg") == "analysis" and e.get("check") == "error-rate"]
        access = [e for e in entries if e.get("logger") == "gunicorn.access" and "path=/v1/analyses/nope" in e["msg"]]
        if (analyses and access) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert analyses and analyses[-1]["verdict"] == "fail" and "seconds" in analyses[-1]
    assert access
