"""``python -m rollouts report gpu ...`` (``mlguard report gpu ...`` runs it).

Exit codes: 0 the report was written (also when the window holds no GPU: it says so), 2 bad input
(a flag, the price file), 3 Prometheus could not answer (unreachable, timed out, refused a query,
answered too much): an error on stderr, never an empty report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from rollouts.errors import AnalysisError, ParamError
from rollouts.report import gpu_report
from rollouts.report.collect import DEFAULT_CHUNK_POINTS
from rollouts.report.prices import PriceFileError, load_prices
from rollouts.report.render import RENDERERS
from rollouts.report.settings import DIMENSIONS, PRICING_COLUMNS, ReportSettings, parse_duration
from rollouts.sources import Deadline
from rollouts.sources.prometheus import PrometheusSource

EXIT_OK, EXIT_BAD_INPUT, EXIT_SOURCE_ERROR = 0, 2, 3
DEFAULTS = ReportSettings()


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser("report", help="reports over what already runs")
    kinds = report.add_subparsers(dest="report", required=True)
    # `mlguard report gpu` hands over here naming itself in MLGUARD_PROG: the usage says what was typed
    prog = os.environ.get("MLGUARD_PROG", "")
    gpu = kinds.add_parser(
        "gpu", prog=prog if prog.startswith("mlguard report") else None,
        help="GPU allocation, utilisation, idle time and cost per namespace, team, cost center, model, class",
        description="Exit 0 with the report (also when no GPU was held), 2 for bad input, 3 when Prometheus "
                    "cannot answer.")
    gpu.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL")
    gpu.add_argument("--window", default="7d", help="how far back the report reaches (default 7d, at most 90d)")
    gpu.add_argument("--step", default="1m", help="resolution of allocation and idle time (default 1m)")
    gpu.add_argument("--end", metavar="TIME", help="end of the window: RFC 3339 or unix seconds (default now)")
    gpu.add_argument("--prices", metavar="FILE", help="price file (YAML/JSON, see README): adds the cost columns")
    gpu.add_argument("--format", choices=sorted(RENDERERS), default="table")
    gpu.add_argument("--by", default=",".join(DIMENSIONS), metavar="DIMS",
                     help=f"comma-separated dimensions of a row, among {','.join(DIMENSIONS)} (default: all)")
    gpu.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    judge = gpu.add_argument_group("idle")
    judge.add_argument("--idle-threshold", type=float, default=DEFAULTS.idle_threshold, metavar="PERCENT",
                       help=f"utilisation below which a GPU is idle (default {DEFAULTS.idle_threshold:g})")
    judge.add_argument("--grace", default=f"{DEFAULTS.grace_seconds // 60}m",
                       help="an idle stretch counts once it lasts at least this long (default 30m)")
    labels = gpu.add_argument_group("labels and names")
    labels.add_argument("--team-label", default=DEFAULTS.team_label, metavar="KEY")
    labels.add_argument("--cost-center-label", default=DEFAULTS.cost_center_label, metavar="KEY")
    labels.add_argument("--model-label", default=DEFAULTS.model_label, metavar="KEY")
    labels.add_argument("--gpu-class-label", action="append", metavar="KEY",
                        help="node label naming the GPU class, first present wins (repeatable; default "
                             f"{', '.join(DEFAULTS.gpu_class_labels)})")
    labels.add_argument("--capacity-type-label", default=DEFAULTS.capacity_type_label, metavar="KEY",
                        help="node label saying on-demand, spot or reserved (default %(default)s)")
    labels.add_argument("--default-pricing", choices=PRICING_COLUMNS, default=DEFAULTS.default_pricing,
                        help="price column for nodes without that label (default %(default)s)")
    labels.add_argument("--gpu-resource", action="append", metavar="NAME",
                        help=f"extended resource counted as a GPU, * at the end allowed (repeatable; default "
                             f"{', '.join(DEFAULTS.gpu_resources)})")
    labels.add_argument("--utilisation-metric", default=DEFAULTS.utilisation_metric, metavar="METRIC")
    labels.add_argument("--dcgm-pod-label", default=DEFAULTS.dcgm_pod_label, metavar="LABEL",
                        help="label of the utilisation series naming the pod (exported_pod without honorLabels)")
    labels.add_argument("--dcgm-namespace-label", default=DEFAULTS.dcgm_namespace_label, metavar="LABEL")
    limits = gpu.add_argument_group("limits")
    limits.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="per query (default 120)")
    limits.add_argument("--deadline", type=float, default=900.0, metavar="SECONDS",
                        help="for the whole report (default 900)")
    limits.add_argument("--max-bytes", type=int, default=32 << 20, metavar="BYTES",
                        help="largest answer accepted from Prometheus (default 32 MiB)")
    limits.add_argument("--chunk-points", type=int, default=DEFAULT_CHUNK_POINTS, help=argparse.SUPPRESS)  # tests


def parse_time(value: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ParamError(f"--end must be RFC 3339 (2026-01-31T00:00:00Z) or unix seconds, got {value!r}") from None
    if parsed.tzinfo is None:
        raise ParamError(f"--end needs a time zone (e.g. Z), got {value!r}")
    return parsed


def settings_from(args: argparse.Namespace) -> ReportSettings:
    return ReportSettings(
        window_seconds=parse_duration(args.window, name="--window"),
        step_seconds=parse_duration(args.step, name="--step", maximum=86400),
        idle_threshold=args.idle_threshold,
        grace_seconds=parse_duration(args.grace, name="--grace") if args.grace not in ("0", "0s") else 0,
        team_label=args.team_label, cost_center_label=args.cost_center_label, model_label=args.model_label,
        gpu_class_labels=tuple(args.gpu_class_label or DEFAULTS.gpu_class_labels),
        capacity_type_label=args.capacity_type_label, default_pricing=args.default_pricing,
        gpu_resources=tuple(args.gpu_resource or DEFAULTS.gpu_resources),
        utilisation_metric=args.utilisation_metric, dcgm_pod_label=args.dcgm_pod_label,
        dcgm_namespace_label=args.dcgm_namespace_label,
        group_by=tuple(d.strip() for d in args.by.split(",") if d.strip()),
    )


def _error(message: str, *, fmt: str, kind: str) -> None:
    if fmt == "json":
        print(json.dumps({"error": {"type": kind, "message": message}}))
    print(f"mlguard report gpu: {message}", file=sys.stderr)


def run_gpu(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        end = parse_time(args.end) if args.end else None
        if not (0 < args.timeout <= 3600 and 0 < args.deadline <= 86400 and args.max_bytes >= 65536):
            raise ParamError("--timeout must be in (0, 3600], --deadline in (0, 86400], --max-bytes at least 65536")
        prices = load_prices(args.prices) if args.prices else None
    except (ParamError, PriceFileError) as exc:
        _error(str(exc), fmt=args.format, kind="bad_input")
        return EXIT_BAD_INPUT
    source = PrometheusSource(args.prometheus, timeout=args.timeout, max_bytes=args.max_bytes)
    try:
        report = gpu_report(source, settings, deadline=Deadline(args.deadline), prices=prices, end=end,
                            chunk_points=args.chunk_points)
    except ParamError as exc:
        _error(str(exc), fmt=args.format, kind="bad_input")
        return EXIT_BAD_INPUT
    except AnalysisError as exc:
        _error(f"{exc.message} (no report: the data did not arrive)", fmt=args.format, kind=exc.kind)
        return EXIT_SOURCE_ERROR
    text = RENDERERS[args.format](report)
    if args.format == "csv":
        for warning in report.warnings:
            print(f"mlguard report gpu: note: {warning}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK
