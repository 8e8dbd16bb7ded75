"""Eval attestations and the eval-gate policy: every case of issue 4's "Done when", with real keys.

Keys are generated per test (never the committed TEST-ONLY sample keys); "now" is passed in, so the
expiry and future-dating cases are exact.
"""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policies.attestation import (
    MAX_ATTESTATION_CHARS,
    PAYLOAD_TYPE,
    SIGNING_CONTEXT,
    AttestationError,
    Criterion,
    Keyring,
    ReportError,
    Subject,
    b64url_decode,
    b64url_encode,
    canonical_json,
    check_attestation,
    key_id,
    keyring_for,
    keyring_from_spec,
    load_public_keys,
    parse_duration,
    private_key_pem,
    public_key_pem,
    validate_report,
)
from policies.attestation import sign_report as sign_scoped
from policies.context import ManifestFacts, RequestInfo
from policies.engine import evaluate
from policies.policyset import PolicySetError, parse_policyset
from policies.registry import all_policies

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
# the namespaces these tests deploy to: every attestation names where it may be used (issue 14)
SCOPE = {"namespaces": ["ml-dev", "ml-staging", "ml-prod"]}


def sign_report(report: Any, key: Ed25519PrivateKey, **kw: Any) -> str:
    kw.setdefault("scope", SCOPE)
    return sign_scoped(report, key, **kw)
IMAGE = "sha256:" + "1" * 64
FP16 = "sha256:" + "a" * 64
AWQ = "sha256:" + "b" * 64
SKEW = timedelta(minutes=5)
PROD = [{"metric": "accuracy", "op": "gt", "metric_ref": "baseline_accuracy"},
        {"metric": "p95_latency_ms", "op": "lt", "value": 200},
        {"metric": "regressions", "op": "eq", "value": 0}]


def make_report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "model": {"name": "llama-chat", "version": "3.1.0", "artifact_uri": "s3://models/llama-chat/3.1.0",
                  "artifact_digest": FP16, "quantization": "fp16"},
        "serving_image_digest": IMAGE,
        "dataset": {"name": "chat-validation-v7", "digest": "sha256:" + "d" * 64},
        "metrics": {"accuracy": 0.871, "baseline_accuracy": 0.862, "p95_latency_ms": 143.0, "regressions": 0},
        "evaluator": {"version": "2.4.1"},
    }
    for dotted, value in changes.items():
        *head, last = dotted.split("__")
        node = report
        for part in head:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return report


SUBJECT = Subject(model="llama-chat", version="3.1.0", artifact_digest=FP16, quantization="fp16",
                  image_digests=(IMAGE,))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keyring(key: Ed25519PrivateKey) -> Keyring:
    return Keyring.of([key.public_key()])


def check(text: str | None, keyring: Keyring, *, subject: Subject | None = SUBJECT, criteria: Any = (),
          now: datetime = NOW) -> Any:
    crit = None if criteria is None else [Criterion.from_dict(c) for c in criteria]
    return check_attestation(text, keyring=keyring, subject=subject, criteria=crit, now=now, clock_skew=SKEW)


# ----------------------------------------------------------------------------- encoding, keys

def test_canonical_json_is_sorted_compact_and_refuses_nan() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_key_id_is_16_hex_of_the_raw_public_key_and_survives_pem(key: Ed25519PrivateKey) -> None:
    kid = key_id(key.public_key())
    assert len(kid) == 16 and int(kid, 16) >= 0
    [reloaded] = load_public_keys(public_key_pem(key.public_key()))
    assert key_id(reloaded) == kid
    assert key_id(Ed25519PrivateKey.generate().public_key()) != kid


def test_load_public_keys_refuses_private_keys_and_garbage(key: Ed25519PrivateKey) -> None:
    with pytest.raises(AttestationError, match="a private key; give the public key"):
        load_public_keys(private_key_pem(key), source="k.pem")
    with pytest.raises(AttestationError, match="no PEM public key"):
        load_public_keys(b"hello", source="k.pem")
    broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(AttestationError, match="not a PEM public key"):
        load_public_keys(broken, source="k.pem")


def test_attestation_is_compact_and_carries_the_payload_fields(key: Ed25519PrivateKey) -> None:
    text = sign_report(make_report(), key, now=NOW, expires_in=timedelta(days=30))
    payload_b64, sig_b64, kid = text.split(".")
    assert kid == key_id(key.public_key())
    payload = json.loads(b64url_decode(payload_b64))
    assert payload["type"] == PAYLOAD_TYPE
    assert payload["key_id"] == kid
    assert payload["issued_at"] == "2026-11-23T12:00:00Z"
    assert payload["expires_at"] == "2026-12-23T12:00:00Z"
    assert payload["model"]["quantization"] == "fp16"
    assert payload["metrics"]["p95_latency_ms"] == 143.0
    assert b64url_decode(payload_b64) == canonical_json(payload)
    key.public_key().verify(b64url_decode(sig_b64), SIGNING_CONTEXT + b64url_decode(payload_b64))
    assert len(text) < 2000


def test_largest_allowed_report_stays_far_under_the_annotation_limit(key: Ed25519PrivateKey) -> None:
    report = make_report()
    report["metrics"] = {f"m{i:03d}_{'x' * 55}": 123456.789012 + i for i in range(200)}
    report["model"]["artifact_uri"] = "s3://" + "u" * 1000
    text = sign_report(report, key, now=NOW)
    assert len(text) <= MAX_ATTESTATION_CHARS < 256 * 1024
    assert check(text, Keyring.of([key.public_key()]), criteria=None).ok


# ----------------------------------------------------------------------------- report schema

@pytest.mark.parametrize(("changes", "expected"), [
    ({"model__version": None}, "model: 'version' is a required property"),
    ({"metrics__regressions": "none"}, "metrics.regressions: 'none' is not of type 'integer'"),
    ({"metrics__accuracy": "high"}, "metrics.accuracy: 'high' is not of type 'number'"),
    ({"metrics__regressions": 1.5}, "metrics.regressions: 1.5 is not of type 'integer'"),
    ({"model__artifact_digest": "latest"}, "model.artifact_digest: 'latest' does not match"),
    ({"model__quantization": "AWQ int4"}, "model.quantization: 'AWQ int4' does not match"),
    ({"dataset": None}, "<root>: 'dataset' is a required property"),
    ({"evaluator__version": 2}, "evaluator.version: 2 is not of type 'string'"),
    ({"eval_passed": True}, "<root>: Additional properties are not allowed ('eval_passed' was unexpected)"),
    ({"serving_image_digest": "nginx:1.27"}, "serving_image_digest: 'nginx:1.27' does not match"),
    ({"thresholds": [{"metric": "accuracy", "op": "gt"}]},
     "thresholds[0]: a criterion sets exactly one of value and metric_ref"),
    ({"metrics__p95_latency_ms": float("inf")}, "metrics.p95_latency_ms: inf is not a finite number"),
])
def test_report_schema_errors_name_the_field(changes: dict[str, Any], expected: str,
                                             key: Ed25519PrivateKey) -> None:
    report = make_report(**changes)
    errors = validate_report(report)
    assert any(e.startswith(expected) for e in errors), errors
    with pytest.raises(ReportError) as info:
        sign_report(report, key, now=NOW, source="report.json")
    assert "invalid eval report report.json" in str(info.value)
    assert any(e.startswith(expected) for e in info.value.errors)


def test_a_report_with_every_error_lists_them_all() -> None:
    errors = validate_report({"model": {"name": "x"}, "metrics": {"accuracy": "no"}})
    joined = "\n".join(errors)
    for fragment in ("'dataset' is a required property", "'evaluator' is a required property",
                     "model: 'version' is a required property", "metrics.accuracy: 'no' is not of type"):
        assert fragment in joined
    assert validate_report(make_report()) == []


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "30", "0d", "-1d", "1y", "d30"):
        with pytest.raises(AttestationError, match="bad duration"):
            parse_duration(bad)


# ----------------------------------------------------------------------------- the five steps

def test_valid_pass(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    result = check(sign_report(make_report(), key, now=NOW), keyring, criteria=PROD)
    assert result.ok, result.summary()
    assert result.key_id == key_id(key.public_key())
    assert result.summary().startswith("valid: llama-chat 3.1.0 fp16 signed by key")


@pytest.mark.parametrize("text", ["", "eval-passed", "true", "a.b", "a.b.c.d", "!!!.???.0123456789abcdef",
                                  "e30.AAAA.0123456789abcdef", "x" * (MAX_ATTESTATION_CHARS + 1)])
def test_step1_garbage_does_not_parse(text: str, keyring: Keyring) -> None:
    result = check(text, keyring)
    assert (result.ok, result.step, result.step_name) == (False, 1, "annotation")
    assert "does not parse" in result.problems[0].message


def test_step1_missing_annotation(keyring: Keyring) -> None:
    result = check(None, keyring)
    assert result.step == 1 and "has no mlguard.io/eval-attestation annotation" in result.problems[0].message


def test_step1_a_signed_payload_that_is_not_an_attestation(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    payload = canonical_json({"eval_passed": True})
    text = f"{b64url_encode(payload)}.{b64url_encode(key.sign(SIGNING_CONTEXT + payload))}.{key_id(key.public_key())}"
    result = check(text, keyring)
    assert result.step == 1 and "does not match the attestation schema" in result.problems[0].message


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _respellings(part: str) -> list[str]:
    """Other base64url spellings of the same bytes: the unused low bits of the last character set,
    and padding added."""
    unused = {2: 4, 3: 2}.get(len(part) % 4, 0)  # 1 leftover byte: 4 spare bits; 2 bytes: 2 spare bits
    last = _B64.index(part[-1])
    out = [part[:-1] + _B64[last | extra] for extra in range(1, 1 << unused)]
    if len(part) % 4:
        out.append(part + "=" * (-len(part) % 4))
    return out


def test_step1_only_the_canonical_base64url_spelling_verifies(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    """64 spellings of one attestation used to verify (issue 14); now only the signer's."""
    text = sign_report(make_report(), key, now=NOW)
    assert check(text, keyring, now=NOW + timedelta(days=1)).ok
    payload, sig, kid = text.split(".")
    respelled = [f"{p}.{sig}.{kid}" for p in _respellings(payload)]
    respelled += [f"{payload}.{s}.{kid}" for s in _respellings(sig)]
    assert len(respelled) >= 4
    for variant in respelled:
        result = check(variant, keyring, now=NOW + timedelta(days=1))
        assert (result.ok, result.step) == (False, 1), variant
        assert "not base64url" in result.problems[0].message or "canonical" in result.problems[0].message


@pytest.mark.parametrize("respell", [lambda t: t.replace('"regressions":0', '"regressions":0e0'),
                                     lambda t: t.replace('"regressions":0', '"regressions":-0'),
                                     lambda t: t.replace(":", ": ", 1),
                                     lambda t: t[:-1] + ',"type":"' + PAYLOAD_TYPE + '"}'])
def test_step1_only_canonical_json_verifies(respell: Any, key: Ed25519PrivateKey) -> None:
    """The same JSON value spelled otherwise, signed: refused at step 1 (one payload, one text)."""
    good = canonical_json(json.loads(b64url_decode(sign_report(make_report(), key, now=NOW).split(".")[0])))
    payload = respell(good.decode()).encode()
    assert payload != good
    kid = key_id(key.public_key())
    text = f"{b64url_encode(payload)}.{b64url_encode(key.sign(SIGNING_CONTEXT + payload))}.{kid}"
    result = check(text, Keyring({kid: key.public_key()}), now=NOW + timedelta(days=1))
    assert (result.ok, result.step) == (False, 1)
    assert "not canonical JSON" in result.problems[0].message


def _tamper(text: str, old: str, new: str) -> str:
    payload, sig, kid = text.split(".")
    changed = b64url_decode(payload).decode().replace(old, new)
    assert changed != b64url_decode(payload).decode()
    return f"{b64url_encode(changed.encode())}.{sig}.{kid}"


@pytest.mark.parametrize(("old", "new"), [('"regressions":0', '"regressions":1'),
                                          ('"accuracy":0.871', '"accuracy":0.99'),
                                          ('"quantization":"fp16"', '"quantization":"awq-int4"'),
                                          ('"expires_at":"2026-12-23', '"expires_at":"2036-12-23')])
def test_step2_tampered_payload(old: str, new: str, key: Ed25519PrivateKey, keyring: Keyring) -> None:
    result = check(_tamper(sign_report(make_report(), key, now=NOW), old, new), keyring)
    assert (result.ok, result.step, result.step_name) == (False, 2, "signature")
    assert "altered after signing" in result.problems[0].message


def test_step2_tampered_signature(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    payload, sig, kid = sign_report(make_report(), key, now=NOW).split(".")
    raw = bytearray(b64url_decode(sig))
    raw[0] ^= 1
    assert check(f"{payload}.{b64url_encode(bytes(raw))}.{kid}", keyring).step == 2


def test_step2_unknown_key(keyring: Keyring, key: Ed25519PrivateKey) -> None:
    stranger = Ed25519PrivateKey.generate()
    result = check(sign_report(make_report(), stranger, now=NOW), keyring)
    assert result.step == 2
    message = result.problems[0].message
    assert f"key {key_id(stranger.public_key())}, which is not a configured eval key" in message
    assert f"active: {key_id(key.public_key())}" in message


def test_step2_outer_key_id_swapped_to_another_configured_key(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    ring = Keyring.of([key.public_key(), other.public_key()])
    payload, sig, _ = sign_report(make_report(), key, now=NOW).split(".")
    result = check(f"{payload}.{sig}.{key_id(other.public_key())}", ring)
    assert result.step == 2 and "does not verify" in result.problems[0].message


def test_step2_revoked_key_is_refused_even_while_still_listed(key: Ed25519PrivateKey) -> None:
    kid = key_id(key.public_key())
    ring = Keyring.of([key.public_key()], revoked=[kid])
    result = check(sign_report(make_report(), key, now=NOW), ring)
    assert result.step == 2 and f"key {kid}, which is revoked" in result.problems[0].message


def test_rotation_with_two_active_keys_then_revoking_the_old_one() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    by_old, by_new = (sign_report(make_report(), k, now=NOW) for k in (old, new))
    during = Keyring.of([old.public_key(), new.public_key()])
    assert check(by_old, during).ok and check(by_new, during).ok
    after = Keyring.of([old.public_key(), new.public_key()], revoked=[key_id(old.public_key())])
    assert check(by_old, after).step == 2
    assert check(by_new, after).ok


@pytest.mark.parametrize(("change", "field"), [
    ({"model": "mistral-chat"}, "model"),
    ({"version": "3.2.0"}, "version"),
    ({"artifact_digest": "sha256:" + "c" * 64}, "artifact_digest"),
    ({"quantization": "int8"}, "quantization"),
    ({"image_digests": ("sha256:" + "2" * 64,)}, "image"),
    ({"image_digests": ()}, "image"),
    ({"model": None}, "model"),
    ({"version": None}, "version"),
])
def test_step3_wrong_subject(change: dict[str, Any], field: str, key: Ed25519PrivateKey, keyring: Keyring) -> None:
    subject = Subject(**{**SUBJECT.__dict__, **change})
    result = check(sign_report(make_report(), key, now=NOW), keyring, subject=subject)
    assert (result.ok, result.step, result.step_name) == (False, 3, "subject")
    assert [p.field for p in result.problems] == [field]


def test_step3_image_is_checked_only_when_the_attestation_names_one(key: Ed25519PrivateKey,
                                                                    keyring: Keyring) -> None:
    text = sign_report(make_report(serving_image_digest=None), key, now=NOW)
    assert check(text, keyring, subject=Subject(**{**SUBJECT.__dict__, "image_digests": ()})).ok


def test_fp16_pass_does_not_admit_awq_int4(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    fp16 = sign_report(make_report(), key, now=NOW)
    awq_subject = Subject(**{**SUBJECT.__dict__, "quantization": "awq-int4", "artifact_digest": AWQ})
    result = check(fp16, keyring, subject=awq_subject)
    assert result.step == 3
    assert {p.field for p in result.problems} == {"quantization", "artifact_digest"}
    assert any("a quantized artifact needs its own evaluation" in p.message for p in result.problems)
    awq = sign_report(make_report(model__quantization="awq-int4", model__artifact_digest=AWQ), key, now=NOW)
    assert check(awq, keyring, subject=awq_subject).ok


def test_step4_expired_beyond_skew_only(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    text = sign_report(make_report(), key, now=NOW, expires_in=timedelta(days=1))
    assert check(text, keyring, now=NOW + timedelta(days=1) + SKEW).ok
    result = check(text, keyring, now=NOW + timedelta(days=1) + SKEW + timedelta(seconds=1))
    assert (result.step, result.step_name) == (4, "validity")
    assert "expired at 2026-11-24T12:00:00Z" in result.problems[0].message


def test_step4_future_dated_beyond_skew_only(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    text = sign_report(make_report(), key, now=NOW + timedelta(minutes=4))
    assert check(text, keyring, now=NOW).ok
    text = sign_report(make_report(), key, now=NOW + timedelta(minutes=6))
    result = check(text, keyring, now=NOW)
    assert result.step == 4 and "in the future" in result.problems[0].message


@pytest.mark.parametrize(("criterion", "metrics", "why"), [
    ({"metric": "accuracy", "op": "gt", "metric_ref": "baseline_accuracy"},
     {"accuracy": 0.862}, "accuracy is 0.862, the promotion criterion is accuracy > baseline_accuracy (0.862)"),
    ({"metric": "accuracy", "op": "ge", "value": 0.9}, {},
     "accuracy is 0.871, the promotion criterion is accuracy >= 0.9"),
    ({"metric": "p95_latency_ms", "op": "lt", "value": 200}, {"p95_latency_ms": 200.0},
     "p95_latency_ms is 200, the promotion criterion is p95_latency_ms < 200"),
    ({"metric": "p95_latency_ms", "op": "le", "value": 150}, {"p95_latency_ms": 150.5},
     "p95_latency_ms is 150.5, the promotion criterion is p95_latency_ms <= 150"),
    ({"metric": "regressions", "op": "eq", "value": 0}, {"regressions": 2},
     "regressions is 2, the promotion criterion is regressions == 0"),
    ({"metric": "regressions", "op": "ne", "value": 0}, {},
     "regressions is 0, the promotion criterion is regressions != 0"),
    ({"metric": "toxicity", "op": "lt", "value": 0.1}, {}, "metric 'toxicity' is not in the attestation"),
    ({"metric": "accuracy", "op": "gt", "metric_ref": "teacher_accuracy"}, {},
     "metric 'teacher_accuracy' is not in the attestation"),
])
def test_step5_each_criterion_not_met(criterion: dict[str, Any], metrics: dict[str, Any], why: str,
                                      key: Ed25519PrivateKey, keyring: Keyring) -> None:
    report = make_report()
    report["metrics"].update(metrics)
    text = sign_report(report, key, now=NOW)
    result = check(text, keyring, criteria=[criterion])
    assert (result.step, result.step_name) == (5, "criteria")
    assert len(result.problems) == 1 and why in result.problems[0].message
    assert result.problems[0].field == f"metric:{criterion['metric']}"


def test_step5_reports_every_unmet_criterion(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    text = sign_report(make_report(metrics__accuracy=0.5, metrics__p95_latency_ms=900.0, metrics__regressions=4),
                       key, now=NOW)
    result = check(text, keyring, criteria=PROD)
    assert [p.field for p in result.problems] == ["metric:accuracy", "metric:p95_latency_ms", "metric:regressions"]
    assert check(sign_report(make_report(), key, now=NOW), keyring, criteria=PROD).ok


def test_the_first_failing_step_is_named(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    bad_everything = sign_report(make_report(metrics__regressions=9), key, now=NOW, expires_in=timedelta(hours=1))
    later = NOW + timedelta(days=2)
    wrong = Subject(**{**SUBJECT.__dict__, "version": "9"})
    assert check(_tamper(bad_everything, '"regressions":9', '"regressions":0'), keyring, subject=wrong,
                 now=later, criteria=PROD).step == 2
    assert check(bad_everything, keyring, subject=wrong, now=later, criteria=PROD).step == 3
    assert check(bad_everything, keyring, now=later, criteria=PROD).step == 4
    assert check(bad_everything, keyring, criteria=PROD).step == 5


def test_steps_3_and_5_can_be_skipped_offline(key: Ed25519PrivateKey, keyring: Keyring) -> None:
    result = check(sign_report(make_report(metrics__regressions=9), key, now=NOW), keyring, subject=None,
                   criteria=None)
    assert result.ok and result.skipped == ("subject", "criteria")


# ----------------------------------------------------------------------------- keyrings from a PolicySet

def test_keyring_from_inline_keys_files_and_secret_directories(tmp_path: Path) -> None:
    a, b, c, d = (Ed25519PrivateKey.generate() for _ in range(4))
    both = tmp_path / "two-keys.pem"
    both.write_bytes(public_key_pem(b.public_key()) + public_key_pem(c.public_key()))
    secret = tmp_path / "secret"  # the layout of a mounted Secret
    (secret / "..2026_11_23").mkdir(parents=True)
    (secret / "..2026_11_23" / "key.pem").write_bytes(public_key_pem(d.public_key()))
    (secret / "..data").symlink_to("..2026_11_23")
    (secret / "key.pem").symlink_to("..data/key.pem")
    ring = keyring_from_spec({
        "keys": [{"keyId": key_id(a.public_key()), "publicKey": public_key_pem(a.public_key()).decode()}],
        "files": [str(both), "secret"],
        "revoked": [key_id(c.public_key())],
    }, base_dir=tmp_path)
    assert set(ring.keys) == {key_id(k.public_key()) for k in (a, b, c, d)}
    assert ring.active_ids() == sorted(key_id(k.public_key()) for k in (a, b, d))
    assert ring.problems == ()


def test_keyring_problems_are_kept_and_shown_when_a_key_is_not_found(tmp_path: Path) -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = keyring_from_spec({
        "keys": [{"keyId": "prod-2026", "publicKey": public_key_pem(a.public_key()).decode()},
                 {"keyId": "x", "publicKey": "not a key"}],
        "files": [str(tmp_path / "missing.pem")],
    })
    assert ring.keys == {}
    problems = "\n".join(ring.problems)
    assert f"spec.evalKeys.keys[0].keyId: 'prod-2026' does not match the key, whose id is " \
           f"'{key_id(a.public_key())}'" in problems
    assert "spec.evalKeys.keys[1].publicKey: no PEM public key" in problems
    assert "spec.evalKeys.files[0]: cannot read" in problems
    result = check(sign_report(make_report(), b, now=NOW), ring)
    assert result.step == 2 and "keys that failed to load" in result.problems[0].message


def _policyset(spec: dict[str, Any], *, source: str = "<memory>") -> Any:
    doc = {"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": "t"}, "spec": spec}
    return parse_policyset(yaml.safe_dump(doc), source=source)


def test_keyring_for_is_cached_by_digest_and_follows_a_rotated_secret_file(tmp_path: Path, monkeypatch) -> None:
    import policies.attestation as attestation

    monkeypatch.setattr(attestation, "KEY_FILES_RECHECK", 0.0)  # the files are stat'ed at most once a second
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keyfile = tmp_path / "eval.pem"
    keyfile.write_bytes(public_key_pem(a.public_key()))
    ps = _policyset({"evalKeys": {"files": [str(keyfile)]}, "policies": {"eval-gate": {}}})
    first = keyring_for(ps)
    assert keyring_for(ps) is first and first.active_ids() == [key_id(a.public_key())]
    keyfile.write_bytes(public_key_pem(a.public_key()) + public_key_pem(b.public_key()))
    os.utime(keyfile, ns=(1, 1))
    assert sorted(keyring_for(ps).active_ids()) == sorted([key_id(a.public_key()), key_id(b.public_key())])


# ----------------------------------------------------------------------------- the policy through the engine

def _deployment(attestation: str | None, *, namespace: str = "ml-prod", quantization: str = "fp16",
                digest: str = FP16, name: str = "chat") -> dict[str, Any]:
    annotations = {"mlguard.io/model-version": "3.1.0", "mlguard.io/artifact-digest": digest,
                   "mlguard.io/quantization": quantization}
    if attestation is not None:
        annotations["mlguard.io/eval-attestation"] = attestation
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name, "mlguard.io/model": "llama-chat"}, "annotations": annotations},
                "spec": {"containers": [{"name": "server", "image": f"registry.example.com/vllm@{IMAGE}"}]}}}}


def _gate_policyset(tmp_path: Path, *keys: Ed25519PrivateKey, revoked: tuple[str, ...] = ()) -> Any:
    for i, k in enumerate(keys):
        (tmp_path / f"k{i}.pem").write_bytes(public_key_pem(k.public_key()))
    spec = {
        "environments": {"namespaces": {"prod": ["ml-prod"], "staging": ["ml-staging"]}},
        "evalKeys": {"files": [f"k{i}.pem" for i in range(len(keys))], "revoked": list(revoked)},
        "policies": {"eval-gate": {
            "action": {"ci": "deny", "admission": "deny"},
            "overrides": [{"match": {"environments": ["prod"]}, "params": {"criteria": PROD}},
                          {"match": {"environments": ["staging"]},
                           "params": {"criteria": [{"metric": "p95_latency_ms", "op": "lt", "value": 500}]}}]}},
    }
    path = tmp_path / "policyset.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet",
                                    "metadata": {"name": "gate"}, "spec": spec}))
    return parse_policyset(path.read_text(), source=str(path))


def _gate(objects: list[dict[str, Any]], policyset: Any, **kw: Any) -> list[Any]:
    report = evaluate(objects, policyset, point="ci", **kw)
    assert not report.policy_errors
    return [v for v in report.violations if v.policy == "eval-gate"]


def test_policy_admits_a_fresh_attestation_and_names_the_runbook(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    assert _gate([_deployment(sign_report(make_report(), key))], ps) == []
    [v] = _gate([_deployment(None)], ps)
    assert v.runbook == "https://github.com/mlguard/mlguard/blob/main/runbooks/eval-attestation-rejected.md" \
        and v.action == "deny"
    assert v.path == "spec.template.metadata.annotations.mlguard.io/eval-attestation"
    assert v.line().startswith("eval-gate: spec.template.metadata.annotations.mlguard.io/eval-attestation: "
                               "eval attestation rejected at step 1 (annotation)")


def test_policy_criteria_per_environment(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    slow = sign_report(make_report(metrics__p95_latency_ms=320.0), key)
    [v] = _gate([_deployment(slow, namespace="ml-prod")], ps)
    assert "step 5 (criteria): p95_latency_ms is 320, the promotion criterion is p95_latency_ms < 200" in v.message
    assert _gate([_deployment(slow, namespace="ml-staging")], ps) == []
    # dev uses the policy's defaults: accuracy >= baseline, no regressions
    assert _gate([_deployment(slow, namespace="ml-dev")], ps) == []
    regressed = sign_report(make_report(metrics__regressions=1), key)
    assert len(_gate([_deployment(regressed, namespace="ml-dev")], ps)) == 1


def test_policy_fp16_attestation_on_awq_deployment(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    fp16 = sign_report(make_report(), key)
    found = _gate([_deployment(fp16, quantization="awq-int4", digest=AWQ)], ps)
    assert {v.path for v in found} == {"spec.template.metadata.annotations.mlguard.io/quantization",
                                       "spec.template.metadata.annotations.mlguard.io/artifact-digest"}


def test_policy_revoked_and_rotated_keys_from_the_policyset(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ps = _gate_policyset(tmp_path, old, new, revoked=(key_id(old.public_key()),))
    assert _gate([_deployment(sign_report(make_report(), new))], ps) == []
    [v] = _gate([_deployment(sign_report(make_report(), old))], ps)
    assert "which is revoked" in v.message


def test_explicit_keys_from_the_caller_win_over_the_policyset(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    other = Ed25519PrivateKey.generate()
    text = sign_report(make_report(), other)
    assert len(_gate([_deployment(text)], ps)) == 1
    assert _gate([_deployment(text)], ps, keys=Keyring.of([other.public_key()])) == []


def test_wrong_keys_type_fails_closed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    report = evaluate([_deployment(sign_report(make_report(), key))], ps, point="ci", keys=["not", "a", "keyring"])
    assert report.policy_errors == ["eval-gate"] and report.denied


def test_no_keys_configured_denies(key: Ed25519PrivateKey) -> None:
    ps = _policyset({"policies": {"eval-gate": {"action": "deny"}}})
    report = evaluate([_deployment(sign_report(make_report(), key))], ps, point="admission")
    [v] = report.violations
    assert "not a configured eval key (active: none)" in v.message


def test_workloads_that_serve_no_model_are_untouched(key: Ed25519PrivateKey) -> None:
    ps = _policyset({"policies": {"eval-gate": {"action": "deny"}}})
    web = _deployment(None)
    tpl_labels = web["spec"]["template"]["metadata"]["labels"]
    del tpl_labels["mlguard.io/model"]
    assert evaluate([web], ps, point="ci").violations == []


def test_object_label_without_template_label_fails_step3(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    obj = _deployment(sign_report(make_report(), key))
    del obj["spec"]["template"]["metadata"]["labels"]["mlguard.io/model"]
    obj["metadata"]["labels"] = {"mlguard.io/model": "llama-chat"}
    # in prod (ml-prod) the missing template label is a finding of its own too
    required, v = _gate([obj], ps)
    assert "without the label mlguard.io/model" in required.message
    assert v.path == "spec.template.metadata.labels.mlguard.io/model" and "step 3" in v.message


def test_workload_ref_rollout_findings_name_the_deployment(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    dep = _deployment(None, name="chat-base")
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "chat", "namespace": "ml-prod"},
               "spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-base"},
                        "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}}
    report = evaluate([rollout], ps, point="ci", facts=ManifestFacts([rollout, dep]))
    [v] = [v for v in report.violations if v.policy == "eval-gate"]
    assert str(v.resource) == "Deployment/ml-prod/chat-base"


@pytest.mark.parametrize(("criteria", "error"), [
    ([{"metric": "accuracy", "op": "gte", "value": 1}], "'gte' is not one of"),
    ([{"metric": "accuracy", "op": "gt"}], "is not valid under any of the given schemas"),
    ([{"metric": "accuracy", "op": "gt", "value": 1, "metric_ref": "b"}], "is valid under each of"),
    ([{"op": "gt", "value": 1}], "'metric' is a required property"),
    ([{"metric": "accuracy", "op": "gt", "value": "high"}], "'high' is not of type 'number'"),
    ("accuracy > 0.9", "is not of type 'array'"),
])
def test_policyset_schema_validates_criteria_with_paths(criteria: Any, error: str) -> None:
    with pytest.raises(PolicySetError) as info:
        _policyset({"policies": {"eval-gate": {"overrides": [{"match": {"environments": ["prod"]},
                                                              "params": {"criteria": criteria}}]}}})
    joined = "\n".join(info.value.errors)
    assert "spec.policies.eval-gate.overrides[0].params.criteria" in joined and error in joined, joined


def test_clock_skew_param_is_validated_and_used(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(PolicySetError, match="clockSkewSeconds"):
        _policyset({"policies": {"eval-gate": {"params": {"clockSkewSeconds": -1}}}})
    ps = _gate_policyset(tmp_path, key)
    soon = sign_report(make_report(), key, now=datetime.now(UTC) + timedelta(minutes=3))
    assert _gate([_deployment(soon)], ps) == []
    raw = copy.deepcopy(dict(ps.raw))
    raw["spec"]["policies"]["eval-gate"]["params"] = {"clockSkewSeconds": 0}
    strict = parse_policyset(yaml.safe_dump(raw), source=ps.source)
    [v] = _gate([_deployment(soon)], strict)
    assert "in the future" in v.message


def test_policy_metadata() -> None:
    gate = all_policies()["eval-gate"]
    assert gate.runbook_path() == "runbooks/eval-attestation-rejected.md"
    assert gate.version and gate.title and gate.description


def _pod_of(deployment: dict[str, Any], *, owned: bool) -> dict[str, Any]:
    tpl = deployment["spec"]["template"]
    meta = {**copy.deepcopy(tpl["metadata"]), "name": "chat-abc12", "namespace": deployment["metadata"]["namespace"]}
    if owned:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-7d4b9",
                                    "uid": "u-1", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(tpl["spec"])}


def test_controller_pods_are_not_refused_for_expiry_only(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ps = _gate_policyset(tmp_path, key)
    expired = sign_report(make_report(), key, now=datetime.now(UTC) - timedelta(days=60), expires_in=timedelta(days=30))
    deployment = _deployment(expired)
    assert "expired at" in _gate([deployment], ps)[0].message  # the workload itself is refused
    # a replica re-created after a node drain is not: at admission, asked for by the ReplicaSet controller
    pod = _pod_of(deployment, owned=True)
    controller = RequestInfo(user="system:serviceaccount:kube-system:replicaset-controller")
    assert _gate([pod], ps, request=controller) == []
    # offline, with its ReplicaSet in the checked set
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "chat-7d4b9", "namespace": "ml-prod",
                                                                      "uid": "u-1"}}
    assert _gate([pod], ps, facts=ManifestFacts([rs, pod])) == []
    # a controller reference nobody can vouch for is not believed (issue 14): from a tenant, or offline with
    # the owner missing from the set, or with another uid, or naming a kind that is no workload
    assert "expired at" in _gate([pod], ps, request=RequestInfo(user="alice"))[0].message
    assert "expired at" in _gate([pod], ps)[0].message
    other_uid = {**rs, "metadata": {**rs["metadata"], "uid": "u-2"}}
    assert "expired at" in _gate([pod], ps, facts=ManifestFacts([other_uid, pod]))[0].message
    forged = copy.deepcopy(pod)
    forged["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "mine", "uid": "u-3",
                                              "controller": True}]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine", "namespace": "ml-prod", "uid": "u-3"}}
    assert "expired at" in _gate([forged], ps, facts=ManifestFacts([cm, forged]))[0].message
    [bare] = _gate([_pod_of(deployment, owned=False)], ps)
    assert "step 4 (validity)" in bare.message
    forged = _tamper(expired, '"regressions":0', '"regressions":1')
    [v] = _gate([_pod_of(_deployment(forged), owned=True)], ps, request=controller)
    assert "step 2 (signature)" in v.message
    raw = copy.deepcopy(dict(ps.raw))
    raw["spec"]["policies"]["eval-gate"]["params"] = {"expireControllerPods": True}
    strict = parse_policyset(yaml.safe_dump(raw), source=ps.source)
    [v] = _gate([_pod_of(deployment, owned=True)], strict, request=controller)
    assert "expired at" in v.message



def test_an_update_after_expiry_cannot_change_what_it_serves(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Issue 14: with onlyNewViolations matched by path, once an attestation had expired an UPDATE could change
    model version, artifact digest and image under a garbage attestation. The finding's identity is what the
    template serves (and the attestation itself): any change is a new finding; a plain scale is not."""
    from policies.engine import evaluate_object, new_violations

    ps = _gate_policyset(tmp_path, key)
    raw = copy.deepcopy(dict(ps.raw))
    raw["spec"]["policies"]["eval-gate"]["onlyNewViolations"] = True
    ps = parse_policyset(yaml.safe_dump(raw), source=ps.source)
    expired = sign_report(make_report(), key, now=datetime.now(UTC) - timedelta(days=60), expires_in=timedelta(days=30))
    before = _deployment(expired)

    def update(after: dict[str, Any]) -> list[Any]:
        old = evaluate_object(before, ps, point="admission")
        new = evaluate_object(after, ps, point="admission")
        assert [v.policy for v in old.violations] == ["eval-gate"]
        return new_violations(new, old)

    scaled = copy.deepcopy(before)
    scaled["spec"]["replicas"] = 5
    assert update(scaled) == []  # the old, expired attestation does not block a scale
    swapped = _deployment("garbage", digest="sha256:" + "9" * 64)
    swapped["spec"]["template"]["metadata"]["annotations"]["mlguard.io/model-version"] = "4.0.0"
    swapped["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/evil:latest"
    [v] = update(swapped)
    assert v.action == "deny" and "step 1" in v.message
    for change in ("mlguard.io/model-version", "mlguard.io/artifact-digest", "mlguard.io/quantization"):
        one = copy.deepcopy(before)
        one["spec"]["template"]["metadata"]["annotations"][change] = "changed"
        assert update(one), change  # each change alone is new
    image = copy.deepcopy(before)
    image["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/vllm:other"
    assert update(image)
    garbage = copy.deepcopy(before)  # the same workload with the attestation swapped for garbage
    garbage["spec"]["template"]["metadata"]["annotations"]["mlguard.io/eval-attestation"] = "garbage"
    assert update(garbage)


def _prod_gate(tmp_path: Path, key: Ed25519PrivateKey) -> Any:
    return _gate_policyset(tmp_path, key)


def test_an_attestation_is_bound_to_the_namespace_or_environment_it_was_issued_for(
        tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Issue 14: an attestation and its labels copied to another namespace were accepted."""
    ps = _prod_gate(tmp_path, key)
    for_prod = sign_report(make_report(), key, scope={"namespaces": ["ml-prod"]})
    assert _gate([_deployment(for_prod)], ps) == []
    [v] = _gate([_deployment(for_prod, namespace="ml-staging")], ps)
    assert "step 3 (subject)" in v.message and "issued for namespaces ml-prod, not for namespace ml-staging " \
        "(environment staging)" in v.message and "--namespace" in v.message
    by_env = sign_report(make_report(), key, scope={"environments": ["prod"]})
    assert _gate([_deployment(by_env)], ps) == []                    # ml-prod is a prod namespace
    assert _gate([_deployment(by_env, namespace="ml-staging")], ps)  # ml-staging is not
    unscoped = sign_scoped(make_report(), key)
    [v] = _gate([_deployment(unscoped)], ps)
    assert "names no namespace or environment it was issued for" in v.message
    with pytest.raises(AttestationError, match="bad scope"):
        sign_scoped(make_report(), key, scope={"namespaces": ["Not A Namespace"]})


def test_every_app_container_runs_the_attested_image(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Issue 14: only one container had to match the attested image."""
    ps = _prod_gate(tmp_path, key)
    two = _deployment(sign_report(make_report(), key))
    containers = two["spec"]["template"]["spec"]["containers"]
    containers.append({**containers[0], "name": "sidecar"})
    assert _gate([two], ps) == []
    containers[1]["image"] = "registry.example.com/other:latest"
    [v] = _gate([two], ps)
    assert v.path == "spec.template.spec.containers[1].image"
    assert "container `sidecar` runs registry.example.com/other:latest" in v.message


def test_max_validity_caps_an_attestation(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Issue 14: a 100,000-day attestation was accepted; maxValidity (default 90d) refuses it at step 4."""
    ps = _prod_gate(tmp_path, key)
    forever = sign_report(make_report(), key, expires_in=timedelta(days=100_000))
    [v] = _gate([_deployment(forever)], ps)
    assert "step 4 (validity)" in v.message and "valid for 100000 days" in v.message
    assert "more than the 90 days the PolicySet allows (eval-gate maxValidity)" in v.message
    assert _gate([_deployment(sign_report(make_report(), key, expires_in=timedelta(days=90)))], ps) == []
    raw = copy.deepcopy(dict(ps.raw))
    raw["spec"]["policies"]["eval-gate"]["params"] = {"maxValidity": "200000d"}
    assert _gate([_deployment(forever)], parse_policyset(yaml.safe_dump(raw), source=ps.source)) == []


def test_label_keys_are_matched_exactly(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Issue 14: `mlguard.io/Model` is not the label; in prod a workload that serves a model without the exact
    label is a finding, whatever else it carries."""
    ps = _prod_gate(tmp_path, key)
    near = _deployment(sign_report(make_report(), key))
    labels = near["spec"]["template"]["metadata"]["labels"]
    labels["mlguard.io/Model"] = labels.pop("mlguard.io/model")
    messages = [v.message for v in _gate([near], ps)]
    assert any(m.startswith("label key mlguard.io/Model is not mlguard.io/model: keys are case-sensitive")
               for m in messages), messages
    # a vLLM server (found by its image and --model) in prod without the label: a finding of its own
    vllm = _deployment(sign_report(make_report(), key))
    del vllm["spec"]["template"]["metadata"]["labels"]["mlguard.io/model"]
    vllm["spec"]["template"]["spec"]["containers"][0].update(
        {"image": "vllm/vllm-openai@" + IMAGE, "args": ["--model", "llama-chat"]})
    found = _gate([vllm], ps)
    assert any(v.path == "spec.template.metadata.labels.mlguard.io/model" and "without the label mlguard.io/model"
               in v.message for v in found), found
    vllm["metadata"]["namespace"] = "ml-dev"  # outside prod, the label is not required
    assert not any("without the label" in v.message for v in _gate([vllm], ps))
