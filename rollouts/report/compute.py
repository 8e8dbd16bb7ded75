"""The GPU report's arithmetic: pure functions of what the queries returned (no I/O).

Units: a *step* is one grid point (``step_seconds`` of time); ``GPU-steps`` are GPUs held x points.
Hours are ``GPU-steps x step_seconds / 3600``.

Idle: a pod's GPUs are idle at a point when the pod holds GPUs and their mean utilisation is below
the threshold. A run of consecutive idle points counts, whole, once it lasts at least the grace
period (``grace_steps`` points); shorter lulls count as busy. Points with no utilisation reported
are neither: they end a run and are reported as unmeasured hours. Runs that began before the window
(the idle query starts ``grace`` earlier) count when long enough, but only their points inside the
window are added.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rollouts.report.prices import PriceTable
from rollouts.report.settings import (
    DIMENSIONS,
    PRICING_COLUMNS,
    UNATTRIBUTED,
    UNKNOWN_CLASS,
    ReportSettings,
    ksm_label,
    resource_variant,
)

PodKey = tuple[str, str]  # (namespace, pod)
AllocKey = tuple[str, str, str, str]  # (namespace, pod, node, resource as kube-state-metrics spells it)


# ---------------------------------------------------------------------------------- idle stretches

@dataclass
class IdleResult:
    idle_gpu_steps: float = 0.0  # GPUs x points inside the window that belong to long-enough idle runs
    longest_run_steps: int = 0  # the longest idle run (points, before the window included)
    current_run_steps: int = 0  # the run still going at the last grid point (0 when busy there)


@dataclass
class _Run:
    last: int
    length: int
    gpu_steps_in_window: float


class IdleRuns:
    """Fed the idle points of each pod in time order (grid indices ``k``, 0 being the report's end and
    ``first_index`` its first point), keeps one open run per pod: memory grows with pods, not points."""

    def __init__(self, *, grace_steps: int, first_index: int, last_index: int = 0) -> None:
        if grace_steps < 1:
            raise ValueError("grace_steps must be at least 1")
        self.grace_steps = grace_steps
        self.first_index = first_index
        self.last_index = last_index
        self._open: dict[PodKey, _Run] = {}
        self._done: dict[PodKey, IdleResult] = defaultdict(IdleResult)

    def add(self, key: PodKey, k: int, gpus: float) -> None:
        """One idle point."""
        self._add_run(key, k, k, gpus if self.first_index <= k <= self.last_index else 0.0)

    def add_chunk(self, key: PodKey, first: int, idle: np.ndarray, gpus: np.ndarray) -> None:
        """The points ``first, first + 1, ...`` of one pod: ``idle`` says which are idle, ``gpus`` how
        many GPUs it holds at each. Work grows with the runs, not the points."""
        edges = np.flatnonzero(np.diff(np.concatenate(([0], idle.astype(np.int8), [0]))))
        k = first + np.arange(idle.size)
        counted = np.where((k >= self.first_index) & (k <= self.last_index), gpus, 0.0)
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            self._add_run(key, first + int(start), first + int(stop) - 1, float(counted[start:stop].sum()))

    def _add_run(self, key: PodKey, start: int, last: int, gpu_steps_in_window: float) -> None:
        run = self._open.get(key)
        if run is not None and start <= run.last:
            raise ValueError(f"idle points of {key} out of order ({start} after {run.last})")
        if run is not None and start == run.last + 1:
            run.length += last - start + 1
            run.gpu_steps_in_window += gpu_steps_in_window
            run.last = last
            return
        if run is not None:
            self._close(key, run)
        self._open[key] = _Run(last=last, length=last - start + 1, gpu_steps_in_window=gpu_steps_in_window)

    def _close(self, key: PodKey, run: _Run) -> None:
        result = self._done[key]
        if run.length >= self.grace_steps:
            result.idle_gpu_steps += run.gpu_steps_in_window
        result.longest_run_steps = max(result.longest_run_steps, run.length)

    def finish(self) -> dict[PodKey, IdleResult]:
        for key, run in self._open.items():
            self._close(key, run)
            if run.last == self.last_index:
                self._done[key].current_run_steps = run.length
        self._open.clear()
        return dict(self._done)


# ---------------------------------------------------------------------------------- observations

@dataclass(frozen=True)
class Allocation:
    """GPUs one pod held of one resource on one node over the window."""

    namespace: str
    pod: str
    node: str
    resource: str  # kube-state-metrics' spelling, e.g. nvidia_com_gpu
    gpu_steps: float
    gpus_now: float = 0.0


@dataclass
class Observations:
    """Everything the queries returned, keyed for the computation."""

    end: float  # unix seconds of the last grid point
    allocations: list[Allocation] = field(default_factory=list)
    measured_gpu_steps: dict[PodKey, float] = field(default_factory=dict)
    utilisation_gpu_steps: dict[PodKey, float] = field(default_factory=dict)
    idle: dict[PodKey, IdleResult] = field(default_factory=dict)
    pod_labels: dict[PodKey, dict[str, str]] = field(default_factory=dict)  # kube-state-metrics label names
    pod_owners: dict[PodKey, tuple[str, str]] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: dict[PodKey, float] = field(default_factory=dict)
    tokens: dict[PodKey, float] = field(default_factory=dict)
    stacks: dict[PodKey, str] = field(default_factory=dict)
    unallocated_busy_gpu_steps: dict[str, float] = field(default_factory=dict)  # DCGM modelName -> steps
    unallocated_busy_utilisation: dict[str, float] = field(default_factory=dict)  # modelName -> sum of util
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- chunks of the grid

@dataclass
class Chunk:
    """What Prometheus answered for grid points ``first .. first + length - 1``: one array per series,
    NaN (or False) where the series had no value."""

    first: int
    length: int
    app: dict[AllocKey, np.ndarray] = field(default_factory=dict)  # containers' GPU requests
    init: dict[AllocKey, np.ndarray] = field(default_factory=dict)  # largest init container's
    active: dict[PodKey, np.ndarray] = field(default_factory=dict)  # Pending or Running (bool)
    utilisation: dict[PodKey, np.ndarray] = field(default_factory=dict)  # mean of the pod's GPUs, percent
    unallocated: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (modelName, util while busy)


class Accumulator:
    """Adds chunk after chunk (in time order) into the whole-window figures of :class:`Observations`."""

    def __init__(self, settings: ReportSettings) -> None:
        self.settings = settings
        self.first_index = -(settings.steps - 1)
        self.gpu_steps: dict[AllocKey, float] = defaultdict(float)
        self.gpus_now: dict[AllocKey, float] = {}
        self.measured: dict[PodKey, float] = defaultdict(float)
        self.utilisation: dict[PodKey, float] = defaultdict(float)
        self.unallocated_steps: dict[str, float] = defaultdict(float)
        self.unallocated_utilisation: dict[str, float] = defaultdict(float)
        self.idle = IdleRuns(grace_steps=settings.grace_steps, first_index=self.first_index)

    def add(self, chunk: Chunk) -> None:
        k = chunk.first + np.arange(chunk.length)
        in_window = (k >= self.first_index) & (k <= 0)
        last = chunk.length - 1 if k[-1] == 0 else None
        inactive = np.zeros(chunk.length, dtype=bool)
        held: dict[PodKey, np.ndarray] = {}
        for key in sorted(set(chunk.app) | set(chunk.init)):
            pod = (key[0], key[1])
            requested = np.fmax(chunk.app.get(key, np.full(chunk.length, np.nan)),
                                chunk.init.get(key, np.full(chunk.length, np.nan)))
            gpus = np.where(chunk.active.get(pod, inactive), np.nan_to_num(requested), 0.0)
            self.gpu_steps[key] += float(gpus[in_window].sum())
            if last is not None:
                self.gpus_now[key] = float(gpus[last])
            held[pod] = held[pod] + gpus if pod in held else gpus
        threshold = self.settings.idle_threshold
        for pod, gpus in held.items():
            util = chunk.utilisation.get(pod)
            if util is None:
                continue
            measured = (gpus > 0) & ~np.isnan(util)
            self.measured[pod] += float(gpus[measured & in_window].sum())
            self.utilisation[pod] += float((gpus * np.nan_to_num(util))[measured & in_window].sum())
            self.idle.add_chunk(pod, chunk.first, measured & (np.nan_to_num(util, nan=np.inf) < threshold), gpus)
        for model_name, util in chunk.unallocated:
            busy = ~np.isnan(util) & in_window
            self.unallocated_steps[model_name] += float(busy.sum())
            self.unallocated_utilisation[model_name] += float(util[busy].sum())

    def into(self, obs: Observations) -> None:
        obs.allocations = sorted(
            (Allocation(*key, gpu_steps=steps, gpus_now=self.gpus_now.get(key, 0.0))
             for key, steps in self.gpu_steps.items() if steps > 0 or self.gpus_now.get(key, 0.0) > 0),
            key=lambda a: (a.namespace, a.pod, a.resource, a.node))
        held = {(a.namespace, a.pod) for a in obs.allocations}
        obs.measured_gpu_steps = {p: v for p, v in self.measured.items() if p in held}
        obs.utilisation_gpu_steps = {p: v for p, v in self.utilisation.items() if p in held}
        obs.idle = {p: v for p, v in self.idle.finish().items() if p in held}
        obs.unallocated_busy_gpu_steps = dict(self.unallocated_steps)
        obs.unallocated_busy_utilisation = dict(self.unallocated_utilisation)


# ---------------------------------------------------------------------------------- per pod

@dataclass(frozen=True)
class PodUsage:
    """One pod's GPUs of one resource over the window, attributed and (when a price table is given)
    priced. ``idle_gpu_hours`` is None when no utilisation was measured."""

    namespace: str
    pod: str
    node: str
    resource: str
    team: str
    cost_center: str
    model: str
    gpu_class: str
    pricing: str  # on-demand | spot | reserved
    owner_kind: str
    owner_name: str
    gpus_now: float
    gpu_hours: float
    measured_gpu_hours: float
    utilisation_gpu_hours: float  # sum of utilisation(%) x GPU-hours over measured points
    idle_gpu_hours: float | None
    idle_for_seconds: int  # length of the idle stretch still going at the end (0 when not idle now)
    longest_idle_seconds: int
    requests: float | None
    tokens: float | None
    stack: str | None
    price_per_gpu_hour: float | None

    @property
    def utilisation_pct(self) -> float | None:
        return self.utilisation_gpu_hours / self.measured_gpu_hours if self.measured_gpu_hours > 0 else None

    def dimension(self, name: str) -> str:
        return str(getattr(self, name))


def gpu_class(node_labels: Mapping[str, str], resource: str, settings: ReportSettings) -> str:
    """The node's product label (first configured one present), with the resource's slicing:
    ``NVIDIA-H100-80GB-HBM3``, ``NVIDIA-A100-SXM4-80GB/mig-3g.40gb``, ``NVIDIA-L4/shared``."""
    product = next((node_labels[ksm_label(k)] for k in settings.gpu_class_labels
                    if node_labels.get(ksm_label(k))), UNKNOWN_CLASS)
    variant = resource_variant(resource)
    return f"{product}/{variant}" if variant else product


def pricing_column(node_labels: Mapping[str, str], settings: ReportSettings) -> str:
    """Karpenter's ``on-demand``/``spot``/``reserved`` (also EKS' ``ON_DEMAND``/``SPOT``); else the default."""
    value = node_labels.get(ksm_label(settings.capacity_type_label), "").strip().lower().replace("_", "-")
    return value if value in PRICING_COLUMNS else settings.default_pricing


def pod_usages(obs: Observations, settings: ReportSettings, prices: PriceTable | None) -> list[PodUsage]:
    hours = settings.step_seconds / 3600
    pod_total: dict[PodKey, float] = defaultdict(float)
    for a in obs.allocations:
        pod_total[(a.namespace, a.pod)] += a.gpu_steps
    out = []
    label_keys = {dim: ksm_label(key) for dim, key in settings.pod_label_keys.items()}
    for a in obs.allocations:
        key = (a.namespace, a.pod)
        share = a.gpu_steps / pod_total[key] if pod_total[key] > 0 else 0.0
        labels = obs.pod_labels.get(key, {})
        node = obs.node_labels.get(a.node, {})
        cls = gpu_class(node, a.resource, settings)
        column = pricing_column(node, settings)
        measured = obs.measured_gpu_steps.get(key, 0.0) * share
        idle = obs.idle.get(key)
        owner = obs.pod_owners.get(key, ("", ""))
        out.append(PodUsage(
            namespace=a.namespace, pod=a.pod, node=a.node, resource=a.resource,
            team=labels.get(label_keys["team"]) or UNATTRIBUTED,
            cost_center=labels.get(label_keys["cost_center"]) or UNATTRIBUTED,
            model=labels.get(label_keys["model"]) or UNATTRIBUTED,
            gpu_class=cls, pricing=column, owner_kind=owner[0], owner_name=owner[1],
            gpus_now=a.gpus_now, gpu_hours=a.gpu_steps * hours, measured_gpu_hours=measured * hours,
            utilisation_gpu_hours=obs.utilisation_gpu_steps.get(key, 0.0) * share * hours,
            idle_gpu_hours=(idle.idle_gpu_steps * share * hours if idle else 0.0) if measured > 0 else None,
            idle_for_seconds=(idle.current_run_steps * settings.step_seconds
                              if idle and idle.current_run_steps >= settings.grace_steps else 0),
            longest_idle_seconds=idle.longest_run_steps * settings.step_seconds if idle else 0,
            requests=obs.requests[key] * share if key in obs.requests else None,
            tokens=obs.tokens[key] * share if key in obs.tokens else None,
            stack=obs.stacks.get(key),
            price_per_gpu_hour=prices.price(cls, column) if prices else None,
        ))
    return out


def unallocated_usages(obs: Observations, settings: ReportSettings, prices: PriceTable | None) -> list[PodUsage]:
    """GPUs busy while allocated to no pod (DCGM saw them work; Kubernetes never granted them): one
    ``unattributed`` entry per GPU model, priced at the default column."""
    hours = settings.step_seconds / 3600
    out = []
    for model_name, steps in sorted(obs.unallocated_busy_gpu_steps.items()):
        if steps <= 0:
            continue
        # DCGM's modelName ("NVIDIA H100 80GB HBM3") as GPU feature discovery spells the node label.
        cls = "-".join(model_name.split()) if model_name else UNKNOWN_CLASS
        out.append(PodUsage(
            namespace=UNATTRIBUTED, pod="", node="", resource="", team=UNATTRIBUTED, cost_center=UNATTRIBUTED,
            model=UNATTRIBUTED, gpu_class=cls, pricing=settings.default_pricing, owner_kind="", owner_name="",
            gpus_now=0.0, gpu_hours=steps * hours, measured_gpu_hours=steps * hours,
            utilisation_gpu_hours=obs.unallocated_busy_utilisation.get(model_name, 0.0) * hours,
            idle_gpu_hours=0.0, idle_for_seconds=0, longest_idle_seconds=0, requests=None, tokens=None,
            stack=None, price_per_gpu_hour=prices.price(cls, settings.default_pricing) if prices else None,
        ))
    return out


# ---------------------------------------------------------------------------------- rows

@dataclass
class Row:
    """One group of the report (or the total)."""

    key: dict[str, str]
    pods: int = 0
    gpus_now: float = 0.0
    gpu_hours: float = 0.0
    measured_gpu_hours: float = 0.0
    utilisation_gpu_hours: float = 0.0
    idle_gpu_hours: float = 0.0
    unmeasured_gpu_hours: float = 0.0
    cost: float = 0.0
    idle_cost: float = 0.0
    unpriced_gpu_hours: float = 0.0
    requests: float | None = None
    tokens: float | None = None
    serving_cost: float = 0.0  # cost of the pods that export request counters
    token_cost: float = 0.0  # cost of the pods that export token counters

    def add(self, u: PodUsage) -> None:
        self.pods += 1 if u.pod else 0
        self.gpus_now += u.gpus_now
        self.gpu_hours += u.gpu_hours
        self.measured_gpu_hours += u.measured_gpu_hours
        self.utilisation_gpu_hours += u.utilisation_gpu_hours
        self.idle_gpu_hours += u.idle_gpu_hours or 0.0
        self.unmeasured_gpu_hours += u.gpu_hours - u.measured_gpu_hours
        cost = u.gpu_hours * u.price_per_gpu_hour if u.price_per_gpu_hour is not None else None
        if cost is None:
            self.unpriced_gpu_hours += u.gpu_hours
        else:
            self.cost += cost
            self.idle_cost += (u.idle_gpu_hours or 0.0) * (u.price_per_gpu_hour or 0.0)
        if u.requests is not None:
            self.requests = (self.requests or 0.0) + u.requests
            self.serving_cost += cost or 0.0
        if u.tokens is not None:
            self.tokens = (self.tokens or 0.0) + u.tokens
            self.token_cost += cost or 0.0

    @property
    def utilisation_pct(self) -> float | None:
        return self.utilisation_gpu_hours / self.measured_gpu_hours if self.measured_gpu_hours > 0 else None

    @property
    def idle_pct(self) -> float | None:
        return 100 * self.idle_gpu_hours / self.measured_gpu_hours if self.measured_gpu_hours > 0 else None

    def cost_per_1k_requests(self) -> float | None:
        return 1000 * self.serving_cost / self.requests if self.requests else None

    def cost_per_1m_tokens(self) -> float | None:
        return 1e6 * self.token_cost / self.tokens if self.tokens else None


def group(usages: Iterable[PodUsage], by: Iterable[str]) -> tuple[list[Row], Row]:
    """Rows keyed by the ``by`` dimensions (sorted by GPU-hours, largest first) and the total."""
    dims = [d for d in DIMENSIONS if d in set(by)]
    rows: dict[tuple[str, ...], Row] = {}
    total = Row(key={})
    for u in usages:
        values = tuple(u.dimension(d) for d in dims)
        row = rows.get(values)
        if row is None:
            row = rows[values] = Row(key=dict(zip(dims, values, strict=True)))
        row.add(u)
        total.add(u)
    ordered = sorted(rows.values(), key=lambda r: (-r.gpu_hours, tuple(r.key.values())))
    return ordered, total
