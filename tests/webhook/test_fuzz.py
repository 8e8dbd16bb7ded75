"""Fuzzing the running server (gunicorn over TLS, 2 workers) with hypothesis: thousands of
generated and mutated AdmissionReview bodies. Every answer is JSON with a status below 500, and
no worker restarts. Bounded by max_examples so it stays well under a minute."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_testlib import (
    WebhookServer,
    container,
    cronjob,
    deployment,
    pod,
    pod_spec,
    review,
    rollout,
    scale_review,
)

pytestmark = pytest.mark.integration

SEEDS = [
    review(pod("p", spec=pod_spec(container("a", gpus=1), container("b", gpus=None, requests_gpus=2)))),
    review(deployment("d", replicas=3)),
    review(rollout("r")),
    review(cronjob("c")),
    review(deployment("d", replicas=5), operation="UPDATE", old=deployment("d", replicas=1)),
    scale_review("deployments", "llm", "team-a", replicas=9, old_replicas=2),
    review(pod("bg", annotations={"mlguard.io/break-glass": "x"}), groups=("platform-oncall",)),
]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_reviews(draw: st.DrawFn, *, objects_only: bool) -> bytes:
    """A seed review with 1-4 values replaced, deleted or retyped — anywhere (most are then
    refused at the edge), or only inside request.object/oldObject (these reach the policies)."""
    body = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(body) if p and (not objects_only or (
            len(p) > 2 and p[0] == "request" and p[1] in ("object", "oldObject")))]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "retype"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = draw(st.sampled_from([None, 0, -1, "", "x", [], {}, True, 1e308, "1.5", "-3"]))
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(body).encode()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["apiVersion", "kind", "request", "response"]), json_values, max_size=4).map(
        lambda d: json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", **d}).encode()),
)


def _check(server: WebhookServer, path: str, body: bytes) -> None:
    resp = server.session.post(server.url + path, data=body, headers={"Content-Type": "application/json"},
                               timeout=10)
    assert resp.status_code < 500, (resp.status_code, resp.text, body[:500])
    payload = resp.json()
    if resp.status_code == 200:
        assert payload["response"]["uid"] and isinstance(payload["response"]["allowed"], bool)
    else:
        assert isinstance(payload["error"], str) and payload["status"] == resp.status_code


FUZZ = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def test_fuzz_mutated_and_generated_bodies(server: WebhookServer) -> None:
    pids = server.worker_pids()
    assert len(pids) == 2

    @FUZZ
    @given(body=st.one_of(mutated_reviews(objects_only=True), mutated_reviews(objects_only=False)),
           path=st.sampled_from(["/validate", "/mutate"]))
    def mutated(body: bytes, path: str) -> None:
        _check(server, path, body)

    @settings(FUZZ, max_examples=600)
    @given(body=raw_bodies, path=st.sampled_from(["/validate", "/mutate"]))
    def generated(body: bytes, path: str) -> None:
        _check(server, path, body)

    mutated()
    generated()
    assert server.worker_pids() == pids, "a worker restarted"
    assert not [x for x in server.log_lines() if x.get("event") == "unexpected_error"]
