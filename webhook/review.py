"""AdmissionReview ``admission.k8s.io/v1``: parsed once at the edge, answered by one pure function.

Two error channels, kept apart: a malformed review is the caller's mistake (`ReviewError`, an HTTP
4xx with a JSON body); a bad object is the user's mistake (a `Decision` with ``allowed: false``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Literal, NotRequired, TypedDict, cast

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[str, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")
WARNING_MAX_CHARS = 256
MAX_DENIAL_LINES = 20          # findings named in a denial; the rest are counted
MAX_DENIAL_LINE_CHARS = 1024
MAX_AUDIT_CHARS = 4096         # per audit annotation value (the API server's audit log keeps them)
# Deepest JSON nesting accepted in a review body. A Deployment review is ~13 levels deep, a workflow
# CR with nested templates a few dozen; 128 keeps every recursive walk of the object (policies,
# jsonpatch, logging) far from Python's recursion limit (1000), which at ~990 levels made a 500.
MAX_NESTING = 128
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")
_DELTA = {ord("{"): 1, ord("["): 1, ord("}"): -1, ord("]"): -1}


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Operation
    userInfo: UserInfo
    namespace: NotRequired[str]
    name: NotRequired[str]
    subResource: NotRequired[str]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[dict[str, Any] | None]


class Status(TypedDict, total=False):
    code: int
    message: str


class AdmissionResponse(TypedDict, total=False):
    uid: str
    allowed: bool
    status: Status
    warnings: list[str]
    auditAnnotations: dict[str, str]
    patchType: Literal["JSONPatch"]
    patch: str


class ReviewError(Exception):
    """A review the webhook cannot answer: HTTP ``status`` with a JSON ``{"error": message}`` body."""

    def __init__(self, message: str, *, status: int = 400, uid: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.uid = uid


def _require(cond: bool, message: str, uid: str | None = None) -> None:
    if not cond:
        raise ReviewError(message, uid=uid)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _check_object(value: Any, field_name: str, uid: str) -> None:
    if value is None:
        return
    _require(isinstance(value, dict), f"request.{field_name} must be an object, got {type(value).__name__}", uid)
    for key in ("apiVersion", "kind"):
        if key in value:
            _require(_is_str(value[key]), f"request.{field_name}.{key} must be a string", uid)
    meta = value.get("metadata")
    _require(meta is None or isinstance(meta, dict), f"request.{field_name}.metadata must be an object", uid)
    if isinstance(meta, dict):
        for key in ("name", "namespace", "generateName"):
            _require(meta.get(key) is None or _is_str(meta[key]),
                     f"request.{field_name}.metadata.{key} must be a string", uid)
        for key in ("labels", "annotations"):
            block = meta.get(key)
            _require(block is None or (isinstance(block, dict) and all(_is_str(v) for v in block.values())),
                     f"request.{field_name}.metadata.{key} must map strings to strings", uid)
    spec = value.get("spec")
    _require(spec is None or isinstance(spec, dict), f"request.{field_name}.spec must be an object", uid)


def nesting_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count).
    Exact for valid JSON; C-speed work only (a regex, a translate and an accumulate)."""
    # cannot be deeper than its count of opening brackets (one C pass; two bytes.count calls take 3x as long)
    if len(body) - len(body.translate(None, b"{[")) <= MAX_NESTING:
        return 0
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


def _check_identity(request: Mapping[str, Any], uid: str) -> None:
    """The request's namespace and kind are what the API server authorised and routed; the object's
    own ``metadata.namespace`` and ``kind``/``apiVersion`` are the client's words. They must agree:
    exemptions and dispatch read the object, so a mismatch could steer them (a 400, not a verdict)."""
    namespace = request.get("namespace") or ""
    gvk = request["kind"]
    api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
    for field_name in ("object", "oldObject"):
        obj = request.get(field_name)
        if not isinstance(obj, dict):
            continue
        meta = obj.get("metadata")
        claimed = (meta.get("namespace") if isinstance(meta, dict) else None) or ""
        _require(not claimed or claimed == namespace,
                 f"request.{field_name}.metadata.namespace {claimed!r} differs from request.namespace {namespace!r}",
                 uid)
        if "kind" in obj:
            _require(obj["kind"] == gvk["kind"],
                     f"request.{field_name}.kind {obj['kind']!r} differs from request.kind.kind {gvk['kind']!r}", uid)
        if "apiVersion" in obj:
            _require(obj["apiVersion"] == api_version,
                     f"request.{field_name}.apiVersion {obj['apiVersion']!r} differs from request.kind "
                     f"({api_version!r})", uid)


def parse_review(body: bytes) -> AdmissionRequest:
    """Parse and check an AdmissionReview body; raise `ReviewError` on anything malformed."""
    depth = nesting_depth(body)
    if depth > MAX_NESTING:
        raise ReviewError(f"body nests arrays and objects {depth} levels deep; at most {MAX_NESTING} are accepted")
    try:
        review = orjson.loads(body)  # strict RFC 8259: no NaN, no lone surrogates; 2x faster than json
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"body is not JSON: {exc}") from exc
    _require(isinstance(review, dict), "body must be a JSON object (an AdmissionReview)")
    _require(review.get("apiVersion") == API_VERSION,
             f"apiVersion must be {API_VERSION!r}, got {review.get('apiVersion')!r}")
    _require(review.get("kind") == KIND, f"kind must be {KIND!r}, got {review.get('kind')!r}")
    request = review.get("request")
    _require(isinstance(request, dict), "request is missing or not an object")
    uid = request.get("uid")
    _require(_is_str(uid) and bool(uid), "request.uid is missing or not a non-empty string")
    uid = cast(str, uid)
    gvk = request.get("kind")
    _require(isinstance(gvk, dict) and all(_is_str(gvk.get(k)) for k in ("group", "version", "kind")),
             "request.kind must be {group, version, kind} strings", uid)
    gvr = request.get("resource")
    _require(isinstance(gvr, dict) and all(_is_str(gvr.get(k)) for k in ("group", "version", "resource")),
             "request.resource must be {group, version, resource} strings", uid)
    _require(request.get("operation") in OPERATIONS,
             f"request.operation must be one of {', '.join(OPERATIONS)}, got {request.get('operation')!r}", uid)
    user = request.get("userInfo", {})
    _require(isinstance(user, dict), "request.userInfo must be an object", uid)
    _require(user.get("username") is None or _is_str(user["username"]),
             "request.userInfo.username must be a string", uid)
    groups = user.get("groups")
    _require(groups is None or (isinstance(groups, list) and all(_is_str(g) for g in groups)),
             "request.userInfo.groups must be a list of strings", uid)
    for key in ("namespace", "name", "subResource"):
        _require(request.get(key) is None or _is_str(request[key]), f"request.{key} must be a string", uid)
    _require(request.get("dryRun") is None or isinstance(request["dryRun"], bool),
             "request.dryRun must be a boolean", uid)
    _check_object(request.get("object"), "object", uid)
    _check_object(request.get("oldObject"), "oldObject", uid)
    _check_identity(request, uid)
    if request["operation"] in ("CREATE", "UPDATE"):
        _require(isinstance(request.get("object"), dict), f"request.object is required for {request['operation']}",
                 uid)
    request.setdefault("userInfo", {})
    return cast(AdmissionRequest, request)


@dataclass(frozen=True)
class Decision:
    """What the webhook decided; `build_response` turns it into the wire format."""

    allowed: bool
    code: int | None = None
    message: str = ""
    warnings: tuple[str, ...] = ()
    audit_annotations: Mapping[str, str] = field(default_factory=dict)
    patch: list[dict[str, Any]] | None = None


def clip_warning(text: str) -> str:
    """A warning the API server forwards as-is: one line, at most 256 characters."""
    text = " ".join(text.split())
    return text if len(text) <= WARNING_MAX_CHARS else text[: WARNING_MAX_CHARS - 1] + "…"


def bounded_message(message: str, *, max_lines: int = MAX_DENIAL_LINES,
                    max_line_chars: int = MAX_DENIAL_LINE_CHARS) -> str:
    """A denial message the user can read and the API server can carry: the first ``max_lines``
    findings (each clipped), then how many more there are. (A Deployment with 10,000 containers
    made a 2.1 MB answer.) ``mlguard check`` on the manifest lists them all."""
    lines = message.split("\n")
    shown = [line if len(line) <= max_line_chars else line[: max_line_chars - 1] + "…" for line in lines[:max_lines]]
    if len(lines) > max_lines:
        shown.append(f"... and {len(lines) - max_lines} more findings (run `mlguard check` on the manifest to "
                     "see them all)")
    return "\n".join(shown)


def build_response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answer: echo ``uid``, set ``allowed``, status, warnings, audit
    annotations and the base64 JSONPatch (only when non-empty). Text is bounded."""
    response: AdmissionResponse = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed or decision.code is not None:
        status: Status = {"code": decision.code or 403}
        if decision.message:
            status["message"] = bounded_message(decision.message)
        response["status"] = status
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    if decision.audit_annotations:
        response["auditAnnotations"] = {k: bounded_message(v.replace("; ", "\n"), max_lines=MAX_DENIAL_LINES)
                                        .replace("\n", "; ")[:MAX_AUDIT_CHARS]
                                        for k, v in decision.audit_annotations.items()}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(decision.patch, separators=(",", ":")).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
