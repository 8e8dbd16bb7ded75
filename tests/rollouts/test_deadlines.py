"""A real deadline and honest counts: what a slow, huge or broken source gets, and what a busy
provider answers. No wall-clock asserts: each test asserts the kind of answer, which only a bounded
read can give (an unbounded one hangs until the client gives up, and the test fails)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from rollouts.app import create_app
from rollouts.errors import BudgetExceededError, SourceTimeoutError
from rollouts.sources import Deadline

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def fake_prometheus(answer: Callable[[socket.socket], None]) -> Iterator[tuple[str, threading.Event]]:
    """A TCP server that reads a request and hands the socket to ``answer`` (one thread per client);
    yields its URL and an event set once a request has been read."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()
    seen = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                seen.set()
                answer(conn)
            except OSError:
                pass  # the provider hung up: what the test wants

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def trickle_body(conn: socket.socket) -> None:
    """Headers at once, then the body one byte every 0.1 s, forever: each read succeeds."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        conn.sendall(b"1\r\n \r\n")
        time.sleep(0.1)


def trickle_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while True:
        conn.sendall(b"X: y\r\n")
        time.sleep(0.1)


def huge_answer(conn: socket.socket) -> None:
    """A 150 MB query answer without Content-Length (so only counting the bytes can stop it)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    conn.sendall(b'{"status":"success","data":{"resultType":"vector","result":[')
    row = b'{"metric":{"pod":"' + b"x" * 200 + b'"},"value":[1,"1"]},'
    for _ in range(150 * 1024 * 1024 // len(row)):
        conn.sendall(row)


def declared_huge(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 157286400\r\n\r\n{")
    time.sleep(5)


PARAMS = {"preset": "vllm", "stable": "a1", "canary": "b2", "window": "1h"}


def ask(prometheus_url: str, check: str = "error-rate", **config) -> requests.Response:
    client = create_app({"prometheus_url": prometheus_url, "deadline_seconds": 2, **config}).test_client()
    resp = client.get(f"/v1/analyses/{check}", query_string=PARAMS)
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp


@pytest.mark.parametrize("answer", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_a_trickling_prometheus_gets_a_504_within_the_budget(answer):
    # Before: prometheus-api-client's per-read timeout restarted with every byte and held the
    # answer for as long as the server trickled (30 s measured), long after Argo had given up.
    with fake_prometheus(answer) as (url, _):
        resp = ask(url, prometheus_timeout=5)
    body = resp.get_json()
    assert resp.status_code == 504 and body["error"]["type"] == "source_timeout", body
    assert "the whole answer" in body["error"]["message"]


@pytest.mark.parametrize("answer", [huge_answer, declared_huge], ids=["streamed", "declared"])
def test_a_huge_prometheus_answer_is_refused_not_read(answer):
    with fake_prometheus(answer) as (url, _):
        resp = ask(url, prometheus_max_bytes=1024 * 1024)
    body = resp.get_json()
    assert resp.status_code == 502 and "more than 1048576 bytes" in body["error"]["message"], body


def test_budget_counts_from_arrival():
    past = time.monotonic() - 10
    with pytest.raises(SourceTimeoutError, match="used up before querying prometheus"):
        Deadline(7, started=past).timeout(3, source="prometheus")
    with pytest.raises(BudgetExceededError, match="while parsing"):
        Deadline(7, started=past).check("parsing x")
    assert 0.9 < Deadline(7, started=time.monotonic() - 6).remaining() <= 1.0


def test_a_request_that_cannot_start_in_time_is_503_at_once(lib):
    app = create_app({"prometheus_url": f"http://127.0.0.1:{lib.free_port()}", "deadline_seconds": 2})
    service = app.extensions["mlguard_analysis"]
    from rollouts.errors import BusyError

    with pytest.raises(BusyError, match="could not start this analysis"):
        service.analyze("error-rate", PARAMS, caller="argo", arrived=time.monotonic() - 1.5)
    text = service.metrics.render()[0].decode()
    assert "mlguard_analysis_rejected_total 1.0" in text


# ------------------------------------------------------------------ counts: NaN, negative, empty
def test_nan_error_count_is_a_source_error(server, lib):
    resp = lib.analysis(server.url, "error-rate", lib.vllm_params((lib.VLLM_GOOD[0], lib.VLLM_NAN_ERRORS)))
    assert resp.status_code == 502 and "nan" in resp.json()["error"]["message"].lower()


def test_negative_count_is_a_source_error(prometheus, lib):
    queries = {"negative_errors": "-1 * sum(increase(http_requests_total{${selector}}[${interval}]))"}
    client = create_app({"prometheus_url": prometheus.url, "queries": queries}).test_client()
    resp = client.get("/v1/analyses/error-rate",
                      query_string=lib.vllm_params(lib.VLLM_GOOD, errors_query="negative_errors"))
    assert resp.status_code == 502 and "count is -" in resp.get_json()["error"]["message"]


def test_empty_errors_series_is_inconclusive_never_a_pass(prometheus, lib):
    queries = {"typo_errors": "sum(increase(http_request_total{${selector},status=\"5xx\"}[${interval}]))"}
    client = create_app({"prometheus_url": prometheus.url, "queries": queries}).test_client()
    body = client.get("/v1/analyses/error-rate",
                      query_string=lib.vllm_params(lib.VLLM_GOOD, errors_query="typo_errors")).get_json()
    assert body["verdict"] == "inconclusive" and "returned no series" in body["reason"], body


def test_no_5xx_series_yet_is_zero_errors(server, lib):
    # The instrumentator creates status="5xx" on the first 5xx: a canary that never failed has none.
    body = lib.analysis(server.url, "error-rate",
                        lib.vllm_params((lib.VLLM_GOOD[0], lib.VLLM_NO_ERROR_SERIES))).json()
    assert body["verdict"] == "pass" and body["details"]["canary_errors"] == 0, body


def test_vllm_counts_completion_routes_only(server, lib):
    # /v1/models is polled ten times as often as chat in the data: counted, 5% errors would read 0.45%.
    body = lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS)).json()
    assert body["verdict"] == "fail" and 0.035 < body["details"]["canary_ratio"] < 0.065, body
    assert body["samples"]["canary"] < 5.5 * 3600  # 5 requests/s for the 1 h window, not 55


@pytest.mark.parametrize("name", ["kn_serving_invocation_duration_seconds", "kn_queueproxy_app_duration_seconds"])
def test_kserve_on_knative_1_19_and_later(server, lib, name):
    stable, canary = lib.KSERVE_OTEL[name]
    params = {"preset": "kserve", "stable": stable, "canary": canary, "namespace": lib.NAMESPACE, "window": "1h"}
    body = lib.analysis(server.url, "error-rate", params).json()
    assert body["verdict"] == "fail" and body["samples"]["canary"] > 15000, body  # 5% errors, counted


def test_model_is_optional_where_the_server_has_no_model_label(server, lib):
    stable, canary = lib.PRESET_HASHES["tgi"]
    params = {"preset": "tgi", "stable": stable, "canary": canary, "window": "1h", "model": "any-model"}
    resp = lib.analysis(server.url, "error-rate", params)
    assert resp.status_code == 200 and "labels no series with the model" in resp.json()["details"]["notes"][0]


# -------------------------------------------------------------------------------- rate() windows
def test_rate_window_is_four_scrapes_or_the_step(prometheus, lib):
    def window(params: dict, **config) -> int:
        client = create_app({"prometheus_url": prometheus.url, **config}).test_client()
        body = client.get("/v1/analyses/latency", query_string=lib.vllm_params(lib.VLLM_GOOD, **params)).get_json()
        return int(body["details"]["rate_window_seconds"])

    assert window({}) == 120  # 4 x 30 s (default scrape interval) > 60 s step
    assert window({}, scrape_interval=60) == 240
    assert window({"step": "5m"}) == 300
    assert window({"rate_window": "3m"}) == 180
    client = create_app({"prometheus_url": prometheus.url}).test_client()
    resp = client.get("/v1/analyses/latency", query_string=lib.vllm_params(lib.VLLM_GOOD, rate_window="30s"))
    assert resp.status_code == 400 and "shorter than 'step'" in resp.get_json()["error"]["message"]


# ------------------------------------------------------------------------- through gunicorn, busy
def test_queued_behind_a_slow_analysis_is_503_not_a_late_answer(lib, tmp_path):
    """One worker, one thread, a 2 s budget: the second request waits in gunicorn's queue while the
    first uses its whole budget on a trickling Prometheus. Its budget counts from its arrival
    (rollouts/worker.py), so it gets 503 busy the moment a thread takes it, not a fresh 2 s."""
    with fake_prometheus(trickle_body) as (url, seen):
        config = tmp_path / "config.yaml"
        config.write_text("deadlineSeconds: 2\nminStartSeconds: 1\nmaxConcurrentAnalyses: 1\n"
                          "prometheus: {timeoutSeconds: 5}\n")
        srv = lib.start_server(["--prometheus", url, "--config", str(config), "--workers", "1"], tmp=tmp_path,
                               env={"MLGUARD_ANALYSIS_THREADS": "1"})
        try:
            results: dict[str, requests.Response] = {}
            first = threading.Thread(target=lambda: results.setdefault("first", requests.get(
                f"{srv.url}/v1/analyses/error-rate", params=PARAMS, timeout=30)))
            first.start()
            assert seen.wait(10)  # the first is being served
            second = requests.get(f"{srv.url}/v1/analyses/error-rate", params=PARAMS, timeout=30)
            first.join(30)
        finally:
            lib.stop(srv.proc)
    assert results["first"].status_code == 504
    body = second.json()
    assert second.status_code == 503 and body["error"]["type"] == "busy", body
    assert second.headers["Retry-After"] == "10"


def test_a_refused_request_never_keeps_a_slot(lib):
    """A request refused before its check runs (a repeated parameter) must not hold the worker's only
    analysis slot: the next request runs at once instead of waiting and being turned away busy."""
    app = create_app({"prometheus_url": f"http://127.0.0.1:{lib.free_port()}", "deadline_seconds": 2,
                      "max_concurrent_analyses": 1})
    client = app.test_client()
    for _ in range(3):
        resp = client.get("/v1/analyses/error-rate?window=1h&window=2h")
        assert resp.status_code == 400
    resp = client.get("/v1/analyses/error-rate", query_string=PARAMS)
    assert resp.status_code == 503 and resp.get_json()["error"]["type"] == "source_unavailable"  # not busy
