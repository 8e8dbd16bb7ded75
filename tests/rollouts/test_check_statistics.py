"""Issue 17's reproducers, one per bug, through the checks (in-process app and directory store, or the
check's own ``judge`` where the data would come from Prometheus). Each test names the bug it pins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rollouts.app import create_app
from rollouts.checks import error_rate, input_drift, latency, output_drift
from rollouts.sources.samples import Samples
from rollouts.stats import mmd as mmd_module


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def ask(root: Path, check: str, **params: str) -> dict[str, Any]:
    client = create_app({"sample_stores": {"s": str(root)}}).test_client()
    resp = client.get(f"/v1/analyses/{check}", query_string={"store": "s", **params})
    assert resp.status_code == 200, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


# ---------------------------------------------------------------- MMD next to other tests
def embedding_rows(rng: np.random.Generator, n: int, shift: float, scalars: int = 3) -> list[dict[str, Any]]:
    vec = rng.normal(shift, 1.0, size=(n, 8))
    return [{"vec": v.tolist(), **{f"x{j}": float(rng.normal()) for j in range(scalars)}} for v in vec]


def test_mmd_fails_a_shifted_embedding_next_to_three_scalar_fields(tmp_path: Path) -> None:
    """Was: permutations raised to ceil(2/alpha) only, so the adjusted p-value (0.0010) could never pass
    alpha/looks/tests (0.0005) and a +3 sd embedding passed."""
    rng = np.random.default_rng(1)
    write(tmp_path / "b.jsonl", embedding_rows(rng, 200, 0.0))
    write(tmp_path / "c.jsonl", embedding_rows(rng, 200, 3.0))
    body = ask(tmp_path, "input-drift", baseline="b.jsonl", canary="c.jsonl", embedding="vec")
    assert body["verdict"] == "fail", body["reason"]
    mmd = next(f for f in body["details"]["features"] if f["kind"] == "embedding")
    assert mmd["drifted"] and mmd["p_adjusted"] < body["threshold"]
    perms = body["details"]["mmd_permutations"]
    assert mmd["permutations"] >= perms["needed"] >= 2 * 4 / body["threshold"]  # 4 tests in the family


def test_mmd_that_cannot_reach_its_threshold_is_inconclusive_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    base = Samples(key="b.jsonl", records=embedding_rows(rng, 200, 0.0))
    cand = Samples(key="c.jsonl", records=embedding_rows(rng, 200, 3.0))
    monkeypatch.setattr(mmd_module, "MAX_PERMUTATION_WORK", 400 ** 2 * 600)  # 600 permutations at 400 rows
    got = input_drift.judge(base, cand, features=["x0", "x1", "x2"], embedding="vec", mode="anytime", look={},
                            settings=input_drift.Settings(alpha=0.01 / 20))
    assert got.verdict == "inconclusive", got.reason
    assert "work cap allows 600" in got.reason and "needed" in json.dumps(got.details["mmd_permutations"])
    stopped = input_drift.judge(base, cand, features=["x0"], embedding="vec", mode="anytime", look={},
                                settings=input_drift.Settings(alpha=0.01 / 20, stop=lambda: True))
    assert stopped.verdict == "inconclusive" and "time budget ran out" in stopped.reason


# ---------------------------------------------------------------- PSI never decides
def test_psi_above_its_fail_threshold_on_an_undrifted_feature_does_not_fail(tmp_path: Path) -> None:
    """Was: psi=true failed whenever PSI >= 0.25, which 22-24 % of undrifted features reach at 100 rows."""
    rng = np.random.default_rng(3)
    for _ in range(50):  # the first seeded pair whose PSI crosses 0.25 without any drift
        base, cand = rng.normal(size=100), rng.normal(size=100)
        if input_drift.psi(base, cand).statistic >= 0.25:
            break
    write(tmp_path / "b.jsonl", [{"x": float(v)} for v in base])
    write(tmp_path / "c.jsonl", [{"x": float(v)} for v in cand])
    body = ask(tmp_path, "input-drift", baseline="b.jsonl", canary="c.jsonl", psi="true", mode="fixed")
    assert body["details"]["psi"]["x"]["level"] == "fail"
    assert body["verdict"] == "pass", body["reason"]
    assert "informational" in body["reason"]
    psi = body["details"]["psi"]["x"]
    assert psi["expected_without_drift"] == pytest.approx((psi["bins"] - 1) * (1 / 100 + 1 / 100))


# ---------------------------------------------------------------- error-rate ceiling
def test_two_errors_in_a_hundred_requests_do_not_breach_a_one_percent_ceiling() -> None:
    for mode in ("fixed", "anytime"):
        got = error_rate.judge(error_rate.Counts(2, 100, 1, 100), mode=mode, alpha=0.01, ceiling=0.01)  # type: ignore[arg-type]
        assert got.verdict == "pass", got.reason
        assert got.details["ceiling_test"]["lower_bound"] < 0.01


def test_a_rate_confidently_above_the_ceiling_fails_and_says_so() -> None:
    got = error_rate.judge(error_rate.Counts(100, 5000, 100, 5000), mode="anytime", alpha=0.01, ceiling=0.01)
    assert got.verdict == "fail"
    assert "lower confidence bound" in got.reason and "above the ceiling 1.00%" in got.reason
    assert got.details["alpha_split"] == {"ceiling": pytest.approx(0.001), "comparison": pytest.approx(0.009)}
    off = error_rate.judge(error_rate.Counts(100, 5000, 100, 5000), mode="anytime", alpha=0.01, ceiling=1.0)
    assert off.verdict == "pass" and off.details["alpha_split"]["comparison"] == 0.01


def test_anytime_comparison_is_the_count_test() -> None:
    """Was: the exact proportion e-value, power 0.17 at 1 % -> 2 % with 5,000 requests per side."""
    got = error_rate.judge(error_rate.Counts(100, 5000, 50, 5000), mode="anytime", alpha=0.01, ceiling=1.0)
    assert got.method == "msprt-poisson" and got.verdict == "fail", got.reason


# ---------------------------------------------------------------- latency: constant series
CONSTANT = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, float("inf")]


def histogram(bucket: int, requests: int) -> latency.Histogram:
    counts = [0.0] * len(CONSTANT)
    counts[bucket] = float(requests)
    return latency.Histogram(CONSTANT, np.cumsum(counts).tolist())


@pytest.mark.parametrize("mode", ["fixed", "anytime"])
def test_all_requests_in_one_bucket_is_an_ordinary_answer(mode: str) -> None:
    """Was: constant per-interval series (2.0 s vs 1.0 s) gave 422 from the mean test, or flipped between
    422 and p = 1 with float rounding. Pooled buckets: a deterministic fail, and equal buckets a pass."""
    slower = latency.judge_buckets(histogram(5, 3000), histogram(3, 27000), mode=mode, alpha=0.01,  # type: ignore[arg-type]
                                   quantile=0.95, max_increase=0.3)
    assert slower.verdict == "fail", slower.reason
    assert slower.details["canary_value"] == pytest.approx(1.5 + 0.5 * 0.95)
    assert slower.details["stable_value"] == pytest.approx(0.8 + 0.2 * 0.95)
    same = latency.judge_buckets(histogram(3, 3000), histogram(3, 27000), mode=mode, alpha=0.01,  # type: ignore[arg-type]
                                 quantile=0.95, max_increase=0.3)
    assert same.verdict == "pass" and same.p_value == 1.0


@pytest.mark.parametrize("mode", ["fixed", "anytime"])
def test_constant_per_interval_series_are_decided(mode: str) -> None:
    diffs = [2.0 - 1.0] * 20 + [1.0000000000000002, 0.9999999999999998] * 5
    got = latency.judge_paired(diffs, 2.0, 1.0, mode=mode, alpha=0.01, quantile=0.95, max_increase=0.3,  # type: ignore[arg-type]
                               min_intervals=10)
    assert got.verdict == "fail" and got.p_value == 0.0
    equal = latency.judge_paired([0.0] * 30, 1.0, 1.0, mode=mode, alpha=0.01, quantile=0.95, max_increase=0.3,  # type: ignore[arg-type]
                                 min_intervals=10)
    assert equal.verdict == "pass"


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    h = latency.Histogram([1.0, 2.0, float("inf")], [10.0, 90.0, 100.0])
    assert h.quantile(0.5) == pytest.approx(1.0 + (50 - 10) / 80)  # inside the (1, 2] bucket
    assert h.quantile(0.05) == pytest.approx(0.5)  # the first bucket starts at 0
    assert h.quantile(0.95) == 2.0  # the +Inf bucket: the highest finite bound
    rounded = latency.Histogram.from_buckets([(2.0, 89.6), (1.0, 10.2), (float("inf"), 89.4)])
    assert rounded.cumulative == [10.0, 90.0, 90.0]  # increase() extrapolation: whole, never decreasing


# ---------------------------------------------------------------- data quality
def records(rng: np.random.Generator, n: int, *, null_share: float = 0.0, start: int = 0,
            extra_lang: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        lang = extra_lang if extra_lang and i % 25 == 0 else str(rng.choice(["en", "de", "fr"], p=[0.6, 0.3, 0.1]))
        rows.append({
            "ts": 1_790_000_000 + start + 10 * i,  # epoch seconds, increasing
            "request_id": f"req-{start + i:08d}",
            "tokens": None if rng.random() < null_share else float(rng.lognormal(5, 0.5)),
            "lang": lang,
            "stream": bool(rng.random() < 0.3),
        })
    return rows


def test_a_half_null_feature_fails_the_canary(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    write(tmp_path / "b.jsonl", records(rng, 1000))
    write(tmp_path / "c.jsonl", records(rng, 1000, null_share=0.5, start=100_000))
    body = ask(tmp_path, "input-drift", baseline="b.jsonl", canary="c.jsonl")
    assert body["verdict"] == "fail", body["reason"]
    assert "input drift in tokens (null share 0.0% -> " in body["reason"]
    nulls = next(f for f in body["details"]["features"] if f["kind"] == "null-share")
    assert nulls["feature"] == "tokens" and nulls["drifted"] and nulls["effect_measure"] == "Cohen's h"
    assert 0.45 < nulls["candidate_share"] < 0.55


def test_timestamps_and_identifiers_are_left_out_and_listed(tmp_path: Path) -> None:
    """Was: an epoch ts field failed every canary (p = 1.5e-299), ids got a meaningless chi-square."""
    rng = np.random.default_rng(5)
    write(tmp_path / "b.jsonl", records(rng, 1000))
    write(tmp_path / "c.jsonl", records(rng, 1000, start=100_000))
    body = ask(tmp_path, "input-drift", baseline="b.jsonl", canary="c.jsonl")
    assert body["verdict"] == "pass", body["reason"]
    excluded = {e["feature"]: e["why"] for e in body["details"]["excluded"]}
    assert set(excluded) == {"ts", "request_id"}
    assert "monotone" in excluded["ts"] and "identifier" in excluded["request_id"]
    assert {f["feature"] for f in body["details"]["features"]} == {"tokens", "lang", "stream"}
    assert "not in the default features: ts, request_id" in body["reason"]
    named = ask(tmp_path, "input-drift", baseline="b.jsonl", canary="c.jsonl", features="ts")
    assert named["verdict"] == "fail"  # named features are always tested


def test_a_category_only_the_canary_has_is_reported(tmp_path: Path) -> None:
    """Was: a new category had to reach about 2 % of rows before anyone heard of it."""
    rng = np.random.default_rng(6)
    write(tmp_path / "b.jsonl", records(rng, 2000))
    write(tmp_path / "c.jsonl", records(rng, 2000, start=100_000, extra_lang="pt"))
    body = ask(tmp_path, "input-drift", baseline="b.jsonl", canary="c.jsonl", features="lang", mode="fixed")
    lang = body["details"]["features"][0]
    assert lang["new_categories"] == [{"category": "pt", "candidate": 80, "candidate_share": 0.04}]
    assert "categories only the canary has: lang=pt (4.0%)" in body["reason"]


def test_booleans_are_the_same_feature_however_stored(tmp_path: Path) -> None:
    """Was: 0/1 integers went to KS (power 0.11), true/false to chi-square (0.86)."""
    rng = np.random.default_rng(7)
    flags = [rng.random(1000) < 0.5, rng.random(1000) < 0.58]
    answers = []
    for kind in (bool, int):
        write(tmp_path / f"b-{kind.__name__}.jsonl", [{"flag": kind(v)} for v in flags[0]])
        write(tmp_path / f"c-{kind.__name__}.jsonl", [{"flag": kind(v)} for v in flags[1]])
        answers.append(ask(tmp_path, "input-drift", baseline=f"b-{kind.__name__}.jsonl",
                           canary=f"c-{kind.__name__}.jsonl", mode="fixed"))
    tests = [a["details"]["features"][0] for a in answers]
    assert tests[0]["method"] == tests[1]["method"] == "chi2"
    assert tests[0]["p_value"] == tests[1]["p_value"] < 0.01
    assert answers[0]["verdict"] == answers[1]["verdict"] == "fail"
    # mixed storage (booleans in the baseline, 0/1 in the canary) is the same feature too
    mixed = ask(tmp_path, "input-drift", baseline="b-bool.jsonl", canary="c-int.jsonl", mode="fixed")
    assert mixed["details"]["features"][0]["p_value"] == tests[0]["p_value"]


def test_large_windows_do_not_fail_trivial_shifts() -> None:
    """Was: at 100,000 rows per side a 0.03 sd shift failed every canary."""
    rng = np.random.default_rng(8)
    base = Samples(key="b.npy", array=rng.normal(size=(100_000, 1)))
    cand = Samples(key="c.npy", array=rng.normal(0.03, 1.0, size=(100_000, 1)))
    got = input_drift.judge(base, cand, features=None, embedding=None, mode="fixed", look={},
                            settings=input_drift.Settings(alpha=0.01))
    test = got.details["features"][0]
    assert test["significant"] and not test["drifted"] and got.verdict == "pass"
    assert 0.02 < test["effect"] < 0.045 and test["effect_measure"] == "Wasserstein/sd"
    assert "below the minimum effect" in got.reason
    strict = input_drift.judge(base, cand, features=None, embedding=None, mode="fixed", look={},
                               settings=input_drift.Settings(alpha=0.01, min_effect=0.0))
    assert strict.verdict == "fail"


# ---------------------------------------------------------------- looks at snapshots
def test_looks_in_one_grid_cell_judge_the_same_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(size=(2000, 3))
    stream = rng.normal(size=(2000, 3))
    stream[:, 0] += 0.15
    np.save(tmp_path / "b.npy", base)
    bodies = []
    for size in (1000, 1400, 1999):
        np.save(tmp_path / f"c{size}.npy", stream[:size])
        bodies.append(ask(tmp_path, "input-drift", baseline="b.npy", canary=f"c{size}.npy"))
    assert {b["details"]["look_rows"] for b in bodies} == {1000}
    assert len({(b["verdict"], b["p_value"], b["threshold"]) for b in bodies}) == 1
    assert bodies[0]["threshold"] == pytest.approx(0.01 / 4)  # the second grid point of 2000, 1000, 500, 250, 125
    full = ask(tmp_path, "input-drift", baseline="b.npy", canary="c1999.npy", look_correction="bonferroni")
    assert full["samples"]["canary"] == 1999 and full["threshold"] == pytest.approx(0.01 / 20)
    np.save(tmp_path / "small.npy", stream[:90])
    filling = ask(tmp_path, "input-drift", baseline="b.npy", canary="small.npy")
    assert filling["verdict"] == "inconclusive" and "first look of the plan judges its first 125" in filling["reason"]


def test_refusals_get_their_own_half_of_alpha() -> None:
    """Was: the refusal test was divided by max_looks on top of the two-test correction (alpha/40)."""
    rng = np.random.default_rng(10)

    def window(rate: float) -> Samples:
        return Samples(key="x.npy", array=np.column_stack([rng.poisson(200, 2000), rng.random(2000) < rate]))

    got = output_drift.judge(window(0.02), window(0.04), mode="anytime", alpha=0.0053, length_field="col0",
                             refusal_field="col1")
    assert got.details["refusals"]["threshold"] == pytest.approx(0.0053 / 2)
    assert got.verdict == "fail" and "refusal rate rose" in got.reason
