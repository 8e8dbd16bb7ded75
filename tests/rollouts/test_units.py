"""Units: parameters, label escaping, keys, config, verdict JSON; in-process app for timeouts and raw PromQL."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from rollouts.app import create_app
from rollouts.checks import check_names
from rollouts.config import ConfigError, load_config, parse_store_spec
from rollouts.errors import ERROR_RUNBOOK, ParamError
from rollouts.params import Params, parse_duration
from rollouts.presets import PRESETS, all_preset_queries
from rollouts.sources.prometheus import build_selector, escape_label_value, render
from rollouts.sources.samples import validate_key
from rollouts.verdict import CHECK_RUNBOOKS, Verdict, json_safe, link_runbooks

REPO = Path(__file__).resolve().parents[2]


def test_durations():
    assert parse_duration("30s", name="w") == 30
    assert parse_duration("10m", name="w") == 600
    assert parse_duration("2h", name="w") == 7200
    for bad in ("", "10", "1.5h", "-1m", "0s", "8d", "1w", "10m;drop"):
        with pytest.raises(ParamError, match=r"^parameter 'w' "):
            parse_duration(bad, name="w")
    with pytest.raises(ParamError, match=r"^parameter 'w' is longer than 7d \('604801s'\)$"):
        parse_duration("604801s", name="w")
    assert parse_duration("604800s", name="w") == 7 * 86400
    assert parse_duration("90d", name="--window", maximum=90 * 86400, label="--window") == 90 * 86400
    with pytest.raises(ParamError, match=r"^--step is longer than 1d \('25h'\)$"):
        parse_duration("25h", name="--step", maximum=86400, label="--step")


def test_params_typed_getters():
    p = Params({"a": "0.05", "n": "12", "b": "true", "lst": ["x"], "bad": "abc"})
    assert p.number("a") == 0.05 and p.integer("n") == 12 and p.flag("b", False) is True
    assert p.text("lst") == "x"
    with pytest.raises(ParamError, match="'bad'"):
        p.number("bad")
    with pytest.raises(ParamError, match="missing"):
        p.text("absent")
    with pytest.raises(ParamError, match="between"):
        p.integer("n", low=0, high=5)
    with pytest.raises(ParamError, match="given 2 times"):
        Params({"x": ["1", "2"]})
    with pytest.raises(ParamError, match="unknown parameter"):
        p.check_known({"a"}, check="latency")
    with pytest.raises(ParamError, match="finite"):
        Params({"a": "nan"}).number("a")


def test_selector_is_validated_and_escaped():
    assert build_selector({"rollouts_pod_template_hash": "6d4f9c", "namespace": "ml"}) == (
        'rollouts_pod_template_hash="6d4f9c",namespace="ml"')
    assert build_selector({"model_name": "meta-llama/Llama-3.1-8B"}) == 'model_name="meta-llama/Llama-3.1-8B"'
    for value in ('a"}', "a\nb", "a b", "", "é", 'x\\"'):
        with pytest.raises(ParamError):
            build_selector({"namespace": value})
    for name in ("1abc", "a-b", "a b", ""):
        with pytest.raises(ParamError):
            build_selector({name: "x"})
    assert escape_label_value('a"b\\c\n') == 'a\\"b\\\\c\\n'


def test_templates_render_for_every_preset():
    for name, template in all_preset_queries().items():
        query = render(template, name=name, selector='h="x"', interval="60s")
        assert "${" not in query and 'h="x"' in query and query.count("(") == query.count(")"), name
    assert set(PRESETS) == {"vllm", "tgi", "triton", "kserve"}


@pytest.mark.parametrize("key", ["../a.jsonl", "/a.jsonl", "a/../b.jsonl", "s3://b/a.jsonl", "a//b.jsonl",
                                 "a\\b.jsonl", "a.csv", "", "./a.jsonl", "c:a.jsonl", "a b.jsonl"])
def test_bad_keys(key):
    with pytest.raises(ParamError):
        validate_key(key, param="baseline")


def test_good_keys():
    assert validate_key("inputs/2026-11/baseline.jsonl", param="b") == "inputs/2026-11/baseline.jsonl"
    assert validate_key("emb.npy", param="b") == "emb.npy"


def test_config_file_errors_list_every_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prometheus:\n  url: ftp://x\n  timeoutSeconds: 30\nsampleStores:\n  Bad_Name: /x\nextra: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config({"config_file": str(path)}, env={})
    message = str(info.value)
    for fragment in ("prometheus/url", "prometheus/timeoutSeconds", "sampleStores", "extra"):
        assert fragment in message
    path.write_text("prometheus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config({"config_file": str(path)}, env={})


def test_config_env_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prometheus:\n  url: http://p:9090\n  preset: tgi\nallowRawQueries: true\n"
                    "defaults: {mode: fixed, alpha: 0.05}\n")
    cfg = load_config(env={"MLGUARD_ANALYSIS_CONFIG": str(path),
                           "MLGUARD_ANALYSIS_SAMPLE_STORES": json.dumps({"base": "/data"})})
    assert cfg.prometheus_url == "http://p:9090" and cfg.default_preset == "tgi"
    assert cfg.allow_raw_queries and cfg.mode == "fixed" and cfg.alpha == 0.05
    assert cfg.sample_stores == {"base": "/data"}
    env = {"MLGUARD_ANALYSIS_CONFIG": str(path), "MLGUARD_ANALYSIS_PROMETHEUS": "http://q:9090"}
    assert load_config(env=env).prometheus_url == "http://q:9090"
    with pytest.raises(ConfigError):
        load_config(env={"MLGUARD_ANALYSIS_SAMPLE_STORES": "[1]"})
    with pytest.raises(ConfigError):
        load_config({"nonsense": 1}, env={})


def test_store_spec():
    assert parse_store_spec("base=/data/x") == ("base", "/data/x")
    assert parse_store_spec("web=https://h/a=b") == ("web", "https://h/a=b")
    for bad in ("nodir", "=x", "Bad=/x", "a="):
        with pytest.raises(ConfigError):
            parse_store_spec(bad)


def test_verdict_json_is_always_valid_json():
    v = Verdict(check="latency", verdict="fail", method="mann-whitney", statistic=float("inf"),
                p_value=np.float64(1e-9), threshold=0.01, samples={"baseline": np.int64(3), "canary": 4},
                reason="slow", mode="fixed", details={"x": np.array([1.0, math.nan]), "ok": np.bool_(True)})
    body = v.to_json()
    text = json.dumps(body, allow_nan=False)
    assert json.loads(text)["statistic"] is None
    assert body["details"]["x"] == [1.0, None] and body["details"]["ok"] is True
    assert body["runbook"] == "runbooks/model-rollback-via-canary.md" and body["runbook"] in body["reason"]
    assert json_safe({"a": (np.float32(0.5),)}) == {"a": [0.5]}


def test_answers_link_runbooks_under_the_configured_base_url():
    v = Verdict(check="input-drift", verdict="fail", method="ks", statistic=0.5, p_value=1e-9, threshold=0.01,
                samples={"baseline": 10, "canary": 10}, reason="drifted", mode="fixed")
    body = link_runbooks(v.to_json(), "https://wiki.example.com/mlguard")
    assert body["runbook"] == "https://wiki.example.com/mlguard/drift-alert-investigation.md"
    assert body["reason"] == "drifted; see https://wiki.example.com/mlguard/drift-alert-investigation.md"
    cfg = load_config({"document": {"runbookBaseURL": "https://wiki.example.com/rb/"}}, env={})
    assert cfg.runbook_base_url == "https://wiki.example.com/rb/"
    assert load_config({}, env={"MLGUARD_ANALYSIS_RUNBOOK_BASE_URL": "https://x.example/"}).runbook_base_url == \
        "https://x.example/"
    with pytest.raises(ConfigError):
        load_config({"document": {"runbookBaseURL": "wiki"}}, env={})


def test_prometheus_timeout_is_504_within_budget(lib):
    with lib.silent_tcp_server() as url:
        app = create_app({"prometheus_url": url, "prometheus_timeout": 1.0, "deadline_seconds": 3})
        client = app.test_client()
        started = time.monotonic()
        resp = client.get("/v1/analyses/latency", query_string=lib.vllm_params(lib.VLLM_GOOD))
        elapsed = time.monotonic() - started
    assert resp.status_code == 504, resp.get_json()
    assert resp.get_json()["error"]["type"] == "source_timeout"
    assert elapsed < 3.5


def test_deadline_caps_a_chain_of_slow_calls(lib):
    # Four queries at a 3 s per-call timeout would take 12 s; the 2 s deadline stops the chain.
    with lib.silent_tcp_server() as url:
        app = create_app({"prometheus_url": url, "prometheus_timeout": 3.0, "deadline_seconds": 2})
        started = time.monotonic()
        resp = app.test_client().get("/v1/analyses/error-rate", query_string=lib.vllm_params(lib.VLLM_GOOD))
        assert resp.status_code == 504
        assert time.monotonic() - started < 2.5


@pytest.mark.integration
def test_raw_promql_when_allowed(prometheus, lib):
    app = create_app({"prometheus_url": prometheus.url, "allow_raw_queries": True})
    template = ("histogram_quantile(${quantile}, sum by (le) "
                "(rate(tgi_request_duration_bucket{${selector}}[${interval}])))")
    stable, canary = lib.PRESET_HASHES["tgi"]
    resp = app.test_client().get("/v1/analyses/latency", query_string={
        "stable": stable, "canary": canary, "window": "1h", "promql_latency": template})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["verdict"] == "fail"
    assert resp.get_json()["details"]["query"] == "promql_latency"


def test_no_prometheus_configured_is_an_error_not_a_verdict(lib):
    app = create_app({})
    resp = app.test_client().get("/v1/analyses/latency", query_string=lib.vllm_params(lib.VLLM_GOOD))
    assert resp.status_code == 500 and "Prometheus" in resp.get_json()["error"]["message"]


def test_model_matcher_only_where_the_series_carry_it():
    model = ',model_name="m"'
    vllm = {role: render(t, name=role, selector='h="x"', interval="60s", model=model)
            for role, t in PRESETS["vllm"].items()}
    assert 'model_name="m"' in vllm["latency"] and 'model_name="m"' in vllm["output_tokens"]
    assert "model_name" not in vllm["errors"] and "model_name" not in vllm["requests"]  # http_requests_total
    triton = render(PRESETS["triton"]["errors"], name="e", selector='h="x"', interval="60s", model=',model="m"')
    assert 'nv_inference_request_failure{h="x",model="m"}' in triton


def test_model_parameter_needs_a_label_outside_the_presets(lib):
    # A named query (no preset) cannot place the model matcher: refused, pointing at selector=.
    app = create_app({"prometheus_url": "http://127.0.0.1:9", "queries": {"my_latency": "x{${selector}}"}})
    resp = app.test_client().get("/v1/analyses/latency", query_string={
        "latency_query": "my_latency", "stable": "a1", "canary": "b2", "model": "x"})
    assert resp.status_code == 400 and "selector=" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("store", ["local", "web"])
def test_sample_size_and_row_limits(sample_dir, http_store, store):
    stores = {"local": str(sample_dir), "web": http_store}
    params = {"store": store, "baseline": "inputs/baseline.jsonl", "canary": "inputs/canary-same.jsonl"}
    small = create_app({"sample_stores": stores, "sample_max_bytes": 4096}).test_client()
    resp = small.get("/v1/analyses/input-drift", query_string=params)
    assert resp.status_code == 422 and resp.get_json()["error"]["type"] == "sample_too_large"
    few_rows = create_app({"sample_stores": stores, "sample_max_rows": 100}).test_client()
    resp = few_rows.get("/v1/analyses/input-drift", query_string=params)
    assert resp.status_code == 422 and "rows" in resp.get_json()["error"]["message"]


def test_directory_instead_of_object(sample_dir, http_store):
    app = create_app({"sample_stores": {"local": str(sample_dir), "web": http_store}}).test_client()
    base = {"baseline": "bad/directory.jsonl", "canary": "inputs/canary-same.jsonl"}
    assert app.get("/v1/analyses/input-drift", query_string={"store": "local", **base}).status_code == 404
    # the HTTP server redirects a directory to "dir/": redirects are not followed
    assert app.get("/v1/analyses/input-drift", query_string={"store": "web", **base}).status_code == 502


def test_symlink_out_of_the_store_is_refused(tmp_path, sample_dir):
    root = tmp_path / "store"
    root.mkdir()
    (root / "escape.jsonl").symlink_to(sample_dir / "inputs/baseline.jsonl")
    app = create_app({"sample_stores": {"s": str(root)}}).test_client()
    resp = app.get("/v1/analyses/input-drift", query_string={"store": "s", "baseline": "escape.jsonl",
                                                             "canary": "escape.jsonl"})
    assert resp.status_code == 400 and "outside" in resp.get_json()["error"]["message"]


def test_sample_store_down_is_503(sample_dir, lib):
    app = create_app({"sample_stores": {"web": f"http://127.0.0.1:{lib.free_port()}/"}}).test_client()
    resp = app.get("/v1/analyses/eval-score", query_string={"store": "web", "baseline": "eval/baseline.jsonl",
                                                            "canary": "eval/canary-same.jsonl"})
    assert resp.status_code == 503 and resp.get_json()["error"]["details"]["source"] == "sample-store"


def test_the_deployed_config_loads():
    # kustomize/base/analysis/config.yaml is mounted at /etc/mlguard/analysis/config.yaml in the cluster.
    path = REPO / "kustomize/base/analysis/config.yaml"
    cfg = load_config({"config_file": str(path)}, env={})
    assert cfg.prometheus_url and cfg.mode == "anytime"
    assert cfg.deadline_seconds < 8 and cfg.prometheus_timeout < cfg.deadline_seconds


def test_runbooks_named_by_answers_are_from_the_fixed_list():
    fixed = {"runbooks/drift-alert-investigation.md", "runbooks/model-rollback-via-canary.md",
             "runbooks/quantization-quality-regression.md", "runbooks/analysis-provider-errors.md"}
    assert set(CHECK_RUNBOOKS.values()) | {ERROR_RUNBOOK} <= fixed
    assert set(CHECK_RUNBOOKS) == set(check_names())


def test_sample_stores_merge_across_file_env_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampleStores:\n  base: /data/base\n  evals: /data/evals\n")
    cfg = load_config({"config_file": str(path), "sample_stores": {"evals": "https://evals.example/"}},
                      env={"MLGUARD_ANALYSIS_SAMPLE_STORES": json.dumps({"logs": "/data/logs"})})
    assert cfg.sample_stores == {"base": "/data/base", "evals": "https://evals.example/", "logs": "/data/logs"}
