"""Quick tier of the statistics simulations (issue 17): every check, few trials, fixed seeds.

The scenarios are those of the full tier (``make bench-stats``, figures in ``rollouts/README.md``);
here each runs for a second or two. The seeds are fixed, so every rate below is deterministic; the
bounds still keep a margin of about four Monte-Carlo standard errors around the rate the full tier
measures (stated next to each), so that a change of random stream could not make them fail either.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import simulations as sim

from rollouts.checks import input_drift
from rollouts.sources.samples import Samples
from rollouts.stats import mann_whitney_test


# ---------------------------------------------------------------- error-rate
def test_error_rate_fixed_is_calibrated_and_anytime_stays_below_alpha() -> None:
    fixed = sim.alarm_rate(2000, 1, partial(sim.errors_trial, mode="fixed", alpha=0.05))  # full tier: 0.051
    assert 0.03 <= fixed <= 0.07
    looks = sim.alarm_rate(500, 2, partial(sim.errors_trial, mode="anytime", alpha=0.05))  # ~0.01
    assert looks <= 0.05


def test_error_rate_anytime_power_at_one_to_two_percent() -> None:
    # 5,000 requests per side, 20 looks; full tier 0.84 (the old exact proportion e-value: 0.17)
    assert sim.alarm_rate(300, 3, partial(sim.errors_trial, mode="anytime", alpha=0.01, canary_rate=0.02)) >= 0.72


def test_error_rate_ceiling_no_longer_fails_on_a_point_estimate() -> None:
    # a 0.8 % service against a 1 % ceiling over 1,000 requests: the point estimate failed 19 % of them
    fixed = sim.alarm_rate(1000, 4, partial(sim.errors_trial, mode="fixed", alpha=0.01, rate=0.008,
                                            requests=1000, ceiling=0.01))
    assert fixed <= 0.025
    looks = sim.alarm_rate(100, 5, partial(sim.errors_trial, mode="anytime", alpha=0.01, rate=0.008,
                                           requests=1000, ceiling=0.01))
    assert looks <= 0.03  # was 17 % over 20 looks


def test_stable_traffic_from_before_the_canary_makes_false_alarms() -> None:
    # why the window is aligned: 5 h of stable at 0.5 % counted against a canary living 1 h at 1 %
    unaligned = sim.alarm_rate(200, 6, partial(sim.errors_trial, mode="anytime", alpha=0.01, stable_before=25000,
                                               stable_before_rate=0.005))
    aligned = sim.alarm_rate(200, 6, partial(sim.errors_trial, mode="anytime", alpha=0.01))
    assert unaligned >= 0.35 and aligned <= 0.03  # full tier: 0.54 and 0.002


# ---------------------------------------------------------------- latency
def test_latency_pooled_buckets_have_no_rate_bias() -> None:
    # stable 50, canary 450 requests a minute: the per-interval p95 test false-alarmed 15 % (audit: 64 %)
    looks = sim.alarm_rate(150, 7, partial(sim.latency_trial, mode="anytime", alpha=0.01, stable_rpm=50,
                                           canary_rpm=450, minutes=30))
    assert looks <= 0.03
    old = sim.alarm_rate(150, 7, partial(sim.old_latency_trial, mode="anytime", alpha=0.01, minutes=30))
    assert old >= 0.06  # the same scenario through the old per-interval test (full tier: 0.15 over 60 minutes)
    fixed = sim.alarm_rate(400, 8, partial(sim.latency_trial, mode="fixed", alpha=0.1, stable_rpm=50,
                                           canary_rpm=450, minutes=20, load_sd=0.0))
    assert 0.05 <= fixed <= 0.16  # calibrated: full tier 0.050 at alpha 0.05


def test_latency_power_at_p95_plus_30_percent() -> None:
    for mode in ("fixed", "anytime"):  # full tier: 1.00 in both
        assert sim.alarm_rate(40, 9, partial(sim.latency_trial, mode=mode, alpha=0.01, scale=1.3, minutes=30)) >= 0.9


def test_paired_intervals_under_serial_correlation() -> None:
    """AR(1) 0.8 per-interval values, 30 intervals, no difference: Mann-Whitney on the intervals (the old
    fixed test) false-alarms several times alpha; the HAR paired test stays near alpha."""
    def old(rng: np.random.Generator) -> bool:
        c, s = np.exp(sim._ar1(rng, 30, 0.8, 0.1)), np.exp(sim._ar1(rng, 30, 0.8, 0.1))
        p = mann_whitney_test(c, s).p_value
        return p is not None and p < 0.05

    assert sim.alarm_rate(600, 10, old) >= 0.12
    assert sim.alarm_rate(600, 10, partial(sim.paired_trial, mode="fixed", alpha=0.05)) <= 0.11  # full tier: 0.07
    assert sim.alarm_rate(100, 11, partial(sim.paired_trial, mode="anytime", alpha=0.05, intervals=60)) <= 0.08


# ---------------------------------------------------------------- eval-score
def test_eval_score_one_sided_mcnemar_is_calibrated() -> None:
    rate = sim.alarm_rate(1000, 12, partial(sim.eval_trial, mode="fixed", alpha=0.05))  # full tier: 0.049
    assert 0.02 <= rate <= 0.08  # the two-sided test used before had size about alpha/2
    assert sim.alarm_rate(200, 13, partial(sim.eval_trial, mode="anytime", alpha=0.05)) <= 0.06


# ---------------------------------------------------------------- output-drift
def test_output_drift_refusals_at_their_own_share_of_alpha() -> None:
    # refusals 2 % -> 4 % on 2,000 responses, 20 looks; full tier 0.84
    assert sim.alarm_rate(60, 14, partial(sim.outputs_trial, mode="anytime", alpha=0.01, canary_refusal=0.04)) >= 0.6
    null = sim.alarm_rate(300, 15, partial(sim.outputs_trial, mode="fixed", alpha=0.1, rows=500, min_effect=0.0))
    assert null <= 0.16  # full tier: 0.047 at alpha 0.05


# ---------------------------------------------------------------- input-drift
def test_input_drift_power_at_0_2_sd_at_2000_rows() -> None:
    # 1 of 5 features here (the full tier: 1 of 20, 0.96 fixed and 0.94 over 20 looks; Bonferroni over looks: 0.84)
    fixed = sim.alarm_rate(20, 16, partial(sim.drift_trial, mode="fixed", alpha=0.01, shift=0.2, features=5))
    looks = sim.alarm_rate(20, 16, partial(sim.drift_trial, mode="anytime", alpha=0.01, shift=0.2, features=5))
    assert fixed >= 0.85 and looks >= 0.85


def test_input_drift_false_alarms_over_20_looks() -> None:
    rate = sim.alarm_rate(100, 17, partial(sim.drift_trial, mode="anytime", alpha=0.1, rows=300, features=3,
                                           min_effect=0.0))
    assert rate <= 0.12  # full tier: 0.03 at alpha 0.05


def test_ties_and_flags_are_compared_as_categories() -> None:
    # an integer rating 1-5 without drift: chi-square holds alpha (KS on such ties held 0.01 at 0.05)
    assert 0.02 <= sim.alarm_rate(400, 18, partial(sim.tied_integer_trial, alpha=0.05)) <= 0.09
    # a 0/1 flag moving 50 % -> 56 %: the same power whichever way it is stored (KS on 0/1 integers: 0.11)
    as_bool = sim.alarm_rate(40, 19, partial(sim.binary_feature_trial, alpha=0.01, stored="bool", rate=0.5,
                                             moved=0.6))
    as_int = sim.alarm_rate(40, 19, partial(sim.binary_feature_trial, alpha=0.01, stored="int", rate=0.5,
                                            moved=0.6))
    assert as_bool == as_int >= 0.7  # 1,000 rows per side: chi-square power about 0.9


def test_psi_no_longer_fails_small_undrifted_windows() -> None:
    """psi=true at 100 rows per side: PSI >= 0.25 for about a quarter of undrifted features, and over 20
    looks the check failed 5.8 % of canaries at alpha 0.01. PSI is now reported, never decisive."""
    def trial(rng: np.random.Generator) -> bool:
        base = Samples(key="b.npy", array=rng.normal(size=(100, 3)))
        canary = Samples(key="c.npy", array=rng.normal(size=(100, 3)))
        got = input_drift.judge(base, canary, features=None, embedding=None, mode="fixed", look={},
                                settings=input_drift.Settings(alpha=0.01 / 20, psi=True, min_samples=50))
        assert all(r["psi"] >= 0 for r in got.details["psi"].values())
        return got.verdict == "fail"

    assert sim.alarm_rate(150, 20, trial) <= 0.02


def test_the_simulated_rates_are_binomial_estimates() -> None:
    """The helper itself: a trial that alarms with probability 0.3 is estimated within 4 standard errors."""
    rate = sim.alarm_rate(2000, 22, lambda rng: bool(rng.random() < 0.3))
    assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)
    assert stats.binomtest(round(rate * 2000), 2000, 0.3).pvalue > 1e-4
