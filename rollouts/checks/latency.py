"""``latency``: canary tail latency against stable, from Prometheus.

Per-interval samples (one latency value per ``step``, e.g. the p95 of each minute from the
histogram) for canary and stable over ``window``, plus the overall quantile over the whole window.
Fails when the canary's overall value is worse than stable's by more than ``max_increase``
(relative, default 0.3 = 30 %) **and** the per-interval samples show the difference is significant:
Mann-Whitney U (``mode=fixed``, as automated canary judges do) or a sequential mean test on the
cumulative window (``mode=anytime``). Fewer than ``min_intervals`` intervals with traffic on either
side (a window still filling) is ``inconclusive``.
"""

from __future__ import annotations

import numpy as np

from rollouts.checks import PROMETHEUS_PARAMS, CheckContext
from rollouts.params import Params
from rollouts.stats import mann_whitney_test, sequential_mean_test
from rollouts.verdict import Verdict, VerdictName, inconclusive

CHECK = "latency"
PARAMS = PROMETHEUS_PARAMS | {"max_increase", "quantile", "min_intervals"}


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha = ctx.alpha(params)
    max_increase = params.number("max_increase", 0.3, low=0.0, high=100.0)
    quantile = params.number("quantile", 0.95, low=0.5, high=0.999)
    min_intervals = params.integer("min_intervals", 10, low=3, high=100000)
    sel = ctx.selectors(params)
    template = ctx.query_template(params, "latency")
    window = ctx.window(params, mode=mode)
    step, step_info = ctx.step(params, window=window)
    method = "msprt-mean" if mode == "anytime" else "mann-whitney"

    canary = ctx.range_values(template, sel.canary, model=sel.model, window=window, step=step, quantile=quantile)
    stable = ctx.range_values(template, sel.stable, model=sel.model, window=window, step=step, quantile=quantile)
    samples = {"baseline": len(stable), "canary": len(canary)}
    details = {"query": template[0], "window_seconds": window, "step_seconds": step, "quantile": quantile,
               "max_increase": max_increase, "min_intervals": min_intervals, "alpha": alpha, **step_info}
    if len(canary) < min_intervals or len(stable) < min_intervals:
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
            reason=(
                f"window still filling: {len(canary)} canary and {len(stable)} stable intervals with "
                f"traffic, need {min_intervals} each"
            ),
        )
    canary_overall = ctx.instant_value(template, sel.canary, model=sel.model, window=window, quantile=quantile)
    stable_overall = ctx.instant_value(template, sel.stable, model=sel.model, window=window, quantile=quantile)
    if canary_overall is None or stable_overall is None or stable_overall <= 0:
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
            reason="no overall latency for the window on one side (no traffic in the histogram)",
        )
    relative = canary_overall / stable_overall - 1.0
    if mode == "anytime":
        result = sequential_mean_test(np.asarray(canary), np.asarray(stable), alternative="greater")
    else:
        result = mann_whitney_test(np.asarray(canary), np.asarray(stable), alternative="greater")
    method = result.method
    details.update(
        canary_value=canary_overall, stable_value=stable_overall, relative_increase=relative,
        test=result.details,
    )
    label = f"p{quantile * 100:g}"
    p_value = result.p_value if result.p_value is not None else 1.0
    significant = p_value < alpha
    worse = relative > max_increase
    if worse and significant:
        verdict: VerdictName = "fail"
        reason = (
            f"canary {label} {canary_overall:.3g}s is {relative:+.0%} against stable {stable_overall:.3g}s "
            f"(limit +{max_increase:.0%}), significant ({method} p={p_value:.2g} < {alpha:g}); roll back"
        )
    else:
        verdict = "pass"
        why = "not significant" if not significant else f"within +{max_increase:.0%}"
        reason = (
            f"canary {label} {canary_overall:.3g}s vs stable {stable_overall:.3g}s ({relative:+.0%}): {why}"
        )
    return Verdict(
        check=CHECK, verdict=verdict, method=method, statistic=result.statistic, p_value=result.p_value,
        threshold=alpha, samples=samples, reason=reason, mode=mode, details=details,
    )
