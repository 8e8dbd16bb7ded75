"""Checkers for what runbooks show: each returns a list of problems (empty when the thing is fine).

Real tools, no imitations: kubectl commands are parsed by kubectl itself (``--help`` appended, so
cobra validates the subcommand and every flag and then prints help instead of calling a cluster);
mlguard commands by the CLI's own argparse parser; ``python -m rollouts`` commands by its
``main`` with the actions replaced; PromQL by ``promtool check rules``; promtool commands by
promtool (kingpin validates flags before ``--help``). Only ``kubectl argo rollouts`` is checked
against a table (the plugin is not installed here), taken from the plugin's reference pages.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

# The fixed metric names (webhook and analysis provider); histograms add _bucket/_sum/_count.
MLGUARD_METRICS = frozenset({
    "mlguard_admission_requests_total", "mlguard_violations_total",
    "mlguard_policyset_reloads_total", "mlguard_policyset_refused", "mlguard_cache_synced",
    "mlguard_policy_errors_total", "mlguard_break_glass_total", "mlguard_runtimeclass_missing",
    "mlguard_analysis_requests_total", "mlguard_analysis_source_errors_total", "mlguard_analysis_rejected_total",
    "mlguard_webhook_connections", "mlguard_webhook_connection_limit",
    "mlguard_webhook_connections_saturated_total", "mlguard_webhook_connections_closed_total",
    "mlguard_audit_results", "mlguard_audit_runs_total", "mlguard_audit_duration_seconds",
    "mlguard_audit_last_success_timestamp_seconds", "mlguard_audit_objects",
})
MLGUARD_HISTOGRAMS = frozenset({"mlguard_admission_duration_seconds", "mlguard_analysis_duration_seconds"})
METRIC_NAME = re.compile(r"\bmlguard_[a-z_]+\b")

# kubectl-argo-rollouts: subcommand -> (required second word or None, flags of its own).
# https://argoproj.github.io/argo-rollouts/generated/kubectl-argo-rollouts/kubectl-argo-rollouts/
ARGO_GLOBAL_FLAGS = frozenset({
    "-n", "--namespace", "--context", "--cluster", "--kubeconfig", "--as", "--as-group", "--as-uid",
    "-h", "--help", "--request-timeout", "-v", "--loglevel", "--user", "-s", "--server",
})
ARGO_SUBCOMMANDS: dict[str, tuple[frozenset[str] | None, frozenset[str]]] = {
    "abort": (None, frozenset()),
    "promote": (None, frozenset({"--full"})),
    "retry": (frozenset({"rollout", "experiment"}), frozenset()),
    "get": (frozenset({"rollout", "experiment", "ro", "rollouts", "exp"}),
            frozenset({"-w", "--watch", "--no-color", "--timeout-seconds", "-o", "--output"})),
    "status": (None, frozenset({"-w", "--watch", "-t", "--timeout"})),
    "undo": (None, frozenset({"--to-revision"})),
    "pause": (None, frozenset()),
    "restart": (None, frozenset({"-i", "--in"})),
    "set": (frozenset({"image"}), frozenset()),
    "list": (frozenset({"rollouts", "rollout", "ro", "experiments", "experiment", "exp"}),
             frozenset({"-A", "--all-namespaces", "--name", "-w", "--watch", "--timestamps"})),
    "terminate": (frozenset({"analysisrun", "experiment"}), frozenset()),
    "lint": (None, frozenset({"-f", "--filename"})),
    "version": (None, frozenset({"--short"})),
    "create": (None, frozenset({"-f", "--filename"})),
    "dashboard": (None, frozenset({"-p", "--port", "--root-path"})),
    "notifications": (None, frozenset()),
    "completion": (None, frozenset()),
}


def _flag(word: str) -> str | None:
    return word.split("=", 1)[0] if word.startswith("-") and word != "-" else None


def check_argo_rollouts(argv: list[str]) -> list[str]:
    """``kubectl argo rollouts SUB ...``: the subcommand exists, its object kind and flags too."""
    words = argv[3:]
    positional = [w for w in words if not w.startswith("-")]
    if not positional:
        return ["no subcommand"]
    sub = positional[0]
    if sub not in ARGO_SUBCOMMANDS:
        return [f"unknown subcommand {sub!r} (known: {', '.join(sorted(ARGO_SUBCOMMANDS))})"]
    kinds, flags = ARGO_SUBCOMMANDS[sub]
    problems = []
    if kinds is not None and (len(positional) < 2 or positional[1] not in kinds):
        problems.append(f"`{sub}` needs one of {sorted(kinds)} next")
    for word in words:
        flag = _flag(word)
        if flag and flag not in flags | ARGO_GLOBAL_FLAGS:
            problems.append(f"`{sub}` has no flag {flag}")
    return problems


# A kubeconfig whose server refuses at once: `--help` never calls a server, and if a command ever
# did, it could reach nothing (kubectl's fallback without a config is localhost:8080).
NOWHERE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nowhere}}]
users: [{name: nowhere, user: {}}]
current-context: nowhere
"""


@functools.cache
def _nowhere_kubeconfig() -> str:
    with tempfile.NamedTemporaryFile("w", prefix="runbook-kubeconfig-", suffix=".yaml",
                                     delete=False) as handle:
        handle.write(NOWHERE_KUBECONFIG)
    atexit.register(os.unlink, handle.name)
    return handle.name


@functools.cache
def _kubectl_rc(argv: tuple[str, ...]) -> tuple[int, str]:
    args = list(argv[1:])
    if "--" in args:  # flags after -- belong to the remote command
        args = args[: args.index("--")]
    env = {**os.environ, "KUBECONFIG": _nowhere_kubeconfig()}
    proc = subprocess.run(["kubectl", *args, "--help"], capture_output=True, text=True, timeout=30,
                          env=env, check=False)
    return proc.returncode, (proc.stderr or "").strip().splitlines()[0] if proc.stderr.strip() else ""


def check_kubectl(argv: list[str]) -> list[str]:
    """kubectl parses the command (subcommand and flags) and prints help: exit 0."""
    rc, err = _kubectl_rc(tuple(argv))
    return [] if rc == 0 else [f"kubectl rejects it: {err}"]


def check_mlguard(argv: list[str], mlguard_args: list[str]) -> list[str]:
    """The lead's argparse parser accepts the arguments (exit 2 means a parse error)."""
    from policies.cli import build_parser

    parser = build_parser()
    if mlguard_args[:1] == ["audit"]:  # handed over before parsing: the webhook package's parser decides
        from webhook.audit_cli import parser as audit_parser

        parser, mlguard_args = audit_parser(), mlguard_args[1:]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(mlguard_args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return [f"mlguard's parser exits {exc.code}: {stderr.getvalue().strip().splitlines()[-1:]}"]
    if mlguard_args[:1] == ["report"]:  # mlguard execs `python -m rollouts report ...`: its parser decides
        return check_rollouts(["python", "-m", "rollouts", *mlguard_args])
    return []


def check_rollouts(argv: list[str]) -> list[str]:
    """``python -m rollouts check CHECK --param k=v ...``: rollouts' own parser accepts it, the check
    exists and every parameter is one the check takes."""
    import rollouts.__main__ as entry
    from rollouts.checks import COMMON_PARAMS, _registry
    from rollouts.errors import ParamError
    from rollouts.params import Params
    from rollouts.report.cli import settings_from

    seen: list[object] = []
    saved = entry._check, entry._serve, entry.run_gpu
    entry._check = entry._serve = entry.run_gpu = lambda args: seen.append(args) or 0  # type: ignore[assignment]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            entry.main(argv[3:])
    except SystemExit as exc:
        if exc.code not in (0, None):
            return [f"rollouts' parser exits {exc.code}: {stderr.getvalue().strip().splitlines()[-1:]}"]
        return []
    finally:
        entry._check, entry._serve, entry.run_gpu = saved
    if seen and getattr(seen[0], "command", None) == "report":
        try:
            settings_from(seen[0])  # the values too: --by dimensions, durations, label keys
        except ParamError as exc:
            return [str(exc)]
        return []
    if not seen or getattr(seen[0], "command", None) != "check":
        return []
    args = seen[0]
    registry = _registry()
    if args.check not in registry:
        return [f"unknown check {args.check!r} (known: {', '.join(sorted(registry))})"]
    values = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return [f"--param needs k=v, got {item!r}"]
        values[key] = value
    params = Params(values)
    module = registry[args.check]
    allowed = module.allowed_params(params) if hasattr(module, "allowed_params") else module.PARAMS
    try:
        params.check_known(COMMON_PARAMS | allowed, check=args.check)
    except ParamError as exc:
        return [str(exc)]
    return []


@functools.cache
def _promtool_rc(argv: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=30, check=False)
    return proc.returncode, proc.stderr.strip()


def check_promtool(argv: list[str]) -> list[str]:
    """promtool accepts the subcommand and flags; a query's expression must parse too."""
    rc, err = _promtool_rc(tuple(argv))
    problems = [] if rc == 0 else [f"promtool rejects it: {err}"]
    if argv[1:3] in (["query", "instant"], ["query", "range"]):
        positional = [w for w in argv[3:] if not w.startswith("-")]
        if len(positional) >= 2:
            problems += promql_problems([positional[1]]).get(0, [])
        else:
            problems.append("promtool query needs a server and an expression")
    return problems


JQ_TWO_VALUE_OPTIONS = frozenset({"--arg", "--argjson", "--slurpfile", "--rawfile"})
JQ_ONE_VALUE_OPTIONS = frozenset({"--indent", "-L"})


def jq_filter(argv: list[str]) -> str | None:
    """The filter of a jq command line (the first argument that is not an option or its value)."""
    words = iter(argv[1:])
    for word in words:
        if word in JQ_TWO_VALUE_OPTIONS:
            next(words, None)
            next(words, None)
        elif word in JQ_ONE_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def check_jq(argv: list[str]) -> list[str]:
    """jq compiles the filter (exit 3 is a compile error; runtime errors on null input are fine)."""
    text = jq_filter(argv)
    if text is None:
        return ["jq without a filter"]
    names = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w in JQ_TWO_VALUE_OPTIONS]
    bind = [arg for name in names for arg in ("--argjson", name, "null")]
    proc = subprocess.run(["jq", "-n", *bind, text], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, check=False)
    return [f"jq cannot compile {text!r}: {proc.stderr.strip()}"] if proc.returncode == 3 else []


def check_command(argv: list[str]) -> list[str]:
    """Dispatch on the program; programs we do not check (jq, curl, ...) have no problems."""
    from runbook_lib import mlguard_argv, program_of

    program = program_of(argv)
    if program == "kubectl-argo-rollouts":
        return check_argo_rollouts(argv)
    if program == "kubectl":
        return check_kubectl(argv)
    if program == "mlguard":
        return check_mlguard(argv, mlguard_argv(argv))
    if program == "rollouts":
        return check_rollouts(argv)
    if program == "promtool":
        return check_promtool(argv)
    if program == "jq":
        return check_jq(argv)
    return []


def promql_problems(expressions: Iterable[str]) -> dict[int, list[str]]:
    """Parse each expression with ``promtool check rules`` (as an alert's expr); problems by index.

    Every expression is checked alone, so one bad expression names itself.
    """
    out: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="runbook-promql-") as tmp:
        for index, expr in enumerate(expressions):
            problems = [f"unknown mlguard metric {name}" for name in metric_names(expr)
                        if not known_metric(name)]
            rule = {"alert": f"RunbookExpr{index}", "expr": expr}
            rules = {"groups": [{"name": "runbook", "rules": [rule]}]}
            path = Path(tmp) / f"expr{index}.yaml"
            path.write_text(yaml.safe_dump(rules, sort_keys=False))
            proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                                  timeout=30, check=False)
            if proc.returncode != 0:
                problems.append("promtool: " + " ".join((proc.stderr + proc.stdout).split())[:400])
            if problems:
                out[index] = problems
    return out


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', '""', expr)  # label values may mention anything
    return set(METRIC_NAME.findall(text))


def known_metric(name: str) -> bool:
    if name in MLGUARD_METRICS or name in MLGUARD_HISTOGRAMS:
        return True
    base, _, suffix = name.rpartition("_")
    return suffix in ("bucket", "sum", "count") and base in MLGUARD_HISTOGRAMS
