"""The Flask app factory gunicorn calls: ``gunicorn -c webhook/gunicorn.conf.py 'webhook.app:create_app()'``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from policies.context import ClusterFacts
from webhook.blueprints import admission, ops
from webhook.config import WebhookConfig
from webhook.logging import get_logger, setup_logging
from webhook.state import EXTENSION, WebhookState

log = get_logger("app")
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and drop) at most this much of a refused body


def _drain_body() -> None:
    """Read what is left of a refused body, so that the client — still sending — gets the 413
    answer instead of a reset connection. Bounded: past DRAIN_LIMIT the connection is closed."""
    stream = request.environ.get("wsgi.input")
    left = min(request.content_length or DRAIN_LIMIT, DRAIN_LIMIT)
    try:
        while left > 0 and stream is not None:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
    except Exception:  # the client went away: nothing to answer
        pass


def create_app(config: Mapping[str, Any] | None = None, *, facts: ClusterFacts | None = None) -> Flask:
    """Build the webhook app. Settings come from ``MLGUARD_WEBHOOK_*`` variables, then ``config``
    (keys without the prefix: ``POLICYSET``, ``NAMESPACE``, ``DRY_RUN``, ``CLUSTER_CACHE``,
    ``KUBECONFIG``, ``MAX_BODY_BYTES``, ``RELOAD_INTERVAL``, ``MAX_WARNINGS``). ``facts`` replaces the
    cluster cache (tests with in-memory facts)."""
    setup_logging()
    settings = WebhookConfig.load(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    st = WebhookState.build(settings, facts=facts)
    app.extensions[EXTENSION] = st
    app.register_blueprint(admission.bp)
    app.register_blueprint(ops.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        if code == 413:
            _drain_body()
        log.warning("http error", extra={"event": "http_error", "status": code, "error": exc.description})
        return jsonify({"error": exc.description, "status": code}), code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:  # pragma: no cover - last line of defence
        log.exception("unexpected error", extra={"event": "unexpected_error"})
        return jsonify({"error": f"internal error: {type(exc).__name__}", "status": 500}), 500

    st.start()
    log.info("webhook started", extra={"event": "started", "policyset_file": str(settings.policyset),
                                       "namespace": settings.namespace, "dry_run": settings.dry_run,
                                       "cluster_cache": settings.cluster_cache})
    return app
