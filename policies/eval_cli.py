"""`mlguard eval keygen|sign|verify`: the tooling of the CI eval job and of operators.

Exit codes: 0 ok / valid, 1 invalid attestation (`verify` only), 2 bad input (unreadable or
malformed files, an invalid report, a bad duration), always with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from policies.attestation import (
    ATTESTATION_ANNOTATION,
    DEFAULT_EXPIRES_IN,
    AttestationError,
    GateResult,
    Keyring,
    ReportError,
    check_attestation,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_keys,
    parse_duration,
    private_key_pem,
    public_key_pem,
    sign_report,
)
from policies.gpu import GpuConfig
from policies.library.eval_gate import serving_templates, subject_of
from policies.manifests import ManifestError, load_paths
from policies.workload import PodTemplate, extract

EXIT_OK, EXIT_INVALID, EXIT_BAD_INPUT = 0, 1, 2


def _err(message: str) -> None:
    print(f"mlguard eval: {message}", file=sys.stderr)


def _read(path: str, *, what: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise AttestationError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc


def _write_new(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise AttestationError(f"{path}: already exists; pass --force to overwrite it") from exc
    except OSError as exc:
        raise AttestationError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_private_key()
    try:
        _write_new(Path(args.private_key), private_key_pem(key), mode=0o600, force=args.force)
        _write_new(Path(args.public_key), public_key_pem(key.public_key()), mode=0o644, force=args.force)
    except AttestationError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    kid = key_id(key.public_key())
    print(f"key id {kid}: private key {args.private_key} (keep it in CI secrets only), "
          f"public key {args.public_key} (add it to the PolicySet's spec.evalKeys)")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        expires_in = parse_duration(args.expires_in) if args.expires_in else DEFAULT_EXPIRES_IN
        key = load_private_key(_read(args.key, what="private key"), source=args.key)
        raw = _read(args.report, what="eval report")
        try:
            report = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AttestationError(f"{args.report}: not JSON: {exc}") from exc
        if not args.namespace and not args.environment:
            raise AttestationError("name where the attestation may be used: --namespace NS and/or --environment ENV "
                                   "(repeatable); eval-gate refuses an attestation without them, so that one copied "
                                   "to another namespace counts for nothing")
        scope = {"namespaces": args.namespace or [], "environments": args.environment or []}
        attestation = sign_report(report, key, expires_in=expires_in, source=args.report, scope=scope)
    except ReportError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except AttestationError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.output:
        try:
            Path(args.output).write_text(attestation + "\n")
        except OSError as exc:
            _err(f"{args.output}: cannot write: {exc.strerror or exc}")
            return EXIT_BAD_INPUT
    else:
        print(attestation)
    print(f"signed with key {key_id(key.public_key())}; set it as pod-template annotation "
          "mlguard.io/eval-attestation", file=sys.stderr)
    return EXIT_OK


def _keyring(paths: list[str], revoked: list[str]) -> Keyring:
    keys = []
    for path in paths:
        keys.extend(load_public_keys(_read(path, what="public key"), source=path))
    return Keyring.of(keys, revoked=revoked)


def _manifest_targets(path: str) -> list[tuple[str, PodTemplate, str]]:
    """(name, template) of every model-serving pod template in a manifest file."""
    located = load_paths([path])
    objects = {(o.obj.get("kind"), (o.obj.get("metadata") or {}).get("name")): o.obj for o in located}

    def resolve(namespace: str, kind: str, name: str) -> Any:
        return objects.get((kind, name))

    out = []
    gpu = GpuConfig()
    for item in located:
        workload = extract(item.obj, gpu=gpu, resolve_object=resolve)
        for tpl in serving_templates(workload):
            out.append((f"{workload.resource} {tpl.metadata_path}", tpl, workload.resource.namespace))
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    if not args.attestation and not args.manifest:
        _err("give --attestation FILE, --manifest FILE, or both")
        return EXIT_BAD_INPUT
    try:
        text = (_read(args.attestation, what="attestation").decode("utf-8", errors="replace")
                if args.attestation else None)
        keyring = _keyring(args.public_key, args.revoked or [])
        targets = _manifest_targets(args.manifest) if args.manifest else []
    except (AttestationError, ManifestError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.manifest and not targets:
        _err(f"{args.manifest}: no model-serving workload (label mlguard.io/model on a pod template)")
        return EXIT_BAD_INPUT
    results: list[tuple[str, GateResult]] = []
    for name, tpl, namespace in targets:
        own = tpl.annotations.get(ATTESTATION_ANNOTATION)
        given = text if text is not None else (None if own is None else str(own))
        subject = subject_of(tpl, namespace=namespace, environment=args.environment)
        results.append((name, check_attestation(given, keyring=keyring, subject=subject, criteria=None)))
    if not targets:
        results.append((args.attestation, check_attestation(text, keyring=keyring, subject=None, criteria=None)))
    for name, result in results:
        print(f"{name}: {result.summary()}")
        if result.payload is not None and (result.ok or (result.step or 0) > 2):
            print(f"  metrics: {json.dumps(result.payload.get('metrics'), sort_keys=True)}")
    if any(r.ok for _, r in results):
        print("note: promotion criteria (step 5) are checked by `mlguard check --policyset FILE`")
    return EXIT_OK if all(r.ok for _, r in results) else EXIT_INVALID


def add_eval_parser(subparsers: Any) -> None:
    """Add `eval keygen|sign|verify` to the `mlguard` argument parser."""
    ev = subparsers.add_parser("eval", help="signed eval attestations: keygen, sign, verify",
                               description="Make keys, sign eval reports, verify attestations.")
    sub = ev.add_subparsers(dest="eval_command", required=True)

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair (PEM)",
                            description="Write a PKCS#8 private key (mode 0600) and its public key. Exit 0, "
                                        "or 2 when a file exists (without --force) or cannot be written.")
    keygen.add_argument("--private-key", required=True, metavar="FILE")
    keygen.add_argument("--public-key", required=True, metavar="FILE")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.set_defaults(func=cmd_keygen)

    sign = sub.add_parser("sign", help="sign an eval report; print the attestation",
                          description="Validate REPORT.json against the eval report schema and print a compact "
                                      "signed attestation for annotation mlguard.io/eval-attestation. Exit 0, or "
                                      "2 for bad input (every report error with its field path).")
    sign.add_argument("--report", required=True, metavar="REPORT.json", help="eval report (JSON; - for stdin)")
    sign.add_argument("--key", required=True, metavar="PRIVATE_KEY", help="Ed25519 private key (PEM)")
    sign.add_argument("--expires-in", default="30d", metavar="DURATION",
                      help="validity, e.g. 30d, 12h, 2w (default 30d)")
    sign.add_argument("--output", "-o", metavar="FILE", help="write the attestation to FILE instead of stdout")
    sign.add_argument("--namespace", action="append", metavar="NS",
                      help="a namespace the attestation may be used in (repeatable)")
    sign.add_argument("--environment", action="append", metavar="ENV",
                      help="an environment (the namespace label mlguard.io/environment, e.g. prod) the attestation "
                           "may be used in (repeatable); at least one --namespace or --environment is required")
    sign.set_defaults(func=cmd_sign)

    verify = sub.add_parser("verify", help="check an attestation offline, optionally against a manifest",
                            description="Check an attestation (steps 1-4 of eval-gate; step 3 only with "
                                        "--manifest) and say why it passes or fails. Exit 0 valid, 1 invalid, "
                                        "2 bad input.")
    verify.add_argument("--attestation", metavar="FILE",
                        help="the attestation (- for stdin); default with --manifest: each pod template's own "
                             "mlguard.io/eval-attestation annotation")
    verify.add_argument("--public-key", required=True, action="append", metavar="FILE",
                        help="trusted public key(s), PEM; repeat during a rotation")
    verify.add_argument("--revoked", action="append", metavar="KEYID", help="a revoked key id (repeatable)")
    verify.add_argument("--manifest", metavar="FILE",
                        help="check the attestation against the model-serving workloads of this manifest (and "
                             "their namespaces)")
    verify.add_argument("--environment", metavar="ENV",
                        help="with --manifest: the environment the manifest's namespaces belong to, for an "
                             "attestation scoped by environment")
    verify.set_defaults(func=cmd_verify)
