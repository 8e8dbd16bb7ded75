"""The GPU report as a table (people), JSON (programs) or CSV (spreadsheets).

Unknown is never printed as zero: utilisation and idle hours without measurements, costs without a
price and per-request costs without request counters are ``-`` in the table, ``null`` in JSON and
empty in CSV.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from rollouts.report import GpuReport
from rollouts.report.compute import Row
from rollouts.report.settings import DIMENSIONS

HEADINGS = {"namespace": "NAMESPACE", "team": "TEAM", "cost_center": "COST-CENTER", "model": "MODEL",
            "gpu_class": "GPU-CLASS"}


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _costed(row: Row, report: GpuReport) -> bool:
    """A price file was given and some of the row's hours have a price (else its cost is unknown, not 0)."""
    return report.prices is not None and (row.gpu_hours == 0 or row.unpriced_gpu_hours < row.gpu_hours)


def row_json(row: Row, report: GpuReport) -> dict[str, Any]:
    window_hours = report.settings.window_seconds / 3600
    priced = _costed(row, report)
    return {
        **row.key,
        "pods": row.pods,
        "gpus_now": _r(row.gpus_now),
        "gpus_average": _r(row.gpu_hours / window_hours),
        "gpu_hours": _r(row.gpu_hours),
        "utilisation_percent": _r(row.utilisation_pct, 3),
        "idle_gpu_hours": _r(row.idle_gpu_hours) if row.measured_gpu_hours > 0 else None,
        "idle_percent": _r(row.idle_pct, 3),
        "unmeasured_gpu_hours": _r(row.unmeasured_gpu_hours),
        "cost": _r(row.cost, 4) if priced else None,
        "idle_cost": _r(row.idle_cost, 4) if priced and row.measured_gpu_hours > 0 else None,
        "unpriced_gpu_hours": _r(row.unpriced_gpu_hours) if report.prices is not None else None,
        "requests": _r(row.requests, 3),
        "generated_tokens": _r(row.tokens, 3),
        "cost_per_1k_requests": _r(row.cost_per_1k_requests(), 6) if priced else None,
        "cost_per_1m_tokens": _r(row.cost_per_1m_tokens(), 6) if priced else None,
    }


def to_json(report: GpuReport) -> dict[str, Any]:
    s = report.settings
    return {
        "report": "gpu",
        "window": {"start": report.start.isoformat(), "end": report.end.isoformat(),
                   "seconds": s.window_seconds, "step_seconds": s.step_seconds},
        "settings": {"idle_threshold_percent": s.idle_threshold, "grace_seconds": s.grace_seconds,
                     "group_by": [d for d in DIMENSIONS if d in s.group_by],
                     "pod_labels": dict(s.pod_label_keys), "gpu_class_labels": list(s.gpu_class_labels),
                     "capacity_type_label": s.capacity_type_label, "default_pricing": s.default_pricing,
                     "gpu_resources": list(s.gpu_resources), "utilisation_metric": s.utilisation_metric},
        "currency": report.prices.currency if report.prices else None,
        "prices": report.prices.source if report.prices else None,
        "no_data": report.no_data,
        "rows": [row_json(r, report) for r in report.rows],
        "total": row_json(report.total, report),
        "warnings": report.warnings,
        "queries": {"instant": report.queries.instant, "range": report.queries.range,
                    "split": report.queries.split, "seconds": round(report.queries.seconds, 3)},
    }


def render_json(report: GpuReport) -> str:
    return json.dumps(to_json(report), indent=2) + "\n"


def render_csv(report: GpuReport) -> str:
    """One line per row (no total line: a spreadsheet sums); warnings go to stderr (the CLI)."""
    rows = [row_json(r, report) for r in report.rows]
    columns = list(row_json(report.total, report).keys())
    dims = [d for d in DIMENSIONS if d in report.settings.group_by]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=dims + columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(report: GpuReport) -> str:
    s = report.settings
    dims = [d for d in DIMENSIONS if d in s.group_by]
    priced = report.prices is not None
    currency = report.prices.currency if report.prices else ""
    head = [HEADINGS[d] for d in dims] + ["PODS", "GPUS", "GPU-HOURS", "UTIL%", "IDLE-HOURS", "IDLE%", "UNMEASURED"]
    if priced:
        head += [f"COST {currency}", "IDLE-COST", "PER-1K-REQ", "PER-1M-TOK"]

    def cells(row: Row, key: list[str]) -> list[str]:
        measured = row.measured_gpu_hours > 0
        out = [*key, str(row.pods), _fmt(row.gpus_now, 0), _fmt(row.gpu_hours), _fmt(row.utilisation_pct),
               _fmt(row.idle_gpu_hours if measured else None), _fmt(row.idle_pct), _fmt(row.unmeasured_gpu_hours)]
        if priced:
            if _costed(row, report):
                cost = _fmt(row.cost, 2) + ("*" if row.unpriced_gpu_hours > 0 else "")
                out += [cost, _fmt(row.idle_cost if measured else None, 2), _fmt(row.cost_per_1k_requests(), 4),
                        _fmt(row.cost_per_1m_tokens(), 2)]
            else:
                out += ["-", "-", "-", "-"]
        return out

    lines = [[*head]]
    lines += [cells(r, [r.key[d] for d in dims]) for r in report.rows]
    lines.append(cells(report.total, ["TOTAL"] + [""] * (len(dims) - 1)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    numeric_from = len(dims)

    def fmt_line(line: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i < numeric_from else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()

    title = (f"GPU report {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC "
             f"(step {s.step_seconds}s); idle = below {s.idle_threshold:g}% utilisation for at least "
             f"{s.grace_seconds // 60} min")
    if priced and report.prices:
        title += f"; prices in {currency} per GPU-hour from {report.prices.source}"
    text = [title, ""]
    if report.no_data:
        text.append("No GPU was held by any pod in this window.")
    else:
        text += [fmt_line(line) for line in lines[:-1]]
        text.append(fmt_line(lines[-1]))
        if priced and report.total.unpriced_gpu_hours > 0:
            text.append(f"* {report.total.unpriced_gpu_hours:,.1f} GPU-hours have no price (see below); "
                        "costs marked * leave them out")
    if report.warnings:
        text += ["", "Notes:"] + [f"- {w}" for w in report.warnings]
    return "\n".join(text) + "\n"


RENDERERS: dict[str, Callable[[GpuReport], str]] = {"table": render_table, "json": render_json, "csv": render_csv}
