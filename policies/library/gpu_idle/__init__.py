"""gpu-idle: a model-serving workload does not hold GPUs that stayed idle for the grace period.

Judged only by the audit (`mlguard audit`, the in-cluster audit): at CI and admission nothing runs yet,
so there is no utilisation to judge and the policy finds nothing there. The audit measures utilisation
(DCGM exporter's ``DCGM_FI_DEV_GPU_UTIL`` joined to the pods kube-state-metrics says hold GPUs,
``rollouts.report.idle_workloads``) and hands the numbers in as plain data (`UtilisationKnowledge`); this
policy only reads them. Without them (no Prometheus given, unreachable, no data, or no utilisation
measured for the workload's pods) it says so as an error result, never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext, GpuIdleness, UtilisationKnowledge
from policies.model import Finding
from policies.registry import Policy, register
from policies.workload import Workload

DURATION = re.compile(r"^([1-9][0-9]{0,6})(s|m|h|d)$")
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: str) -> int:
    """``"30m"`` -> 1800 (the params schema admits only this shape)."""
    m = DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration like 30m, 2h or 1d: {value!r}")
    return int(m.group(1)) * UNIT[m.group(2)]


def human(total: int) -> str:
    """1 d 2 h, 3 h 5 m, 45 m: how long, for a message."""
    days, rest = divmod(max(total, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


@register
class GpuIdle(Policy):
    id = "gpu-idle"
    title = "Model-serving workloads do not hold idle GPUs"
    severity = "medium"
    version = "1.0.0"
    runbook = "runbooks/gpu-idle.md"
    description = (
        "Audit only. A model-serving workload whose pods hold GPUs now, all of them below "
        "`utilisationBelowPercent` (DCGM_FI_DEV_GPU_UTIL, mean over each pod's GPUs) for at least "
        "`gracePeriod`, is flagged: scale it to zero when idle (KEDA, Knative min-scale 0), consolidate it on MIG "
        "slices or time-sliced GPUs, or right-size it. The audit measures utilisation from Prometheus "
        "(`mlguard audit --prometheus URL`); without it, or when no utilisation was measured for the workload's "
        "pods, the result is an error naming why, never a pass. At CI and admission nothing runs yet: no finding.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "utilisationBelowPercent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
            "gracePeriod": {"type": "string", "pattern": DURATION.pattern},
            "window": {"type": "string", "pattern": DURATION.pattern,
                       "description": "How far back the mean utilisation (in the message) is measured."},
        },
    }
    defaults = {"utilisationBelowPercent": 5, "gracePeriod": "30m", "window": "1d"}
    denies_kinds = None  # any model-serving kind

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        if ctx.point != "audit" or not workload.is_model_serving():
            return
        gpu_templates = [i for i in range(len(workload.templates)) if workload.uses_gpu(i, ctx.gpu)]
        if not gpu_templates:
            return
        res = workload.resource
        tpl = workload.templates[gpu_templates[0]]
        path = tpl.spec_path
        facts = ctx.facts
        unknown = (facts.gpu_utilisation_unknown() if isinstance(facts, UtilisationKnowledge)
                   else "no GPU utilisation was handed to the audit")
        if unknown:
            yield Finding(path, f"whether the GPUs of {res.kind} `{res.name}` sit idle is unknown: {unknown}",
                          resource=tpl.resource, error=True)
            return
        assert isinstance(facts, UtilisationKnowledge)
        idle: GpuIdleness | None = facts.gpu_idleness(res)
        if idle is None:
            return  # none of its pods holds a GPU now (scaled to zero, or not running): nothing idles
        if idle.utilisation_percent is None:
            yield Finding(path, f"{res.kind} `{res.name}` holds {idle.gpus:g} GPU(s) but no utilisation was "
                          "measured for its pods (DCGM exporter exports none for MIG slices, or runs without "
                          "its pod mapping): whether they sit idle is unknown", resource=tpl.resource, error=True)
            return
        threshold = float(params["utilisationBelowPercent"])
        grace = seconds(str(params["gracePeriod"]))
        if idle.idle_for_seconds < grace or idle.threshold_percent > threshold:
            # (a measurement at a laxer threshold than this policy's cannot say idle; the audit measures at
            # this policy's own threshold)
            return
        yield Finding(path, f"{res.kind} `{res.name}` holds {idle.gpus:g} GPU(s) that stayed below "
                      f"{threshold:g}% utilisation for {human(idle.idle_for_seconds)} (grace period "
                      f"{human(grace)}; mean {idle.utilisation_percent:.1f}% over the last "
                      f"{human(idle.window_seconds)}); let it scale to zero when idle (a KEDA ScaledObject with "
                      "minReplicaCount: 0, or Knative/KServe min-scale 0), consolidate it on MIG slices or "
                      "time-sliced GPUs, or give it fewer GPUs", resource=tpl.resource)
