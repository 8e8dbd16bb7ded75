"""Flask app for Argo Rollouts' web metric provider (and Flagger webhooks).

``gunicorn -c rollouts/gunicorn.conf.py 'rollouts.app:create_app()'``; tests call
``create_app({...})`` with AnalysisConfig field names. Endpoints: ``/healthz``, ``/readyz``,
``/metrics``, ``GET|POST /v1/analyses/<check>``, ``POST /v1/flagger/<check>`` (see
:mod:`rollouts.flagger`).

Every answer is JSON. 2xx answers carry a verdict; everything else is non-2xx with a JSON error
body: bad parameters 400, unknown check or sample object 404, body too large 413, unparseable
sample data 422, source errors 502/503/504, anything unexpected 500 (logged, never a traceback
to the client). Argo counts non-2xx as a measurement Error, never as Successful.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from rollouts import logs
from rollouts.config import AnalysisConfig, load_config
from rollouts.errors import ERROR_RUNBOOK, AnalysisError, BusyError, ParamError
from rollouts.metrics import caller_of
from rollouts.service import AnalysisService
from rollouts.verdict import link_runbooks
from rollouts.worker import arrived_at

log = logging.getLogger("rollouts.app")
analyses = Blueprint("analyses", __name__)
probes = Blueprint("probes", __name__)


def service() -> AnalysisService:
    svc: AnalysisService = current_app.extensions["mlguard_analysis"]
    return svc


def request_params() -> dict[str, Any]:
    """Query-string parameters merged with a JSON-object body; a name given in both is refused."""
    values: dict[str, Any] = dict(request.args.lists())
    if request.method == "POST" and request.content_length != 0 and request.get_data(cache=True):
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            raise ParamError("the request body must be a JSON object of parameters")
        for key, value in body.items():
            if key in values:
                raise ParamError(f"parameter {key!r} given both in the query and in the body")
            if isinstance(value, dict | list):
                raise ParamError(f"parameter {key!r} must be a string, number or boolean")
            values[key] = value
    return values


@analyses.route("/v1/analyses/<check>", methods=["GET", "POST"], provide_automatic_options=False)
def analysis(check: str) -> Response:
    values = request_params()
    caller_param = values.get("caller")
    if isinstance(caller_param, list):
        caller_param = caller_param[0] if caller_param else None
    caller = caller_of(request.headers.get("User-Agent"), caller_param if isinstance(caller_param, str) else None)
    verdict = service().analyze(check, values, caller=caller, arrived=arrived_at())
    return jsonify(verdict.to_json())


@probes.route("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@probes.route("/readyz")
def readyz() -> Response:
    svc = service()
    return jsonify({"status": "ready", "config": svc.config.summary(),
                    "sources": [source.describe() for source in svc.sources()]})


@probes.route("/metrics")
def metrics() -> Response:
    body, content_type = service().metrics.render()
    return Response(body, content_type=content_type)


def _error_response(status: int, kind: str, message: str, **extra: Any) -> Response:
    body = {"error": {"status": status, "type": kind, "message": message, **extra}, "runbook": ERROR_RUNBOOK}
    response = jsonify(body)
    response.status_code = status
    return response


def create_app(config: AnalysisConfig | Mapping[str, Any] | None = None) -> Flask:
    """App factory. ``config``: an AnalysisConfig, a mapping of its fields (tests), or None (env)."""
    logs.configure()
    cfg = config if isinstance(config, AnalysisConfig) else load_config(config)
    app = Flask("rollouts")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["mlguard_analysis"] = AnalysisService(cfg)
    from rollouts.checks import check_names

    check_names()  # import every check (and scipy) now, not on each worker's first analysis
    app.register_blueprint(probes)
    app.register_blueprint(analyses)
    from rollouts.flagger import flagger

    app.register_blueprint(flagger)

    @app.after_request
    def runbook_links(response: Response) -> Response:
        """Every JSON answer (verdict or error) links its runbook under `runbookBaseURL`."""
        body = response.get_json(silent=True) if response.is_json else None
        if isinstance(body, dict) and "runbook" in body:
            response.set_data(json.dumps(link_runbooks(body, cfg.runbook_base_url)))
        return response

    @app.errorhandler(AnalysisError)
    def on_analysis_error(exc: AnalysisError) -> Response:
        response = jsonify(exc.to_json())
        response.status_code = exc.status
        if isinstance(exc, BusyError):
            response.headers["Retry-After"] = "10"  # Argo retries an Error after 10 s (DefaultErrorRetryInterval)
        return response

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        kind = (exc.name or "error").lower().replace(" ", "_")
        return _error_response(status, kind, exc.description or exc.name or "error")

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.path})
        return _error_response(500, "internal_error", "internal error; the provider logged the details")

    log.info("analysis provider configured", extra={"config": cfg.summary()})
    return app
