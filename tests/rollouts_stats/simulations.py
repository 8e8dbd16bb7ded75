"""Simulated canaries for every check (issue 17): false-alarm rates and power, with fixed seeds.

Each scenario draws the data a check sees at each look, runs the check's own judgement
(``judge`` / ``judge_buckets`` / ``judge_paired`` and, for snapshot stores, the look plan
``rollouts.checks.looks.plan_look`` exactly as ``run`` applies it) and reports whether the canary
was failed. Nothing is re-implemented here: the simulated part is the data, never the decision.

Two tiers use the scenarios:

- quick: ``tests/rollouts_stats/test_simulations.py``, in the default ``pytest`` run (seconds; few
  trials; bounds with margins that the true rates justify -- the seeds are fixed, so the outcome
  is deterministic);
- full: ``tests/benchmarks/stats_simulations.py`` (``make bench-stats``), which prints the table of
  every claim in ``rollouts/README.md`` (>= 1,000 null trials per fixed-mode rate).

A *trial* is one canary. In ``mode=fixed`` it is one look at the full window; in ``mode=anytime``
it is ``LOOKS`` looks at a growing window, and a false alarm is a canary failed at ANY look.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rollouts.checks import error_rate, eval_score, input_drift, latency, output_drift
from rollouts.checks.columns import head
from rollouts.checks.looks import plan_look
from rollouts.sources.samples import Samples
from rollouts.verdict import Mode, Verdict

LOOKS = 20
# vLLM's e2e request-latency buckets (vllm/engine/metrics.py, request_latency_buckets), seconds.
VLLM_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, float("inf")]


@dataclass
class Outcome:
    """One simulated rate and the claim it is held to (``low <= rate <= high``)."""

    check: str
    scenario: str
    mode: str
    alpha: float
    trials: int
    rate: float
    low: float = 0.0
    high: float = 1.0
    claim: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.low <= self.rate <= self.high


def alarm_rate(trials: int, seed: int, trial: Callable[[np.random.Generator], bool]) -> float:
    """Share of ``trials`` canaries (one generator per trial, from ``seed``) that ``trial`` fails."""
    root = np.random.SeedSequence(seed)
    hits = 0
    for child in root.spawn(trials):
        hits += bool(trial(np.random.default_rng(child)))
    return hits / trials


def look_sizes(total: int, looks: int = LOOKS) -> list[int]:
    """Canary sizes at each of ``looks`` evenly spaced looks ending at ``total``."""
    return [max(1, round(total * k / looks)) for k in range(1, looks + 1)]


def snapshot_looks(judge: Callable[[int | None, float], Verdict], *, mode: Mode, alpha: float, canary_total: int,
                   baseline_rows: int, min_rows: int, looks: int = LOOKS, correction: str = "spending") -> bool:
    """Whether any look at a growing snapshot fails the canary, planned as ``run`` plans it.

    ``judge(rows, look_alpha)`` judges the first ``rows`` canary rows. Looks that reach the same grid
    point judge the same rows (``run`` cuts the canary to them): they are judged once here, as the
    answer is the same (``test_simulations`` checks that it is).
    """
    if mode == "fixed":
        return judge(None, alpha).verdict == "fail"
    if correction == "bonferroni":  # every look judges every row at alpha / looks
        return any(judge(size, alpha / looks).verdict == "fail" for size in look_sizes(canary_total, looks)
                   if size >= min_rows)
    seen: dict[int, bool] = {}
    for size in look_sizes(canary_total, looks):
        plan = plan_look(mode=mode, alpha=alpha, correction="spending", max_looks=looks,
                         planned=max(baseline_rows, min_rows), canary_rows=size, min_rows=min_rows)
        if plan.filling or plan.rows is None:
            continue
        if plan.rows not in seen:
            seen[plan.rows] = judge(plan.rows, plan.alpha).verdict == "fail"
        if seen[plan.rows]:
            return True
    return False


# ---------------------------------------------------------------- input-drift
def drift_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, rows: int = 2000, features: int = 20,
                shift: float = 0.0, min_effect: float | None = None, correction: str = "spending") -> bool:
    """Normal features (``rows`` per side), feature 0 of the canary moved by ``shift`` sd."""
    baseline = Samples(key="b.npy", array=rng.normal(size=(rows, features)))
    stream = rng.normal(size=(rows, features))
    stream[:, 0] += shift
    canary = Samples(key="c.npy", array=stream)
    extra = {} if min_effect is None else {"min_effect": min_effect}

    def judge(cut: int | None, look_alpha: float) -> Verdict:
        return input_drift.judge(baseline, head(canary, cut), features=None, embedding=None, mode=mode, look={},
                                 settings=input_drift.Settings(alpha=look_alpha, **extra))

    return snapshot_looks(judge, mode=mode, alpha=alpha, canary_total=rows, baseline_rows=rows, min_rows=100,
                          correction=correction)


def records_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, make: Callable[[np.random.Generator, bool],
                  list[dict[str, Any]]], features: list[str] | None = None, embedding: str | None = None) -> Verdict:
    """One fixed look at jsonl-like records (``make(rng, canary)``): the verdict itself, for reproducers."""
    baseline = Samples(key="b.jsonl", records=make(rng, False))
    canary = Samples(key="c.jsonl", records=make(rng, True))
    return input_drift.judge(baseline, canary, features=features, embedding=embedding, mode=mode, look={},
                             settings=input_drift.Settings(alpha=alpha))


def binary_feature_trial(rng: np.random.Generator, *, alpha: float, stored: str, rate: float, moved: float,
                         rows: int = 1000, mode: Mode = "fixed") -> bool:
    """A 0/1 feature stored as booleans or integers (same data): does the canary fail?"""
    def make(r: np.random.Generator, canary: bool) -> list[dict[str, Any]]:
        flags = r.random(rows) < (moved if canary else rate)
        return [{"flag": bool(f) if stored == "bool" else int(f)} for f in flags]

    return records_trial(rng, mode=mode, alpha=alpha, make=make).verdict == "fail"


def tied_integer_trial(rng: np.random.Generator, *, alpha: float, rows: int = 300, mode: Mode = "fixed") -> bool:
    """An integer feature with 5 values (a rating): no drift."""
    p = [0.1, 0.2, 0.4, 0.2, 0.1]

    def make(r: np.random.Generator, canary: bool) -> list[dict[str, Any]]:
        return [{"rating": int(v)} for v in r.choice(5, size=rows, p=p) + 1]

    return records_trial(rng, mode=mode, alpha=alpha, make=make).verdict == "fail"


def mmd_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, rows: int = 200, dims: int = 16,
              shift: float = 0.0, scalars: int = 3) -> bool:
    """Embeddings (moved by ``shift`` sd in every dimension) next to ``scalars`` scalar fields."""
    def make(n: int, moved: float) -> list[dict[str, Any]]:
        vec = rng.normal(moved, 1.0, size=(n, dims))
        sca = rng.normal(size=(n, scalars))
        return [{"vec": v.tolist(), **{f"x{j}": float(s[j]) for j in range(scalars)}} for v, s in zip(vec, sca,
                                                                                                     strict=True)]

    baseline = Samples(key="b.jsonl", records=make(rows, 0.0))
    canary = Samples(key="c.jsonl", records=make(rows, shift))

    def judge(cut: int | None, look_alpha: float) -> Verdict:
        return input_drift.judge(baseline, head(canary, cut), features=None, embedding="vec", mode=mode, look={},
                                 settings=input_drift.Settings(alpha=look_alpha))

    return snapshot_looks(judge, mode=mode, alpha=alpha, canary_total=rows, baseline_rows=rows, min_rows=100)


# ---------------------------------------------------------------- output-drift (samples)
def outputs_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, rows: int = 2000,
                  length_scale: float = 1.0, refusal: float = 0.02, canary_refusal: float | None = None,
                  min_effect: float = 0.1) -> bool:
    """Response lengths (log-normal, sd 0.6 in logs, as integers) and refusals (Bernoulli)."""
    def make(scale: float, rate: float) -> Samples:
        lengths = np.rint(scale * rng.lognormal(np.log(180), 0.6, rows))
        refused = (rng.random(rows) < rate).astype(float)
        return Samples(key="x.npy", array=np.column_stack([lengths, refused]))

    baseline = make(1.0, refusal)
    canary = make(length_scale, refusal if canary_refusal is None else canary_refusal)

    def judge(cut: int | None, look_alpha: float) -> Verdict:
        return output_drift.judge(baseline, head(canary, cut), mode=mode, alpha=look_alpha, length_field="col0",
                                  refusal_field="col1", min_effect=min_effect)

    return snapshot_looks(judge, mode=mode, alpha=alpha, canary_total=rows, baseline_rows=rows, min_rows=100)


# ---------------------------------------------------------------- eval-score
def eval_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, items: int = 400, accuracy: float = 0.8,
               down: float = 0.05, up: float | None = None) -> bool:
    """Golden items right with ``accuracy`` for the baseline; the canary loses ``down`` of its right
    answers and gains ``up`` of its wrong ones (the null: same accuracy in expectation)."""
    up = down * accuracy / (1 - accuracy) if up is None else up
    ref = rng.random(items) < accuracy
    u = rng.random(items)
    cand = np.where(ref, u >= down, u < up)
    base = {f"q{i}": bool(r) for i, r in enumerate(ref)}
    order = [f"q{i}" for i in rng.permutation(items)]  # the canary scores items in its own order
    answers = {k: bool(cand[int(k[1:])]) for k in order}

    def judge(cut: int | None, look_alpha: float) -> Verdict:
        keys = order if cut is None else order[:cut]
        return eval_score.judge(base, {k: answers[k] for k in keys}, mode=mode, alpha=look_alpha)

    return snapshot_looks(judge, mode=mode, alpha=alpha, canary_total=items, baseline_rows=items, min_rows=50)


# ---------------------------------------------------------------- error-rate
def errors_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, requests: int = 5000, rate: float = 0.01,
                 canary_rate: float | None = None, ceiling: float = 1.0, stable_before: int = 0,
                 stable_before_rate: float | None = None) -> bool:
    """Requests per side at the last look; each look sees the cumulative counts. ``stable_before``
    requests of stable from before the canary started (at ``stable_before_rate``) are counted too:
    what an unaligned window does."""
    canary = rng.random(requests) < (rate if canary_rate is None else canary_rate)
    stable = rng.random(requests) < rate
    old = int(np.count_nonzero(rng.random(stable_before) < (stable_before_rate or rate))) if stable_before else 0
    sizes = [requests] if mode == "fixed" else look_sizes(requests)
    for n in sizes:
        counts = error_rate.Counts(int(canary[:n].sum()), n, int(stable[:n].sum()) + old, n + stable_before)
        if error_rate.judge(counts, mode=mode, alpha=alpha, ceiling=ceiling).verdict == "fail":
            return True
    return False


# ---------------------------------------------------------------- latency
def latency_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, minutes: int = 60, stable_rpm: int = 450,
                  canary_rpm: int = 50, scale: float = 1.0, max_increase: float = 0.0, load_sd: float = 0.1) -> bool:
    """Per-request latencies (log-normal, median 0.9 s, sd 0.45 in logs) in vLLM's buckets, pooled
    over the window; a shared per-minute load factor (log sd ``load_sd``, AR(1) 0.8) moves both sides."""
    load = _ar1(rng, minutes, 0.8, load_sd)
    cum_c = np.zeros(len(VLLM_BUCKETS))
    cum_s = np.zeros(len(VLLM_BUCKETS))
    per_minute_c, per_minute_s = [], []
    for m in range(minutes):
        for rpm, factor, acc in ((canary_rpm, scale, per_minute_c), (stable_rpm, 1.0, per_minute_s)):
            lat = factor * np.exp(load[m]) * rng.lognormal(np.log(0.9), 0.45, rng.poisson(rpm))
            acc.append(np.bincount(np.searchsorted(VLLM_BUCKETS, lat, side="left"), minlength=len(VLLM_BUCKETS)))
    looks = [minutes] if mode == "fixed" else [round(minutes * k / LOOKS) for k in range(1, LOOKS + 1)]
    done = 0
    for end in looks:
        for m in range(done, end):
            cum_c += per_minute_c[m]
            cum_s += per_minute_s[m]
        done = end
        if end < 10:
            continue  # min_intervals
        canary = latency.Histogram(VLLM_BUCKETS, np.cumsum(cum_c).tolist())
        stable = latency.Histogram(VLLM_BUCKETS, np.cumsum(cum_s).tolist())
        verdict = latency.judge_buckets(canary, stable, mode=mode, alpha=alpha, quantile=0.95,
                                        max_increase=max_increase)
        if verdict.verdict == "fail":
            return True
    return False


def _ar1(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with coefficient ``rho`` and marginal standard deviation ``sd``."""
    e = rng.normal(0.0, sd * np.sqrt(1 - rho * rho), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return x


def paired_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, intervals: int = 30, rho: float = 0.8,
                 shift: float = 0.0, check: str = "latency", max_increase: float = 0.0) -> bool:
    """Per-interval values of each side (level 1, log sd 0.1, AR(1) ``rho``, independent sides; the
    canary's level times ``1 + shift``), paired by time. ``mode=anytime``: 20 looks at a growing window
    of ``intervals`` at the end; looks with fewer than 10 intervals are still filling."""
    canary = (1.0 + shift) * np.exp(_ar1(rng, intervals, rho, 0.1))
    stable = np.exp(_ar1(rng, intervals, rho, 0.1))
    ends = [intervals] if mode == "fixed" else [round(intervals * k / LOOKS) for k in range(1, LOOKS + 1)]
    for end in ends:
        if end < 10:
            continue
        d = (canary[:end] - stable[:end]).tolist()
        c_mean, s_mean = float(canary[:end].mean()), float(stable[:end].mean())
        if check == "latency":
            verdict = latency.judge_paired(d, c_mean, s_mean, mode=mode, alpha=alpha, quantile=0.95,
                                           max_increase=max_increase, min_intervals=10)
        else:
            verdict = output_drift.judge_paired(d, c_mean, s_mean, mode=mode, alpha=alpha, min_intervals=10)
        if verdict.verdict == "fail":
            return True
    return False


def count_prior_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, prior_strength: float,
                      centred_on_doubling: bool, requests: int = 5000, rate: float = 0.01,
                      canary_rate: float = 0.02) -> bool:
    """The anytime comparison of ``error-rate`` alone with a given mixture prior (why the check centres
    its mixture on a doubled rate): the same data as ``errors_trial``, at the check's comparison alpha."""
    from rollouts.stats import sequential_count_test

    canary = rng.random(requests) < canary_rate
    stable = rng.random(requests) < rate
    level = alpha * (1 - error_rate.CEILING_SHARE)
    for n in look_sizes(requests):
        got = sequential_count_test(int(canary[:n].sum()), int(stable[:n].sum()), exposure_ratio=1.0,
                                    prior_strength=prior_strength, prior_mean=2 / 3 if centred_on_doubling else None)
        if got.p_value < level:
            return True
    return False


# ---------------------------------------------------------------- what the checks did before issue 17
# The same data through the statistics the checks used to apply, so that "before" figures in
# rollouts/README.md are measured by the same suite as the "after" ones.
def old_ceiling_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, requests: int, rate: float,
                      ceiling: float = 0.01) -> bool:
    """The point-estimate ceiling: fail when errors / requests > ceiling at any look."""
    errors = np.cumsum(rng.random(requests) < rate)
    sizes = [requests] if mode == "fixed" else look_sizes(requests)
    return any(errors[n - 1] / n > ceiling for n in sizes)


def old_latency_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, minutes: int = 60,
                      stable_rpm: int = 50, canary_rpm: int = 450, buckets: bool = False) -> bool:
    """Per-minute p95 of each side -- the sample quantile of the minute's requests, or (``buckets``)
    read off the minute's histogram -- compared by the sequential mean test (anytime) or Mann-Whitney
    (fixed) on the per-interval values: the old latency test, significance alone. A sample p95 of 50
    requests sits below one of 450, so the side with more traffic looks slower."""
    from rollouts.stats import mann_whitney_test, sequential_mean_test

    values: list[list[float]] = [[], []]
    for _ in range(minutes):
        for side, rpm in enumerate((canary_rpm, stable_rpm)):
            lat = rng.lognormal(np.log(0.9), 0.45, rng.poisson(rpm))
            if not buckets:
                values[side].append(float(np.quantile(lat, 0.95)))
                continue
            counts = np.bincount(np.searchsorted(VLLM_BUCKETS, lat, side="left"), minlength=len(VLLM_BUCKETS))
            q = latency.Histogram(VLLM_BUCKETS, np.cumsum(counts).tolist()).quantile(0.95)
            if q is not None:
                values[side].append(q)
    ends = [minutes] if mode == "fixed" else [round(minutes * k / LOOKS) for k in range(1, LOOKS + 1)]
    for end in ends:
        if end < 10:
            continue
        c, s = np.asarray(values[0][:end]), np.asarray(values[1][:end])
        test = sequential_mean_test(c, s) if mode == "anytime" else mann_whitney_test(c, s)
        if test.p_value is not None and test.p_value < alpha:
            return True
    return False


def old_interval_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, intervals: int = 30,
                       rho: float = 0.8) -> bool:
    """Mann-Whitney on AR(1) per-interval values of each side (the old fixed-mode latency test)."""
    from rollouts.stats import mann_whitney_test

    c, s = np.exp(_ar1(rng, intervals, rho, 0.1)), np.exp(_ar1(rng, intervals, rho, 0.1))
    p = mann_whitney_test(c, s).p_value
    return p is not None and p < alpha


def old_binary_ks_trial(rng: np.random.Generator, *, mode: Mode, alpha: float, rate: float = 0.5,
                        moved: float = 0.56, rows: int = 1000) -> bool:
    """KS on a 0/1 integer feature (what numeric 0/1 fields got)."""
    from rollouts.stats import ks_test

    base = (rng.random(rows) < rate).astype(float)
    cand = (rng.random(rows) < moved).astype(float)
    p = ks_test(base, cand).p_value
    return p is not None and p < alpha
