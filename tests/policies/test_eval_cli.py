"""`mlguard eval keygen|sign|verify`: exit codes 0/1/2 and what each prints, through the real CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.attestation import (
    b64url_decode,
    b64url_encode,
    key_id,
    load_private_key,
    load_public_keys,
    parse_attestation,
    sign_report,
)
from policies.cli import main

IMAGE = "sha256:" + "1" * 64
FP16 = "sha256:" + "a" * 64
REPO = Path(__file__).resolve().parents[2]


def report(**metrics: Any) -> dict[str, Any]:
    return {
        "model": {"name": "llama-chat", "version": "3.1.0", "artifact_uri": "s3://models/llama-chat/3.1.0",
                  "artifact_digest": FP16, "quantization": "fp16"},
        "serving_image_digest": IMAGE,
        "dataset": {"name": "chat-validation-v7", "digest": "sha256:" + "d" * 64},
        "metrics": {"accuracy": 0.871, "baseline_accuracy": 0.862, "p95_latency_ms": 143.0, "regressions": 0,
                    **metrics},
        "evaluator": {"version": "2.4.1"},
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["eval", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    private, public = tmp_path / "eval.key", tmp_path / "eval.pub"
    code, out, _ = run(capsys, "keygen", "--private-key", str(private), "--public-key", str(public))
    assert code == 0, out
    return private, public


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report()))
    return path


@pytest.fixture
def attestation(tmp_path: Path, keys: tuple[Path, Path], report_file: Path,
                capsys: pytest.CaptureFixture[str]) -> Path:
    out_file = tmp_path / "attestation.txt"
    code, _, err = run(capsys, "sign", "--report", str(report_file), "--key", str(keys[0]),
                       "--output", str(out_file), "--namespace", "ml-prod")
    assert code == 0, err
    return out_file


def manifest(tmp_path: Path, *, quantization: str = "fp16", attestation: str | None = None,
             labelled: bool = True) -> Path:
    annotations = {"mlguard.io/model-version": "3.1.0", "mlguard.io/artifact-digest": FP16,
                   "mlguard.io/quantization": quantization}
    if attestation is not None:
        annotations["mlguard.io/eval-attestation"] = attestation
    labels = {"app": "chat", **({"mlguard.io/model": "llama-chat"} if labelled else {})}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat", "namespace": "ml-prod"},
           "spec": {"selector": {"matchLabels": {"app": "chat"}}, "template": {
               "metadata": {"labels": labels, "annotations": annotations},
               "spec": {"containers": [{"name": "server", "image": f"registry.example.com/vllm@{IMAGE}"}]}}}}
    path = tmp_path / f"deploy-{quantization}-{labelled}.yaml"
    path.write_text(yaml.safe_dump(dep))
    return path


# ----------------------------------------------------------------------------- keygen

def test_keygen_writes_a_pair_private_0600_and_prints_the_key_id(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = load_private_key(private.read_bytes())
    [pub] = load_public_keys(public.read_bytes())
    assert key_id(key.public_key()) == key_id(pub)


def test_keygen_refuses_to_overwrite_without_force(keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keys
    before = private.read_bytes()
    code, _, err = run(capsys, "keygen", "--private-key", str(private), "--public-key", str(public))
    assert code == 2 and "already exists; pass --force" in err
    assert private.read_bytes() == before
    code, out, _ = run(capsys, "keygen", "--private-key", str(private), "--public-key", str(public), "--force")
    assert code == 0 and private.read_bytes() != before
    assert key_id(load_private_key(private.read_bytes()).public_key()) in out


def test_keygen_into_a_missing_directory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "keygen", "--private-key", str(tmp_path / "no" / "k"),
                       "--public-key", str(tmp_path / "p"))
    assert code == 2 and "cannot write" in err


# ----------------------------------------------------------------------------- sign

def test_sign_prints_an_attestation_that_verifies(keys: tuple[Path, Path], report_file: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sign", "--report", str(report_file), "--key", str(keys[0]), "--expires-in", "12h",
                         "--environment", "prod")
    assert code == 0, err
    text = out.strip()
    assert "\n" not in text
    parsed = parse_attestation(text)
    issued = datetime.strptime(parsed.payload["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    expires = datetime.strptime(parsed.payload["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires - issued == timedelta(hours=12)
    assert abs(datetime.now(UTC) - issued) < timedelta(minutes=1)
    assert f"signed with key {parsed.key_id}" in err


def test_sign_default_expiry_is_30_days(attestation: Path) -> None:
    payload = parse_attestation(attestation.read_text()).payload
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    assert (datetime.strptime(payload["expires_at"], fmt) - datetime.strptime(payload["issued_at"], fmt)
            == timedelta(days=30))


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda r: r["model"].pop("quantization"), "model: 'quantization' is a required property"),
    (lambda r: r["metrics"].update(regressions="0"), "metrics.regressions: '0' is not of type 'integer'"),
    (lambda r: r["dataset"].update(digest="abc"), "dataset.digest: 'abc' does not match"),
])
def test_sign_refuses_a_bad_report_with_the_field_path(mutate: Any, expected: str, tmp_path: Path,
                                                       keys: tuple[Path, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = report()
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, out, err = run(capsys, "sign", "--report", str(bad), "--key", str(keys[0]), "--namespace", "ml-prod")
    assert code == 2 and out == ""
    assert f"invalid eval report {bad}" in err and expected in err


@pytest.mark.parametrize(("case", "expected"), [
    ("not-json", "not JSON"),
    ("missing-report", "cannot read the eval report"),
    ("missing-key", "cannot read the private key"),
    ("public-key-as-key", "not an unencrypted PEM private key"),
    ("bad-duration", "bad duration '30 days'"),
])
def test_sign_bad_input_exits_2(case: str, expected: str, tmp_path: Path, keys: tuple[Path, Path],
                                report_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rep, key, extra = str(report_file), str(keys[0]), []
    if case == "not-json":
        (tmp_path / "r.json").write_text("{model: x")
        rep = str(tmp_path / "r.json")
    elif case == "missing-report":
        rep = str(tmp_path / "nope.json")
    elif case == "missing-key":
        key = str(tmp_path / "nope.key")
    elif case == "public-key-as-key":
        key = str(keys[1])
    else:
        extra = ["--expires-in", "30 days"]
    code, out, err = run(capsys, "sign", "--report", rep, "--key", key, "--namespace", "ml-prod", *extra)
    assert code == 2 and out == "" and expected in err, err


# ----------------------------------------------------------------------------- verify

def test_verify_valid_exits_0_and_says_why(attestation: Path, keys: tuple[Path, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--attestation", str(attestation), "--public-key", str(keys[1]))
    assert code == 0
    assert "valid: llama-chat 3.1.0 fp16 signed by key" in out and "not checked: subject, criteria" in out
    assert '"regressions": 0' in out


def test_verify_tampered_exits_1_at_step_2(tmp_path: Path, attestation: Path, keys: tuple[Path, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    payload, sig, kid = attestation.read_text().strip().split(".")
    text = b64url_decode(payload).decode().replace('"regressions":0', '"regressions":1')
    forged = tmp_path / "forged.txt"
    forged.write_text(f"{b64url_encode(text.encode())}.{sig}.{kid}")
    code, out, _ = run(capsys, "verify", "--attestation", str(forged), "--public-key", str(keys[1]))
    assert code == 1 and "invalid at step 2 (signature)" in out and "altered after signing" in out


def test_verify_refuses_another_spelling_of_the_same_payload_at_step_1(
        tmp_path: Path, attestation: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """-0 for 0, a space, a repeated key: the same JSON value, another text; only the signer's spelling is taken."""
    payload, sig, kid = attestation.read_text().strip().split(".")
    text = b64url_decode(payload).decode()
    for spelling in (text.replace('"regressions":0', '"regressions":-0'), text.replace(",", ", ", 1),
                     text[:-1] + ',"type":' + text.split('"type":', 1)[1].split(",", 1)[0].rstrip("}") + "}"):
        assert spelling != text
        forged = tmp_path / "respelled.txt"
        forged.write_text(f"{b64url_encode(spelling.encode())}.{sig}.{kid}")
        code, out, _ = run(capsys, "verify", "--attestation", str(forged), "--public-key", str(keys[1]))
        assert code == 1 and "invalid at step 1" in out and "not canonical JSON" in out, out


def test_verify_unknown_and_revoked_keys_exit_1(tmp_path: Path, attestation: Path, keys: tuple[Path, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    other_priv, other_pub = tmp_path / "o.key", tmp_path / "o.pub"
    assert run(capsys, "keygen", "--private-key", str(other_priv), "--public-key", str(other_pub))[0] == 0
    code, out, _ = run(capsys, "verify", "--attestation", str(attestation), "--public-key", str(other_pub))
    assert code == 1 and "not a configured eval key" in out
    kid = attestation.read_text().strip().rsplit(".", 1)[1]
    code, out, _ = run(capsys, "verify", "--attestation", str(attestation), "--public-key", str(keys[1]),
                       "--revoked", kid)
    assert code == 1 and "which is revoked" in out
    # rotation: both public keys trusted
    code, out, _ = run(capsys, "verify", "--attestation", str(attestation), "--public-key", str(other_pub),
                       "--public-key", str(keys[1]))
    assert code == 0, out


def test_verify_expired_exits_1_at_step_4(tmp_path: Path, keys: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = sign_report(report(), load_private_key(keys[0].read_bytes()),
                      now=datetime.now(UTC) - timedelta(days=40), expires_in=timedelta(days=30))
    path = tmp_path / "old.txt"
    path.write_text(old)
    code, out, _ = run(capsys, "verify", "--attestation", str(path), "--public-key", str(keys[1]))
    assert code == 1 and "invalid at step 4 (validity)" in out and "expired at" in out


def test_verify_garbage_attestation_exits_1_at_step_1(tmp_path: Path, keys: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.txt"
    path.write_text("eval-passed: true\n")
    code, out, _ = run(capsys, "verify", "--attestation", str(path), "--public-key", str(keys[1]))
    assert code == 1 and "invalid at step 1 (annotation)" in out


def test_verify_against_a_manifest(tmp_path: Path, attestation: Path, keys: tuple[Path, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    good = manifest(tmp_path)
    code, out, _ = run(capsys, "verify", "--attestation", str(attestation), "--public-key", str(keys[1]),
                       "--manifest", str(good))
    assert code == 0 and "Deployment/ml-prod/chat spec.template.metadata: valid" in out, out
    awq = manifest(tmp_path, quantization="awq-int4")
    code, out, _ = run(capsys, "verify", "--attestation", str(attestation), "--public-key", str(keys[1]),
                       "--manifest", str(awq))
    assert code == 1 and "invalid at step 3 (subject)" in out and "a quantized artifact needs its own" in out


def test_verify_uses_the_manifests_own_annotation(tmp_path: Path, attestation: Path, keys: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    live = manifest(tmp_path, attestation=attestation.read_text().strip())
    code, out, _ = run(capsys, "verify", "--public-key", str(keys[1]), "--manifest", str(live))
    assert code == 0, out
    bare = manifest(tmp_path, quantization="int8")
    code, out, _ = run(capsys, "verify", "--public-key", str(keys[1]), "--manifest", str(bare))
    assert code == 1 and "has no mlguard.io/eval-attestation annotation" in out


@pytest.mark.parametrize("case", ["missing-attestation", "private-key-as-public", "no-serving-workload",
                                  "bad-manifest", "nothing-to-verify", "missing-public-key"])
def test_verify_bad_input_exits_2(case: str, tmp_path: Path, attestation: Path, keys: tuple[Path, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = ["verify", "--attestation", str(attestation), "--public-key", str(keys[1])]
    expected = {
        "missing-attestation": "cannot read the attestation",
        "private-key-as-public": "a private key; give the public key",
        "no-serving-workload": "no model-serving workload",
        "bad-manifest": "not valid YAML",
        "nothing-to-verify": "give --attestation FILE, --manifest FILE, or both",
        "missing-public-key": "cannot read the public key",
    }[case]
    if case == "missing-attestation":
        args[2] = str(tmp_path / "none.txt")
    elif case == "private-key-as-public":
        args[4] = str(keys[0])
    elif case == "no-serving-workload":
        args += ["--manifest", str(manifest(tmp_path, labelled=False))]
    elif case == "bad-manifest":
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: [unclosed\n")
        args += ["--manifest", str(bad)]
    elif case == "nothing-to-verify":
        args = ["verify", "--public-key", str(keys[1])]
    else:
        args[4] = str(tmp_path / "none.pub")
    code, out, err = run(capsys, *args)
    assert code == 2 and expected in err, (out, err)


def test_the_console_entry_point_round_trip(tmp_path: Path) -> None:
    """The real process: keygen, sign from stdin, verify from stdin, exit codes from the OS."""
    priv, pub, rep = tmp_path / "k", tmp_path / "k.pub", tmp_path / "r.json"
    rep.write_text(json.dumps(report()))
    cli = [sys.executable, "-m", "policies.cli", "eval"]

    def proc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60,
                              check=False)

    assert proc("keygen", "--private-key", str(priv), "--public-key", str(pub)).returncode == 0
    unscoped = proc("sign", "--report", "-", "--key", str(priv), stdin=rep.read_text())
    assert unscoped.returncode == 2 and "--namespace NS and/or --environment ENV" in unscoped.stderr
    signed = proc("sign", "--report", "-", "--key", str(priv), "--namespace", "ml-prod", stdin=rep.read_text())
    assert signed.returncode == 0, signed.stderr
    ok = proc("verify", "--attestation", "-", "--public-key", str(pub), stdin=signed.stdout)
    assert ok.returncode == 0 and "valid:" in ok.stdout
    bad = proc("verify", "--attestation", "-", "--public-key", str(pub), stdin=signed.stdout.replace(".", "!", 1))
    assert bad.returncode == 1
    missing = proc("verify", "--attestation", str(tmp_path / "none"), "--public-key", str(pub))
    assert missing.returncode == 2 and "cannot read the attestation" in missing.stderr


def test_verify_against_a_manifest_checks_the_namespace(tmp_path: Path, keys: tuple[Path, Path], report_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """An attestation signed for another namespace fails step 3 against the manifest (issue 14)."""
    elsewhere = tmp_path / "elsewhere.txt"
    code, _, err = run(capsys, "sign", "--report", str(report_file), "--key", str(keys[0]), "--output", str(elsewhere),
                       "--namespace", "ml-staging")
    assert code == 0, err
    code, out, _ = run(capsys, "verify", "--attestation", str(elsewhere), "--public-key", str(keys[1]),
                       "--manifest", str(manifest(tmp_path)))
    assert code == 1 and "issued for namespaces ml-staging, not for namespace ml-prod" in out, out
    by_env = tmp_path / "prod.txt"
    assert run(capsys, "sign", "--report", str(report_file), "--key", str(keys[0]), "--output", str(by_env),
               "--environment", "prod")[0] == 0
    code, out, _ = run(capsys, "verify", "--attestation", str(by_env), "--public-key", str(keys[1]),
                       "--manifest", str(manifest(tmp_path)), "--environment", "prod")
    assert code == 0, out
