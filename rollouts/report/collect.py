"""Querying Prometheus for the GPU report: every answer bounded in time and bytes (the analysis
provider's client, :class:`~rollouts.sources.prometheus.PrometheusSource`), shaped into
:class:`~rollouts.report.compute.Observations`.

Whole-window figures come from instant queries with subqueries (one number per pod), asked side by
side (``PARALLEL_QUERIES``); only the idle points, whose order matters, come back point by point, in
range queries of at most ``chunk_points`` grid points each. A chunk whose answer exceeds the byte
cap is split in two and asked again, so a large cluster costs more queries, never more memory than
one capped answer.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rollouts.errors import SourceQueryError
from rollouts.report.compute import Allocation, IdleRuns, Observations, PodKey
from rollouts.report.promql import Queries
from rollouts.report.settings import ReportSettings, ksm_label
from rollouts.sources import Deadline
from rollouts.sources.prometheus import LabelledSeries, LabelledValue, PrometheusSource

PARALLEL_QUERIES = 4
DEFAULT_CHUNK_POINTS = 1440  # one day at one minute: ~25 KB per pod and chunk in the worst case (always idle)
ALLOWLIST_HINT = ("kube-state-metrics exports only the labels named in --metric-labels-allowlist, "
                  "e.g. --metric-labels-allowlist=pods=[{pods}],nodes=[{nodes}]")


@dataclass
class QueryStats:
    instant: int = 0
    range: int = 0
    split: int = 0  # range chunks asked again in two halves (answer above the byte cap)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.instant + self.range


def _key(labels: dict[str, str]) -> PodKey:
    return labels.get("namespace", ""), labels.get("pod", "")


def _too_large(exc: SourceQueryError) -> bool:
    return "limit" in exc.details


class Collector:
    def __init__(self, source: PrometheusSource, settings: ReportSettings, *, deadline: Deadline,
                 chunk_points: int = DEFAULT_CHUNK_POINTS) -> None:
        self.source = source
        self.settings = settings
        self.q = Queries(settings)
        self.deadline = deadline
        self.chunk_points = max(1, chunk_points)
        self.stats = QueryStats()
        self._lock = threading.Lock()

    def _count(self, kind: str, seconds: float = 0.0) -> None:
        with self._lock:
            setattr(self.stats, kind, getattr(self.stats, kind) + 1)
            self.stats.seconds += seconds

    # ---- one query each, counted

    def _vector(self, query: str, at: dt.datetime) -> list[LabelledValue]:
        started = time.monotonic()
        try:
            result = self.source.vector(query, deadline=self.deadline, at=at)
        except SourceQueryError as exc:
            if _too_large(exc):
                raise SourceQueryError(
                    f"Prometheus answered more than {self.source.max_bytes} bytes for one of the report's "
                    "per-pod queries; raise --max-bytes", source=exc.source) from None
            raise
        finally:
            self._count("instant", time.monotonic() - started)
        return result

    def _matrix(self, query: str, start: dt.datetime, end: dt.datetime) -> list[LabelledSeries]:
        started = time.monotonic()
        try:
            return self.source.matrix(query, start=start, end=end, step_seconds=self.settings.step_seconds,
                                      deadline=self.deadline)
        finally:
            self._count("range", time.monotonic() - started)

    # ---- the report's data

    def end_of(self, end: dt.datetime | None) -> dt.datetime:
        """The last grid point: ``end`` (default now) rounded down to a multiple of the step."""
        ts = (end or dt.datetime.now(dt.UTC)).timestamp()
        step = self.settings.step_seconds
        return dt.datetime.fromtimestamp(math.floor(ts / step) * step, dt.UTC)

    @staticmethod
    def _allocations(steps: list[LabelledValue], now: list[LabelledValue]) -> list[Allocation]:
        def ident(lab: dict[str, str]) -> tuple[str, str, str, str]:
            return lab.get("namespace", ""), lab.get("pod", ""), lab.get("node", ""), lab.get("resource", "")

        current = {ident(lab): v for lab, v in now}
        out = [Allocation(*ident(lab), gpu_steps=v, gpus_now=current.get(ident(lab), 0.0)) for lab, v in steps]
        return sorted(out, key=lambda a: (a.namespace, a.pod, a.resource))

    def idle(self, at: dt.datetime) -> IdleRuns:
        s = self.settings
        first = -(s.steps - 1)
        runs = IdleRuns(grace_steps=s.grace_steps, first_index=first)
        # Grid indices, inclusive, in time order: from grace - 1 points before the window (a run that
        # began earlier counts once long enough) to the end.
        lo, hi = first - (s.grace_steps - 1), 0
        chunks = [(a, min(a + self.chunk_points - 1, hi)) for a in range(lo, hi + 1, self.chunk_points)]
        while chunks:
            a, b = chunks.pop(0)
            start = at + dt.timedelta(seconds=a * s.step_seconds)
            end = at + dt.timedelta(seconds=b * s.step_seconds)
            try:
                series = self._matrix(self.q.idle_candidates, start, end)
            except SourceQueryError as exc:
                if not _too_large(exc) or a == b:
                    if _too_large(exc):
                        raise SourceQueryError(
                            f"Prometheus answered more than {self.source.max_bytes} bytes for a single point "
                            "of the idle query; raise --max-bytes", source=exc.source) from None
                    raise
                mid = (a + b) // 2
                self._count("split")
                chunks[0:0] = [(a, mid), (mid + 1, b)]
                continue
            at_ts = at.timestamp()
            for labels, points in series:
                key = _key(labels)
                for ts, gpus in points:
                    runs.add(key, round((ts - at_ts) / s.step_seconds), gpus)
        return runs

    def collect(self, end: dt.datetime | None = None) -> Observations:
        at = self.end_of(end)
        obs = Observations(end=at.timestamp())
        names = ("gpu_steps", "gpus_now", "measured_gpu_steps", "utilisation_gpu_steps", "pod_labels", "pod_owners",
                 "node_labels", "requests", "tokens", "unallocated_busy_gpu_steps",
                 "unallocated_busy_utilisation_steps")
        # Independent queries run side by side (Prometheus evaluates up to 20 at once); the idle points
        # come in order, chunk after chunk, in one of the threads. The first error is raised.
        with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
            idle = pool.submit(self.idle, at)
            futures = {name: pool.submit(self._vector, getattr(self.q, name), at) for name in names}
            try:
                got = {name: future.result() for name, future in futures.items()}
                runs = idle.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        obs.allocations = self._allocations(got["gpu_steps"], got["gpus_now"])
        if not obs.allocations:
            self._explain_no_data(obs, at)
            return obs
        gpu_pods = {(a.namespace, a.pod) for a in obs.allocations}
        obs.measured_gpu_steps = {_key(lab): v for lab, v in got["measured_gpu_steps"]}
        obs.utilisation_gpu_steps = {_key(lab): v for lab, v in got["utilisation_gpu_steps"]}
        obs.idle = runs.finish()
        self._labels(obs, at, gpu_pods, got["pod_labels"], got["pod_owners"], got["node_labels"])
        for lab, v in got["requests"]:
            key = _key(lab)
            obs.requests[key] = obs.requests.get(key, 0.0) + v
            obs.stacks[key] = lab.get("stack", "")
        for lab, v in got["tokens"]:
            key = _key(lab)
            obs.tokens[key] = obs.tokens.get(key, 0.0) + v
        if any(obs.measured_gpu_steps.get(k, 0) > 0 for k in gpu_pods):
            # Only when utilisation reaches pods: with the pod label misnamed, every GPU would look unallocated.
            obs.unallocated_busy_gpu_steps = {lab.get("modelName", ""): v
                                              for lab, v in got["unallocated_busy_gpu_steps"]}
            obs.unallocated_busy_utilisation = {lab.get("modelName", ""): v
                                                for lab, v in got["unallocated_busy_utilisation_steps"]}
        else:
            self._explain_no_utilisation(obs, at)
        return obs

    def _labels(self, obs: Observations, at: dt.datetime, gpu_pods: set[PodKey], pod_labels: list[LabelledValue],
                pod_owners: list[LabelledValue], node_labels: list[LabelledValue]) -> None:
        s = self.settings
        pod_names = self.q.pod_label_names
        changed: set[PodKey] = set()
        for lab, _ in sorted(pod_labels, key=lambda x: sorted(x[0].items())):
            key = _key(lab)
            if key in obs.pod_labels:
                changed.add(key)
            obs.pod_labels[key] = {n: lab.get(n, "") for n in pod_names}
        if changed:
            obs.warnings.append(f"{len(changed)} pod(s) changed labels during the window (e.g. "
                                f"{'/'.join(sorted(changed)[0])}); each is attributed to one of its label sets")
        for lab, _ in pod_owners:  # kube-state-metrics writes <none> for a bare pod
            kind, name = lab.get("owner_kind", ""), lab.get("owner_name", "")
            obs.pod_owners[_key(lab)] = ("", "") if "<none>" in (kind, name) else (kind, name)
        if any(kind == "ReplicaSet" for kind, _ in obs.pod_owners.values()):  # a Deployment's or Rollout's pods
            controllers = {(lab.get("namespace", ""), lab.get("replicaset", "")):
                           (lab.get("owner_kind", ""), lab.get("owner_name", ""))
                           for lab, _ in self._vector(self.q.replicaset_owners, at)}
            for key, (kind, name) in obs.pod_owners.items():
                controller = controllers.get((key[0], name)) if kind == "ReplicaSet" else None
                if controller and controller[0] not in ("", "<none>") and controller[1] not in ("", "<none>"):
                    obs.pod_owners[key] = controller
        for lab, _ in node_labels:
            obs.node_labels[lab.get("node", "")] = {k: v for k, v in lab.items() if k != "node"}
        hint = ALLOWLIST_HINT.format(pods=",".join(s.pod_label_keys.values()),
                                     nodes=",".join((*s.gpu_class_labels, s.capacity_type_label)))
        for dim, label_key in s.pod_label_keys.items():
            if not any(obs.pod_labels.get(p, {}).get(ksm_label(label_key)) for p in gpu_pods):
                obs.warnings.append(f"no GPU pod carries the label {label_key!r} in kube_pod_labels (every {dim} is "
                                    f"'unattributed'): the pods lack it, or {hint}")
        nodes = {a.node for a in obs.allocations}
        class_labels = [ksm_label(k) for k in s.gpu_class_labels]
        if not any(obs.node_labels.get(n, {}).get(c) for n in nodes for c in class_labels):
            obs.warnings.append(f"no GPU node carries a GPU class label ({', '.join(s.gpu_class_labels)}) in "
                                f"kube_node_labels (every class is 'unknown'): {hint}")

    def _explain_no_data(self, obs: Observations, at: dt.datetime) -> None:
        series = self._vector(self.q.requests_series, at)
        if not series or series[0][1] == 0:
            obs.warnings.append(
                "no data: Prometheus has no kube_pod_container_resource_requests series in the window; is "
                "kube-state-metrics scraped by this Prometheus?")
        else:
            obs.warnings.append(
                f"no data: no pod held a GPU ({', '.join(self.settings.gpu_resources)}) in the window "
                f"(kube-state-metrics is scraped: {int(series[0][1])} resource-request series)")

    def _explain_no_utilisation(self, obs: Observations, at: dt.datetime) -> None:
        metric, configured = self.settings.utilisation_metric, self.settings.dcgm_pod_label
        namespaces = {"pod": "namespace", "exported_pod": "exported_namespace", "pod_name": "pod_namespace"}
        found = [label for label in namespaces if label != configured
                 and (rows := self._vector(self.q.utilisation_series_with(label), at)) and rows[0][1] > 0]
        advice = (f"its series name the pod in label {found[0]!r}: pass --dcgm-pod-label {found[0]} and "
                  f"--dcgm-namespace-label {namespaces[found[0]]}" if found else
                  "is DCGM exporter scraped, with DCGM_EXPORTER_KUBERNETES=true (pod mapping)?")
        obs.warnings.append(f"no utilisation: no {metric} series with label {configured!r} matched a GPU pod, "
                            f"so idle hours are unknown (reported as unmeasured): {advice}")
