"""The `mlguard` command line: check, test, eval, serve.

Exit codes of `mlguard check`: 0 nothing denied, 1 something denied, 2 bad input (unparseable YAML,
unknown file, invalid PolicySet). `serve` hands over to the webhook / analysis provider processes
(`python -m webhook serve`, `python -m rollouts serve`) so this package never imports them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.eval_cli import add_eval_parser
from policies.manifests import ManifestError, load_paths
from policies.model import Report, Resource
from policies.output import RENDERERS
from policies.policyset import PolicySet, PolicySetError, default_policyset_path, load_policyset
from policies.testing import LIBRARY, run_all

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


def run_check(paths: Sequence[str], policyset: PolicySet, *, namespace_labels: dict[str, dict[str, str]] | None = None,
              ) -> tuple[Report, dict[Resource, tuple[str, int]]]:
    """Load, evaluate (point `ci`) and attach where each resource came from."""
    located = load_paths(list(paths))
    objects = [item.obj for item in located]
    facts = ManifestFacts(objects, extra_labels=namespace_labels)
    report = evaluate(objects, policyset, point="ci", facts=facts)
    locations: dict[Resource, tuple[str, int]] = {}
    for item, resource in zip(located, report.resources, strict=True):
        locations.setdefault(resource, (item.source, item.line))
    for item in located:  # workloadRef findings name the Deployment: locate every object
        locations.setdefault(Resource.of(item.obj), (item.source, item.line))
    return report, locations


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policyset = load_policyset(args.policyset or default_policyset_path())
        report, locations = run_check(args.paths, policyset, namespace_labels=_namespace_labels(args.namespace_labels))
    except (PolicySetError, ManifestError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    out = RENDERERS[args.format](report, locations)
    if args.output:
        Path(args.output).write_text(out)
    else:
        sys.stdout.write(out)
    return EXIT_DENIED if report.denied else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else LIBRARY
    if not root.exists():
        _err(f"{root}: no such directory")
        return EXIT_BAD_INPUT
    try:
        results = run_all(root)
    except (PolicySetError, ManifestError, KeyError, OSError, yaml.YAMLError) as exc:
        _err(f"cannot run the policy tests: {exc}")
        return EXIT_BAD_INPUT
    if not results:
        _err(f"no suite.yaml found under {root}")
        return EXIT_BAD_INPUT
    failed = [r for r in results if not r.ok]
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        print(f"{mark} {r.policy:<26} {r.name}")
        if not r.ok:
            print("     " + r.detail.replace("\n", "\n     "))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    module = {"webhook": "webhook", "analysis": "rollouts"}[args.component]
    argv = [sys.executable, "-m", module, "serve", *args.rest]
    os.execv(sys.executable, argv)
    return EXIT_BAD_INPUT  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlguard", description="GPU-inference guardrails for Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="check manifests against a PolicySet (CI, before Argo CD syncs)",
                           description="Exit 0 when nothing is denied, 1 when something is, 2 for bad input.")
    check.add_argument("paths", nargs="+", metavar="PATH",
                       help="files, directories (a kustomization directory is rendered), or - for stdin")
    check.add_argument("--policyset", metavar="FILE", help="PolicySet file (default: the baseline catalog)")
    check.add_argument("--format", choices=sorted(RENDERERS), default="text")
    check.add_argument("--namespace-labels", metavar="FILE",
                       help="YAML map of namespace -> labels, for namespaces not in the manifests")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run the policy test cases (suite.yaml files)")
    test.add_argument("dir", nargs="?", metavar="DIR", help="directory to search (default: the policy library)")
    test.set_defaults(func=cmd_test)

    add_eval_parser(sub)

    serve = sub.add_parser("serve", help="run the admission webhook or the analysis provider under gunicorn")
    serve.add_argument("component", choices=["webhook", "analysis"])
    serve.add_argument("rest", nargs=argparse.REMAINDER,
                       help="webhook: --host H --port P --cert F --key F [--policyset FILE]; "
                            "analysis: --host H --port P [--config FILE] [--prometheus URL] "
                            "[--sample-store NAME=DIR_OR_URL]")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
