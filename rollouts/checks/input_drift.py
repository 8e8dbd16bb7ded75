"""``input-drift``: the canary's inputs against a reference window, from a sample store.

``store=NAME&baseline=KEY&canary=KEY``; ``features=a,b`` (default: every scalar field except
timestamps/counters and identifiers, which are listed in ``details.excluded``), ``embedding=FIELD``
for vectors. Per feature:

- values: two-sample Kolmogorov-Smirnov for numbers, chi-square for categories (strings, booleans
  stored either way, numbers with at most 10 distinct values); categories only the canary has are
  reported (``new_categories``);
- missing values: when either window has nulls, a two-proportion test of the null share (a canary
  feature that is suddenly half null is drift, whatever its other half looks like);
- an effect size, always: Wasserstein distance over the reference's standard deviation (numbers),
  Jensen-Shannon distance (categories), Cohen's h (null shares). A test fails the canary only when it
  is significant after the multiple-testing correction AND its effect is at least ``min_effect``
  (0.1 sd, also for null shares) or ``min_js`` (0.04): large windows no longer fail trivial shifts;
- embeddings: MMD with an RBF kernel and a permutation p-value, with enough permutations to pass the
  per-test threshold of the family (``inconclusive`` with the reason when the work cap or the answer
  budget stops them before that).

The p-values of all tests are corrected together (``correction=bh`` Benjamini-Hochberg, default, or
``bonferroni``) at the alpha of this look (``rollouts.checks.looks``). PSI (``psi=true``) is reported
with its expectation without drift and never decides: its size depends on the sample size. Large
windows are subsampled to ``max_samples`` (embeddings to ``mmd_max_samples``) and the answer says so.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rollouts.checks import SAMPLE_PARAMS, CheckContext
from rollouts.checks.columns import (
    FIELD_RE,
    FeatureKind,
    category_labels,
    count,
    embeddings,
    exclusion,
    feature_kind,
    head,
    null_count,
    numbers,
    scalar_fields,
)
from rollouts.errors import ParamError
from rollouts.params import Params
from rollouts.sources.samples import Samples
from rollouts.stats import adjust_p_values, chi2_test, ks_test, mmd_test, psi, subsample, two_proportion_test
from rollouts.stats.effect import (
    DEFAULT_MIN_EFFECT,
    DEFAULT_MIN_JS,
    cohens_h,
    jensen_shannon,
    normalised_wasserstein,
)
from rollouts.stats.mmd import permutation_budget, permutation_undecided, permutations_needed
from rollouts.verdict import Mode, Verdict, VerdictName, inconclusive

CHECK = "input-drift"
PARAMS = SAMPLE_PARAMS | {
    "features", "embedding", "correction", "psi", "psi_bins", "psi_warn", "psi_fail", "min_samples",
    "max_samples", "mmd_permutations", "mmd_max_samples", "min_effect", "min_js",
}
MAX_PERMUTATIONS = 5000  # the most a caller may ask for; the check raises it as the family needs
CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}
# Stop MMD permutations when less than this is left of the answer budget.
MMD_RESERVE_SECONDS = 1.0


@dataclass(frozen=True)
class Settings:
    """Everything a judgement needs besides the data (``alpha`` is this look's)."""

    alpha: float
    correction: Literal["bh", "bonferroni"] = "bh"
    min_samples: int = 100
    max_samples: int = 100_000
    min_effect: float = DEFAULT_MIN_EFFECT
    min_js: float = DEFAULT_MIN_JS
    psi: bool = False
    psi_bins: int = 10
    psi_warn: float = 0.1
    psi_fail: float = 0.25
    permutations: int = 500
    mmd_max: int = 1000
    stop: Callable[[], bool] | None = None


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    correction: Literal["bh", "bonferroni"] = "bonferroni" if params.choice(
        "correction", ("bh", "bonferroni"), "bh") == "bonferroni" else "bh"
    min_samples = params.integer("min_samples", 100, low=2)
    settings = Settings(
        alpha=ctx.alpha(params),  # replaced by the look's alpha below
        correction=correction,
        min_samples=min_samples,
        max_samples=params.integer("max_samples", 100_000, low=100, high=1_000_000),
        min_effect=params.number("min_effect", DEFAULT_MIN_EFFECT, low=0.0, high=100.0),
        min_js=params.number("min_js", DEFAULT_MIN_JS, low=0.0, high=1.0),
        psi=params.flag("psi", False),
        psi_bins=params.integer("psi_bins", 10, low=2, high=100),
        psi_warn=params.number("psi_warn", 0.1, low=0.0),
        psi_fail=params.number("psi_fail", 0.25, low=0.0),
        permutations=params.integer("mmd_permutations", 500, low=10, high=MAX_PERMUTATIONS),
        mmd_max=params.integer("mmd_max_samples", 1000, low=50, high=2500),  # (2n)^2 float64: ~200 MB at 2500
        stop=lambda: ctx.deadline.remaining() < MMD_RESERVE_SECONDS,
    )
    features = params.csv("features", pattern=FIELD_RE)
    embedding = params.optional_str("embedding", pattern=FIELD_RE)
    look_params = ctx.look_params(params, mode)
    baseline, canary = ctx.load_pair(params)
    plan = ctx.look_plan(look_params, canary_rows=canary.count, baseline_rows=baseline.count, min_rows=min_samples)
    if plan.filling:
        return inconclusive(check=CHECK, method="ks", samples={"baseline": baseline.count, "canary": canary.count},
                            mode=mode, threshold=None, details=plan.details, reason=plan.filling)
    return judge(baseline, head(canary, plan.rows), features=features, embedding=embedding, mode=mode,
                 look=plan.details, settings=dataclasses.replace(settings, alpha=plan.alpha))


def default_features(baseline: Samples, canary: Samples, *, embedding: str | None,
                     kinds: dict[str, FeatureKind] | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """Every scalar field of the baseline, less timestamps/counters and identifiers (with the reason).

    ``kinds`` collects the kind of each field looked at, so that it is worked out once.
    """
    kinds = {} if kinds is None else kinds
    if embedding and baseline.array is not None:
        return [], []
    chosen: list[str] = []
    excluded: list[dict[str, str]] = []
    for name in scalar_fields(baseline):
        if name == embedding:
            continue
        if count(canary, name) == 0 or count(baseline, name) == 0:
            chosen.append(name)  # the null-share test and "too few values" speak for it
            continue
        kinds[name] = feature_kind(baseline, canary, field=name)
        why = exclusion(baseline, canary, field=name, kind=kinds[name])
        if why:
            excluded.append({"feature": name, "why": why})
        else:
            chosen.append(name)
    return chosen, excluded


def judge(baseline: Samples, canary: Samples, *, features: list[str] | None, embedding: str | None, mode: Mode,
          settings: Settings, look: dict[str, Any]) -> Verdict:
    """The verdict on two loaded windows (the canary already cut to what this look judges)."""
    alpha = settings.alpha
    excluded: list[dict[str, str]] = []
    kinds: dict[str, FeatureKind] = {}
    if features is None:
        features, excluded = default_features(baseline, canary, embedding=embedding, kinds=kinds)
    if not features and not embedding:
        why = "; excluded: " + ", ".join(f"{e['feature']} ({e['why']})" for e in excluded) if excluded else ""
        raise ParamError(f"no features to test: the baseline has no scalar fields to compare; pass features= or "
                         f"embedding={why}")
    samples = {"baseline": baseline.count, "canary": canary.count}
    base: dict[str, Any] = {"correction": CORRECTION_NAMES[settings.correction], **look,
                            "min_effect": settings.min_effect, "min_js": settings.min_js}
    if excluded:
        base["excluded"] = excluded
    if baseline.count < settings.min_samples or canary.count < settings.min_samples:
        return inconclusive(
            check=CHECK, method="ks", samples=samples, mode=mode, threshold=alpha,
            details={**base, "min_samples": settings.min_samples},
            reason=(f"too few samples: baseline {baseline.count} and canary {canary.count} rows, "
                    f"need {settings.min_samples} each"),
        )

    tests: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    psi_results: dict[str, dict[str, Any]] = {}
    for feature in features:
        tests.extend(_feature_tests(baseline, canary, feature, settings, skipped, psi_results, kinds.get(feature)))
    emb = _embedding_pair(baseline, canary, embedding, settings, skipped) if embedding else None
    if emb is not None:
        tests.append(_embedding_placeholder(embedding or "", emb))
    if not tests:
        return inconclusive(check=CHECK, method="ks", samples=samples, mode=mode, threshold=alpha,
                            details={**base, "skipped": skipped},
                            reason="nothing to test: " + "; ".join(f"{s['feature']}: {s['why']}" for s in skipped))
    undecided: str | None = None
    if emb is not None:
        undecided = _run_mmd(tests[-1], emb, settings, family=len(tests), details=base)

    adjusted = adjust_p_values([t["p_value"] for t in tests], method=settings.correction)
    for t, adj in zip(tests, adjusted, strict=True):
        t["p_adjusted"] = adj
        t["significant"] = adj < alpha
        gate = t.get("min_effect")
        t["drifted"] = t["significant"] and (gate is None or t["effect"] >= gate)
    drifted = [t for t in tests if t["drifted"]]
    small = [t for t in tests if t["significant"] and not t["drifted"]]
    worst = min(tests, key=lambda t: (t["p_adjusted"], -t["statistic"]))
    methods = "+".join(sorted({t["method"] for t in tests}))
    details = {**base, "features": tests, "capped": any("subsampled" in t for t in tests)}
    if skipped:
        details["skipped"] = skipped
    if psi_results:
        details["psi"] = psi_results
        details["psi_thresholds"] = {"warn": settings.psi_warn, "fail": settings.psi_fail}
        details["psi_note"] = ("PSI is reported, never decides: without drift it is about (bins - 1)(1/n + 1/m) "
                               "(expected_without_drift), so fixed thresholds flag small windows")
    family = f"{len(tests)} test{'s' if len(tests) != 1 else ''}, {CORRECTION_NAMES[settings.correction]} at {alpha:g}"
    notes = _notes(tests, small, excluded, psi_results)
    verdict: VerdictName
    if drifted:
        verdict = "fail"
        reason = f"input drift in {', '.join(_label(t) for t in drifted)} ({family})"
    elif undecided or skipped:
        verdict = "inconclusive"
        parts = ([undecided] if undecided else []) + [f"{s['feature']}: {s['why']}" for s in skipped]
        reason = f"no drift found, but not everything could be tested ({family}): " + "; ".join(parts)
    else:
        verdict = "pass"
        reason = f"no feature drifted ({family})"
    if notes:
        reason += "; " + "; ".join(notes)
    return Verdict(
        check=CHECK, verdict=verdict, method=methods, statistic=worst["statistic"],
        p_value=worst["p_adjusted"], threshold=alpha, samples=samples, reason=reason, mode=mode,
        details=details,
    )


def _label(test: dict[str, Any]) -> str:
    if test["kind"] == "null-share":
        return (f"{test['feature']} (null share {test['reference_share']:.1%} -> {test['candidate_share']:.1%})")
    return f"{test['feature']} ({test['effect_measure']} {test['effect']:.3g})"


def _notes(tests: list[dict[str, Any]], small: list[dict[str, Any]], excluded: list[dict[str, str]],
           psi_results: dict[str, dict[str, Any]]) -> list[str]:
    notes = []
    if small:
        notes.append("significant but below the minimum effect: " + ", ".join(
            f"{t['feature']} ({t['effect_measure']} {t['effect']:.3g} < {t['min_effect']:g})" for t in small))
    fresh = [(t["feature"], c) for t in tests for c in t.get("new_categories", [])[:3]]
    if fresh:
        notes.append("categories only the canary has: " + ", ".join(
            f"{f}={c['category']} ({c['candidate_share']:.1%})" for f, c in fresh))
    if excluded:
        notes.append("not in the default features: " + ", ".join(e["feature"] for e in excluded))
    flagged = [f for f, r in psi_results.items() if r["level"] != "ok"]
    if flagged:
        notes.append("PSI above its thresholds (informational, sample-size dependent): " + ", ".join(
            f"{f} {psi_results[f]['psi']:.3g}" for f in flagged))
    return notes


def _feature_tests(baseline: Samples, canary: Samples, feature: str, settings: Settings,
                   skipped: list[dict[str, str]], psi_results: dict[str, dict[str, Any]],
                   kind: FeatureKind | None = None) -> list[dict[str, Any]]:
    """The value test and (when there are nulls) the null-share test of one feature."""
    out: list[dict[str, Any]] = []
    nulls = (null_count(baseline, feature), null_count(canary, feature))
    if nulls[0] or nulls[1]:
        res = two_proportion_test(nulls[1], canary.count, nulls[0], baseline.count, alternative="two-sided")
        rates = (nulls[0] / baseline.count, nulls[1] / canary.count)
        assert res.p_value is not None
        out.append({
            "feature": feature, "kind": "null-share", "method": res.method, "statistic": res.statistic,
            "p_value": res.p_value, "n_reference": baseline.count, "n_candidate": canary.count,
            "reference_share": rates[0], "candidate_share": rates[1], "test": res.details.get("test"),
            "effect": abs(cohens_h(rates[1], rates[0])), "effect_measure": "Cohen's h",
            "min_effect": settings.min_effect,
        })
    n_ref, n_cand = count(baseline, feature), count(canary, feature)
    if n_ref < settings.min_samples or n_cand < settings.min_samples:
        skipped.append({"feature": feature, "why": (
            f"too few non-null values (baseline/canary {n_ref}/{n_cand}, need {settings.min_samples} each)")})
        return out
    kind = kind or feature_kind(baseline, canary, field=feature)
    entry: dict[str, Any] = {"feature": feature, "kind": kind.kind, "stored_as": kind.stored}
    if kind.note:
        entry["note"] = kind.note
    if kind.kind == "numeric":
        ref_a, ref_capped = subsample(numbers(baseline, feature), max_samples=settings.max_samples, seed=0)
        cand_a, cand_capped = subsample(numbers(canary, feature), max_samples=settings.max_samples, seed=1)
        ref_a, cand_a = np.sort(ref_a), np.sort(cand_a)  # once, for KS, Wasserstein and PSI (all order-free)
        result = ks_test(ref_a, cand_a)
        effect, scaled = normalised_wasserstein(ref_a, cand_a, presorted=True)
        entry.update(effect=effect, effect_measure="Wasserstein/sd", min_effect=settings.min_effect, **scaled)
        if ref_capped or cand_capped:
            entry["subsampled"] = {"from": [n_ref, n_cand], "to": [len(ref_a), len(cand_a)]}
        if settings.psi:
            pr = psi(ref_a, cand_a, bins=settings.psi_bins)
            level = ("fail" if pr.statistic >= settings.psi_fail else
                     "warn" if pr.statistic >= settings.psi_warn else "ok")
            psi_results[feature] = {"psi": pr.statistic, "level": level, **pr.details}
    else:
        result, effect = _categorical(baseline, canary, feature, kind)
        entry.update(effect=effect, effect_measure="Jensen-Shannon", min_effect=settings.min_js)
        entry.update({k: v for k, v in result.details.items() if k.startswith("new_categor")})
    entry.update(method=result.method, statistic=result.statistic, p_value=result.p_value,
                 n_reference=result.n_reference, n_candidate=result.n_candidate)
    out.insert(0, entry)
    return out


def _categorical(baseline: Samples, canary: Samples, feature: str, kind: FeatureKind) -> tuple[Any, float]:
    ref_labels = category_labels(baseline, feature, kind)
    cand_labels = category_labels(canary, feature, kind)
    return chi2_test(ref_labels, cand_labels), jensen_shannon(Counter(ref_labels), Counter(cand_labels))


def _embedding_pair(baseline: Samples, canary: Samples, embedding: str | None, settings: Settings,
                    skipped: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray] | None:
    emb = (embeddings(baseline, embedding or ""), embeddings(canary, embedding or ""))
    if emb[0].shape[0] < settings.min_samples or emb[1].shape[0] < settings.min_samples:
        skipped.append({"feature": embedding or "", "why": (
            f"too few vectors (baseline/canary {emb[0].shape[0]}/{emb[1].shape[0]}, "
            f"need {settings.min_samples} each)")})
        return None
    if emb[0].shape[1] != emb[1].shape[1]:
        raise ParamError(f"embedding dimensions differ: baseline {emb[0].shape[1]}, canary {emb[1].shape[1]}")
    return emb


def _embedding_placeholder(name: str, emb: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    return {"feature": name, "kind": "embedding", "method": "mmd", "statistic": 0.0, "p_value": 1.0,
            "n_reference": int(emb[0].shape[0]), "n_candidate": int(emb[1].shape[0])}


def _run_mmd(entry: dict[str, Any], emb: tuple[np.ndarray, np.ndarray], settings: Settings, *, family: int,
             details: dict[str, Any]) -> str | None:
    """Run the MMD test into ``entry``; the reason when its permutations cannot decide, else None."""
    threshold = settings.alpha / family  # the smallest level it may have to pass (rank 1 of the family)
    needed = min(permutations_needed(threshold), 10**9)
    pooled = min(emb[0].shape[0], settings.mmd_max) + min(emb[1].shape[0], settings.mmd_max)
    budget = permutation_budget(pooled)
    asked = settings.permutations
    permutations = min(max(asked, needed), budget)
    details["mmd_permutations"] = {"asked": asked, "needed": needed, "budget": budget, "per_test_threshold": threshold,
                                   "why": f"a p-value of 1/(B+1) must be able to pass alpha {settings.alpha:g} / "
                                          f"{family} tests"}
    result = mmd_test(emb[0], emb[1], permutations=permutations, seed=0, max_samples=settings.mmd_max,
                      stop=settings.stop)
    mmd2 = result.statistic
    entry.update(method=result.method, statistic=mmd2, p_value=result.p_value, n_reference=result.n_reference,
                 n_candidate=result.n_candidate, effect=float(np.sqrt(max(mmd2, 0.0))), effect_measure="MMD",
                 **result.details)
    if emb[0].shape[0] > settings.mmd_max or emb[1].shape[0] > settings.mmd_max:
        entry["subsampled"] = {"from": [int(emb[0].shape[0]), int(emb[1].shape[0])], "to_at_most": settings.mmd_max}
    ran = int(result.details["permutations"])
    if ran >= needed or not permutation_undecided(int(result.details["exceedances"]), ran, threshold):
        return None
    cause = ("the answer's time budget ran out" if ran < permutations else
             f"the permutation work cap allows {budget} at {pooled} pooled rows")
    return (f"MMD on {entry['feature']} beat {ran - int(result.details['exceedances'])} of {ran} permutations, "
            f"but {needed} are needed to pass {threshold:.2g} (alpha {settings.alpha:g} / {family} tests) and "
            f"{cause}; lower mmd_max_samples, test fewer features, or use mode=fixed")
