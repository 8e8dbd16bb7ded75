"""The `mlguard` command line: check, test, export, facts, eval, serve, report.

Exit codes of `mlguard check`: 0 nothing fails (warnings and audit findings may be printed), 1 something is
denied (or, with ``--fail-on warn``, warned), 2 bad input (unparseable YAML, a kustomization that does not
render, an invalid PolicySet, a report that cannot be written). Commands that read a cluster (`facts`, `audit`) or
Prometheus (`report gpu`) and `serve` hand over to the package that owns the client or the server
(``python -m webhook ...``, ``python -m rollouts serve|report``), so this package never imports them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from policies.check import CheckOptions, CheckResult, run_check
from policies.eval_cli import add_eval_parser
from policies.manifests import ManifestError
from policies.output import CHUNKS, RENDERERS, mlguard_version, summary_line
from policies.policyset import PolicySet, PolicySetError, default_policyset_path, load_policyset
from policies.snapshot import ClusterSnapshot, SnapshotError
from policies.testing import LIBRARY, TestFileError, run_all

EXIT_OK, EXIT_DENIED, EXIT_BAD_INPUT = 0, 1, 2


def _err(message: str) -> None:
    print(f"mlguard: {message}", file=sys.stderr)


def _namespace_labels(path: str | None) -> dict[str, dict[str, str]]:
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(path, f"cannot read namespace labels: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ManifestError(path, "namespace labels must map namespace -> {label: value}")
    return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in data.items()}


def _write(text: str | Iterable[str], output: str | None) -> bool:
    """Write a report (whole, or in pieces as they are made) to stdout or ``output``."""
    chunks = [text] if isinstance(text, str) else text
    if not output:
        for chunk in chunks:
            sys.stdout.write(chunk)
        return True
    try:
        with Path(output).open("w") as f:
            for chunk in chunks:
                f.write(chunk)
    except OSError as exc:
        _err(f"cannot write the report to {output}: {exc.strerror or exc}")
        return False
    return True


def _input_problems(result: CheckResult, args: argparse.Namespace) -> bool:
    """Print what was skipped and every error (stderr); True when the input was bad (exit 2)."""
    for note in result.inputs:
        print(f"mlguard: {note}", file=sys.stderr)
    for error in result.errors:
        _err(str(error))
    bad = bool(result.errors)
    if args.strict_input:
        not_objects = [n for n in result.inputs if n.kind == "not-object"]
        if not_objects:
            _err(f"--strict-input: {len(not_objects)} document(s) are not Kubernetes objects (listed above)")
            bad = True
    if result.objects == 0 and not result.errors:
        _err(f"no Kubernetes objects found in {' '.join(args.paths)}"
             + ("" if args.require_objects else " (nothing was checked)"))
        bad = bad or args.require_objects
    return bad


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policyset = load_policyset(args.policyset or default_policyset_path())
        cluster = ClusterSnapshot.load(args.cluster_facts) if args.cluster_facts else None
        labels = _namespace_labels(args.namespace_labels)
    except (PolicySetError, ManifestError, SnapshotError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    for note in cluster.notes if cluster is not None else ():
        print(f"mlguard: {note}", file=sys.stderr)
    result = run_check(args.paths, CheckOptions(policyset=policyset, namespace_labels=labels, cluster=cluster,
                                                excludes=args.exclude or []))
    bad = _input_problems(result, args)
    if not _write(CHUNKS[args.format](result, policyset, args.fail_on), args.output):
        return EXIT_BAD_INPUT
    if args.output:
        print(summary_line(result, args.fail_on), file=sys.stderr)
    if bad:
        return EXIT_BAD_INPUT
    failing = ("deny",) if args.fail_on == "deny" else ("deny", "warn")
    return EXIT_DENIED if any(v.action in failing for v in result.report.violations) else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else LIBRARY
    if not root.exists():
        _err(f"{root}: no such directory")
        return EXIT_BAD_INPUT
    policyset: PolicySet | None = None
    try:
        if args.policyset:
            policyset = load_policyset(args.policyset)
        results = run_all(root, policyset=policyset)
    except (PolicySetError, TestFileError, ManifestError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if not results:
        _err(f"no test files (suite.yaml or *.mlguard-test.yaml) found under {root}")
        return EXIT_BAD_INPUT
    failed = [r for r in results if not r.ok]
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        print(f"{mark} {r.policy:<26} {r.name}")
        if not r.ok:
            print("     " + r.detail.replace("\n", "\n     "))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from policies.rules.vap import export_vap

    try:
        policyset = load_policyset(args.policyset)
    except PolicySetError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    result = export_vap(policyset, own_namespace=args.webhook_namespace)
    for pid, why in result.skipped:
        _err(f"not exported: {pid}: {why}")
    if not _write(result.to_yaml(), args.output):
        return EXIT_BAD_INPUT
    print(f"mlguard export vap: {len(result.exported)} exported ({', '.join(result.exported) or 'none'}), "
          f"{len(result.skipped)} not exported", file=sys.stderr)
    return EXIT_OK


def _handover(module: str, command: str, rest: list[str], *, prog: str) -> int:
    argv = [sys.executable, "-m", module, command, *rest]
    os.execve(sys.executable, argv, {**os.environ, "MLGUARD_PROG": prog})
    return EXIT_BAD_INPUT  # pragma: no cover - execv does not return


def cmd_serve(args: argparse.Namespace) -> int:
    module = {"webhook": "webhook", "analysis": "rollouts"}[args.component]
    return _handover(module, "serve", args.rest, prog=f"mlguard serve {args.component}")


def cmd_report(args: argparse.Namespace) -> int:
    return _handover("rollouts", "report", [args.kind, *args.rest], prog=f"mlguard report {args.kind}")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (where it has one worth showing), keeps descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text \
                and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlguard", description="GPU-inference guardrails for Kubernetes.",
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"mlguard {mlguard_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser(
        "check", help="check manifests against a PolicySet (CI, before Argo CD syncs)", formatter_class=_Formatter,
        description="Check a GitOps repository, some of its files or directories, or stdin.\n\n"
                    "Exit 0 when nothing fails, 1 when something is denied (--fail-on warn: or warned), 2 for bad\n"
                    "input. A kustomization directory is rendered with `kubectl kustomize`; the files it reads\n"
                    "(patches, bases) are checked through it; Helm charts and YAML that is not a Kubernetes\n"
                    "object are reported on stderr and skipped.")
    check.add_argument("paths", nargs="+", metavar="PATH",
                       help="a file, a directory (walked; a kustomization directory is rendered), or - for stdin")
    check.add_argument("--policyset", metavar="FILE", help="PolicySet file (default: the baseline catalog, "
                                                           f"{default_policyset_path().name})")
    check.add_argument("--format", choices=sorted(RENDERERS), default="text", help="report format")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    check.add_argument("--fail-on", choices=["deny", "warn"], default="deny",
                       help="the weakest action that makes the check fail (exit 1)")
    check.add_argument("--exclude", action="append", metavar="GLOB",
                       help="skip paths matching GLOB (.gitignore rules; repeatable; .mlguardignore files too)")
    check.add_argument("--cluster-facts", metavar="FILE",
                       help="cluster snapshot written by `mlguard facts` (quotas, namespace labels, nodes, GPU usage "
                            "and its owners, KEDA ScaledObjects)")
    check.add_argument("--namespace-labels", metavar="FILE",
                       help="YAML map of namespace -> labels, for namespaces not in the manifests")
    check.add_argument("--strict-input", action="store_true",
                       help="YAML that is not a Kubernetes object is an error (exit 2), not skipped")
    check.add_argument("--require-objects", action="store_true",
                       help="finding no Kubernetes object at all is an error (exit 2)")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser(
        "test", help="run policy test cases (the library's, or a team's own against its PolicySet)",
        formatter_class=_Formatter,
        description="Run every suite.yaml and *.mlguard-test.yaml under DIR. Exit 0 when all pass, 1 when one\n"
                    "fails, 2 for a malformed test file (named with its line).")
    test.add_argument("dir", nargs="?", metavar="DIR", help="directory to search (default: the policy library)")
    test.add_argument("--policyset", metavar="FILE",
                      help="run the cases against this PolicySet instead of each suite's own one-policy set")
    test.set_defaults(func=cmd_test)

    export = sub.add_parser(
        "export", help="export rules and built-in policies as ValidatingAdmissionPolicies (no cluster needed)",
        formatter_class=_Formatter,
        description="mlguard export vap --policyset FILE [-o FILE]\n\n"
                    "Writes a ValidatingAdmissionPolicy and Binding (admissionregistration.k8s.io/v1) for every rule\n"
                    "whose expressions use only what the API server offers, and for the built-in policies with an\n"
                    "exact CEL form; what is not exported is listed on stderr with why. Exit 0, or 2 for bad input.")
    export.add_argument("format", choices=["vap"], help="what to export (vap: ValidatingAdmissionPolicy)")
    export.add_argument("--policyset", metavar="FILE", required=True, help="the PolicySet to export")
    export.add_argument("--output", "-o", metavar="FILE", help="write the manifests to FILE instead of stdout")
    export.add_argument("--webhook-namespace", default="mlguard-system",
                        help="the namespace mlguard runs in: exempt, as the webhook exempts its own")
    export.set_defaults(func=cmd_export)

    # `mlguard facts ...` is handed over before parsing (main); listed here for the usage text
    sub.add_parser("facts", help="snapshot a cluster's quotas, namespace labels and GPU usage for "
                                 "`check --cluster-facts` (--kubeconfig FILE [--context NAME] [-o FILE])")

    sub.add_parser("audit", help="judge what already runs in a cluster; OpenReports in the cluster "
                                 "(--kubeconfig FILE [--policyset FILE] [--namespace NS] [--format ...])")

    add_eval_parser(sub)

    serve = sub.add_parser("serve", help="run the admission webhook or the analysis provider under gunicorn")
    serve.add_argument("component", choices=["webhook", "analysis"])
    serve.add_argument("rest", nargs=argparse.REMAINDER,
                       help="webhook: --host H --port P --cert F --key F [--policyset FILE]; "
                            "analysis: --host H --port P [--config FILE] [--prometheus URL] "
                            "[--sample-store NAME=DIR_OR_URL]")
    serve.set_defaults(func=cmd_serve)

    report = sub.add_parser("report", help="reports from Prometheus over what already runs",
                            description="`mlguard report gpu --help` lists the flags (python -m rollouts report gpu).")
    report.add_argument("kind", choices=["gpu"], help="gpu: allocation, idle time and cost per team and model")
    report.add_argument("rest", nargs=argparse.REMAINDER,
                        help="--prometheus URL [--window 7d] [--prices FILE] [--format table|json|csv] ...")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] in (["facts"], ["audit"]):  # every flag, --help included, is the webhook package's to parse
        return _handover("webhook", given[0], given[1:], prog=f"mlguard {given[0]}")
    parser = build_parser()
    args = parser.parse_args(given)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
