"""``python -m rollouts serve ...`` (gunicorn), ``python -m rollouts check ...`` (job mode) and
``python -m rollouts report gpu ...`` (GPU allocation, idle time and cost; see rollouts/report/).

serve: ``--host H --port P [--config FILE] [--prometheus URL] [--sample-store NAME=DIR_OR_URL ...]
[--workers N]``; the flags are handed to the gunicorn workers as ``MLGUARD_ANALYSIS_*`` variables.

check (for Argo's ``job`` metric provider): ``CHECK [--param k=v ...] [--config FILE]
[--prometheus URL] [--sample-store ...] [--format json|text]``; exit 0 pass, 1 fail,
2 inconclusive, 3 error.

report gpu: ``--prometheus URL [--window 7d] [--prices FILE] [--format table|json|csv] ...``; exit 0
report, 2 bad input, 3 Prometheus error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rollouts.config import ENV_PREFIX, ConfigError, load_config, parse_store_spec
from rollouts.report.cli import add_report_parser, run_gpu

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}
EXIT_ERROR = 3


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="analysis config YAML file")
    parser.add_argument("--prometheus", help="Prometheus base URL, e.g. http://prometheus:9090")
    parser.add_argument(
        "--sample-store", action="append", default=[], metavar="NAME=DIR_OR_URL",
        help="a named sample store (repeatable)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.config:
        overrides["config_file"] = args.config
    if args.prometheus:
        overrides["prometheus_url"] = args.prometheus
    if args.sample_store:
        overrides["sample_stores"] = dict(parse_store_spec(s) for s in args.sample_store)
    return overrides


def _serve(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    cfg = load_config(overrides)  # fail fast, before gunicorn, on a bad config
    env = dict(os.environ)
    if args.config:
        env[ENV_PREFIX + "CONFIG"] = os.path.abspath(args.config)
    if args.prometheus:
        env[ENV_PREFIX + "PROMETHEUS"] = args.prometheus
    if args.sample_store:
        env[ENV_PREFIX + "SAMPLE_STORES"] = json.dumps(
            {name: (loc if loc.startswith(("http://", "https://")) else os.path.abspath(loc))
             for name, loc in cfg.sample_stores.items() if name in overrides.get("sample_stores", {})}
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    env[ENV_PREFIX + "BIND"] = f"{host}:{args.port}"
    if args.workers:
        env[ENV_PREFIX + "WORKERS"] = str(args.workers)
    conf = str(Path(__file__).with_name("gunicorn.conf.py"))
    argv = [sys.executable, "-m", "gunicorn", "-c", conf, "rollouts.app:create_app()"]
    os.execvpe(sys.executable, argv, env)
    return 0  # not reached


def _check(args: argparse.Namespace) -> int:
    from rollouts.errors import AnalysisError
    from rollouts.service import AnalysisService
    from rollouts.verdict import link_runbooks

    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(json.dumps({"error": {"type": "bad_parameter", "message": f"--param needs k=v, got {item!r}"}}))
            return EXIT_ERROR
        params[key] = value
    try:
        config = load_config(_overrides(args))
        service = AnalysisService(config)
        verdict = service.analyze(args.check, params, caller="job")
    except ConfigError as exc:
        _emit({"error": {"type": "config_error", "message": str(exc)}}, args.format, error=True)
        return EXIT_ERROR
    except AnalysisError as exc:
        _emit(link_runbooks(exc.to_json(), config.runbook_base_url), args.format, error=True)
        return EXIT_ERROR
    body = link_runbooks(verdict.to_json(), config.runbook_base_url)
    _emit(body, args.format, error=False)
    return EXIT[verdict.verdict]


def _emit(body: dict[str, Any], fmt: str, *, error: bool) -> None:
    if fmt == "json":
        print(json.dumps(body, sort_keys=False))
    elif error:
        err = body["error"]
        print(f"error ({err.get('type')}): {err.get('message')}")
    else:
        print(f"{body['check']}: {body['verdict'].upper()} ({body['method']}, p={body['p_value']}, "
              f"samples={body['samples']}, mode={body['mode']})\n{body['reason']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rollouts", description="mlguard analysis provider")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP provider under gunicorn")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=0, help="gunicorn workers (default 2)")
    _add_source_flags(serve)
    check = sub.add_parser("check", help="run one check once (Argo job provider); exit 0/1/2/3")
    check.add_argument("check")
    check.add_argument("--param", action="append", default=[], metavar="K=V")
    check.add_argument("--format", choices=("json", "text"), default="json")
    _add_source_flags(check)
    add_report_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "report":
        return run_gpu(args)
    try:
        if args.command == "serve":
            return _serve(args)
        return _check(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if args.command == "serve" else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
