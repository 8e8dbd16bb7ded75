"""``eval-score``: the canary against the baseline on the same golden set, paired.

``store=NAME&baseline=KEY&canary=KEY``: one JSON object per golden item with an id (``id_field``,
default ``id``) and per-item correctness (``correct_field``, default ``correct``). Items are paired
by id; McNemar's test on the discordant pairs, one-sided at the look's alpha (the question is "is
the canary worse?": a two-sided test has size alpha/2 here), decides whether the canary is
significantly worse, and ``min_accuracy`` (default 0: off) is an absolute floor on this golden set.
Fewer than ``min_items`` paired items is ``inconclusive``. In ``mode=anytime`` a look judges the first
canary records of its plan (``rollouts.checks.looks``; ``planned_samples`` defaults to the baseline's items).
"""

from __future__ import annotations

from typing import Any

from rollouts.checks import SAMPLE_PARAMS, CheckContext
from rollouts.checks.columns import FIELD_RE, head
from rollouts.errors import SampleFormatError
from rollouts.params import Params
from rollouts.sources.samples import Samples
from rollouts.stats import mcnemar_test
from rollouts.verdict import Mode, Verdict, VerdictName, inconclusive

CHECK = "eval-score"
PARAMS = SAMPLE_PARAMS | {"id_field", "correct_field", "min_accuracy", "min_items"}


def _by_id(samples: Samples, *, id_field: str, correct_field: str) -> dict[str, bool]:
    if samples.records is None:
        raise SampleFormatError(f"{samples.key!r}: eval results must be .jsonl records")
    out: dict[str, bool] = {}
    for i, record in enumerate(samples.records, start=1):
        item, correct = record.get(id_field), record.get(correct_field)
        if item is None or correct is None:
            raise SampleFormatError(f"{samples.key!r} record {i}: needs {id_field!r} and {correct_field!r}")
        if not isinstance(correct, bool) and correct not in (0, 1):
            raise SampleFormatError(f"{samples.key!r} record {i}: {correct_field!r} must be true/false")
        key = str(item)
        if key in out:
            raise SampleFormatError(f"{samples.key!r}: duplicate item id {key!r}")
        out[key] = bool(correct)
    return out


def run(params: Params, ctx: CheckContext) -> Verdict:
    mode = ctx.mode(params)
    look = ctx.look_params(params, mode)
    id_field = params.text("id_field", "id", pattern=FIELD_RE)
    correct_field = params.text("correct_field", "correct", pattern=FIELD_RE)
    min_accuracy = params.number("min_accuracy", 0.0, low=0.0, high=1.0)
    min_items = params.integer("min_items", 50, low=1)
    baseline, canary = ctx.load_pair(params)
    plan = ctx.look_plan(look, canary_rows=canary.count, baseline_rows=baseline.count, min_rows=min_items)
    ref = _by_id(baseline, id_field=id_field, correct_field=correct_field)
    if plan.filling:
        cand = _by_id(canary, id_field=id_field, correct_field=correct_field)
        samples = {"baseline": len(ref), "canary": len(cand), "paired": len(ref.keys() & cand.keys())}
        return inconclusive(check=CHECK, method="mcnemar", samples=samples, mode=mode, details=plan.details,
                            reason=plan.filling)
    cand = _by_id(head(canary, plan.rows), id_field=id_field, correct_field=correct_field)
    return judge(ref, cand, mode=mode, alpha=plan.alpha, min_accuracy=min_accuracy, min_items=min_items,
                 details=plan.details)


def judge(ref: dict[str, bool], cand: dict[str, bool], *, mode: Mode, alpha: float, min_accuracy: float = 0.0,
          min_items: int = 50, details: dict[str, Any] | None = None) -> Verdict:
    """The verdict on per-item correctness of both sides, keyed by item id."""
    common = sorted(ref.keys() & cand.keys())
    samples = {"baseline": len(ref), "canary": len(cand), "paired": len(common)}
    details = {
        **(details or {}), "min_accuracy": min_accuracy, "min_items": min_items,
        "unpaired": {"baseline_only": len(ref.keys() - cand.keys()), "canary_only": len(cand.keys() - ref.keys())},
    }
    if len(common) < min_items:
        return inconclusive(
            check=CHECK, method="mcnemar", samples=samples, mode=mode, threshold=alpha, details=details,
            reason=f"only {len(common)} golden items scored by both baseline and canary, need {min_items}",
        )
    result = mcnemar_test([ref[i] for i in common], [cand[i] for i in common], alternative="greater")
    acc_ref = sum(ref[i] for i in common) / len(common)
    acc_cand = sum(cand[i] for i in common) / len(common)
    details.update(baseline_accuracy=acc_ref, canary_accuracy=acc_cand, test=result.details)
    p_value = result.p_value if result.p_value is not None else 1.0
    if acc_cand < min_accuracy:
        verdict: VerdictName = "fail"
        reason = f"canary accuracy {acc_cand:.2%} is below the minimum {min_accuracy:.2%} on {len(common)} items"
    elif acc_cand < acc_ref and p_value < alpha:
        verdict = "fail"
        reason = (f"canary accuracy {acc_cand:.2%} is significantly below baseline {acc_ref:.2%} "
                  f"on the same {len(common)} items (McNemar p={p_value:.2g} < {alpha:g})")
    else:
        verdict = "pass"
        reason = (f"canary accuracy {acc_cand:.2%} vs baseline {acc_ref:.2%} on {len(common)} paired items: "
                  "no significant regression")
    return Verdict(
        check=CHECK, verdict=verdict, method=result.method, statistic=result.statistic, p_value=result.p_value,
        threshold=alpha, samples=samples, reason=reason, mode=mode, details=details,
    )
