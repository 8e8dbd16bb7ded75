"""GET /healthz (alive), /readyz (PolicySet loaded and cache synced, with detail), /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from webhook import metrics
from webhook.state import state

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    ready, detail = state().readiness()
    return jsonify(detail), 200 if ready else 503


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    state().readiness()  # refreshes the cache gauge of this worker
    payload, content_type = metrics.render()
    return Response(payload, content_type=content_type)
