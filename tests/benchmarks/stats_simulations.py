"""Full tier of the statistics simulations (issue 17): every check's false alarms and power.

    make bench-stats                      # or: .venv/bin/python tests/benchmarks/stats_simulations.py
    .venv/bin/python tests/benchmarks/stats_simulations.py --only error-rate --jobs 2

Runs the scenarios of ``tests/rollouts_stats/simulations.py`` with fixed seeds (the table is the
same on every run and machine with the same numpy/scipy) and prints one row per claim: the rate,
its Monte-Carlo standard error, the bound it is held to, and whether it holds. The figures in
``rollouts/README.md`` come from this table. Exit 1 if any claim fails. Not part of ``pytest``:
the quick tier (``tests/rollouts_stats/test_simulations.py``) runs there.

Claims: fixed-mode false alarms within [0.5 alpha, 1.5 alpha] over >= 1,000 null trials (the test
alone: ``min_effect=0``, ``max_increase=0``, ceiling off -- the gates only remove alarms, and their
effect is reported on its own row); anytime false alarms over 20 looks at or below alpha; power at
the stated effects.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests" / "rollouts_stats"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import simulations as sim  # noqa: E402


@dataclass(frozen=True)
class Claim:
    check: str
    scenario: str
    mode: str
    alpha: float
    trials: int
    seed: int
    trial: Callable[[np.random.Generator], bool]
    low: float
    high: float
    kind: str  # "calibration", "anytime", "power", "report"


def calibration(check: str, scenario: str, alpha: float, trials: int, seed: int,
                trial: Callable[..., bool]) -> Claim:
    return Claim(check, scenario, "fixed", alpha, trials, seed, partial(trial, mode="fixed", alpha=alpha),
                 0.5 * alpha, 1.5 * alpha, "calibration")


def anytime(check: str, scenario: str, alpha: float, trials: int, seed: int, trial: Callable[..., bool]) -> Claim:
    return Claim(check, scenario, "anytime", alpha, trials, seed, partial(trial, mode="anytime", alpha=alpha),
                 0.0, alpha, "anytime")


def power(check: str, scenario: str, mode: str, alpha: float, trials: int, seed: int, trial: Callable[..., bool],
          at_least: float) -> Claim:
    return Claim(check, scenario, mode, alpha, trials, seed, partial(trial, mode=mode, alpha=alpha),
                 at_least, 1.0, "power")


def report(check: str, scenario: str, mode: str, alpha: float, trials: int, seed: int, trial: Callable[..., bool],
           low: float = 0.0, high: float = 1.0) -> Claim:
    return Claim(check, scenario, mode, alpha, trials, seed, partial(trial, mode=mode, alpha=alpha), low, high,
                 "report")


def claims() -> list[Claim]:
    drift = sim.drift_trial
    small = partial(drift, rows=1000, features=5, min_effect=0.0)
    out: list[Claim] = [
        # ---- input-drift
        calibration("input-drift", "no drift, 5 features x 1,000 rows, KS + BH (test alone)", 0.05, 2000, 101, small),
        report("input-drift", "same, default min_effect 0.1", "fixed", 0.05, 2000, 101,
               partial(drift, rows=1000, features=5), high=0.075),
        anytime("input-drift", "no drift, 5 x 1,000, 20 looks", 0.05, 1000, 102, small),
        anytime("input-drift", "no drift, 20 x 2,000, 20 looks (defaults)", 0.01, 1000, 103,
                partial(drift, min_effect=0.0)),
        power("input-drift", "0.2 sd on 1 of 20 features, n = 2,000", "fixed", 0.01, 1000, 104,
              partial(drift, shift=0.2), 0.9),
        power("input-drift", "0.2 sd on 1 of 20 features, n = 2,000, 20 looks", "anytime", 0.01, 1000, 104,
              partial(drift, shift=0.2), 0.9),
        report("input-drift", "same, look_correction=bonferroni (the old anytime mode)", "anytime", 0.01, 300, 104,
               partial(drift, shift=0.2, correction="bonferroni")),
        report("input-drift", "0.03 sd at 100,000 rows, min_effect 0 (old behaviour)", "fixed", 0.01, 100, 105,
               partial(drift, rows=100_000, features=1, shift=0.03, min_effect=0.0), low=0.9),
        report("input-drift", "0.03 sd at 100,000 rows, default min_effect 0.1", "fixed", 0.01, 100, 105,
               partial(drift, rows=100_000, features=1, shift=0.03), high=0.01),
        calibration("input-drift", "integer rating 1-5 (ties), 300 rows: chi-square", 0.05, 2000, 106,
                    sim.tied_integer_trial),
        report("input-drift", "0/1 flag 0.50 -> 0.56, 1,000 rows, stored as booleans", "fixed", 0.01, 1000, 107,
               partial(sim.binary_feature_trial, stored="bool", rate=0.5, moved=0.56), low=0.5),
        report("input-drift", "same data stored as 0/1 integers", "fixed", 0.01, 1000, 107,
               partial(sim.binary_feature_trial, stored="int", rate=0.5, moved=0.56), low=0.5),
        report("input-drift", "same data, KS on the 0/1 integers (the old treatment)", "fixed", 0.01, 1000, 107,
               sim.old_binary_ks_trial),
        calibration("input-drift", "embeddings (MMD) + 3 scalar fields, 200 rows, no drift", 0.05, 1000, 108,
                    sim.mmd_trial),
        anytime("input-drift", "embeddings (MMD) + 3 scalar fields, 200 rows, 20 looks", 0.05, 500, 109,
                sim.mmd_trial),
        power("input-drift", "embeddings +3 sd next to 3 scalar fields", "anytime", 0.01, 50, 110,
              partial(sim.mmd_trial, shift=3.0), 1.0),
        # ---- output-drift (sample store)
        calibration("output-drift", "no drift, 2,000 responses, KS + refusals (test alone)", 0.05, 2000, 201,
                    partial(sim.outputs_trial, min_effect=0.0)),
        anytime("output-drift", "no drift, 2,000 responses, 20 looks", 0.05, 1000, 202,
                partial(sim.outputs_trial, min_effect=0.0)),
        power("output-drift", "refusals 2 % -> 4 %, 2,000 responses", "fixed", 0.01, 1000, 203,
              partial(sim.outputs_trial, canary_refusal=0.04), 0.8),
        power("output-drift", "refusals 2 % -> 4 %, 2,000 responses, 20 looks", "anytime", 0.01, 1000, 203,
              partial(sim.outputs_trial, canary_refusal=0.04), 0.75),
        power("output-drift", "lengths x1.13 (0.2 sd in logs), 2,000 responses, 20 looks", "anytime", 0.01, 500, 204,
              partial(sim.outputs_trial, length_scale=1.13), 0.9),
        # ---- output-drift (Prometheus: generated tokens per interval, paired)
        calibration("output-drift/prom", "no drift, 30 intervals, independent", 0.05, 4000, 211,
                    partial(sim.paired_trial, check="output", rho=0.0)),
        report("output-drift/prom", "no drift, 30 intervals, AR(1) 0.8", "fixed", 0.05, 4000, 212,
               partial(sim.paired_trial, check="output"), high=0.1),
        anytime("output-drift/prom", "no drift, 60 intervals, AR(1) 0.8, 20 looks", 0.05, 1000, 213,
                partial(sim.paired_trial, check="output", intervals=60)),
        # ---- eval-score
        calibration("eval-score", "same accuracy (0.8), 400 items, one-sided mid-p McNemar", 0.05, 4000, 301,
                    sim.eval_trial),
        calibration("eval-score", "same accuracy (0.8), 400 items", 0.01, 10000, 302, sim.eval_trial),
        anytime("eval-score", "same accuracy, 400 items, 20 looks", 0.05, 2000, 303, sim.eval_trial),
        report("eval-score", "accuracy 0.80 -> 0.75, 400 items", "fixed", 0.01, 1000, 304,
               partial(sim.eval_trial, down=0.1, up=0.15)),
        report("eval-score", "accuracy 0.80 -> 0.75, 400 items, 20 looks", "anytime", 0.01, 1000, 304,
               partial(sim.eval_trial, down=0.1, up=0.15)),
        # ---- error-rate
        calibration("error-rate", "1 % both sides, 5,000 requests each, ceiling off", 0.05, 10000, 401,
                    sim.errors_trial),
        calibration("error-rate", "1 % both sides, 5,000 requests each, ceiling off", 0.01, 20000, 402,
                    sim.errors_trial),
        calibration("error-rate", "1 % both sides at a 1 % ceiling (both tests at their boundary)", 0.05, 10000, 403,
                    partial(sim.errors_trial, ceiling=0.01)),
        anytime("error-rate", "1 % both sides, 20 looks to 5,000 each", 0.01, 2000, 404, sim.errors_trial),
        anytime("error-rate", "1 % both sides at a 1 % ceiling, 20 looks", 0.05, 2000, 405,
                partial(sim.errors_trial, ceiling=0.01)),
        power("error-rate", "1 % -> 2 %, 5,000 requests per side, ceiling off", "anytime", 0.01, 2000, 406,
              partial(sim.errors_trial, canary_rate=0.02), 0.8),
        power("error-rate", "1 % -> 2 %, 5,000 requests per side, ceiling off", "fixed", 0.01, 2000, 407,
              partial(sim.errors_trial, canary_rate=0.02), 0.9),
        report("error-rate", "1 % -> 2 %: the count test's default mixture (k 10, centred on the null)", "anytime",
               0.01, 2000, 406, partial(sim.count_prior_trial, prior_strength=10.0, centred_on_doubling=False)),
        report("error-rate", "1 % -> 2 %: the mixture the check uses (k 40, centred on a doubled rate)", "anytime",
               0.01, 2000, 406, partial(sim.count_prior_trial, prior_strength=40.0, centred_on_doubling=True)),
        report("error-rate", "0.5 % at a 1 % ceiling, 100 requests", "fixed", 0.01, 10000,
               408, partial(sim.errors_trial, rate=0.005, requests=100, ceiling=0.01), high=0.01),
        report("error-rate", "0.8 % at a 1 % ceiling, 1,000 requests", "fixed", 0.01, 10000, 409,
               partial(sim.errors_trial, rate=0.008, requests=1000, ceiling=0.01), high=0.01),
        report("error-rate", "0.8 % at a 1 % ceiling, 1,000 requests, 20 looks", "anytime", 0.01, 2000,
               410, partial(sim.errors_trial, rate=0.008, requests=1000, ceiling=0.01), high=0.01),
        report("error-rate", "old point-estimate ceiling: 0.5 % at 1 %, 100 requests", "fixed", 0.01, 10000, 408,
               partial(sim.old_ceiling_trial, rate=0.005, requests=100)),
        report("error-rate", "old point-estimate ceiling: 0.8 % at 1 %, 1,000 requests", "fixed", 0.01, 10000, 409,
               partial(sim.old_ceiling_trial, rate=0.008, requests=1000)),
        report("error-rate", "old point-estimate ceiling: 0.8 % at 1 %, 1,000 requests, 20 looks", "anytime", 0.01,
               2000, 410, partial(sim.old_ceiling_trial, rate=0.008, requests=1000)),
        report("error-rate", "stable counted 5 h before the canary at 0.5 % (unaligned window)", "anytime", 0.01,
               1000, 411, partial(sim.errors_trial, stable_before=25000, stable_before_rate=0.005), low=0.1),
        # ---- latency (pooled histogram buckets)
        calibration("latency", "same latency, stable 450 / canary 50 req/min, 60 min (test alone)", 0.05, 2000, 501,
                    partial(sim.latency_trial, load_sd=0.0)),
        calibration("latency", "same latency, stable 50 / canary 450 req/min, 60 min", 0.05, 2000, 502,
                    partial(sim.latency_trial, stable_rpm=50, canary_rpm=450, load_sd=0.0)),
        report("latency", "same, shared per-minute load AR(1) 0.8", "fixed", 0.05, 2000, 503,
               partial(sim.latency_trial, stable_rpm=50, canary_rpm=450), high=0.075),
        anytime("latency", "stable 50 / canary 450 req/min, 20 looks", 0.01, 1000, 504,
                partial(sim.latency_trial, stable_rpm=50, canary_rpm=450)),
        anytime("latency", "stable 450 / canary 50 req/min, 20 looks", 0.05, 1000, 505, sim.latency_trial),
        report("latency", "old: per-minute sample p95, sequential mean test, stable 50 / canary 450, 20 looks",
               "anytime", 0.01, 1000, 504, sim.old_latency_trial),
        report("latency", "old: the same from per-minute vLLM-bucket p95 (no bias on these buckets)", "anytime",
               0.01, 1000, 504, partial(sim.old_latency_trial, buckets=True)),
        power("latency", "p95 +30 % (all latencies x1.3), 30 min, canary 50 req/min", "fixed", 0.01, 1000, 506,
              partial(sim.latency_trial, scale=1.3, minutes=30), 0.9),
        power("latency", "p95 +30 %, 30 min, canary 50 req/min, 20 looks", "anytime", 0.01, 1000, 506,
              partial(sim.latency_trial, scale=1.3, minutes=30), 0.9),
        report("latency", "p95 +30 %, 30 min, 20 looks, with max_increase 0.3", "anytime", 0.01, 1000, 506,
               partial(sim.latency_trial, scale=1.3, minutes=30, max_increase=0.3)),
        report("latency", "p95 +60 %, 30 min, 20 looks, with max_increase 0.3", "anytime", 0.01, 1000, 507,
               partial(sim.latency_trial, scale=1.6, minutes=30, max_increase=0.3), low=0.9),
        # ---- latency (time-paired intervals: Triton means, named per-interval templates)
        calibration("latency/paired", "same level, 30 intervals, independent", 0.05, 4000, 511,
                    partial(sim.paired_trial, rho=0.0)),
        calibration("latency/paired", "same level, 30 intervals, independent", 0.01, 10000, 512,
                    partial(sim.paired_trial, rho=0.0)),
        report("latency/paired", "same level, 30 intervals, AR(1) 0.8", "fixed", 0.01, 10000, 513,
               sim.paired_trial, high=0.02),
        report("latency/paired", "old: Mann-Whitney on the same 30 AR(1) 0.8 intervals", "fixed", 0.01, 10000, 513,
               sim.old_interval_trial),
        report("latency/paired", "same level, 60 intervals, AR(1) 0.8", "fixed", 0.05, 4000, 514,
               partial(sim.paired_trial, intervals=60), high=0.075),
        anytime("latency/paired", "same level, 60 intervals, AR(1) 0.8, 20 looks", 0.05, 2000, 515,
                partial(sim.paired_trial, intervals=60)),
        report("latency/paired", "+30 %, 30 intervals, independent", "fixed", 0.01, 2000, 516,
               partial(sim.paired_trial, rho=0.0, shift=0.3)),
        report("latency/paired", "+30 %, 30 intervals, AR(1) 0.8", "fixed", 0.01, 2000, 517,
               partial(sim.paired_trial, shift=0.3)),
    ]
    return out


def run_claim(claim: Claim) -> tuple[Claim, float, float]:
    start = time.perf_counter()
    rate = sim.alarm_rate(claim.trials, claim.seed, claim.trial)
    return claim, rate, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the claims of one check (input-drift, error-rate, ...)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    todo = [c for c in claims() if args.only is None or c.check.startswith(args.only)]
    print("| check | scenario | mode | alpha | trials | rate | s.e. | claim | holds | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for claim, rate, seconds in pool.map(run_claim, todo):
            se = math.sqrt(max(rate * (1 - rate), 1e-12) / claim.trials)
            ok = claim.low <= rate <= claim.high
            failed += not ok
            bound = {"calibration": f"[{claim.low:g}, {claim.high:g}]", "anytime": f"<= {claim.high:g}",
                     "power": f">= {claim.low:g}"}.get(claim.kind, _report_bound(claim))
            print(f"| {claim.check} | {claim.scenario} | {claim.mode} | {claim.alpha:g} | {claim.trials} | "
                  f"{rate:.4f} | {se:.4f} | {bound} | {'yes' if ok else 'NO'} | {seconds:.0f} |", flush=True)
    print(f"\n{len(todo) - failed} of {len(todo)} claims hold ({time.perf_counter() - started:.0f} s)")
    return 1 if failed else 0


def _report_bound(claim: Claim) -> str:
    if claim.low > 0 and claim.high < 1:
        return f"[{claim.low:g}, {claim.high:g}]"
    if claim.low > 0:
        return f">= {claim.low:g}"
    if claim.high < 1:
        return f"<= {claim.high:g}"
    return "(reported)"


if __name__ == "__main__":
    sys.exit(main())
