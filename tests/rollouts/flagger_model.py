"""A model of Flagger's canary analysis loop for a Canary with webhooks, written from its source.

Read against fluxcd/flagger v1.44.0: ``advanceCanary``, ``runCanary``, ``runAnalysis``,
``nextStepWeight`` (pkg/controller/scheduler.go); ``runPreRolloutHooks``,
``runConfirmPromotionHooks``, ``runConfirmTrafficIncreaseHooks``, ``runRollbackHooks``
(pkg/controller/scheduler_hooks.go); ``callWebhook`` (pkg/controller/webhook.go: a status above
202, or no answer, is an error). Modelled: the progressive canary strategy (stepWeight, maxWeight)
with webhooks only (no built-in metrics), from the tick after a new revision is detected.

Each interval Flagger, in order: rolls back if a rollback hook says 2xx; rolls back if
``FailedChecks >= threshold``; at weight 0 runs the pre-rollout hooks (an error: FailedChecks+1,
next interval), else the rollout hooks (the first error: FailedChecks+1, next interval); below
maxWeight asks the confirm-traffic-increase hooks (an error holds) and adds stepWeight; at
maxWeight asks the confirm-promotion hooks (an error holds, phase WaitingPromotion, nothing
counted) and promotes when all say yes. FailedChecks is never reset during a canary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

Call = Callable[[dict, float], int]  # (webhook, now) -> HTTP status (0: no answer)


@dataclass
class FlaggerOutcome:
    result: str  # promoted | rolled-back | stuck
    at: float
    failed_checks: int
    weight: int
    events: list[tuple[float, str]] = field(default_factory=list)


def duration_seconds(text: str) -> float:
    """Go time.ParseDuration for the s/m/h forms a Canary uses."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def is_error(status: int) -> bool:
    """webhook.go callWebhook: ``r.StatusCode > 202`` is an error, as is no answer at all."""
    return status == 0 or status > 202


def run(canary: dict, call: Call, *, horizon: float = 4 * 3600) -> FlaggerOutcome:
    analysis = canary["spec"]["analysis"]
    interval = duration_seconds(analysis["interval"])
    threshold = analysis.get("threshold") or 1  # GetAnalysisThreshold: 0 means 1
    max_weight = analysis.get("maxWeight") or 100
    step = analysis.get("stepWeight", 0)
    if not step:
        raise ValueError("only stepWeight canaries are modelled")
    hooks = analysis.get("webhooks", [])

    def of(kind: str) -> list[dict]:
        return [h for h in hooks if h.get("type", "") == kind or (kind == "rollout" and h.get("type", "") == "")]

    out = FlaggerOutcome("stuck", 0.0, 0, 0)
    phase = "Progressing"
    now = interval  # tick 0 detected the revision and scaled the canary up (checkCanaryStatus)
    while now <= horizon:
        if any(not is_error(call(h, now)) for h in of("rollback")):
            out.events.append((now, "rollback hook said 2xx"))
            out.result, out.at = "rolled-back", now
            return out
        if phase in ("Progressing", "WaitingPromotion") and out.failed_checks >= threshold:
            out.events.append((now, f"failed checks {out.failed_checks} >= threshold {threshold}"))
            out.result, out.at = "rolled-back", now
            return out
        gate = of("pre-rollout") if out.weight == 0 else of("rollout")
        failed = next((h for h in gate if is_error(call(h, now))), None)
        if failed is not None:
            out.failed_checks += 1
            out.events.append((now, f"{failed['name']} failed: failed checks {out.failed_checks}"))
            now += interval
            continue
        if phase not in ("Promoting", "WaitingPromotion") and any(
                is_error(call(h, now)) for h in of("confirm-traffic-increase")):
            now += interval
            continue
        if out.weight < max_weight:
            out.weight = min(out.weight + step, 100)
            out.events.append((now, f"weight {out.weight}"))
        else:
            held = next((h for h in of("confirm-promotion") if is_error(call(h, now))), None)
            if held is not None:
                phase = "WaitingPromotion"
                out.events.append((now, f"{held['name']} holds promotion"))
                now += interval
                continue
            out.events.append((now, "promoted"))
            out.result, out.at = "promoted", now
            return out
        now += interval
    out.at = now
    return out
