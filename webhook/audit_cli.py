"""`mlguard audit`: what already runs in a cluster, judged; OpenReports in the cluster.

    mlguard audit --kubeconfig FILE [--context NAME] [--policyset FILE] [--namespace NS]
                  [--format text|json|sarif|junit|github|openreports] [-o FILE] [--fail-on deny|warn]
                  [--prometheus URL] [--write-reports]
    python -m webhook audit --in-cluster --loop --interval 10m --write-reports --metrics-port 9102 ...

Exit codes as `mlguard check`: 0 nothing fails, 1 something would be denied (``--fail-on warn``: or
warned), 2 bad input (a kubeconfig, a PolicySet, a cluster that cannot be read, a report that cannot be
written). A finding a policy could not make (gpu-idle without Prometheus) is an ERROR line and an ``error``
result, counted at its policy's action like any other finding.

``--loop`` (the in-cluster audit, kustomize/components/audit) runs every ``--interval``, writes the
reports (server-side apply) and serves ``mlguard_audit_results`` on ``--metrics-port``; a failed run is
logged and counted (``mlguard_audit_runs_total{outcome="failed"}``), and the next one comes on time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from policies.check import CheckResult, LocatedViolation
from policies.model import Report
from policies.output import RENDERERS, summary_line
from policies.policyset import PolicySet, PolicySetError, default_policyset_path, load_policyset
from policies.sources import Location
from webhook import metrics
from webhook.audit import PAGE, Api, AuditError, AuditRun, prometheus_idle_reader, run_audit
from webhook.logging import get_logger
from webhook.openreports import ReportWriter, build_reports, counts, outcomes

log = get_logger("audit")
EXIT_OK, EXIT_DENIED, EXIT_BAD_INPUT = 0, 1, 2
FORMATS = sorted([*RENDERERS, "openreports"])
CLUSTER = "<cluster>"


def check_result(run: AuditRun) -> CheckResult:
    """The audit as `mlguard check`'s renderers read a run: every finding located at the cluster object."""
    report = Report()
    findings = []
    for j in run.judged:
        report.resources.append(j.outcome.resource)
        if j.outcome.exempt_reason:
            report.exempt.append((j.outcome.resource, j.outcome.exempt_reason))
        report.policy_errors.extend(j.outcome.errors)
        for v in j.outcome.violations:
            report.violations.append(v)
            findings.append(LocatedViolation(v, Location(CLUSTER, 0)))
        report.notes.extend(j.outcome.notes)
    return CheckResult(report, findings=findings, root=Path.cwd(), command="mlguard audit")


def render(run: AuditRun, fmt: str, fail_on: str) -> str:
    if fmt == "openreports":
        docs = [r for reports in build_reports(run).values() for r in reports]
        return yaml.safe_dump_all(docs, sort_keys=False) if docs else ""
    return RENDERERS[fmt](check_result(run), run.policyset, fail_on)


def failed(run: AuditRun, fail_on: str) -> bool:
    failing = ("deny",) if fail_on == "deny" else ("deny", "warn")
    return any(v.action in failing for j in run.judged for v in j.outcome.violations)


def describe(run: AuditRun) -> str:
    served = ", ".join(f"{k.kind}.{k.group or 'core'}/{k.version}" for k in run.listed.kinds)
    return (f"mlguard audit: {len(run.judged)} objects judged ({len(run.listed.owned)} owned objects judged through "
            f"their controllers) of the kinds served here: {served}; {len(run.listed.skipped_kinds)} known kinds "
            f"are not served; {run.requests} API requests, {run.seconds:.1f}s")


def api_client(args: argparse.Namespace) -> client.ApiClient:
    configuration = client.Configuration()
    if args.in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=args.kubeconfig, context=args.context,
                                client_configuration=configuration)
    return client.ApiClient(configuration)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=os.environ.get("MLGUARD_PROG") or "mlguard audit",
        description="Judge every workload the cluster runs (every kind mlguard understands that the API server "
                    "serves) at enforcement point `audit`. Read-only unless --write-reports. Exit 0 when nothing "
                    "fails, 1 when something would be denied (--fail-on warn: or warned), 2 for bad input.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig to read the cluster with")
    where.add_argument("--in-cluster", action="store_true", help="use the pod's ServiceAccount (the audit Deployment)")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current context)")
    p.add_argument("--policyset", metavar="FILE",
                   help=f"PolicySet file (default: the baseline catalog, {default_policyset_path().name})")
    p.add_argument("--namespace", "-n", metavar="NS", help="audit this namespace only (default: every namespace)")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="report format; openreports: the Report/ClusterReport objects --write-reports applies")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--fail-on", choices=["deny", "warn"], default="deny",
                   help="the weakest action that makes the audit fail (exit 1)")
    p.add_argument("--prometheus", metavar="URL", default=os.environ.get("MLGUARD_AUDIT_PROMETHEUS") or None,
                   help="Prometheus with kube-state-metrics and DCGM exporter series, for gpu-idle (without it, "
                        "gpu-idle reports an error result for each GPU serving workload)")
    p.add_argument("--write-reports", action="store_true",
                   help="keep one openreports.io Report per namespace (ClusterReport for cluster-scoped objects) "
                        "in the cluster, server-side applied; needs write access to openreports.io")
    p.add_argument("--own-namespace", metavar="NS", default=os.environ.get("MLGUARD_WEBHOOK_NAMESPACE") or None,
                   help="mlguard's own namespace, always exempt")
    p.add_argument("--page-size", type=int, default=PAGE, metavar="N",
                   help="objects per list request (the API server's limit/continue paging)")
    p.add_argument("--loop", action="store_true", help="run every --interval until stopped (the in-cluster audit)")
    p.add_argument("--interval", default="10m", help="time between runs with --loop: 30s, 10m, 1h")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="with --loop: serve /metrics (mlguard_audit_results ...) on this port")
    return p


def _interval(text: str) -> int:
    from policies.library.gpu_idle import seconds

    try:
        return seconds(text)
    except ValueError as exc:
        raise ValueError(f"--interval: {exc}") from None


def once(api: Api, policyset: PolicySet, args: argparse.Namespace, writer: ReportWriter | None) -> AuditRun:
    run = run_audit(api, policyset, namespace=args.namespace, own_namespace=args.own_namespace,
                    idle=prometheus_idle_reader(args.prometheus, policyset), page=args.page_size)
    if run.listed.forbidden:
        log.error("kinds not audited: list forbidden", extra={"event": "audit_forbidden",
                                                               "kinds": run.listed.forbidden})
    items = outcomes(run)
    if writer is not None:
        stats = writer.sync(build_reports(run, items), namespace=args.namespace)
        log.info("reports written", extra={"event": "audit_reports", "applied": stats.applied,
                                           "unchanged": stats.unchanged, "deleted": stats.deleted})
    metrics.set_audit_results(counts(items))
    metrics.AUDIT_OBJECTS.set(len(run.judged))
    return run


def loop(api: Api, args: argparse.Namespace) -> int:
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    writer = ReportWriter(api) if args.write_reports else None
    every = _interval(args.interval)
    while not stop.is_set():
        began = time.monotonic()
        try:
            # read each run: the PolicySet ConfigMap is updated in place by the kubelet
            policyset = load_policyset(args.policyset or default_policyset_path())
            run = once(api, policyset, args, writer)
            metrics.AUDIT_RUNS.labels("success").inc()
            metrics.AUDIT_DURATION.set(time.monotonic() - began)
            metrics.AUDIT_LAST_SUCCESS.set(time.time())
            log.info("audit done", extra={"event": "audit_run", "objects": len(run.judged),
                                          "requests": run.requests, "seconds": round(run.seconds, 3),
                                          "utilisation_unknown": run.utilisation_unknown})
            del run  # the next run must not find this one's objects still held (peak memory is one run's)
        except (PolicySetError, AuditError, ApiException, HTTPError, OSError) as exc:
            metrics.AUDIT_RUNS.labels("failed").inc()
            log.error("audit failed", extra={"event": "audit_failed", "error": str(exc)})
        stop.wait(max(0.0, every - (time.monotonic() - began)))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _interval(args.interval)
        if args.page_size < 1:
            raise ValueError(f"--page-size must be at least 1, got {args.page_size}")
    except ValueError as exc:
        print(f"mlguard audit: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        policyset = load_policyset(args.policyset or default_policyset_path())
        api = Api(api_client(args))
    except PolicySetError as exc:
        print(f"mlguard audit: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        where = "the in-cluster configuration" if args.in_cluster else f"--kubeconfig {args.kubeconfig}"
        print(f"mlguard audit: {where}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.loop:
        return loop(api, args)
    try:
        run = once(api, policyset, args, ReportWriter(api) if args.write_reports else None)
    except AuditError as exc:
        print(f"mlguard audit: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ApiException as exc:
        print(f"mlguard audit: the API server answered {exc.status} {exc.reason} "
              f"({(exc.body or b'')[:300]!r})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (HTTPError, OSError) as exc:
        print(f"mlguard audit: cannot reach the API server: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    text = render(run, args.format, args.fail_on)
    print(describe(run), file=sys.stderr)
    if run.utilisation_unknown:
        print(f"mlguard audit: gpu-idle: {run.utilisation_unknown}", file=sys.stderr)
    if run.listed.forbidden:
        print(f"mlguard audit: NOT AUDITED, the API server refused to list (403): {', '.join(run.listed.forbidden)}; "
              "grant get/list on them (kustomize/components/audit/rbac.yaml)", file=sys.stderr)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            print(f"mlguard audit: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(summary_line(check_result(run), args.fail_on), file=sys.stderr)
    else:
        sys.stdout.write(text)
    if run.listed.forbidden:
        return EXIT_BAD_INPUT  # an incomplete audit never reads as a clean one
    return EXIT_DENIED if failed(run, args.fail_on) else EXIT_OK
