"""``latency``: canary tail latency against stable, from Prometheus.

Fails when the canary's quantile (default p95) over the window is worse than stable's by more than
``max_increase`` (relative, default 0.3 = 30 %) **and** the difference is significant. Both sides are
judged over the canary's lifetime (``window`` cut to when the canary's series begin). Two ways to
get there, chosen by the query:

- **pooled buckets** (the presets with a request histogram: vLLM, TGI, KServe; or
  ``latency_buckets_query=NAME``): the per-request latencies of the whole window, by histogram bucket
  (``sum by (le) (increase(..._bucket[window]))``). The quantiles are read off the pooled buckets as
  ``histogram_quantile`` does, and the significance test is Mann-Whitney U on the requests
  (ties within a bucket; ``mode=fixed``) or its anytime-valid sequential version (``mode=anytime``).
  Per-interval quantiles (the p95 of each minute) are biased by how many requests each minute had:
  with 50 stable and 450 canary requests a minute the old per-interval test false-alarmed 64 % of
  the time. Pooled requests have no such bias, and all of a side's requests in one bucket is an
  ordinary, deterministic answer.
- **time-paired intervals** (a named per-interval template, e.g. ``latency_query=...``, or Triton,
  whose mean latency has no histogram): ``d_t = canary_t - stable_t`` at each step where both have
  traffic, tested with a heteroskedasticity-and-autocorrelation-robust variance
  (``rollouts.stats.timeseries``): a slow minute followed by a slow minute is not two pieces of
  evidence. Constant series are decided without a variance.

Fewer than ``min_intervals`` steps since the canary started (a window still filling) is ``inconclusive``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rollouts.checks import PROMETHEUS_PARAMS, CheckContext
from rollouts.errors import ParamError
from rollouts.params import Params
from rollouts.stats.compare import mann_whitney_binned
from rollouts.stats.result import TestResult
from rollouts.stats.sequential import sequential_mann_whitney_binned
from rollouts.stats.timeseries import paired_difference_test
from rollouts.verdict import Mode, Verdict, VerdictName, inconclusive

CHECK = "latency"
PARAMS = PROMETHEUS_PARAMS | {"max_increase", "quantile", "min_intervals"}
MIN_REQUESTS = 20  # per side, for the pooled-bucket test


@dataclass(frozen=True)
class Histogram:
    """Cumulative request counts by bucket upper bound (``le``), increasing; the last bound may be +Inf."""

    bounds: list[float]
    cumulative: list[float]

    @classmethod
    def from_buckets(cls, buckets: list[tuple[float, float]]) -> Histogram:
        """From (le, cumulative count) pairs as Prometheus returns them: sorted, made monotone, whole requests.

        ``increase()`` extrapolates each bucket on its own, so neighbouring buckets can come back out of
        order by a fraction of a request: a bucket never holds fewer requests than the one below it.
        """
        pairs = sorted(buckets)
        bounds = [b for b, _ in pairs]
        counts = np.maximum.accumulate(np.maximum(np.rint([c for _, c in pairs]), 0.0)) if pairs else np.array([])
        return cls(bounds, [float(c) for c in counts])

    @property
    def total(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def per_bucket(self) -> np.ndarray:
        cum = np.asarray(self.cumulative, dtype=np.float64)
        return np.diff(np.concatenate([[0.0], cum]))

    def quantile(self, q: float) -> float | None:
        """``histogram_quantile(q, ...)``: linear interpolation inside the bucket (lower edge 0 for the first)."""
        total = self.total
        if total <= 0:
            return None
        rank = q * total
        for i, (bound, cum) in enumerate(zip(self.bounds, self.cumulative, strict=True)):
            if cum >= rank:
                if math.isinf(bound):
                    finite = [b for b in self.bounds if math.isfinite(b)]
                    return finite[-1] if finite else None
                lower = self.bounds[i - 1] if i > 0 else 0.0
                below = self.cumulative[i - 1] if i > 0 else 0.0
                if i == 0 and bound <= 0:
                    return bound
                inside = cum - below
                return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        return None


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha = ctx.alpha(params)
    max_increase = params.number("max_increase", 0.3, low=0.0, high=100.0)
    quantile = params.number("quantile", 0.95, low=0.5, high=0.999)
    min_intervals = params.integer("min_intervals", 10, low=3, high=100000)
    sel = ctx.selectors(params)
    pooled = _pooled_template(params, ctx)
    template = pooled or ctx.query_template(params, "latency")
    window = ctx.window(params, mode=mode)
    step, step_info = ctx.step(params, window=window)
    window, window_info = ctx.aligned_window(template, sel, window=window, step=step)
    details: dict[str, Any] = {"query": template[0], "step_seconds": step, "quantile": quantile,
                               "max_increase": max_increase, "min_intervals": min_intervals, "alpha": alpha,
                               **window_info, **step_info}
    age = window_info.get("canary_age_seconds")
    intervals = int(age // step) if isinstance(age, int | float) else 0
    method = ("msprt-mann-whitney-binned" if mode == "anytime" else "mann-whitney-binned") if pooled else (
        "msprt-paired-har" if mode == "anytime" else "paired-har")
    if intervals < min_intervals:
        return inconclusive(
            check=CHECK, method=method, samples={"baseline": 0, "canary": intervals}, mode=mode, threshold=alpha,
            details=details, reason=(f"window still filling: the canary has served for {intervals} intervals of "
                                     f"{step}s, need {min_intervals}"),
        )
    if pooled:
        canary = Histogram.from_buckets(ctx.bucket_counts(template, sel.canary, model=sel.model, window=window))
        stable = Histogram.from_buckets(ctx.bucket_counts(template, sel.stable, model=sel.model, window=window))
        return judge_buckets(canary, stable, mode=mode, alpha=alpha, quantile=quantile, max_increase=max_increase,
                             details=details)
    diffs = ctx.paired_differences(template, sel, window=window, step=step, quantile=quantile)
    canary_overall = ctx.instant_value(template, sel.canary, model=sel.model, window=window, quantile=quantile)
    stable_overall = ctx.instant_value(template, sel.stable, model=sel.model, window=window, quantile=quantile)
    return judge_paired(diffs, canary_overall, stable_overall, mode=mode, alpha=alpha, quantile=quantile,
                        max_increase=max_increase, min_intervals=min_intervals, details=details)


def _pooled_template(params: Params, ctx: CheckContext) -> tuple[str, str] | None:
    """The bucket template when the latency comes from a histogram the provider can pool, else None.

    A caller who names a per-interval latency template gets exactly that query (time-paired); the
    preset's buckets are used only when the latency is the preset's too.
    """
    if params.has("latency_buckets_query") or params.has("promql_latency_buckets"):
        return ctx.query_template(params, "latency_buckets")
    if params.has("latency_query") or params.has("promql_latency"):
        return None
    try:
        return ctx.query_template(params, "latency_buckets")
    except ParamError:  # the preset has no buckets (Triton) or there is no preset: time-paired
        return None


def _label(quantile: float) -> str:
    return f"p{quantile * 100:g}"


def judge_buckets(canary: Histogram, stable: Histogram, *, mode: Mode, alpha: float, quantile: float,
                  max_increase: float, details: dict[str, Any] | None = None) -> Verdict:
    """The verdict on the pooled per-request histograms of both sides."""
    details = dict(details or {})
    samples = {"baseline": int(stable.total), "canary": int(canary.total)}
    method = "msprt-mann-whitney-binned" if mode == "anytime" else "mann-whitney-binned"
    if canary.bounds != stable.bounds:
        return inconclusive(check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
                            reason="canary and stable histograms have different buckets; cannot pool them")
    if canary.total < MIN_REQUESTS or stable.total < MIN_REQUESTS:
        return inconclusive(check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
                            reason=(f"too few requests in the window: canary {samples['canary']}, stable "
                                    f"{samples['baseline']}, need {MIN_REQUESTS} each"))
    c_q, s_q = canary.quantile(quantile), stable.quantile(quantile)
    assert c_q is not None and s_q is not None  # both totals are positive
    result: TestResult = (sequential_mann_whitney_binned(canary.per_bucket(), stable.per_bucket(), alpha=alpha)
                          if mode == "anytime" else mann_whitney_binned(canary.per_bucket(), stable.per_bucket()))
    details.update(canary_value=c_q, stable_value=s_q,
                   buckets=[b if math.isfinite(b) else "+Inf" for b in canary.bounds],
                   test=result.details, pooled="per-request latencies pooled from histogram buckets over the window")
    return _decide(result, c_q, s_q, mode=mode, alpha=alpha, quantile=quantile, max_increase=max_increase,
                   samples=samples, details=details)


def judge_paired(differences: list[float], canary_overall: float | None, stable_overall: float | None, *,
                 mode: Mode, alpha: float, quantile: float, max_increase: float, min_intervals: int,
                 details: dict[str, Any] | None = None) -> Verdict:
    """The verdict on time-paired per-interval differences (canary - stable) and the window's overall values."""
    details = dict(details or {})
    samples = {"baseline": len(differences), "canary": len(differences)}
    method = "msprt-paired-har" if mode == "anytime" else "paired-har"
    if len(differences) < min_intervals:
        return inconclusive(check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
                            reason=(f"window still filling: {len(differences)} intervals where both canary and "
                                    f"stable had traffic, need {min_intervals}"))
    if canary_overall is None or stable_overall is None or stable_overall <= 0:
        return inconclusive(check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
                            reason="no overall latency for the window on one side (no traffic in the histogram)")
    result = paired_difference_test(np.asarray(differences), alternative="greater", mode=mode)
    details.update(canary_value=canary_overall, stable_value=stable_overall, test=result.details,
                   paired="per-interval values paired by timestamp, autocorrelation-robust variance")
    return _decide(result, canary_overall, stable_overall, mode=mode, alpha=alpha, quantile=quantile,
                   max_increase=max_increase, samples=samples, details=details)


def _decide(result: TestResult, canary_value: float, stable_value: float, *, mode: Mode, alpha: float,
            quantile: float, max_increase: float, samples: dict[str, int], details: dict[str, Any]) -> Verdict:
    relative = canary_value / stable_value - 1.0 if stable_value > 0 else (0.0 if canary_value <= 0 else math.inf)
    details["relative_increase"] = relative
    p_value = result.p_value if result.p_value is not None else 1.0
    significant = p_value < alpha
    worse = relative > max_increase
    label = _label(quantile)
    verdict: VerdictName
    if worse and significant:
        verdict = "fail"
        reason = (f"canary {label} {canary_value:.3g}s is {relative:+.0%} against stable {stable_value:.3g}s "
                  f"(limit +{max_increase:.0%}), significant ({result.method} p={p_value:.2g} < {alpha:g}); roll back")
    else:
        verdict = "pass"
        why = "not significant" if not significant else f"within +{max_increase:.0%}"
        reason = f"canary {label} {canary_value:.3g}s vs stable {stable_value:.3g}s ({relative:+.0%}): {why}"
    return Verdict(check=CHECK, verdict=verdict, method=result.method, statistic=result.statistic,
                   p_value=result.p_value, threshold=alpha, samples=samples, reason=reason, mode=mode, details=details)
