"""Slow clients (issue 14): connections that trickle a TLS handshake, headers or a body must not take
admission down. 64 of them run against a server of its own while a normal client sends reviews:
every review is answered, promptly, and the server closes the slow connections at its deadlines.
(The latency figures themselves are measured by tests/benchmarks/bench_slow_clients.py; here the
bound is generous, for a loaded 2-core machine.)"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from webhook_testlib import (
    TEST_POLICYSET,
    SlowClients,
    WebhookServer,
    container,
    metric,
    percentile,
    pod,
    pod_spec,
    review,
    timed_reviews,
)

pytestmark = pytest.mark.integration
DEADLINES = {"MLGUARD_WEBHOOK_HANDSHAKE_TIMEOUT": "1", "MLGUARD_WEBHOOK_READ_TIMEOUT": "2"}


def _server(tls, work: Path, **env: str) -> WebhookServer:
    policyset = work / "policyset.yaml"
    shutil.copy(TEST_POLICYSET, policyset)
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset,
                        env={**DEADLINES, **env})
    srv.wait("/readyz")
    return srv


@pytest.fixture
def slow_server(tls, tmp_path: Path) -> Iterator[WebhookServer]:
    srv = _server(tls, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def test_64_slow_connections_do_not_stall_a_normal_client(slow_server: WebhookServer) -> None:
    body = review(pod("ok", spec=pod_spec(container("a", gpus=1))))
    denied = review(pod("bad", spec=pod_spec(container("a", gpus=None, requests_gpus=1))))
    with SlowClients(slow_server.port, idle=16, headers=24, body=24) as attack:
        latencies, failures = timed_reviews(slow_server, body, seconds=6)
        # decisions are still right under the attack
        assert slow_server.admit("/validate", denied)["allowed"] is False
    assert not failures, failures[:5]
    assert len(latencies) >= 50, len(latencies)
    # generous: before this worker, 16 such connections cut a normal client to one answer in 30 s
    assert percentile(latencies, 0.99) < 1.0, sorted(latencies)[-5:]
    # the server, not the attacker, ended the slow connections: at their deadlines, again and again
    assert attack.closed_by_server >= 64, (attack.closed_by_server, attack.opened)
    values = slow_server.metrics()
    assert metric(values, "mlguard_webhook_connections_closed_total", reason="read_timeout") >= 48
    assert metric(values, "mlguard_webhook_connections_closed_total", reason="handshake_timeout") >= 16
    assert metric(values, "mlguard_webhook_connection_limit") == 2 * 512


def test_connection_cap_evicts_idle_then_holds_back_and_counts_saturation(tls, tmp_path: Path) -> None:
    srv = _server(tls, tmp_path, MLGUARD_WEBHOOK_MAX_CONNECTIONS="8")
    try:
        body = review(pod("ok", spec=pod_spec(container("a", gpus=1))))
        # 24 connections trickling headers against 2 x 8 slots: the workers stop accepting until
        # the read deadline frees slots; the normal client waits at most about that long
        with SlowClients(srv.port, idle=0, headers=24, body=0):
            latencies, failures = timed_reviews(srv, body, seconds=5, fresh_every=1)
        assert not failures, failures[:5]
        assert max(latencies) < 8.0
        values = srv.metrics()
        assert metric(values, "mlguard_webhook_connections_saturated_total") >= 1
        assert metric(values, "mlguard_webhook_connection_limit") == 16
        # idle kept-alive connections never hold back a new one: at the cap the oldest idle one is closed
        sessions = [requests.Session() for _ in range(24)]
        for session in sessions:
            session.trust_env, session.verify = False, str(srv.ca)
            assert session.get(srv.url + "/healthz", timeout=10).status_code == 200  # kept alive after
        for session in sessions:
            session.close()
        assert metric(srv.metrics(), "mlguard_webhook_connections_closed_total", reason="evicted") >= 8
    finally:
        srv.stop()
