"""POST /validate and POST /mutate: AdmissionReview in, AdmissionReview out."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, Response, request

from webhook import metrics
from webhook.admission import Outcome
from webhook.logging import get_logger
from webhook.review import AdmissionRequest, ReviewError, build_response, parse_review
from webhook.state import state

bp = Blueprint("admission", __name__)
MAX_LOGGED_VIOLATIONS = 50  # per decision line; the count says how many there were
log = get_logger("admission")


def _error(exc: ReviewError, *, endpoint: str, request_fields: dict[str, Any] | None = None) -> tuple[Response, int]:
    fields = request_fields or {}
    metrics.child(metrics.REQUESTS, fields.get("operation", "unknown"), fields.get("kind", "unknown"), "error").inc()
    log.warning("bad admission review", extra={"fields": {
        "event": "bad_review", "endpoint": endpoint, "status": exc.status, "error": exc.message, "uid": exc.uid,
        **fields}})
    body: dict[str, Any] = {"error": exc.message, "status": exc.status}
    if exc.uid:
        body["uid"] = exc.uid
    return _json(body), exc.status


def _json(body: dict[str, Any]) -> Response:
    """orjson (C) instead of Flask's jsonify (the json module): the answer is the same JSON."""
    return Response(orjson.dumps(body), mimetype="application/json")


def _describe(req: AdmissionRequest) -> dict[str, Any]:
    obj: dict[str, Any] = req.get("object") or req.get("oldObject") or {}
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    return {"uid": req["uid"], "kind": req["kind"]["kind"], "namespace": req.get("namespace") or meta.get("namespace"),
            "name": req.get("name") or meta.get("name") or meta.get("generateName"),
            "user": (req.get("userInfo") or {}).get("username"), "operation": req["operation"],
            "subresource": req.get("subResource") or None, "dry_run": bool(req.get("dryRun", False))}


def _handle(endpoint: str) -> tuple[Response, int]:
    started = time.perf_counter()
    try:
        req = parse_review(request.get_data(cache=False))
    except ReviewError as exc:
        return _error(exc, endpoint=endpoint)
    fields = _describe(req)
    st = state()
    policyset = st.store.current
    if policyset is None:
        return _error(ReviewError("no valid PolicySet is loaded (see /readyz)", status=503, uid=req["uid"]),
                      endpoint=endpoint, request_fields=fields)
    try:
        outcome: Outcome = (st.admission.validate if endpoint == "validate" else st.admission.mutate)(req, policyset)
    except Exception as exc:  # the object's shape defeated the evaluation: the caller's problem, logged
        log.exception("cannot evaluate object", extra={"fields": {"event": "evaluation_failed", "endpoint": endpoint,
                                                                      **fields}})
        return _error(ReviewError(f"cannot evaluate {fields['kind']} {fields['namespace']}/{fields['name']}: "
                                  f"unexpected object shape ({type(exc).__name__}: {exc})", status=422,
                                  uid=req["uid"]), endpoint=endpoint, request_fields=fields)
    body = build_response(req["uid"], outcome.decision)
    duration = time.perf_counter() - started
    metrics.DURATION.observe(duration)
    metrics.child(metrics.REQUESTS, req["operation"], fields["kind"], outcome.label).inc()
    for v in outcome.violations:
        metrics.child(metrics.VIOLATIONS, v.policy, v.action).inc()
    for policy in outcome.errors:
        metrics.child(metrics.POLICY_ERRORS, policy).inc()
    for policy in outcome.break_glass:
        metrics.child(metrics.BREAK_GLASS, policy).inc()
    if outcome.break_glass:
        log.warning("break-glass: denial lifted", extra={"fields": {
            "event": "break_glass", **fields, "policies": outcome.break_glass,
            "reason": outcome.decision.audit_annotations.get("break-glass")}})
    log.info("admission decision", extra={"fields": {
        "event": "decision", "endpoint": endpoint, **fields, "decision": outcome.label,
        "allowed": outcome.decision.allowed,
        "policies": sorted({v.policy for v in outcome.violations}),
        "violations": [{"policy": v.policy, "action": v.action, "path": v.path}
                       for v in outcome.violations[:MAX_LOGGED_VIOLATIONS]],
        "violation_count": len(outcome.violations),
        "policy_errors": outcome.errors, "break_glass": outcome.break_glass or None,
        "reason": outcome.reason or None, "patched": bool(outcome.decision.patch),
        "policyset": policyset.digest[:12], "duration_ms": round(duration * 1000, 3)}})
    return _json(body), 200


@bp.post("/validate")
def validate() -> tuple[Response, int]:
    return _handle("validate")


@bp.post("/mutate")
def mutate() -> tuple[Response, int]:
    return _handle("mutate")
