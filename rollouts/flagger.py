"""Flagger webhooks: ``POST /v1/flagger/<check>`` serving the same checks as ``/v1/analyses/<check>``.

Flagger posts ``{"name", "namespace", "phase", "checksum", "metadata": {...}}`` and treats any status
above 202 as "no" (``callWebhook`` in fluxcd/flagger ``pkg/controller/webhook.go``). What "no" costs
depends on the hook type (``pkg/controller/scheduler.go``, ``scheduler_hooks.go``, v1.44):

- ``rollout`` and ``pre-rollout``: a failed check; ``FailedChecks`` grows and is never reset during
  the canary, and the canary is rolled back when it reaches the Canary's ``threshold``;
- ``confirm-rollout``, ``confirm-traffic-increase``, ``confirm-promotion``: a hold; Flagger asks again
  at the next interval and counts nothing;
- ``rollback``: the opposite sense, a 2xx *is* the signal to roll back now. mlguard must never be
  wired to a rollback hook; a request declaring it is refused (400, which Flagger reads as "do not
  roll back").

The caller says which hook it is in ``metadata.hook`` (Flagger does not send the hook type), so the
status can mean the right thing:

=====================================  =====  ============  ====  =====================================
hook                                   pass   inconclusive  fail  why
=====================================  =====  ============  ====  =====================================
rollout                                200    200           412   only a real failure counts toward
                                                                  ``threshold``; the warm-up never does
                                                                  (``verdict: inconclusive`` in the body)
pre-rollout                            200    409           412   gates traffic: the data (an offline
                                                                  eval) must be there before traffic
confirm-rollout / -traffic-increase /  200    409           412   a hold: Flagger asks again next
confirm-promotion                                                 interval; promotion waits for a pass
=====================================  =====  ============  ====  =====================================

Bad requests are 400 (missing ``hook``, ``name``, ``namespace``, ``checksum``; a bad parameter), an
unknown check 404, a source that is down or slow 502/503/504, and a request that could not start
within the budget 503: on ``rollout``/``pre-rollout`` hooks Flagger counts those as failed checks
too, on confirm hooks they hold.

Prometheus checks (``latency``, ``error-rate``, ``output-drift`` with ``source=prometheus``) select the
canary and the primary by the pods' selector label: ``hash_label`` (default ``app``, the label as
Prometheus carries it) equal to ``label_value`` for the canary and ``<label_value>-primary`` for the
primary (Flagger copies the target's pods with that suffix). ``label_value`` comes from metadata,
never from the Canary's name, which need not be the label's value; ``canary=`` and ``stable=`` may
be given instead.

Windows belong to the revision under analysis. Flagger's canary pods carry the same label in every
revision, so a window reaching back before this revision would mix in earlier canaries' series.
Each worker remembers when it first saw a ``(namespace, name, checksum)`` (Flagger's checksum of the
canary's spec and tracked configs) and cuts ``window`` to the time since then; a checksum not seen
for an hour starts again. Until one ``step`` has passed the answer is inconclusive.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from typing import Any, Final

from flask import Blueprint, Response, current_app, jsonify, request

from rollouts.app import service
from rollouts.errors import ParamError
from rollouts.params import Params
from rollouts.verdict import Mode, VerdictName, inconclusive
from rollouts.worker import arrived_at

flagger = Blueprint("flagger", __name__)

GATING_HOOKS: Final = ("rollout", "pre-rollout", "confirm-rollout", "confirm-traffic-increase", "confirm-promotion")
# status by hook and verdict; see the table above
STATUS: Final[dict[str, dict[VerdictName, int]]] = {
    "rollout": {"pass": 200, "inconclusive": 200, "fail": 412},
    **{hook: {"pass": 200, "inconclusive": 409, "fail": 412} for hook in GATING_HOOKS if hook != "rollout"},
}
COUNTS_TOWARD_THRESHOLD: Final = frozenset({"rollout", "pre-rollout"})
PROMETHEUS_CHECKS = frozenset({"latency", "error-rate"})
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_CHECKSUM_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RevisionClock:
    """When this process first saw each canary revision (namespace, name, checksum); bounded."""

    def __init__(self, *, forget_after: float = 3600.0, max_entries: int = 4096) -> None:
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def age(self, key: tuple[str, str, str], *, now: float) -> float:
        """Seconds since ``key`` was first seen (0 the first time, or after ``forget_after`` unseen)."""
        with self._lock:
            first, last = self._seen.pop(key, (now, now))
            if now - last > self.forget_after:
                first = now
            self._seen[key] = (first, now)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return max(now - first, 0.0)


def _payload() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise ParamError("Flagger webhook body must be a JSON object {name, namespace, phase, checksum, metadata}")
    for key in ("name", "namespace"):
        value = body.get(key)
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            raise ParamError(f"Flagger webhook body needs {key!r} as a Kubernetes name")
    checksum = body.get("checksum")
    if not isinstance(checksum, str) or not _CHECKSUM_RE.fullmatch(checksum):
        raise ParamError("Flagger webhook body needs 'checksum' (Flagger sends the canary revision's checksum)")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str | int | float | bool) for v in metadata.values()
    ):
        raise ParamError("Flagger webhook 'metadata' must be a map of strings")
    return body


def _hook(metadata: dict[str, Any]) -> str:
    hook = metadata.get("hook")
    if hook == "rollback":
        raise ParamError(
            "never wire mlguard to a Flagger 'rollback' hook: Flagger rolls the canary back on any 2xx, "
            "so a passing check would roll back a healthy canary; use type: rollout (failures roll back "
            "after the Canary's threshold) and type: confirm-promotion (promotion waits for a pass)"
        )
    if hook not in GATING_HOOKS:
        raise ParamError(
            f"metadata.hook must name the webhook's type ({', '.join(GATING_HOOKS)}), got {hook!r}: "
            "Flagger does not send it, and the status that means 'inconclusive' depends on it"
        )
    return str(hook)


def _selectors(params: dict[str, Any], body: dict[str, Any]) -> None:
    """Canary/primary selectors from metadata (label_value), never from the Canary's name."""
    label_value = params.pop("label_value", None)
    if label_value is not None:
        if not isinstance(label_value, str) or not _NAME_RE.fullmatch(label_value):
            raise ParamError("metadata.label_value must be the target's selector label value (a Kubernetes name)")
        if "canary" in params or "stable" in params:
            raise ParamError("metadata: give label_value, or canary and stable, not both")
        params["canary"] = label_value
        params["stable"] = f"{label_value}-primary"
    elif "canary" not in params or "stable" not in params:
        raise ParamError(
            "metadata.label_value is required for Prometheus checks: the value of the target Deployment's "
            "selector label (e.g. app), which Flagger gives the primary's pods with '-primary' appended. "
            "The Canary's name is not used: it need not be the label's value"
        )
    params.setdefault("hash_label", "app")
    params.setdefault("namespace", body["namespace"])


def _revision_window(params: dict[str, Any], age: float) -> int | None:
    """The window cut to the revision's age; None while less than one step old."""
    checked = Params(params)
    window = checked.duration("window", "6h" if params.get("mode", "anytime") != "fixed" else "30m")
    step = checked.duration("step", "1m")
    if age < step:
        return None
    seconds = min(window, math.floor(age))
    params["window"] = f"{seconds}s"
    return seconds


@flagger.route("/v1/flagger/<check>", methods=["POST"], provide_automatic_options=False)
def flagger_check(check: str) -> Response:
    arrived = arrived_at()
    body = _payload()
    params: dict[str, Any] = dict(body.get("metadata") or {})
    hook = _hook(params)
    params.pop("hook")
    params.pop("caller", None)
    svc = service()
    clock: RevisionClock = current_app.extensions.setdefault("mlguard_flagger_revisions", RevisionClock())
    age = clock.age((body["namespace"], body["name"], body["checksum"]), now=svc.clock().timestamp())
    window: int | None = None
    if check in PROMETHEUS_CHECKS or params.get("source") == "prometheus":
        if hook == "pre-rollout":
            raise ParamError(
                f"{check} reads the canary's traffic, and Flagger runs pre-rollout hooks before any traffic "
                "reaches the canary: use it as a rollout and a confirm-promotion hook"
            )
        _selectors(params, body)
        window = _revision_window(params, age)
        if window is None:
            mode: Mode = "fixed" if params.get("mode") == "fixed" else "anytime"
            verdict = inconclusive(
                check=check, method="revision-window", samples={"baseline": 0, "canary": 0}, mode=mode,
                reason=f"revision {body['checksum']} first seen {age:.0f}s ago: its window is shorter than one "
                "step; measuring again at the next interval",
                details={"revision_age_seconds": round(age, 1)},
            )
            svc.metrics.observe(check=check, verdict="inconclusive", caller="flagger", seconds=0.0)
        else:
            verdict = svc.analyze(check, params, caller="flagger", arrived=arrived)
    else:
        if "label_value" in params:
            raise ParamError("metadata.label_value is for Prometheus checks only")
        verdict = svc.analyze(check, params, caller="flagger", arrived=arrived)
    status = STATUS[hook][verdict.verdict]
    answer = verdict.to_json()
    answer["flagger"] = {
        "canary": f"{body['namespace']}/{body['name']}",
        "phase": body.get("phase"),
        "checksum": body.get("checksum"),
        "hook": hook,
        "status": status,
        "counts_as_failed_check": status > 202 and hook in COUNTS_TOWARD_THRESHOLD,
        "revision_age_seconds": round(age, 1),
        **({"window_seconds": window} if window is not None else {}),
    }
    response = jsonify(answer)
    response.status_code = status
    return response

