"""Malformed reviews get a clear 4xx JSON error and a log line — never a 5xx, never a dead worker."""

from __future__ import annotations

import json
import time

import pytest
from webhook_testlib import WebhookServer, container, metric, pod, pod_spec, review

pytestmark = pytest.mark.integration


def _valid() -> dict:
    return review(pod("p", spec=pod_spec(container("a", gpus=1))))


def _with(mutate) -> bytes:
    body = _valid()
    mutate(body)
    return json.dumps(body).encode()


CASES = {
    "not JSON": (b"{not json", 400, "body is not JSON"),
    "binary garbage": (b"\xff\xfe\x00\x01", 400, "body is not JSON"),
    "a JSON list": (b"[1, 2]", 400, "body must be a JSON object"),
    "empty body": (b"", 400, "body is not JSON"),
    "wrong apiVersion": (_with(lambda b: b.update(apiVersion="admission.k8s.io/v1beta1")), 400,
                         "apiVersion must be 'admission.k8s.io/v1'"),
    "wrong kind": (_with(lambda b: b.update(kind="ConversionReview")), 400, "kind must be 'AdmissionReview'"),
    "missing request": (_with(lambda b: b.pop("request")), 400, "request is missing"),
    "missing uid": (_with(lambda b: b["request"].pop("uid")), 400, "request.uid is missing"),
    "uid not a string": (_with(lambda b: b["request"].update(uid=42)), 400, "request.uid is missing"),
    "bad operation": (_with(lambda b: b["request"].update(operation="PATCH")), 400, "request.operation must be"),
    "object a string": (_with(lambda b: b["request"].update(object="pod")), 400, "request.object must be an object"),
    "no object at CREATE": (_with(lambda b: b["request"].update(object=None)), 400,
                            "request.object is required for CREATE"),
    "labels not strings": (_with(lambda b: b["request"]["object"]["metadata"].update(labels={"a": 1})), 400,
                           "request.object.metadata.labels must map strings to strings"),
    "spec a list": (_with(lambda b: b["request"]["object"].update(spec=[1])), 400,
                    "request.object.spec must be an object"),
    "groups not a list": (_with(lambda b: b["request"]["userInfo"].update(groups="admins")), 400,
                          "request.userInfo.groups must be a list of strings"),
    "kind not a GVK": (_with(lambda b: b["request"].update(kind="Pod")), 400, "request.kind must be"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_review_gets_a_clear_4xx(server: WebhookServer, case: str) -> None:
    body, status, message = CASES[case]
    for path in ("/validate", "/mutate"):
        resp = server.session.post(server.url + path, data=body, headers={"Content-Type": "application/json"},
                                   timeout=10)
        assert resp.status_code == status, resp.text
        assert resp.headers["Content-Type"].startswith("application/json")
        error = resp.json()
        assert error["status"] == status
        assert message in error["error"], error


def test_bad_review_is_logged_and_counted(server: WebhookServer) -> None:
    before = server.metrics()
    marker = "marker-" + str(time.monotonic_ns())
    body = _valid()
    body["request"]["uid"] = marker
    body["request"]["operation"] = "EXPLODE"
    resp = server.post("/validate", body)
    assert resp.status_code == 400
    assert resp.json()["uid"] == marker
    deadline = time.monotonic() + 5
    lines: list[dict] = []
    while not lines and time.monotonic() < deadline:
        lines = [x for x in server.log_lines() if x.get("uid") == marker]
        time.sleep(0.05)
    assert lines and lines[0]["event"] == "bad_review" and lines[0]["status"] == 400
    after = server.metrics()
    labels = {"operation": "unknown", "kind": "unknown", "decision": "error"}
    assert metric(after, "mlguard_admission_requests_total", **labels) > \
        metric(before, "mlguard_admission_requests_total", **labels)


def test_oversized_body_is_413(server: WebhookServer) -> None:
    body = _valid()
    body["request"]["object"]["metadata"]["annotations"] = {"big": "x" * (7 * 1024 * 1024 + 10)}
    resp = server.session.post(server.url + "/validate", data=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["status"] == 413
    # and a large but allowed body (two 3 MiB objects, as an UPDATE may carry) is answered
    big = review(pod("big", annotations={"blob": "y" * (3 * 1024 * 1024)}),
                 operation="UPDATE", old=pod("big", annotations={"blob": "z" * (3 * 1024 * 1024)}))
    assert server.admit("/validate", big)["allowed"] is True


def test_unknown_path_and_method_are_json(server: WebhookServer) -> None:
    resp = server.session.get(server.url + "/nope", timeout=5)
    assert resp.status_code == 404 and resp.json()["status"] == 404
    resp = server.session.get(server.url + "/validate", timeout=5)
    assert resp.status_code == 405 and resp.json()["status"] == 405


def test_workers_survived_the_bad_input(server: WebhookServer) -> None:
    pids = server.worker_pids()
    assert len(pids) == 2
    for body, _, _ in CASES.values():
        server.session.post(server.url + "/validate", data=body, timeout=10)
    assert server.worker_pids() == pids
    assert server.admit("/validate", _valid())["allowed"] is True
