"""``input-drift``: the canary's inputs against a reference window, from a sample store.

``store=NAME&baseline=KEY&canary=KEY``; ``features=a,b`` (default: every numeric and categorical
field), ``embedding=FIELD`` for vectors. Numeric features: two-sample Kolmogorov-Smirnov;
categorical: chi-square; optional PSI (``psi=true``, quantile bins from the reference, smoothed
empty bins, warn at ``psi_warn`` 0.1, fail at ``psi_fail`` 0.25); embeddings: MMD with an RBF
kernel and a permutation p-value. The p-values of all tests are corrected for multiple testing
(``correction=bh`` Benjamini-Hochberg, default, or ``bonferroni``). Large windows are subsampled
to ``max_samples`` (embeddings to ``mmd_max_samples``) and the answer says so.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from rollouts.checks import SAMPLE_PARAMS, CheckContext
from rollouts.checks.columns import FIELD_RE, column, count, embeddings, kind_between, numbers, scalar_fields
from rollouts.errors import ParamError
from rollouts.params import Params
from rollouts.stats import adjust_p_values, chi2_test, ks_test, mmd_test, psi, subsample
from rollouts.verdict import Verdict, VerdictName, inconclusive

CHECK = "input-drift"
PARAMS = SAMPLE_PARAMS | {
    "features", "embedding", "correction", "psi", "psi_bins", "psi_warn", "psi_fail", "min_samples",
    "max_samples", "mmd_permutations", "mmd_max_samples",
}
MAX_PERMUTATIONS = 5000
CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    alpha, alpha_info = ctx.look_alpha(params, mode)
    correction: Literal["bh", "bonferroni"] = "bonferroni" if params.choice(
        "correction", ("bh", "bonferroni"), "bh") == "bonferroni" else "bh"
    use_psi = params.flag("psi", False)
    psi_bins = params.integer("psi_bins", 10, low=2, high=100)
    psi_warn = params.number("psi_warn", 0.1, low=0.0)
    psi_fail = params.number("psi_fail", 0.25, low=0.0)
    min_samples = params.integer("min_samples", 100, low=2)
    max_samples = params.integer("max_samples", 100_000, low=100, high=1_000_000)
    permutations = params.integer("mmd_permutations", 500, low=10, high=MAX_PERMUTATIONS)
    mmd_max = params.integer("mmd_max_samples", 1000, low=50, high=2500)  # (2n)^2 float64 kernel: ~200 MB at 2500
    features = params.csv("features", pattern=FIELD_RE)
    embedding = params.optional_str("embedding", pattern=FIELD_RE)

    baseline, canary = ctx.load_pair(params)
    if features is None:
        features = [] if (embedding and baseline.array is not None) else [
            f for f in scalar_fields(baseline) if f != embedding
        ]
    if not features and not embedding:
        raise ParamError("no features to test: the baseline has no scalar fields; pass features= or embedding=")
    samples = {"baseline": baseline.count, "canary": canary.count}
    base_details: dict[str, Any] = {"correction": CORRECTION_NAMES[correction], **alpha_info}

    counts: dict[str, tuple[int, int]] = {}
    short: list[str] = []
    for feature in features:
        n_ref, n_cand = count(baseline, feature), count(canary, feature)
        counts[feature] = (n_ref, n_cand)
        if n_ref < min_samples or n_cand < min_samples:
            short.append(f"{feature} ({n_ref}/{n_cand})")
    emb: tuple[np.ndarray, np.ndarray] | None = None
    if embedding:
        emb = (embeddings(baseline, embedding), embeddings(canary, embedding))
        if emb[0].shape[0] < min_samples or emb[1].shape[0] < min_samples:
            short.append(f"{embedding} ({emb[0].shape[0]}/{emb[1].shape[0]})")
        elif emb[0].shape[1] != emb[1].shape[1]:
            raise ParamError(f"embedding dimensions differ: baseline {emb[0].shape[1]}, canary {emb[1].shape[1]}")
    if short:
        return inconclusive(
            check=CHECK, method="ks", samples=samples, mode=mode, threshold=alpha,
            details={**base_details, "min_samples": min_samples},
            reason=(f"too few samples (baseline/canary) for {', '.join(short)}; need {min_samples} each"),
        )

    tests: list[dict[str, Any]] = []
    psi_results: dict[str, dict[str, Any]] = {}
    for feature, (n_ref, n_cand) in counts.items():
        kind = kind_between(baseline, canary, field=feature)
        entry: dict[str, Any] = {"feature": feature, "kind": kind}
        if kind == "numeric":
            ref_a, ref_capped = subsample(numbers(baseline, feature), max_samples=max_samples, seed=0)
            cand_a, cand_capped = subsample(numbers(canary, feature), max_samples=max_samples, seed=1)
            result = ks_test(ref_a, cand_a)
            if ref_capped or cand_capped:
                entry["subsampled"] = {"from": [n_ref, n_cand], "to": [len(ref_a), len(cand_a)]}
            if use_psi:
                pr = psi(ref_a, cand_a, bins=psi_bins)
                level = "fail" if pr.statistic >= psi_fail else "warn" if pr.statistic >= psi_warn else "ok"
                psi_results[feature] = {"psi": pr.statistic, "level": level, **pr.details}
        else:
            result = chi2_test([str(v) for v in column(baseline, feature)],
                               [str(v) for v in column(canary, feature)])
        entry.update(method=result.method, statistic=result.statistic, p_value=result.p_value,
                     n_reference=result.n_reference, n_candidate=result.n_candidate)
        tests.append(entry)
    if emb is not None:
        # A permutation p-value cannot go below 1/(permutations+1): make sure it can reach alpha.
        needed = min(MAX_PERMUTATIONS, math.ceil(2 / alpha))
        if permutations < needed:
            base_details["mmd_permutations_raised"] = f"{permutations} -> {needed} so the p-value can reach {alpha:g}"
            permutations = needed
        result = mmd_test(emb[0], emb[1], permutations=permutations, seed=0, max_samples=mmd_max)
        entry = {"feature": embedding, "kind": "embedding", "method": result.method,
                 "statistic": result.statistic, "p_value": result.p_value,
                 "n_reference": result.n_reference, "n_candidate": result.n_candidate, **result.details}
        if emb[0].shape[0] > mmd_max or emb[1].shape[0] > mmd_max:
            entry["subsampled"] = {"from": [int(emb[0].shape[0]), int(emb[1].shape[0])], "to_at_most": mmd_max}
        tests.append(entry)

    adjusted = adjust_p_values([t["p_value"] for t in tests], method=correction)
    for t, adj in zip(tests, adjusted, strict=True):
        t["p_adjusted"] = adj
    drifted = [t for t in tests if t["p_adjusted"] < alpha]
    psi_failed = [f for f, r in psi_results.items() if r["level"] == "fail"]
    psi_warned = [f for f, r in psi_results.items() if r["level"] == "warn"]
    worst = min(tests, key=lambda t: (t["p_adjusted"], -t["statistic"]))
    methods = "+".join(sorted({t["method"] for t in tests}))
    details = {**base_details, "features": tests, "capped": any("subsampled" in t for t in tests)}
    if psi_results:
        details["psi"] = psi_results
        details["psi_thresholds"] = {"warn": psi_warn, "fail": psi_fail}
    family = f"{len(tests)} test{'s' if len(tests) != 1 else ''}, {CORRECTION_NAMES[correction]} at {alpha:g}"
    if drifted or psi_failed:
        names = [t["feature"] for t in drifted] + [f"{f} (PSI)" for f in psi_failed if f not in
                                                   {t["feature"] for t in drifted}]
        verdict: VerdictName = "fail"
        reason = f"input drift in {', '.join(names)} ({family})"
    else:
        verdict = "pass"
        reason = f"no feature drifted ({family})"
        if psi_warned:
            reason += f"; PSI warning for {', '.join(psi_warned)}"
    return Verdict(
        check=CHECK, verdict=verdict, method=methods, statistic=worst["statistic"],
        p_value=worst["p_adjusted"], threshold=alpha, samples=samples, reason=reason, mode=mode,
        details=details,
    )
