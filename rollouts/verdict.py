"""The verdict JSON, built in exactly one place.

Shape (DESIGN.md "Analysis provider contract")::

    {"check": "input-drift", "verdict": "pass", "method": "ks", "statistic": 0.031,
     "p_value": 0.42, "threshold": 0.01, "samples": {"baseline": 5000, "canary": 812},
     "reason": "...", "details": {}, "runbook": "runbooks/...", "mode": "anytime"}

An AnalysisTemplate reads ``{$.verdict}``; anything but pass/fail is Inconclusive in Argo.
Every float is made JSON-safe (NaN and infinities become ``null``) so the answer always parses:
Argo Rollouts up to v1.9.1 marks a 2xx whose body is not JSON as Successful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

VerdictName = Literal["pass", "fail", "inconclusive"]
Mode = Literal["anytime", "fixed"]

RUNBOOK_DRIFT = "runbooks/drift-alert-investigation.md"
RUNBOOK_ROLLBACK = "runbooks/model-rollback-via-canary.md"
RUNBOOK_QUALITY = "runbooks/quantization-quality-regression.md"
RUNBOOK_ERRORS = "runbooks/analysis-provider-errors.md"

CHECK_RUNBOOKS: dict[str, str] = {
    "input-drift": RUNBOOK_DRIFT,
    "output-drift": RUNBOOK_DRIFT,
    "latency": RUNBOOK_ROLLBACK,
    "error-rate": RUNBOOK_ROLLBACK,
    "eval-score": RUNBOOK_QUALITY,
}


@dataclass(frozen=True)
class Verdict:
    check: str
    verdict: VerdictName
    method: str
    statistic: float | None
    p_value: float | None
    threshold: float | None
    samples: dict[str, int]
    reason: str
    mode: Mode
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def runbook(self) -> str:
        return CHECK_RUNBOOKS.get(self.check, RUNBOOK_ERRORS)

    def to_json(self) -> dict[str, Any]:
        reason = self.reason
        if self.verdict != "pass" and self.runbook not in reason:
            reason = f"{reason}; see {self.runbook}"
        out: dict[str, Any] = json_safe(
            {
                "check": self.check,
                "verdict": self.verdict,
                "method": self.method,
                "statistic": self.statistic,
                "p_value": self.p_value,
                "threshold": self.threshold,
                "samples": self.samples,
                "reason": reason,
                "details": self.details,
                "runbook": self.runbook,
                "mode": self.mode,
            }
        )
        return out


def link_runbooks(body: dict[str, Any], base_url: str) -> dict[str, Any]:
    """An answer (verdict or error) with its ``runbooks/<file>.md`` references as URLs under ``base_url``
    (the `runbookBaseURL` setting), in ``runbook`` and in the reason's "see ..." clause."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    runbook = body.get("runbook")
    if isinstance(runbook, str) and runbook.startswith("runbooks/"):
        body["runbook"] = base + runbook[len("runbooks/"):]
        if isinstance(body.get("reason"), str):
            body["reason"] = body["reason"].replace(f"see {runbook}", f"see {body['runbook']}")
    return body


def inconclusive(
    *, check: str, method: str, samples: dict[str, int], reason: str, mode: Mode,
    threshold: float | None = None, details: dict[str, Any] | None = None,
) -> Verdict:
    """Too little data (or a window still filling): never a pass."""
    return Verdict(
        check=check, verdict="inconclusive", method=method, statistic=None, p_value=None,
        threshold=threshold, samples=samples, reason=reason, mode=mode, details=details or {},
    )


def json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays into plain JSON values; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value
