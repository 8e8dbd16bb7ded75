"""End to end over HTTP through gunicorn against a real Prometheus: latency, error-rate, presets."""

from __future__ import annotations

import re
import time

import pytest
import requests

pytestmark = pytest.mark.integration


def metric_value(text: str, name: str, labels: dict[str, str]) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_latency_pass_when_canary_like_stable(server, lib):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_GOOD)).json()
    assert body["verdict"] == "pass", body
    assert body["mode"] == "anytime"
    assert body["samples"]["canary"] >= 60 and body["samples"]["baseline"] >= 60
    assert abs(body["details"]["relative_increase"]) < 0.15


@pytest.mark.parametrize("mode", ["anytime", "fixed"])
def test_latency_fail_when_canary_slower(server, lib, mode):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_SLOW, mode=mode)).json()
    assert body["verdict"] == "fail", body
    assert body["mode"] == mode
    assert body["p_value"] < 0.01
    assert body["details"]["relative_increase"] > 0.3
    # the answer links its runbook under runbookBaseURL (default: the published runbooks)
    assert body["runbook"] == "https://github.com/mlguard/mlguard/blob/main/runbooks/model-rollback-via-canary.md"
    assert f"see {body['runbook']}" in body["reason"]


def test_latency_relative_threshold_is_honoured(server, lib):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_SLOW, max_increase="2.0")).json()
    assert body["verdict"] == "pass", body


def test_latency_half_filled_window_is_inconclusive(server, lib):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_NEW)).json()
    assert body["verdict"] == "inconclusive", body
    assert 0 < body["samples"]["canary"] < 10
    assert "window still filling" in body["reason"]


def test_empty_result_never_passes(server, lib):
    for check in ("latency", "error-rate"):
        body = lib.analysis(server.url, check, lib.vllm_params((lib.VLLM_GOOD[0], "0dead0beef"))).json()
        assert body["verdict"] == "inconclusive", body
        assert body["samples"]["canary"] == 0


def test_error_rate_pass(server, lib):
    body = lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_GOOD)).json()
    assert body["verdict"] == "pass", body
    # 90 minutes at 5 req/s: the /health handler is not counted.
    assert 15000 < body["samples"]["canary"] < 21000
    assert body["details"]["canary_ratio"] < 0.01


def test_error_rate_fail_above_ceiling(server, lib):
    body = lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS)).json()
    assert body["verdict"] == "fail", body
    assert "ceiling" in body["reason"]
    assert 0.04 < body["details"]["canary_ratio"] < 0.06


@pytest.mark.parametrize("mode", ["anytime", "fixed"])
def test_error_rate_fail_significantly_above_stable(server, lib, mode):
    body = lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_SLOW, mode=mode)).json()
    assert body["verdict"] == "fail", body
    assert body["details"]["canary_ratio"] < 0.01 < body["details"]["ceiling"] + 1
    assert "significantly above stable" in body["reason"]
    assert body["p_value"] < 0.01


def test_post_json_body_same_answer_as_get(server, lib):
    get = lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS)).json()
    post = lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS), method="POST").json()
    assert get["verdict"] == post["verdict"] == "fail"
    # the window ends at "now", so a second later it may have slid past a few samples
    for arm in ("canary", "baseline"):
        if arm in get["samples"]:
            assert post["samples"][arm] == pytest.approx(get["samples"][arm], rel=0.05)
    assert get["method"] == post["method"] and get["threshold"] == post["threshold"]


@pytest.mark.parametrize("preset", ["tgi", "triton", "kserve"])
def test_presets_against_their_own_series(server, lib, preset):
    stable, canary = lib.PRESET_HASHES[preset]
    params = {"preset": preset, "stable": stable, "canary": canary, "namespace": lib.NAMESPACE,
              "window": "1h", "step": "1m"}
    lat = lib.analysis(server.url, "latency", params).json()
    assert lat["verdict"] == "fail", lat  # the canary of every preset scenario is 1.6x slower
    # histograms are pooled per request; Triton has none, its per-interval means are paired by time
    pooled = preset != "triton"
    assert lat["details"]["query"] == f"{preset}_latency" + ("_buckets" if pooled else "")
    assert lat["method"] == ("msprt-mann-whitney-binned" if pooled else "msprt-paired-har")
    assert 0.4 < lat["details"]["relative_increase"] < 0.9
    err = lib.analysis(server.url, "error-rate", params).json()
    assert err["verdict"] == "pass", err
    assert err["samples"]["canary"] > 15000 and err["details"]["queries"] == [f"{preset}_errors", f"{preset}_requests"]


def test_vllm_preset_with_model_label(server, lib):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_SLOW)).json()
    assert body["verdict"] == "fail"
    wrong_model = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_SLOW, model="other-model")).json()
    assert wrong_model["verdict"] == "inconclusive" and wrong_model["samples"]["canary"] == 0


def test_output_drift_from_generated_tokens(server, lib):
    params = lib.vllm_params(lib.VLLM_GOOD, source="prometheus")
    body = lib.analysis(server.url, "output-drift", params).json()
    assert body["verdict"] == "pass", body
    assert 150 < body["details"]["canary_mean_tokens"] < 260
    triton = {"source": "prometheus", "preset": "triton", "stable": "a1", "canary": "b2"}
    resp = lib.analysis(server.url, "output-drift", triton)
    assert resp.status_code == 400 and "output_tokens" in resp.json()["error"]["message"]


def test_named_query_template_from_config(server, lib):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_SLOW, latency_query="vllm_ttft")).json()
    assert body["verdict"] == "fail" and body["details"]["query"] == "vllm_ttft"


def test_query_error_is_502(server, lib):
    resp = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_GOOD, latency_query="broken_latency"))
    assert resp.status_code == 502
    assert resp.json()["error"]["type"] == "source_query_error"
    assert resp.json()["runbook"] == "https://github.com/mlguard/mlguard/blob/main/runbooks/analysis-provider-errors.md"


def test_raw_promql_refused_by_default(server, lib):
    resp = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_GOOD, promql_latency="up"))
    assert resp.status_code == 400 and "allowRawQueries" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("param", "value"),
    [("canary", 'abc"}or vector(1)#'), ("namespace", "ml\nserving"), ("model", "x{y}"),
     ("selector", 'pod=a",b="c'), ("hash_label", "rollouts-pod-template-hash"), ("window", "1y"),
     ("step", "0m"), ("alpha", "2"), ("mode", "sometimes"), ("preset", "sglang"), ("bogus", "1")],
)
def test_bad_parameters_are_400(server, lib, param, value):
    resp = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_GOOD, **{param: value}))
    assert resp.status_code == 400, resp.text
    assert param in resp.json()["error"]["message"] or param == "canary"


def test_prometheus_down_is_503_never_a_verdict(dead_prometheus_server, lib):
    resp = lib.analysis(dead_prometheus_server.url, "latency", lib.vllm_params(lib.VLLM_GOOD))
    assert resp.status_code == 503
    assert resp.json()["error"]["type"] == "source_unavailable"
    metrics = requests.get(f"{dead_prometheus_server.url}/metrics", timeout=5).text
    assert metric_value(metrics, "mlguard_analysis_source_errors_total", {"source": "prometheus"}) >= 1


def test_metrics_count_argo_calls(server, lib):
    labels = {"check": "error-rate", "verdict": "fail", "caller": "argo"}
    before = metric_value(requests.get(f"{server.url}/metrics", timeout=5).text,
                          "mlguard_analysis_requests_total", labels)
    for _ in range(3):
        lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS), headers={"User-Agent": lib.ARGO_UA})
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert metric_value(text, "mlguard_analysis_requests_total", labels) == before + 3
    assert "# HELP mlguard_analysis_duration_seconds" in text
    assert metric_value(text, "mlguard_analysis_duration_seconds_count", {"check": "error-rate"}) >= 3
    lib.analysis(server.url, "error-rate", lib.vllm_params(lib.VLLM_ERRORS, caller="argo"))
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert metric_value(text, "mlguard_analysis_requests_total", labels) == before + 4


def test_triton_canary_without_failure_series(server, lib):
    params = {"preset": "triton", "stable": lib.PRESET_HASHES["triton"][0], "canary": lib.TRITON_NO_FAILURES,
              "window": "1h", "model": "llama-8b-trtllm"}
    err = lib.analysis(server.url, "error-rate", params).json()
    assert err["verdict"] == "pass", err
    assert err["samples"]["canary"] > 15000 and err["details"]["canary_errors"] == 0
    lat = lib.analysis(server.url, "latency", params).json()
    assert lat["verdict"] == "pass" and lat["samples"]["canary"] >= 50, lat


# ---------------------------------------------------------------- issue 17: windows, buckets, constants
def since_data_end(prometheus, ask):
    """``ask()``'s answer and the bounds of (now - the data's end) around it: the series end when the
    session's Prometheus was loaded, and a canary's age grows with the session's wall-clock time."""
    before = time.time() - prometheus.data_end
    answer = ask()
    return answer, before, time.time() - prometheus.data_end


def test_canary_age_comes_from_its_series(server, prometheus, lib):
    body, lag_min, lag_max = since_data_end(prometheus, lambda: lib.analysis(
        server.url, "latency", lib.vllm_params(lib.VLLM_NEW, min_intervals="3")).json())
    # the canary started 5 minutes before the data ends; its age is that plus the time since, to a step
    age = body["details"]["canary_age_seconds"]
    assert 300 - 100 + lag_min < age < 300 + 90 + lag_max, (body["details"], lag_min, lag_max)
    assert body["details"]["window_seconds"] < 600 < body["details"]["window_requested_seconds"]


@pytest.mark.parametrize("check", ["error-rate", "latency"])
def test_stable_is_judged_over_the_canary_lifetime(server, prometheus, lib, check):
    """Stable had 0.1 % errors and 0.7x latency before the canary started 30 minutes ago, 0.8 % and 1x
    since, like the canary. Over the requested hour, stable's older traffic would make a sound canary
    look worse (0.8 % against 0.45 %); over the canary's lifetime the two are the same."""
    params = lib.vllm_params(lib.VLLM_LATE, max_increase="0.05") if check == "latency" else (
        lib.vllm_params(lib.VLLM_LATE))
    body, lag_min, lag_max = since_data_end(prometheus, lambda: lib.analysis(server.url, check, params).json())
    assert body["verdict"] == "pass", body
    details = body["details"]
    assert details["window_requested_seconds"] == 3600
    age = details["canary_age_seconds"]
    assert lib.LATE_CANARY_AGE - 150 + lag_min < age < lib.LATE_CANARY_AGE + 90 + lag_max, (details, lag_min)
    assert details["window_seconds"] <= lib.LATE_CANARY_AGE + 210 + lag_max
    if check == "error-rate":
        assert abs(details["canary_ratio"] - details["stable_ratio"]) < 0.004
        assert body["samples"]["baseline"] < 1.3 * body["samples"]["canary"]  # stable's last 30 minutes only


def test_latency_pools_histogram_buckets(server, lib):
    body = lib.analysis(server.url, "latency", lib.vllm_params(lib.VLLM_SLOW)).json()
    assert body["verdict"] == "fail" and body["method"] == "msprt-mann-whitney-binned", body
    # samples are requests now: 5 req/s for the hour on each side (stable has 2 pods)
    assert 15000 < body["samples"]["canary"] < 21000 and body["samples"]["baseline"] > 30000
    assert body["details"]["buckets"][-1] == "+Inf"
    assert 1.4 < body["details"]["canary_value"] / body["details"]["stable_value"] < 1.9
