"""Signed eval attestations: canonical JSON, Ed25519 signatures, key ids, keyrings, the five gate steps.

An attestation is one compact string, small enough for a pod-template annotation::

    base64url(canonical JSON payload) "." base64url(Ed25519 signature) "." key id

The signature covers ``SIGNING_CONTEXT + payload bytes`` (domain separation: a signature made for
anything else never verifies as an attestation). The key id is the first 16 hex digits of the
SHA-256 of the raw 32-byte public key; the payload repeats it (``key_id``) so the outer id cannot be
swapped. The CI eval job signs (`mlguard eval sign`); the cluster holds only public keys.

Everything here is pure except `keyring_for`, which reads the key files a PolicySet names
(mounted Secrets). Nothing reads the clock on its own: every function that needs "now" takes it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ATTESTATION_ANNOTATION = "mlguard.io/eval-attestation"
MODEL_LABEL = "mlguard.io/model"
VERSION_ANNOTATION = "mlguard.io/model-version"
DIGEST_ANNOTATION = "mlguard.io/artifact-digest"
QUANTIZATION_ANNOTATION = "mlguard.io/quantization"

PAYLOAD_TYPE = "mlguard.io/eval-attestation/v1"
SIGNING_CONTEXT = b"mlguard.io/eval-attestation/v1\n"
# All annotations of an object share 256 KiB; one attestation may use at most a quarter of that.
MAX_ATTESTATION_CHARS = 64 * 1024
DEFAULT_EXPIRES_IN = timedelta(days=30)
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_MAX_VALIDITY = timedelta(days=90)  # eval-gate's maxValidity: a longer-lived attestation is refused
REPORT_SCHEMA_PATH = Path(__file__).parent / "schema" / "eval-report.schema.json"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

Op = Literal["gt", "ge", "lt", "le", "eq", "ne"]
OPS: dict[str, tuple[str, Any]] = {
    "gt": (">", lambda a, b: a > b),
    "ge": (">=", lambda a, b: a >= b),
    "lt": ("<", lambda a, b: a < b),
    "le": ("<=", lambda a, b: a <= b),
    "eq": ("==", lambda a, b: a == b),
    "ne": ("!=", lambda a, b: a != b),
}
STEPS: dict[int, str] = {1: "annotation", 2: "signature", 3: "subject", 4: "validity", 5: "criteria"}
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class AttestationError(ValueError):
    """Bad input to signing or verification tooling: an unreadable key, a bad duration."""


class ReportError(AttestationError):
    """An eval report that does not match the schema: every error with its field path."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(f"invalid eval report {source}:\n" + "\n".join(f"  - {e}" for e in self.errors))


# --------------------------------------------------------------------------- encoding and keys

def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8, no NaN or infinities."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Canonical base64url only (RFC 4648 section 5, unpadded, zero trailing bits): the one
    spelling `b64url_encode` makes. Any other spelling of the same bytes is refused, so an
    attestation has exactly one text (64 spellings of one signature verified before)."""
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url (the unused low bits of the last character must be zero)")
    return data


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes, *, source: str = "<key>") -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 Ed25519 private key (what `mlguard eval keygen` writes)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AttestationError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AttestationError(f"{source}: a {type(key).__name__}, not an Ed25519 private key")
    return key


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


def load_public_keys(pem: bytes | str, *, source: str = "<key>") -> list[Ed25519PublicKey]:
    """Every Ed25519 public key of a PEM text (one file may hold several, e.g. during rotation)."""
    data = pem.encode() if isinstance(pem, str) else pem
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise AttestationError(f"{source}: no PEM public key (expected -----BEGIN PUBLIC KEY-----)")
    keys = []
    for i, block in enumerate(blocks):
        where = source if len(blocks) == 1 else f"{source} (key {i + 1})"
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            raise AttestationError(f"{where}: a private key; give the public key (private keys stay in CI)")
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, TypeError) as exc:
            raise AttestationError(f"{where}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise AttestationError(f"{where}: a {type(key).__name__}, not an Ed25519 public key")
        keys.append(key)
    return keys


# --------------------------------------------------------------------------- report and payload

@cache
def report_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(REPORT_SCHEMA_PATH.read_text())
    return schema


@cache
def payload_schema() -> dict[str, Any]:
    """The report schema plus the fields signing adds."""
    schema = copy.deepcopy(report_schema())
    schema["$id"] = "https://mlguard.io/schema/eval-attestation-payload.json"
    schema["title"] = "mlguard eval attestation payload"
    time = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
    schema["properties"].update({
        "type": {"const": PAYLOAD_TYPE},
        "key_id": {"type": "string", "pattern": _KEY_ID.pattern},
        "issued_at": time,
        "expires_at": time,
        # where the attestation may be used (`mlguard eval sign --namespace/--environment`): the gate refuses it
        # anywhere else, so an attestation and its labels copied to another namespace count for nothing
        "scope": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
            "namespaces": {"type": "array", "minItems": 1, "uniqueItems": True,
                           "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}},
            "environments": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"type": "string", "minLength": 1, "maxLength": 63}}}},
    })
    schema["required"] = [*schema["required"], "type", "key_id", "issued_at", "expires_at"]
    return schema


def field_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


_VALIDATORS: dict[int, Any] = {}


def _validator(key: int, schema: Mapping[str, Any]) -> Any:
    """One compiled validator per (cached, long-lived) schema object."""
    found = _VALIDATORS.get(key)
    if found is None or found.schema is not schema:
        found = _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    return found


def schema_errors(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every schema error as ``field.path: message``, sorted by path."""
    validator = _validator(id(schema), schema)
    errors = []
    for err in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]):
        message = err.message
        if err.validator == "oneOf" and isinstance(err.instance, Mapping) and "metric" in err.instance:
            message = "a criterion sets exactly one of value and metric_ref"
        errors.append(f"{field_path(err.absolute_path)}: {message}")
    return errors


def validate_report(report: Any) -> list[str]:
    """Schema errors of an eval report, each with its field path (empty when valid)."""
    errors = schema_errors(report, report_schema())
    if not errors:
        for name, value in report["metrics"].items():
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(f"metrics.{name}: {value} is not a finite number")
    return errors


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w``: a positive duration."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise AttestationError(f"bad duration {text!r}: use a positive number with s, m, h, d or w (e.g. 30d)")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def build_payload(report: Mapping[str, Any], *, signer_key_id: str, now: datetime | None = None,
                  expires_in: timedelta = DEFAULT_EXPIRES_IN,
                  scope: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The payload for a valid report: the report plus type, key id, issued-at, expiry and scope."""
    issued = _now(now).replace(microsecond=0)
    payload = {**copy.deepcopy(dict(report)), "type": PAYLOAD_TYPE, "key_id": signer_key_id,
               "issued_at": format_time(issued), "expires_at": format_time(issued + expires_in)}
    if scope:
        payload["scope"] = {k: sorted(set(v)) for k, v in scope.items() if v}
    return payload


def sign_report(report: Any, private_key: Ed25519PrivateKey, *, now: datetime | None = None,
                expires_in: timedelta = DEFAULT_EXPIRES_IN, source: str = "<report>",
                scope: Mapping[str, Sequence[str]] | None = None) -> str:
    """Validate a report and return its compact signed attestation, for the namespaces and environments in
    ``scope`` (``{"namespaces": [...], "environments": [...]}``; the gate refuses an attestation without one)."""
    errors = validate_report(report)
    if errors:
        raise ReportError(source, errors)
    if expires_in <= timedelta(0):
        raise AttestationError("the expiry must be in the future")
    kid = key_id(private_key.public_key())
    built = build_payload(report, signer_key_id=kid, now=now, expires_in=expires_in, scope=scope)
    problems = schema_errors(built.get("scope"), payload_schema()["properties"]["scope"]) if "scope" in built else []
    if problems:
        raise AttestationError("bad scope: " + "; ".join(problems))
    payload = canonical_json(built)
    signature = private_key.sign(SIGNING_CONTEXT + payload)
    text = f"{b64url_encode(payload)}.{b64url_encode(signature)}.{kid}"
    if len(text) > MAX_ATTESTATION_CHARS:
        raise AttestationError(f"the attestation would be {len(text)} characters, over the "
                               f"{MAX_ATTESTATION_CHARS} allowed in an annotation; report fewer metrics")
    return text


# --------------------------------------------------------------------------- parsing

@dataclass(frozen=True)
class Parsed:
    """An attestation taken apart; nothing in it is trusted before `verify_signature`."""

    payload_bytes: bytes
    signature: bytes
    key_id: str
    payload: Mapping[str, Any]


class ParseError(ValueError):
    """The attestation text is not an attestation (gate step 1)."""


def parse_attestation(text: str) -> Parsed:
    """Split, decode and shape-check an attestation; raise ParseError saying what is wrong."""
    text = text.strip()
    if not text:
        raise ParseError("the attestation is empty")
    if len(text) > MAX_ATTESTATION_CHARS:
        raise ParseError(f"the attestation is {len(text)} characters, more than {MAX_ATTESTATION_CHARS}")
    parts = text.split(".")
    if len(parts) != 3:
        raise ParseError(f"expected payload.signature.keyid (3 parts separated by '.'), got {len(parts)} part(s)")
    payload_b64, sig_b64, kid = parts
    if not _KEY_ID.match(kid):
        raise ParseError(f"key id {kid[:40]!r} is not 16 lowercase hex digits")
    try:
        payload_bytes = b64url_decode(payload_b64)
        signature = b64url_decode(sig_b64)
    except (ValueError, binascii.Error) as exc:
        raise ParseError(f"payload or signature is not base64url: {exc}") from exc
    if len(signature) != 64:
        raise ParseError(f"an Ed25519 signature has 64 bytes, this one {len(signature)}")
    try:
        payload = json.loads(payload_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ParseError(f"the payload is not JSON: {exc}") from exc
    try:
        canonical = canonical_json(payload)
    except ValueError:  # NaN or an infinity
        canonical = b""
    if canonical != payload_bytes:  # duplicate keys, whitespace, key order, other number spellings
        raise ParseError("the payload is not canonical JSON (sorted keys, no whitespace, no duplicate keys, "
                         "as `mlguard eval sign` writes it): use the attestation unchanged")
    errors = schema_errors(payload, payload_schema())
    if errors:
        raise ParseError("the payload does not match the attestation schema: " + "; ".join(errors[:5]))
    return Parsed(payload_bytes, signature, kid, payload)


def decode_unverified(text: str) -> Mapping[str, Any]:
    """The payload of an attestation, for display only (NOT verified)."""
    return parse_attestation(text).payload


# --------------------------------------------------------------------------- keyring

@dataclass(frozen=True)
class Keyring:
    """Public keys by key id; several may be active during a rotation. Revoked ids are refused
    even when their key is still listed. ``problems`` are keys that could not be loaded."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey], *, revoked: Iterable[str] = (),
           problems: Iterable[str] = ()) -> Keyring:
        return cls({key_id(k): k for k in keys}, frozenset(revoked), tuple(problems))

    def active_ids(self) -> list[str]:
        return sorted(k for k in self.keys if k not in self.revoked)


def keyring_from_spec(eval_keys: Mapping[str, Any] | None, *, base_dir: Path | None = None) -> Keyring:
    """A keyring from a PolicySet's ``spec.evalKeys`` (inline keys, key files or directories of
    a mounted Secret, revoked ids). Keys that fail to load are skipped and listed as problems."""
    spec = eval_keys or {}
    keys: dict[str, Ed25519PublicKey] = {}
    problems: list[str] = []
    for i, entry in enumerate(spec.get("keys") or []):
        where = f"spec.evalKeys.keys[{i}]"
        try:
            loaded = load_public_keys(str(entry.get("publicKey", "")), source=f"{where}.publicKey")
        except AttestationError as exc:
            problems.append(str(exc))
            continue
        for key in loaded:
            kid = key_id(key)
            if entry.get("keyId") != kid:
                problems.append(f"{where}.keyId: {entry.get('keyId')!r} does not match the key, whose id is {kid!r}")
                continue
            keys[kid] = key
    for i, name in enumerate(spec.get("files") or []):
        for path in _key_files(Path(name), base_dir):
            try:
                loaded = load_public_keys(path.read_bytes(), source=f"spec.evalKeys.files[{i}] {path}")
            except OSError as exc:
                problems.append(f"spec.evalKeys.files[{i}]: cannot read {path}: {exc.strerror or exc}")
                continue
            except AttestationError as exc:
                problems.append(str(exc))
                continue
            keys.update((key_id(k), k) for k in loaded)
    return Keyring(keys, frozenset(spec.get("revoked") or []), tuple(problems))


def _key_files(path: Path, base_dir: Path | None) -> list[Path]:
    """A key file, or every file of a directory (a mounted Secret: skip Kubernetes' ``..data`` links)."""
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


def _files_signature(eval_keys: Mapping[str, Any] | None, base_dir: Path | None) -> tuple[Any, ...]:
    out: list[tuple[str, int | None, int | None]] = []
    for name in (eval_keys or {}).get("files") or []:
        for path in _key_files(Path(name), base_dir):
            try:
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((str(path), None, None))
    return tuple(out)


_KEYRINGS: dict[str, tuple[tuple[Any, ...], Keyring]] = {}
_KEYRINGS_LOCK = threading.Lock()
_KEYRINGS_MAX = 16
_CHECKED: dict[str, float] = {}
KEY_FILES_RECHECK = 1.0  # seconds: a rotated key file is seen within this (plus the kubelet's sync)


def keyring_for(policyset: Any) -> Keyring:
    """The keyring of a PolicySet, cached by its digest (rebuilt when a mounted key file changes,
    so a rotated Secret is picked up without a PolicySet change). Relative key file paths are
    relative to the PolicySet file."""
    if policyset is None:
        return Keyring()
    eval_keys = policyset.spec.get("evalKeys")
    digest = str(getattr(policyset, "digest", "")) or hashlib.sha256(canonical_json(eval_keys or {})).hexdigest()
    # the same PolicySet text at two paths may name different key files (relative paths)
    digest = f"{digest}@{getattr(policyset, 'source', '')}"
    now = time.monotonic()
    with _KEYRINGS_LOCK:
        cached = _KEYRINGS.get(digest)
        if cached is not None and now - _CHECKED.get(digest, -1e9) < KEY_FILES_RECHECK:
            return cached[1]  # the key files were stat'ed less than a second ago (admission hot path)
    source = Path(str(getattr(policyset, "source", "")))
    base_dir = source.parent if source.is_file() else None
    files = _files_signature(eval_keys, base_dir)
    with _KEYRINGS_LOCK:
        _CHECKED[digest] = now
        cached = _KEYRINGS.get(digest)
        if cached is not None and cached[0] == files:
            return cached[1]
    keyring = keyring_from_spec(eval_keys, base_dir=base_dir)
    with _KEYRINGS_LOCK:
        if len(_KEYRINGS) >= _KEYRINGS_MAX:
            oldest = next(iter(_KEYRINGS))
            _KEYRINGS.pop(oldest)
            _CHECKED.pop(oldest, None)
        _KEYRINGS[digest] = (files, keyring)
    return keyring


# --------------------------------------------------------------------------- criteria

@dataclass(frozen=True)
class Criterion:
    """A promotion criterion: ``metric op value`` or ``metric op metric_ref``."""

    metric: str
    op: Op
    value: float | None = None
    metric_ref: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Criterion:
        if data.get("op") not in OPS:
            raise ValueError(f"criterion op {data.get('op')!r} is not one of {', '.join(OPS)}")
        if ("value" in data) == ("metric_ref" in data):
            raise ValueError(f"criterion on {data.get('metric')!r} needs exactly one of value and metric_ref")
        return cls(str(data["metric"]), data["op"], data.get("value"), data.get("metric_ref"))

    def describe(self) -> str:
        rhs = self.metric_ref if self.metric_ref is not None else _num(self.value)
        return f"{self.metric} {OPS[self.op][0]} {rhs}"

    def evaluate(self, metrics: Mapping[str, Any]) -> str | None:
        """None when met, else why not."""
        if self.metric not in metrics:
            return f"metric {self.metric!r} is not in the attestation, so {self.describe()} cannot be shown"
        if self.metric_ref is not None:
            if self.metric_ref not in metrics:
                return (f"metric {self.metric_ref!r} is not in the attestation, so {self.describe()} "
                        "cannot be shown")
            rhs: Any = metrics[self.metric_ref]
            shown = f"{self.metric_ref} ({_num(rhs)})"
        else:
            rhs, shown = self.value, _num(self.value)
        lhs = metrics[self.metric]
        if OPS[self.op][1](lhs, rhs):
            return None
        return f"{self.metric} is {_num(lhs)}, the promotion criterion is {self.metric} {OPS[self.op][0]} {shown}"


def _num(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


CRITERION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["metric", "op"],
    "additionalProperties": False,
    "properties": {
        "metric": {"type": "string", "minLength": 1},
        "op": {"enum": list(OPS)},
        "value": {"type": "number"},
        "metric_ref": {"type": "string", "minLength": 1},
    },
    "oneOf": [{"required": ["value"]}, {"required": ["metric_ref"]}],
}


# --------------------------------------------------------------------------- the gate

@dataclass(frozen=True)
class Subject:
    """What the pod template says it runs (step 3 compares the payload with it)."""

    model: str | None
    version: str | None
    artifact_digest: str | None
    quantization: str | None
    image_digests: tuple[str, ...] = ()
    model_source: str = f"label {MODEL_LABEL}"  # where the model name came from (label, server arguments, ...)
    # where the workload runs (None: not checked, e.g. `mlguard eval verify` on an attestation alone)
    namespace: str | None = None
    environment: str | None = None
    # every app container as (name, image): each must run the attested image when the attestation names one
    containers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Problem:
    """Why a step failed. ``field`` names what to look at: annotation, signature, model, version,
    artifact_digest, quantization, image, issued_at, expires_at, or ``metric:<name>``."""

    field: str
    message: str


@dataclass(frozen=True)
class GateResult:
    """The outcome: ``ok``, or the first failing step (1-5) with every problem of that step."""

    ok: bool
    step: int | None = None
    problems: tuple[Problem, ...] = ()
    payload: Mapping[str, Any] | None = None
    key_id: str | None = None
    skipped: tuple[str, ...] = ()

    @property
    def step_name(self) -> str | None:
        return STEPS[self.step] if self.step else None

    def summary(self) -> str:
        if self.ok:
            p = self.payload or {}
            model = p.get("model") or {}
            extra = f" (not checked: {', '.join(self.skipped)})" if self.skipped else ""
            return (f"valid: {model.get('name')} {model.get('version')} {model.get('quantization')} "
                    f"signed by key {self.key_id}, expires {p.get('expires_at')}{extra}")
        return (f"invalid at step {self.step} ({self.step_name}): "
                + "; ".join(p.message for p in self.problems))


def _fail(step: int, problems: Iterable[Problem], *, payload: Mapping[str, Any] | None = None,
          kid: str | None = None) -> GateResult:
    return GateResult(False, step, tuple(problems), payload, kid)


def verify_signature(parsed: Parsed, keyring: Keyring) -> Problem | None:
    """Step 2: the key id is known and not revoked, the signature verifies, the payload names that key."""
    kid = parsed.key_id
    if kid in keyring.revoked:
        return Problem("signature", f"signed with key {kid}, which is revoked; re-run the eval job so it is "
                                    "signed with a current key")
    key = keyring.keys.get(kid)
    if key is None:
        known = ", ".join(keyring.active_ids()) or "none"
        hint = f" (keys that failed to load: {'; '.join(keyring.problems)})" if keyring.problems else ""
        return Problem("signature", f"signed with key {kid}, which is not a configured eval key (active: {known})"
                                    f"{hint}; sign with a configured key or add its public key to "
                                    "spec.evalKeys")
    try:
        key.verify(parsed.signature, SIGNING_CONTEXT + parsed.payload_bytes)
    except InvalidSignature:
        return Problem("signature", f"the signature does not verify with key {kid}: the attestation was altered "
                                    "after signing (or signed by another key); use the output of "
                                    "`mlguard eval sign` unchanged")
    if parsed.payload.get("key_id") != kid:
        return Problem("signature", f"the payload names key {parsed.payload.get('key_id')!r} but was signed "
                                    f"with {kid}")
    return None


def check_subject(payload: Mapping[str, Any], subject: Subject) -> list[Problem]:
    """Step 3: the attestation is for this model, version, artifact, quantization and image."""
    model = payload["model"]
    problems = []
    for fld, have, key in (
        ("model", subject.model, "name"),
        ("version", subject.version, "version"),
        ("artifact_digest", subject.artifact_digest, "artifact_digest"),
        ("quantization", subject.quantization, "quantization"),
    ):
        want = model[key]
        where = {"model": subject.model_source, "version": f"annotation {VERSION_ANNOTATION}",
                 "artifact_digest": f"annotation {DIGEST_ANNOTATION}",
                 "quantization": f"annotation {QUANTIZATION_ANNOTATION}"}[fld]
        if have is None:
            problems.append(Problem(fld, f"the pod template has no {where}; the attestation is for "
                                         f"{key.replace('_', ' ')} {want!r}"))
        elif have != want:
            extra = (" — a quantized artifact needs its own evaluation" if fld == "quantization" else "")
            problems.append(Problem(fld, f"the pod template's {where} is {have!r} but the attestation is for "
                                         f"{want!r}{extra}; evaluate and sign this "
                                         f"{'model' if fld == 'model' else key.replace('_', ' ')}"))
    image = payload.get("serving_image_digest")
    if image is not None and subject.containers:
        for name, ref in subject.containers:  # every app container, not only one of them
            if image_digest(ref) != image:
                problems.append(Problem(f"image:{name}", f"the attestation is for serving image {image} but "
                                                         f"container `{name}` runs {ref}; deploy the evaluated "
                                                         "image by digest in every container or re-evaluate"))
    elif image is not None and image not in subject.image_digests:
        found = ", ".join(subject.image_digests) or "no image pinned by digest"
        problems.append(Problem("image", f"the attestation is for serving image {image} but the pod template "
                                         f"runs {found}; deploy the evaluated image by digest or re-evaluate"))
    if subject.namespace is not None:
        problems.extend(check_scope(payload, namespace=subject.namespace, environment=subject.environment))
    return problems


def check_scope(payload: Mapping[str, Any], *, namespace: str, environment: str | None) -> list[Problem]:
    """The attestation was issued for this namespace, or for this namespace's environment."""
    scope = payload.get("scope")
    sign = "`mlguard eval sign --namespace <namespace>` (or `--environment <environment>`)"
    if not isinstance(scope, Mapping):
        return [Problem("scope", f"the attestation names no namespace or environment it was issued for, so it "
                                 f"could be copied anywhere; re-sign it with {sign}")]
    namespaces, environments = scope.get("namespaces") or [], scope.get("environments") or []
    if namespace in namespaces or (environment is not None and environment in environments):
        return []
    issued = "; ".join(part for part in (
        f"namespaces {', '.join(namespaces)}" if namespaces else "",
        f"environments {', '.join(environments)}" if environments else "") if part)
    here = f"namespace {namespace}" + (f" (environment {environment})" if environment else " (no environment)")
    return [Problem("scope", f"the attestation was issued for {issued}, not for {here}; an attestation copied "
                             f"from another workload counts for nothing: sign one for this namespace with {sign}")]


def check_validity(payload: Mapping[str, Any], *, now: datetime, clock_skew: timedelta,
                   enforce_expiry: bool = True, max_validity: timedelta | None = None) -> list[Problem]:
    """Step 4: not expired (unless ``enforce_expiry`` is off), not issued in the future beyond the skew, and
    valid for no longer than ``max_validity`` (the PolicySet's eval-gate maxValidity)."""
    issued, expires = parse_time(payload["issued_at"]), parse_time(payload["expires_at"])
    if expires <= issued:
        return [Problem("expires_at", f"expires_at {payload['expires_at']} is not after issued_at "
                                      f"{payload['issued_at']}")]
    if max_validity is not None and expires - issued > max_validity:
        days = (expires - issued).total_seconds() / 86400
        cap = max_validity.total_seconds() / 86400
        return [Problem("expires_at", f"the attestation is valid for {days:g} days ({payload['issued_at']} to "
                                      f"{payload['expires_at']}), more than the {cap:g} days the PolicySet allows "
                                      f"(eval-gate maxValidity); re-sign it with --expires-in {cap:g}d or less")]
    if enforce_expiry and now > expires + clock_skew:
        return [Problem("expires_at", f"the attestation expired at {payload['expires_at']} (now "
                                      f"{format_time(now)}); re-run the eval job for a fresh attestation")]
    if issued > now + clock_skew:
        return [Problem("issued_at", f"the attestation is issued at {payload['issued_at']}, in the future "
                                     f"(now {format_time(now)}, allowed clock skew "
                                     f"{int(clock_skew.total_seconds())}s); check the signer's clock")]
    return []


def check_criteria(payload: Mapping[str, Any], criteria: Sequence[Criterion]) -> list[Problem]:
    """Step 5: every promotion criterion holds; one problem per unmet criterion."""
    metrics = payload["metrics"]
    return [Problem(f"metric:{c.metric}", why) for c in criteria if (why := c.evaluate(metrics)) is not None]


def check_attestation(text: str | None, *, keyring: Keyring, subject: Subject | None,
                      criteria: Sequence[Criterion] | None, now: datetime | None = None,
                      clock_skew: timedelta = DEFAULT_CLOCK_SKEW, enforce_expiry: bool = True,
                      max_validity: timedelta | None = None) -> GateResult:
    """The five gate steps in order; the result names the first that fails.

    ``subject=None`` skips step 3 and ``criteria=None`` skips step 5 (offline verification of an
    attestation alone). ``enforce_expiry=False`` keeps step 4 to future-dating only (for pods that a
    controller re-creates from an already admitted template)."""
    if text is None:
        return _fail(1, [Problem("annotation", f"the pod template has no {ATTESTATION_ANNOTATION} annotation; "
                                               "add the output of `mlguard eval sign` from the eval job "
                                               "(a hand-written eval-passed flag counts for nothing)")])
    try:
        parsed = parse_attestation(text)
    except ParseError as exc:
        return _fail(1, [Problem("annotation", f"the {ATTESTATION_ANNOTATION} annotation does not parse: {exc}; "
                                               "use the output of `mlguard eval sign` unchanged")])
    problem = verify_signature(parsed, keyring)
    if problem is not None:
        return _fail(2, [problem], kid=parsed.key_id)
    payload, kid = parsed.payload, parsed.key_id
    skipped = []
    if subject is not None:
        problems = check_subject(payload, subject)
        if problems:
            return _fail(3, problems, payload=payload, kid=kid)
    else:
        skipped.append(STEPS[3])
    problems = check_validity(payload, now=_now(now), clock_skew=clock_skew, enforce_expiry=enforce_expiry,
                              max_validity=max_validity)
    if problems:
        return _fail(4, problems, payload=payload, kid=kid)
    if criteria is not None:
        problems = check_criteria(payload, criteria)
        if problems:
            return _fail(5, problems, payload=payload, kid=kid)
    else:
        skipped.append(STEPS[5])
    return GateResult(True, None, (), payload, kid, tuple(skipped))


def image_digest(image: str) -> str | None:
    """The digest of an image reference pinned by digest (``repo@sha256:...``)."""
    _, sep, digest = image.partition("@")
    return digest if sep else None
