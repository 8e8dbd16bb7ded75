"""Flagger webhooks: ``POST /v1/flagger/<check>`` serving the same checks as ``/v1/analyses/<check>``.

Flagger posts ``{"name", "namespace", "phase", "checksum", "metadata": {...}}`` and treats any
status above 202 as a failed check (it rolls the canary back once its failure threshold is hit).
Parameters come from ``metadata`` (a map of strings).

Status mapping:

======================  ======  ===========================================================
verdict / outcome       status  why
======================  ======  ===========================================================
pass                    200     the only outcome Flagger may count as a passed check
fail                    412     Precondition Failed: the canary did not meet the check
inconclusive            409     Conflict: too little data yet. Flagger has no "inconclusive";
                                any status <= 202 would count as a pass, and no data must never
                                pass, so it fails the check (counts toward the threshold);
                                409 keeps it distinguishable from a real failure in Flagger's
                                events and in our metrics and body (``verdict: inconclusive``)
bad request             400     missing name/namespace, bad metadata parameter
unknown check           404
source down / error     502/503/504 (a provider error, counted as a failed check by Flagger)
======================  ======  ===========================================================

For Prometheus checks (``latency``, ``error-rate``, ``output-drift`` with ``source=prometheus``)
the canary/stable selectors default to Flagger's own labels: ``hash_label=app``,
``canary=<name>``, ``stable=<name>-primary`` and ``namespace=<namespace>``; metadata may override.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from rollouts.app import service
from rollouts.errors import ParamError

flagger = Blueprint("flagger", __name__)

STATUS = {"pass": 200, "fail": 412, "inconclusive": 409}
PROMETHEUS_CHECKS = frozenset({"latency", "error-rate"})
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _payload() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise ParamError("Flagger webhook body must be a JSON object {name, namespace, phase, checksum, metadata}")
    for key in ("name", "namespace"):
        value = body.get(key)
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            raise ParamError(f"Flagger webhook body needs {key!r} as a Kubernetes name")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str | int | float | bool) for v in metadata.values()
    ):
        raise ParamError("Flagger webhook 'metadata' must be a map of strings")
    return body


@flagger.route("/v1/flagger/<check>", methods=["POST"], provide_automatic_options=False)
def flagger_check(check: str) -> Response:
    body = _payload()
    params: dict[str, Any] = dict(body.get("metadata") or {})
    if check in PROMETHEUS_CHECKS or params.get("source") == "prometheus":
        params.setdefault("hash_label", "app")
        params.setdefault("canary", body["name"])
        params.setdefault("stable", f"{body['name']}-primary")
        params.setdefault("namespace", body["namespace"])
    params.pop("caller", None)
    verdict = service().analyze(check, params, caller="flagger")
    answer = verdict.to_json()
    answer["flagger"] = {
        "canary": f"{body['namespace']}/{body['name']}",
        "phase": body.get("phase"),
        "checksum": body.get("checksum"),
        "status": STATUS[verdict.verdict],
    }
    response = jsonify(answer)
    response.status_code = STATUS[verdict.verdict]
    return response
