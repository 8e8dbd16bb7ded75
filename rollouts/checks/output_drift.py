"""``output-drift``: the canary's responses against stable's.

From a sample store (default, ``store=NAME&baseline=KEY&canary=KEY``; one JSON object per response):
the response-length distribution (``length_field``, default ``response_length``; two-sample KS)
and the refusal rate (``refusal_field``, default ``refused``; two-proportion test, one-sided:
more refusals). The two p-values are Bonferroni-corrected.

From Prometheus (``source=prometheus``, needs stable/canary hashes and a preset with an
``output_tokens`` query): per-interval mean generated tokens per request, KS (``mode=fixed``) or a
sequential mean test on the cumulative window (``mode=anytime``), two-sided.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rollouts.checks import PROMETHEUS_PARAMS, SAMPLE_PARAMS, CheckContext
from rollouts.checks.columns import FIELD_RE, booleans, column, kind_between, numbers
from rollouts.errors import ParamError
from rollouts.params import Params
from rollouts.stats import adjust_p_values, ks_test, sequential_mean_test, sequential_proportion_test, subsample
from rollouts.stats import two_proportion_test as proportion_test
from rollouts.verdict import Verdict, VerdictName, inconclusive

CHECK = "output-drift"
SAMPLE_ONLY = {"length_field", "refusal_field", "min_samples", "max_samples"}
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
    alpha, alpha_info = ctx.look_alpha(params, mode)
    length_field = params.text("length_field", "response_length", pattern=FIELD_RE)
    refusal_field = params.text("refusal_field", "refused", pattern=FIELD_RE)
    min_samples = params.integer("min_samples", 100, low=2)
    max_samples = params.integer("max_samples", 100_000, low=100, high=1_000_000)
    baseline, canary = ctx.load_pair(params)
    ref_len, cand_len = column(baseline, length_field), column(canary, length_field)
    ref_ref, cand_ref = booleans(baseline, refusal_field), booleans(canary, refusal_field)
    samples = {"baseline": baseline.count, "canary": canary.count}
    details: dict[str, Any] = {"length_field": length_field, "refusal_field": refusal_field, **alpha_info,
                               "look_alpha": alpha}
    counts = {"lengths": (len(ref_len), len(cand_len)), "refusals": (len(ref_ref), len(cand_ref))}
    short = [f"{k} ({a}/{b})" for k, (a, b) in counts.items() if a < min_samples or b < min_samples]
    if short:
        return inconclusive(
            check=CHECK, method="ks+two-proportion", samples=samples, mode=mode, threshold=alpha,
            details=details, reason=f"too few samples (baseline/canary) for {', '.join(short)}; need {min_samples}",
        )
    if kind_between(baseline, canary, field=length_field) != "numeric":
        raise ParamError(f"field {length_field!r} must hold numbers (response lengths)")
    ref_a, capped_r = subsample(numbers(baseline, length_field), max_samples=max_samples, seed=0)
    cand_a, capped_c = subsample(numbers(canary, length_field), max_samples=max_samples, seed=1)
    ks = ks_test(ref_a, cand_a)
    x_c, n_c, x_r, n_r = sum(cand_ref), len(cand_ref), sum(ref_ref), len(ref_ref)
    if mode == "anytime":
        # Refusals accumulate per response: the sequential test is valid at every look on its own.
        prop = sequential_proportion_test(x_c, n_c, x_r, n_r, alternative="greater")
    else:
        prop = proportion_test(x_c, n_c, x_r, n_r, alternative="greater")
    assert ks.p_value is not None and prop.p_value is not None  # both tests have p-values
    p_ks, p_prop = adjust_p_values([ks.p_value, prop.p_value], method="bonferroni")
    details.update(
        lengths={"method": ks.method, "statistic": ks.statistic, "p_value": ks.p_value, "p_adjusted": p_ks,
                 "baseline_mean": float(np.mean(ref_a)), "canary_mean": float(np.mean(cand_a)),
                 **({"subsampled": {"from": [len(ref_len), len(cand_len)], "to": [len(ref_a), len(cand_a)]}}
                    if capped_r or capped_c else {})},
        refusals={"method": prop.method, "statistic": prop.statistic, "p_value": prop.p_value,
                  "p_adjusted": p_prop, "baseline_rate": x_r / n_r, "canary_rate": x_c / n_c},
        correction="Bonferroni over 2 tests",
    )
    problems = []
    if p_ks < alpha:
        problems.append(
            f"response lengths drifted (mean {np.mean(cand_a):.1f} vs {np.mean(ref_a):.1f}, KS p={p_ks:.2g})"
        )
    if p_prop < alpha:
        problems.append(f"refusal rate rose to {x_c / n_c:.2%} from {x_r / n_r:.2%} (p={p_prop:.2g})")
    worst_is_ks = p_ks <= p_prop
    method = f"{ks.method}+{prop.method}"
    if problems:
        verdict: VerdictName = "fail"
        reason = "; ".join(problems)
    else:
        verdict = "pass"
        reason = (f"response lengths and refusal rate ({x_c / n_c:.2%} vs {x_r / n_r:.2%}) "
                  f"did not drift (2 tests, Bonferroni at {alpha:g})")
    return Verdict(
        check=CHECK, verdict=verdict, method=method,
        statistic=ks.statistic if worst_is_ks else prop.statistic,
        p_value=min(p_ks, p_prop), threshold=alpha, samples=samples, reason=reason, mode=mode, details=details,
    )


def _run_prometheus(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha = ctx.alpha(params)
    min_intervals = params.integer("min_intervals", 10, low=3, high=100000)
    sel = ctx.selectors(params)
    template = ctx.query_template(params, "output_tokens")
    window = ctx.window(params, mode=mode)
    step, step_info = ctx.step(params, window=window)
    canary = ctx.range_values(template, sel.canary, model=sel.model, window=window, step=step)
    stable = ctx.range_values(template, sel.stable, model=sel.model, window=window, step=step)
    samples = {"baseline": len(stable), "canary": len(canary)}
    details: dict[str, Any] = {"query": template[0], "window_seconds": window, "step_seconds": step,
                               "alpha": alpha, **step_info}
    method = "msprt-mean" if mode == "anytime" else "ks"
    if len(canary) < min_intervals or len(stable) < min_intervals:
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
            reason=(f"window still filling: {len(canary)} canary and {len(stable)} stable intervals "
                    f"with traffic, need {min_intervals} each"),
        )
    c, s = np.asarray(canary), np.asarray(stable)
    result = sequential_mean_test(c, s, alternative="two-sided") if mode == "anytime" else ks_test(s, c)
    p_value = result.p_value if result.p_value is not None else 1.0
    details.update(canary_mean_tokens=float(c.mean()), stable_mean_tokens=float(s.mean()), test=result.details)
    if p_value < alpha:
        verdict: VerdictName = "fail"
        reason = (f"generated tokens per request drifted: canary {c.mean():.1f} vs stable {s.mean():.1f} "
                  f"({result.method} p={p_value:.2g} < {alpha:g})")
    else:
        verdict = "pass"
        reason = f"generated tokens per request did not drift (canary {c.mean():.1f} vs stable {s.mean():.1f})"
    return Verdict(
        check=CHECK, verdict=verdict, method=result.method, statistic=result.statistic, p_value=result.p_value,
        threshold=alpha, samples=samples, reason=reason, mode=mode, details=details,
    )
