"""``error-rate``: canary error ratio against an absolute ceiling and against stable, from Prometheus.

Counts of errors and requests over ``window`` for canary and stable. Fails when the canary's error
ratio is above ``ceiling`` (default 0.01) or significantly above stable's: a pooled two-proportion
test (``mode=fixed``) or an anytime-valid sequential proportion test on the cumulative counts
(``mode=anytime``, default). Fewer than ``min_requests`` requests on either side is ``inconclusive``.
"""

from __future__ import annotations

from rollouts.checks import PROMETHEUS_PARAMS, CheckContext
from rollouts.params import Params
from rollouts.stats import sequential_proportion_test, two_proportion_test
from rollouts.verdict import Verdict, VerdictName, inconclusive

CHECK = "error-rate"
PARAMS = PROMETHEUS_PARAMS | {"ceiling", "min_requests"}


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha = ctx.alpha(params)
    ceiling = params.number("ceiling", 0.01, low=0.0, high=1.0)
    min_requests = params.integer("min_requests", 100, low=1)
    sel = ctx.selectors(params)
    errors_q = ctx.query_template(params, "errors")
    requests_q = ctx.query_template(params, "requests")
    window = ctx.window(params, mode=mode)

    # Counts: NaN/negative are a broken source (502, in count_value); no request series is 0 requests.
    n_c = ctx.count_value(requests_q, sel.canary, model=sel.model, window=window, what="canary request") or 0
    n_s = ctx.count_value(requests_q, sel.stable, model=sel.model, window=window, what="stable request") or 0
    method = "msprt-proportion" if mode == "anytime" else "two-proportion"
    samples = {"baseline": n_s, "canary": n_c}
    details = {"queries": [errors_q[0], requests_q[0]], "window_seconds": window, "ceiling": ceiling,
               "min_requests": min_requests, "alpha": alpha}
    if n_c < min_requests or n_s < min_requests:
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
            reason=f"too few requests: canary {n_c}, stable {n_s}, need {min_requests} each",
        )
    e_c = ctx.count_value(errors_q, sel.canary, model=sel.model, window=window, what="canary error")
    e_s = ctx.count_value(errors_q, sel.stable, model=sel.model, window=window, what="stable error")
    if e_c is None or e_s is None:
        # No error series at all (not even a zero) while there are requests: errors cannot be told
        # from no errors. The presets count zero errors explicitly, so this is a template problem.
        missing = " and ".join(side for side, e in (("canary", e_c), ("stable", e_s)) if e is None)
        return inconclusive(
            check=CHECK, method=method, samples=samples, mode=mode, threshold=alpha, details=details,
            reason=f"the errors query {errors_q[0]!r} returned no series for {missing}: errors cannot be told "
            "from no errors (a template should count zero errors explicitly, e.g. `... or 0 * <requests>`)",
        )
    x_c, x_s = min(e_c, n_c), min(e_s, n_s)
    ratio_c, ratio_s = x_c / n_c, x_s / n_s
    if mode == "anytime":
        result = sequential_proportion_test(x_c, n_c, x_s, n_s, alternative="greater")
    else:
        result = two_proportion_test(x_c, n_c, x_s, n_s, alternative="greater")
    details.update(canary_errors=x_c, stable_errors=x_s, canary_ratio=ratio_c, stable_ratio=ratio_s,
                   test=result.details)
    p_value = result.p_value if result.p_value is not None else 1.0
    if ratio_c > ceiling:
        verdict: VerdictName = "fail"
        reason = f"canary error ratio {ratio_c:.2%} ({x_c}/{n_c}) is above the ceiling {ceiling:.2%}; roll back"
    elif p_value < alpha:
        verdict = "fail"
        reason = (
            f"canary error ratio {ratio_c:.2%} is significantly above stable {ratio_s:.2%} "
            f"({result.method} p={p_value:.2g} < {alpha:g}); roll back"
        )
    else:
        verdict = "pass"
        reason = (
            f"canary error ratio {ratio_c:.2%} ({x_c}/{n_c}) within ceiling {ceiling:.2%} and not "
            f"significantly above stable {ratio_s:.2%}"
        )
    return Verdict(
        check=CHECK, verdict=verdict, method=result.method, statistic=result.statistic,
        p_value=result.p_value, threshold=alpha, samples=samples, reason=reason, mode=mode, details=details,
    )
