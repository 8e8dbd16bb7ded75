"""``output-drift``: the canary's responses against stable's.

From a sample store (default, ``store=NAME&baseline=KEY&canary=KEY``; one JSON object per response):
the response-length distribution (``length_field``, default ``response_length``; two-sample KS, or
chi-square when the lengths take at most 10 values, with the Wasserstein/sd or Jensen-Shannon
effect gated by ``min_effect``/``min_js`` as in ``input-drift``) and the refusal rate
(``refusal_field``, default ``refused``; two-proportion test, one-sided: more refusals). Each test
gets half of the look's alpha (Bonferroni over the two). In ``mode=anytime`` the look's alpha and
rows come from the plan of ``rollouts.checks.looks``, for both tests: the refusal test is no longer
divided by ``max_looks`` on top of being anytime-valid (issue 17), and it is the fixed-sample test
on the plan's rows rather than the sequential proportion e-value, whose power at 2 % -> 4 % refusals
on 2,000 responses was 0.09 against 0.8 under the plan.

From Prometheus (``source=prometheus``, needs stable/canary hashes and a preset with an
``output_tokens`` query): mean generated tokens per request per interval, paired by timestamp
(``canary - stable``) and tested two-sided with an autocorrelation-robust variance
(``rollouts.stats.timeseries``), fixed or anytime.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from rollouts.checks import PROMETHEUS_PARAMS, SAMPLE_PARAMS, CheckContext
from rollouts.checks.columns import FIELD_RE, booleans, category_labels, column, feature_kind, head, numbers
from rollouts.errors import ParamError
from rollouts.params import Params
from rollouts.sources.samples import Samples
from rollouts.stats import chi2_test, ks_test, subsample
from rollouts.stats import two_proportion_test as proportion_test
from rollouts.stats.effect import DEFAULT_MIN_EFFECT, DEFAULT_MIN_JS, jensen_shannon, normalised_wasserstein
from rollouts.stats.result import TestResult
from rollouts.stats.timeseries import paired_difference_test
from rollouts.verdict import Mode, Verdict, VerdictName, inconclusive

CHECK = "output-drift"
SAMPLE_ONLY = {"length_field", "refusal_field", "min_samples", "max_samples", "min_effect", "min_js"}
PARAMS = SAMPLE_PARAMS | SAMPLE_ONLY | {"source"}


def allowed_params(params: Params) -> set[str]:
    if params.raw("source") == "prometheus":
        return set(PROMETHEUS_PARAMS) | {"source", "min_intervals"}
    return set(PARAMS)


def run(params: Params, ctx: CheckContext) -> Verdict:
    source = params.choice("source", ("samples", "prometheus"), "samples")
    if source == "prometheus":
        return _run_prometheus(params, ctx)
    return _run_samples(params, ctx)


def _run_samples(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    look = ctx.look_params(params, mode)
    length_field = params.text("length_field", "response_length", pattern=FIELD_RE)
    refusal_field = params.text("refusal_field", "refused", pattern=FIELD_RE)
    min_samples = params.integer("min_samples", 100, low=2)
    max_samples = params.integer("max_samples", 100_000, low=100, high=1_000_000)
    min_effect = params.number("min_effect", DEFAULT_MIN_EFFECT, low=0.0, high=100.0)
    min_js = params.number("min_js", DEFAULT_MIN_JS, low=0.0, high=1.0)
    baseline, canary = ctx.load_pair(params)
    plan = ctx.look_plan(look, canary_rows=canary.count, baseline_rows=baseline.count, min_rows=min_samples)
    if plan.filling:
        return inconclusive(check=CHECK, method="ks+two-proportion", mode=mode, details=plan.details,
                            samples={"baseline": baseline.count, "canary": canary.count}, reason=plan.filling)
    return judge(baseline, head(canary, plan.rows), mode=mode, alpha=plan.alpha, length_field=length_field,
                 refusal_field=refusal_field, min_samples=min_samples, max_samples=max_samples,
                 min_effect=min_effect, min_js=min_js, look=plan.details)


def judge(baseline: Samples, canary: Samples, *, mode: Mode, alpha: float, length_field: str = "response_length",
          refusal_field: str = "refused", min_samples: int = 100, max_samples: int = 100_000,
          min_effect: float = DEFAULT_MIN_EFFECT, min_js: float = DEFAULT_MIN_JS,
          look: dict[str, Any] | None = None) -> Verdict:
    """The verdict on two loaded windows (the canary already cut to what this look judges): lengths and
    refusals, each at ``alpha / 2``."""
    half = alpha / 2.0
    ref_ref, cand_ref = booleans(baseline, refusal_field), booleans(canary, refusal_field)
    samples = {"baseline": baseline.count, "canary": canary.count}
    details: dict[str, Any] = {
        "length_field": length_field, "refusal_field": refusal_field, **(look or {}), "look_alpha": alpha,
        "correction": "Bonferroni over 2 tests: lengths and refusals each at half of the look's alpha",
    }
    counts = {"lengths": (len(column(baseline, length_field)), len(column(canary, length_field))),
              "refusals": (len(ref_ref), len(cand_ref))}
    short = [f"{k} ({a}/{b})" for k, (a, b) in counts.items() if a < min_samples or b < min_samples]
    if short:
        return inconclusive(
            check=CHECK, method="ks+two-proportion", samples=samples, mode=mode, threshold=half,
            details=details, reason=f"too few samples (baseline/canary) for {', '.join(short)}; need {min_samples}",
        )
    x_c, n_c, x_r, n_r = sum(cand_ref), len(cand_ref), sum(ref_ref), len(ref_ref)
    prop = proportion_test(x_c, n_c, x_r, n_r, alternative="greater")
    result, entry = _length_test(baseline, canary, length_field=length_field, max_samples=max_samples,
                                 min_effect=min_effect, min_js=min_js)
    assert prop.p_value is not None and result.p_value is not None  # both tests have p-values
    entry.update(threshold=half, significant=result.p_value < half)
    entry["drifted"] = entry["significant"] and entry["effect"] >= entry["min_effect"]
    details.update(
        lengths=entry,
        refusals={"method": prop.method, "statistic": prop.statistic, "p_value": prop.p_value, "threshold": half,
                  "baseline_rate": x_r / n_r, "canary_rate": x_c / n_c, "test": prop.details.get("test")},
    )
    problems = []
    if entry["drifted"]:
        problems.append(f"response lengths drifted (mean {entry['canary_mean']:.1f} vs {entry['baseline_mean']:.1f}, "
                        f"{result.method} p={result.p_value:.2g}, {entry['effect_measure']} {entry['effect']:.3g})")
    if prop.p_value < half:
        problems.append(f"refusal rate rose to {x_c / n_c:.2%} from {x_r / n_r:.2%} (p={prop.p_value:.2g})")
    verdict: VerdictName
    if problems:
        verdict, reason = "fail", "; ".join(problems)
    else:
        verdict = "pass"
        reason = (f"response lengths and refusal rate ({x_c / n_c:.2%} vs {x_r / n_r:.2%}) did not drift "
                  f"(2 tests, Bonferroni at {alpha:g})")
        if entry["significant"]:
            reason += (f"; lengths significant but below the minimum effect ({entry['effect_measure']} "
                       f"{entry['effect']:.3g} < {entry['min_effect']:g})")
    worst_is_ks = result.p_value <= prop.p_value
    return Verdict(
        check=CHECK, verdict=verdict, method=f"{result.method}+{prop.method}",
        statistic=result.statistic if worst_is_ks else prop.statistic,
        p_value=min(1.0, 2.0 * min(result.p_value, prop.p_value)), threshold=alpha, samples=samples, reason=reason,
        mode=mode, details=details,
    )


def _length_test(baseline: Samples, canary: Samples, *, length_field: str, max_samples: int,
                 min_effect: float, min_js: float) -> tuple[TestResult, dict[str, Any]]:
    ref_len, cand_len = column(baseline, length_field), column(canary, length_field)
    kind = feature_kind(baseline, canary, field=length_field)
    if kind.stored != "numbers":
        raise ParamError(f"field {length_field!r} must hold numbers (response lengths)")
    ref_a, capped_r = subsample(numbers(baseline, length_field), max_samples=max_samples, seed=0)
    cand_a, capped_c = subsample(numbers(canary, length_field), max_samples=max_samples, seed=1)
    entry: dict[str, Any] = {"baseline_mean": float(np.mean(ref_a)), "canary_mean": float(np.mean(cand_a))}
    if kind.kind == "numeric":
        ref_a, cand_a = np.sort(ref_a), np.sort(cand_a)  # once, for KS and Wasserstein (both order-free)
        result = ks_test(ref_a, cand_a)
        effect, scaled = normalised_wasserstein(ref_a, cand_a, presorted=True)
        entry.update(effect=effect, effect_measure="Wasserstein/sd", min_effect=min_effect, **scaled)
    else:
        ref_l, cand_l = category_labels(baseline, length_field, kind), category_labels(canary, length_field, kind)
        result = chi2_test(ref_l, cand_l)
        entry.update(effect=jensen_shannon(Counter(ref_l), Counter(cand_l)), effect_measure="Jensen-Shannon",
                     min_effect=min_js, note=kind.note)
    entry.update(method=result.method, statistic=result.statistic, p_value=result.p_value)
    if capped_r or capped_c:
        entry["subsampled"] = {"from": [len(ref_len), len(cand_len)], "to": [len(ref_a), len(cand_a)]}
    return result, entry


def _run_prometheus(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha = ctx.alpha(params)
    min_intervals = params.integer("min_intervals", 10, low=3, high=100000)
    sel = ctx.selectors(params)
    template = ctx.query_template(params, "output_tokens")
    window = ctx.window(params, mode=mode)
    step, step_info = ctx.step(params, window=window)
    window, window_info = ctx.aligned_window(template, sel, window=window, step=step)
    diffs = ctx.paired_differences(template, sel, window=window, step=step)
    canary_mean = ctx.instant_value(template, sel.canary, model=sel.model, window=window)
    stable_mean = ctx.instant_value(template, sel.stable, model=sel.model, window=window)
    details: dict[str, Any] = {"query": template[0], "step_seconds": step, "alpha": alpha, **window_info, **step_info}
    return judge_paired(diffs, canary_mean, stable_mean, mode=mode, alpha=alpha, min_intervals=min_intervals,
                        details=details)


def judge_paired(differences: list[float], canary_mean: float | None, stable_mean: float | None, *, mode: Mode,
                 alpha: float, min_intervals: int = 10, details: dict[str, Any] | None = None) -> Verdict:
    """The verdict on time-paired per-interval differences of mean generated tokens (canary - stable)."""
    details = dict(details or {})
    samples = {"baseline": len(differences), "canary": len(differences)}
    method = "msprt-paired-har" if mode == "anytime" else "paired-har"
    if len(differences) < min_intervals or canary_mean is None or stable_mean is None:
        return inconclusive(check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
                            reason=(f"window still filling: {len(differences)} intervals where both canary and "
                                    f"stable had traffic, need {min_intervals}"))
    result = paired_difference_test(np.asarray(differences), alternative="two-sided", mode=mode)
    p_value = result.p_value if result.p_value is not None else 1.0
    details.update(canary_mean_tokens=canary_mean, stable_mean_tokens=stable_mean, test=result.details)
    verdict: VerdictName
    if p_value < alpha:
        verdict = "fail"
        reason = (f"generated tokens per request drifted: canary {canary_mean:.1f} vs stable {stable_mean:.1f} "
                  f"({result.method} p={p_value:.2g} < {alpha:g})")
    else:
        verdict = "pass"
        reason = f"generated tokens per request did not drift (canary {canary_mean:.1f} vs stable {stable_mean:.1f})"
    return Verdict(
        check=CHECK, verdict=verdict, method=result.method, statistic=result.statistic, p_value=result.p_value,
        threshold=alpha, samples=samples, reason=reason, mode=mode, details=details,
    )
