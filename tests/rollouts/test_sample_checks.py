"""input-drift, output-drift and eval-score end to end, from a directory store and an HTTP store."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

FEATURES = "prompt_tokens,temperature,lang"


@pytest.mark.parametrize("store", ["local", "web"])
def test_input_drift_pass_and_fail(server, lib, store):
    same = lib.analysis(server.url, "input-drift", {"store": store, "baseline": "inputs/baseline.jsonl",
                                                   "canary": "inputs/canary-same.jsonl", "features": FEATURES})
    body = same.json()
    assert body["verdict"] == "pass", body
    assert body["samples"] == {"baseline": 2000, "canary": 2000}
    assert {f["feature"] for f in body["details"]["features"]} == {"prompt_tokens", "temperature", "lang"}
    assert {f["method"] for f in body["details"]["features"]} >= {"ks", "chi2"}
    assert body["details"]["correction"] == "Benjamini-Hochberg"
    assert body["mode"] == "anytime" and body["details"]["look_rows"] == 2000
    assert body["details"]["look_correction"].startswith("alpha spending on a halving grid")
    assert body["threshold"] == body["details"]["look_alpha"] > 0.005  # more than half of alpha 0.01 at full size
    shifted = lib.analysis(server.url, "input-drift", {"store": store, "baseline": "inputs/baseline.jsonl",
                                                      "canary": "inputs/canary-shifted.jsonl",
                                                      "features": FEATURES}).json()
    assert shifted["verdict"] == "fail", shifted
    assert "prompt_tokens" in shifted["reason"] and "temperature" not in shifted["reason"]
    assert shifted["runbook"] == "https://github.com/mlguard/mlguard/blob/main/runbooks/drift-alert-investigation.md"


def test_input_drift_default_features_psi_and_bonferroni(server, lib):
    body = lib.analysis(server.url, "input-drift", {
        "store": "local", "baseline": "inputs/baseline.jsonl", "canary": "inputs/canary-shifted.jsonl",
        "psi": "true", "correction": "bonferroni", "mode": "fixed"}).json()
    assert body["verdict"] == "fail"
    assert body["mode"] == "fixed" and body["threshold"] == 0.01
    assert body["details"]["correction"] == "Bonferroni"
    assert set(body["details"]["psi"]) == {"prompt_tokens", "temperature"}
    assert body["details"]["psi"]["prompt_tokens"]["psi"] > body["details"]["psi"]["temperature"]["psi"]


def test_input_drift_too_few_samples_is_inconclusive(server, lib):
    body = lib.analysis(server.url, "input-drift", {"store": "local", "baseline": "inputs/baseline.jsonl",
                                                   "canary": "inputs/canary-small.jsonl",
                                                   "features": FEATURES}).json()
    assert body["verdict"] == "inconclusive"
    assert body["samples"]["canary"] == 40 and "40" in body["reason"]


@pytest.mark.parametrize(("canary", "expected"), [("emb/canary-same.npy", "pass"), ("emb/canary-shifted.npy", "fail")])
def test_input_drift_embeddings_mmd(server, lib, canary, expected):
    body = lib.analysis(server.url, "input-drift", {"store": "web", "baseline": "emb/baseline.npy",
                                                   "canary": canary, "embedding": "vec"}).json()
    assert body["verdict"] == expected, body
    assert body["method"].startswith("mmd")
    # anytime: the plan's grid is 400, 200, 100 rows (planned = the baseline's 400): a 300-row canary is
    # judged on its first 200 rows, and says so
    assert body["samples"] == {"baseline": 400, "canary": 200}
    assert body["details"]["canary_rows"] == 300 and body["details"]["look_rows"] == 200


def test_input_drift_embeddings_from_jsonl_field(server, lib):
    body = lib.analysis(server.url, "input-drift", {"store": "local", "baseline": "emb/records-base.jsonl",
                                                   "canary": "emb/records-shift.jsonl", "embedding": "vec",
                                                   "mode": "fixed"}).json()
    assert body["verdict"] == "fail", body


@pytest.mark.parametrize(("canary", "expected", "words"), [
    ("outputs/canary-same.jsonl", "pass", "did not drift"),
    ("outputs/canary-refuses.jsonl", "fail", "refusal rate"),
    ("outputs/canary-longer.jsonl", "fail", "response lengths"),
])
def test_output_drift(server, lib, canary, expected, words):
    body = lib.analysis(server.url, "output-drift", {"store": "local", "baseline": "outputs/stable.jsonl",
                                                    "canary": canary}).json()
    assert body["verdict"] == expected, body
    assert words in body["reason"]


@pytest.mark.parametrize(("canary", "extra", "expected"), [
    ("eval/canary-same.jsonl", {}, "pass"),
    ("eval/canary-worse.jsonl", {}, "fail"),
    ("eval/canary-same.jsonl", {"min_accuracy": "0.95"}, "fail"),
    ("eval/canary-partial.jsonl", {}, "inconclusive"),
])
def test_eval_score(server, lib, canary, extra, expected):
    body = lib.analysis(server.url, "eval-score", {"store": "web", "baseline": "eval/baseline.jsonl",
                                                  "canary": canary, **extra}).json()
    assert body["verdict"] == expected, body
    if expected != "inconclusive":
        assert body["method"].startswith("mcnemar")
        assert body["samples"]["paired"] == 400
    else:
        assert body["samples"]["paired"] == 20


@pytest.mark.parametrize("key", ["../etc/passwd.jsonl", "/etc/passwd.jsonl", "http://evil/x.jsonl",
                                 "inputs/../../x.jsonl", "inputs\\x.jsonl", "inputs/x.csv", "file:x.jsonl"])
def test_bad_keys_are_400(server, lib, key):
    for store in ("local", "web"):
        resp = lib.analysis(server.url, "input-drift", {"store": store, "baseline": key,
                                                       "canary": "inputs/canary-same.jsonl"})
        assert resp.status_code == 400, (store, key, resp.text)


@pytest.mark.parametrize(("params", "status", "kind"), [
    ({"baseline": "inputs/missing.jsonl"}, 404, "sample_not_found"),
    ({"baseline": "bad/broken.jsonl"}, 422, "sample_format_error"),
    ({"baseline": "bad/three-d.npy"}, 422, "sample_format_error"),
    ({"store": "nope"}, 400, "bad_parameter"),
])
def test_sample_store_errors(server, lib, params, status, kind):
    base = {"store": "local", "baseline": "inputs/baseline.jsonl", "canary": "inputs/canary-same.jsonl"}
    resp = lib.analysis(server.url, "input-drift", {**base, **params})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["type"] == kind
