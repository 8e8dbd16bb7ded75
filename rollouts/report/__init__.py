"""GPU allocation, idle time and cost per namespace, team, cost center, model and GPU class.

``python -m rollouts report gpu --prometheus URL ...`` (and ``mlguard report gpu``, which runs it)
reads kube-state-metrics, DCGM exporter and the serving stacks' counters from Prometheus and answers
who holds which GPUs, how busy they were, how long they sat idle, and what that cost.

Layout: :mod:`.settings` (what is counted), :mod:`.promql` (the queries), :mod:`.collect` (asking
Prometheus), :mod:`.compute` (the arithmetic, pure), :mod:`.prices` (the price file),
:mod:`.render` (table, JSON, CSV), :mod:`.cli`.

Library entry points (the audit's ``gpu-idle`` policy calls :func:`idle_workloads`):

- :func:`gpu_report` -> :class:`GpuReport` (rows, total, per-pod usage, warnings);
- :func:`pod_usage` -> one :class:`~rollouts.report.compute.PodUsage` per pod and GPU resource;
- :func:`idle_workloads` -> one :class:`WorkloadIdle` per controller of GPU pods.

Every function raises :class:`~rollouts.errors.SourceError` (unreachable, timed out, refused) rather
than return a report built from data that did not arrive.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from rollouts.report.collect import DEFAULT_CHUNK_POINTS, Collector, QueryStats
from rollouts.report.compute import Observations, PodUsage, Row, group, pod_usages, unallocated_usages
from rollouts.report.prices import PriceTable
from rollouts.report.settings import ReportSettings
from rollouts.sources import Deadline
from rollouts.sources.prometheus import PrometheusSource

__all__ = [
    "GpuReport",
    "PodUsage",
    "ReportSettings",
    "WorkloadIdle",
    "assemble",
    "collect",
    "gpu_report",
    "idle_workloads",
    "pod_usage",
    "workloads_from",
]


@dataclass
class GpuReport:
    settings: ReportSettings
    start: dt.datetime  # the window is (start, end]
    end: dt.datetime
    rows: list[Row]
    total: Row
    usages: list[PodUsage]
    warnings: list[str]
    prices: PriceTable | None
    queries: QueryStats = field(default_factory=QueryStats)

    @property
    def no_data(self) -> bool:
        return not self.usages


def _collect(source: PrometheusSource, settings: ReportSettings, *, end: dt.datetime | None, deadline: Deadline,
             chunk_points: int | None) -> tuple[Observations, Collector]:
    collector = Collector(source, settings, deadline=deadline, chunk_points=chunk_points)
    return collector.collect(end), collector


def collect(source: PrometheusSource, settings: ReportSettings, *, deadline: Deadline,
            end: dt.datetime | None = None, chunk_points: int | None = DEFAULT_CHUNK_POINTS) -> Observations:
    """What Prometheus says about the window (input of :func:`assemble` and :func:`workloads_from`)."""
    return _collect(source, settings, end=end, deadline=deadline, chunk_points=chunk_points)[0]


def gpu_report(source: PrometheusSource, settings: ReportSettings, *, deadline: Deadline,
               prices: PriceTable | None = None, end: dt.datetime | None = None,
               chunk_points: int | None = DEFAULT_CHUNK_POINTS) -> GpuReport:
    """The report over the window ending at ``end`` (default: now, rounded down to the step)."""
    obs, collector = _collect(source, settings, end=end, deadline=deadline, chunk_points=chunk_points)
    return assemble(obs, settings, prices=prices, queries=collector.stats)


def assemble(obs: Observations, settings: ReportSettings, *, prices: PriceTable | None = None,
             queries: QueryStats | None = None) -> GpuReport:
    """The report from collected observations (pure: regroup or reprice without asking again)."""
    usages = pod_usages(obs, settings, prices) + unallocated_usages(obs, settings, prices)
    rows, total = group(usages, settings.group_by)
    warnings = list(obs.warnings)
    if any(v > 0 for v in obs.unallocated_busy_gpu_steps.values()):
        warnings.append("GPUs allocated to no pod were busy (row 'unattributed'): a process outside Kubernetes' "
                        "accounting uses them (see the gpu-isolation policy and runbooks/gpu-idle.md)")
    if prices is not None:
        missing = sorted({(u.gpu_class, u.pricing) for u in usages if u.price_per_gpu_hour is None})
        if missing:
            listed = ", ".join(f"{cls} ({col})" for cls, col in missing)
            warnings.append(f"no price for {listed} in {prices.source}: those GPU-hours are unpriced, not free")
    end_dt = dt.datetime.fromtimestamp(obs.end, dt.UTC)
    return GpuReport(settings=settings, start=end_dt - dt.timedelta(seconds=settings.window_seconds), end=end_dt,
                     rows=rows, total=total, usages=usages, warnings=warnings, prices=prices,
                     queries=queries or QueryStats())


def pod_usage(source: PrometheusSource, settings: ReportSettings, *, deadline: Deadline,
              end: dt.datetime | None = None, prices: PriceTable | None = None) -> list[PodUsage]:
    """One entry per pod and GPU resource that held GPUs in the window (no unallocated-GPU entries)."""
    return pod_usages(collect(source, settings, deadline=deadline, end=end), settings, prices)


@dataclass(frozen=True)
class WorkloadIdle:
    """The GPU pods of one controller (as kube_pod_owner names it: ReplicaSet, StatefulSet, Job, ...;
    a bare pod is its own workload with ``owner_kind`` "Pod")."""

    namespace: str
    owner_kind: str
    owner_name: str
    pods: tuple[str, ...]
    gpus_now: float
    gpu_hours: float
    idle_gpu_hours: float | None  # None: no utilisation was measured for any of its pods
    utilisation_pct: float | None
    # every pod holding GPUs now has been idle at least this long (0: some pod is busy, or idle for less
    # than the grace period); measured within the window plus the grace period before it
    idle_for_seconds: int
    idle_now: bool  # GPUs held now, and all idle for at least the grace period


def idle_workloads(source: PrometheusSource, settings: ReportSettings, *, deadline: Deadline,
                   end: dt.datetime | None = None) -> list[WorkloadIdle]:
    """Per workload: are its GPUs idle now (for at least ``settings.grace_seconds``), and how idle
    were they over the window. Sorted by namespace, kind, name."""
    return workloads_from(pod_usage(source, settings, deadline=deadline, end=end))


def workloads_from(usages: list[PodUsage]) -> list[WorkloadIdle]:
    groups: dict[tuple[str, str, str], list[PodUsage]] = defaultdict(list)
    for u in usages:
        kind, name = (u.owner_kind, u.owner_name) if u.owner_kind and u.owner_name else ("Pod", u.pod)
        groups[(u.namespace, kind, name)].append(u)
    out = []
    for (namespace, kind, name), members in sorted(groups.items()):
        holding = [u for u in members if u.gpus_now > 0]
        measured = sum(u.measured_gpu_hours for u in members)
        idle_for = min((u.idle_for_seconds for u in holding), default=0)
        out.append(WorkloadIdle(
            namespace=namespace, owner_kind=kind, owner_name=name, pods=tuple(sorted({u.pod for u in members})),
            gpus_now=sum(u.gpus_now for u in members), gpu_hours=sum(u.gpu_hours for u in members),
            idle_gpu_hours=sum(u.idle_gpu_hours or 0.0 for u in members) if measured > 0 else None,
            utilisation_pct=sum(u.utilisation_gpu_hours for u in members) / measured if measured > 0 else None,
            idle_for_seconds=idle_for, idle_now=bool(holding) and idle_for > 0,
        ))
    return out
