"""``error-rate``: canary error ratio against an absolute ceiling and against stable, from Prometheus.

Counts of errors and requests for canary and stable over the canary's lifetime (``window``, cut to
when the canary's series begin, so that stable's older traffic does not count). Two questions, with
``alpha`` split between them (a tenth for the ceiling, the rest for the comparison; all of it for
the comparison when ``ceiling=1``):

- ceiling: fails only when the canary's error rate is *confidently* above ``ceiling`` (default
  0.01) -- its lower confidence bound is above it: exact one-sided Clopper-Pearson (``mode=fixed``)
  or an anytime-valid bound (``mode=anytime``). A point estimate above the ceiling is not enough:
  2 errors in 100 requests is 2 %, and a 0.5 % service produces that 9 % of the time.
- stable: fails when the canary's rate is significantly above stable's: pooled two-proportion test
  (``mode=fixed``) or the anytime-valid count test on the errors (``mode=anytime``, Lindon et al.
  2022: each error comes from the canary with probability = its share of the requests under the
  null; its mixture centred on a doubled rate; power 0.84 at 1 % -> 2 % with 5,000 requests per side,
  where the exact proportion e-value has 0.17).

Fewer than ``min_requests`` requests on either side is ``inconclusive``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollouts.checks import PROMETHEUS_PARAMS, CheckContext
from rollouts.params import Params
from rollouts.stats import sequential_count_test, two_proportion_test
from rollouts.stats.compare import rate_above_test
from rollouts.stats.result import TestResult
from rollouts.stats.sequential import sequential_rate_above_test
from rollouts.verdict import Mode, Verdict, VerdictName, inconclusive

CHECK = "error-rate"
PARAMS = PROMETHEUS_PARAMS | {"ceiling", "min_requests"}
CEILING_SHARE = 0.1  # of alpha, for the ceiling; the comparison with stable gets the rest
# The anytime comparison's mixture is centred on a doubled error rate (each error from the canary with
# probability 2r / (1 + 2r) for traffic ratio r), strength 40: it finds 1 % -> 2 % with 5,000 requests
# per side more often than the default mixture centred on the null (make bench-stats prints both).
PRIOR_STRENGTH = 40.0


@dataclass(frozen=True)
class Counts:
    errors_canary: int
    requests_canary: int
    errors_stable: int
    requests_stable: int


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha = ctx.alpha(params)
    ceiling = params.number("ceiling", 0.01, low=0.0, high=1.0)
    min_requests = params.integer("min_requests", 100, low=1)
    sel = ctx.selectors(params)
    errors_q = ctx.query_template(params, "errors")
    requests_q = ctx.query_template(params, "requests")
    window = ctx.window(params, mode=mode)
    step, step_info = ctx.step(params, window=window)
    window, window_info = ctx.aligned_window(requests_q, sel, window=window, step=step)

    # Counts: NaN/negative are a broken source (502, in count_value); no request series is 0 requests.
    n_c = ctx.count_value(requests_q, sel.canary, model=sel.model, window=window, what="canary request") or 0
    n_s = ctx.count_value(requests_q, sel.stable, model=sel.model, window=window, what="stable request") or 0
    method = "msprt-poisson" if mode == "anytime" else "two-proportion"
    samples = {"baseline": n_s, "canary": n_c}
    details: dict[str, Any] = {"queries": [errors_q[0], requests_q[0]], **window_info, **step_info}
    if n_c < min_requests or n_s < min_requests:
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha,
            details={**details, "ceiling": ceiling, "min_requests": min_requests, "alpha": alpha},
            reason=f"too few requests: canary {n_c}, stable {n_s}, need {min_requests} each",
        )
    e_c = ctx.count_value(errors_q, sel.canary, model=sel.model, window=window, what="canary error")
    e_s = ctx.count_value(errors_q, sel.stable, model=sel.model, window=window, what="stable error")
    if e_c is None or e_s is None:
        # No error series at all (not even a zero) while there are requests: errors cannot be told
        # from no errors. The presets count zero errors explicitly, so this is a template problem.
        missing = " and ".join(side for side, e in (("canary", e_c), ("stable", e_s)) if e is None)
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha,
            details={**details, "ceiling": ceiling, "min_requests": min_requests, "alpha": alpha},
            reason=f"the errors query {errors_q[0]!r} returned no series for {missing}: errors cannot be told "
            "from no errors (a template should count zero errors explicitly, e.g. `... or 0 * <requests>`)",
        )
    return judge(Counts(min(e_c, n_c), n_c, min(e_s, n_s), n_s), mode=mode, alpha=alpha, ceiling=ceiling,
                 details=details)


def judge(counts: Counts, *, mode: Mode, alpha: float, ceiling: float,
          details: dict[str, Any] | None = None) -> Verdict:
    """The verdict on the counts of one look (the statistics of the check, without any source)."""
    x_c, n_c, x_s, n_s = counts.errors_canary, counts.requests_canary, counts.errors_stable, counts.requests_stable
    ratio_c, ratio_s = x_c / n_c, x_s / n_s
    alpha_ceiling = alpha * CEILING_SHARE if ceiling < 1.0 else 0.0
    alpha_compare = alpha - alpha_ceiling
    compare: TestResult
    if mode == "anytime":
        ratio = n_c / n_s
        compare = sequential_count_test(x_c, x_s, exposure_ratio=ratio, alternative="greater",
                                        prior_strength=PRIOR_STRENGTH, prior_mean=2 * ratio / (1 + 2 * ratio))
    else:
        compare = two_proportion_test(x_c, n_c, x_s, n_s, alternative="greater")
    bound: TestResult | None = None
    if ceiling <= 0.0:
        ceiling_hit = x_c > 0
    elif ceiling < 1.0:
        bound = (sequential_rate_above_test(x_c, n_c, ceiling, alpha=alpha_ceiling) if mode == "anytime"
                 else rate_above_test(x_c, n_c, ceiling, alpha=alpha_ceiling))
        ceiling_hit = bound.p_value is not None and bound.p_value < alpha_ceiling
    else:
        ceiling_hit = False
    p_compare = compare.p_value if compare.p_value is not None else 1.0
    details = {
        **(details or {}), "ceiling": ceiling, "alpha": alpha,
        "alpha_split": {"ceiling": alpha_ceiling, "comparison": alpha_compare},
        "canary_errors": x_c, "stable_errors": x_s, "canary_ratio": ratio_c, "stable_ratio": ratio_s,
        "test": compare.details,
    }
    if bound is not None:
        details["ceiling_test"] = {"method": bound.method, "p_value": bound.p_value, **bound.details}
    lower = bound.details["lower_bound"] if bound is not None else None
    verdict: VerdictName
    if ceiling_hit:
        verdict = "fail"
        why = (f"its {1 - alpha_ceiling:.4g} lower confidence bound {lower:.2%} is above" if lower is not None
               else "any error is above")
        reason = (f"canary error ratio {ratio_c:.2%} ({x_c}/{n_c}): {why} the ceiling {ceiling:.2%}; roll back")
    elif p_compare < alpha_compare:
        verdict = "fail"
        reason = (
            f"canary error ratio {ratio_c:.2%} is significantly above stable {ratio_s:.2%} "
            f"({compare.method} p={p_compare:.2g} < {alpha_compare:.3g}); roll back"
        )
    else:
        verdict = "pass"
        within = (f"not confidently above the ceiling {ceiling:.2%} (lower bound {lower:.2%})" if lower is not None
                  else f"ceiling {ceiling:.2%}" + (" off" if ceiling >= 1.0 else ""))
        reason = (f"canary error ratio {ratio_c:.2%} ({x_c}/{n_c}) {within}, and not significantly above "
                  f"stable {ratio_s:.2%}")
    return Verdict(
        check=CHECK, verdict=verdict, method=compare.method, statistic=compare.statistic,
        p_value=compare.p_value, threshold=alpha_compare, samples={"baseline": n_s, "canary": n_c}, reason=reason,
        mode=mode, details=details,
    )
