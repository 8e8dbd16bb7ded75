"""Querying Prometheus for the GPU report: every answer bounded in time and bytes (the analysis
provider's client, :class:`~rollouts.sources.prometheus.PrometheusSource`), shaped into
:class:`~rollouts.report.compute.Observations`.

Per pod and grid point, Prometheus answers what each pod requests, whether it is Pending or Running,
and how busy its GPUs are (range queries of ``chunk_points`` points, sized to the pods; the five of a chunk
side by side); :class:`~rollouts.report.compute.Accumulator` adds each chunk into whole-window
figures, so memory holds one chunk, not the week. Labels, owners and counters are instant queries.
A range answer above the byte cap is split in two and asked again: a large cluster costs more
queries, never more memory than one capped answer.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rollouts.errors import SourceQueryError
from rollouts.report.compute import Accumulator, Chunk, Observations, PodKey
from rollouts.report.promql import NAMESPACE_RE, Queries
from rollouts.report.settings import ReportSettings, ksm_label
from rollouts.sources import Deadline
from rollouts.sources.prometheus import LabelledSeries, LabelledValue, PrometheusSource

PARALLEL_QUERIES = 4
# Grid points per range query: about POINT_BUDGET series x points, from MIN to MAX points. A parsed point
# costs ~160 bytes until it becomes an array, and five queries run at once: ~80 MB at most. Measured on
# the benchmark's 168 pods over a day: 1,440 points per chunk peaked at 185 MB, 360 at 94 MB, no slower.
POINT_BUDGET = 100_000
MIN_CHUNK_POINTS, MAX_CHUNK_POINTS = 60, 1440
DEFAULT_CHUNK_POINTS: int | None = None  # sized from the number of GPU pods
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
                 chunk_points: int | None = DEFAULT_CHUNK_POINTS) -> None:
        self.source = source
        self.settings = settings
        self.q = Queries(settings)
        self.deadline = deadline
        self.chunk_points = max(1, chunk_points) if chunk_points else MAX_CHUNK_POINTS
        self._auto_chunks = not chunk_points
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

    def _matrix(self, query: str, at: dt.datetime, a: int, b: int) -> list[LabelledSeries]:
        """Grid points ``a .. b`` (indices, 0 = ``at``); halves and asks again while the answer is too large."""
        step = self.settings.step_seconds
        started = time.monotonic()
        try:
            return self.source.matrix(query, start=at + dt.timedelta(seconds=a * step),
                                      end=at + dt.timedelta(seconds=b * step), step_seconds=step,
                                      deadline=self.deadline)
        except SourceQueryError as exc:
            if not _too_large(exc):
                raise
            if a == b:
                raise SourceQueryError(f"Prometheus answered more than {self.source.max_bytes} bytes for a single "
                                       "point of a per-pod query; raise --max-bytes", source=exc.source) from None
        finally:
            self._count("range", time.monotonic() - started)
        self._count("split")
        mid = (a + b) // 2
        return self._matrix(query, at, a, mid) + self._matrix(query, at, mid + 1, b)

    # ---- the report's data

    def end_of(self, end: dt.datetime | None) -> dt.datetime:
        """The last grid point: ``end`` (default now) rounded down to a multiple of the step."""
        ts = (end or dt.datetime.now(dt.UTC)).timestamp()
        step = self.settings.step_seconds
        return dt.datetime.fromtimestamp(math.floor(ts / step) * step, dt.UTC)

    def chunks(self) -> list[tuple[int, int]]:
        """Grid index ranges, inclusive, in time order: from grace - 1 points before the window (an idle
        stretch that began earlier counts once it is long enough) to the end (0)."""
        lo = -(self.settings.steps - 1) - (self.settings.grace_steps - 1)
        return [(a, min(a + self.chunk_points - 1, 0)) for a in range(lo, 1, self.chunk_points)]

    def chunk(self, at: dt.datetime, a: int, b: int, namespaces: list[str], pool: ThreadPoolExecutor) -> Chunk:
        """One stretch of the grid: the four per-pod series and the busy unallocated GPUs, side by side."""
        queries = {"app": self.q.app_requests, "init": self.q.init_requests, "active": self.q.active_pods(namespaces),
                   "utilisation": self.q.utilisation_by_pod, "unallocated": self.q.unallocated_busy}
        futures = {name: pool.submit(self._matrix, query, at, a, b) for name, query in queries.items()}
        got = {name: future.result() for name, future in futures.items()}
        chunk = Chunk(first=a, length=b - a + 1)
        at_ts, step = at.timestamp(), self.settings.step_seconds

        def place(into: dict[Any, np.ndarray], key: Any, ts: np.ndarray, values: np.ndarray, empty: float) -> None:
            arr = into.get(key)
            if arr is None:
                arr = into[key] = np.full(chunk.length, empty)
            arr[np.rint((ts - at_ts) / step).astype(np.int64) - a] = values

        for name in ("app", "init"):
            for labels, ts, values in got[name]:
                key = (labels.get("namespace", ""), labels.get("pod", ""), labels.get("node", ""),
                       labels.get("resource", ""))
                place(getattr(chunk, name), key, ts, values, np.nan)
        for labels, ts, values in got["active"]:
            place(chunk.active, _key(labels), ts, values > 0, False)
        for labels, ts, values in got["utilisation"]:
            place(chunk.utilisation, _key(labels), ts, values, np.nan)
        for labels, ts, values in got["unallocated"]:
            arr = np.full(chunk.length, np.nan)
            arr[np.rint((ts - at_ts) / step).astype(np.int64) - a] = values
            chunk.unallocated.append((labels.get("modelName", ""), arr))
        return chunk

    def collect(self, end: dt.datetime | None = None) -> Observations:
        at = self.end_of(end)
        obs = Observations(end=at.timestamp())
        names = ("gpu_pods", "pod_labels", "pod_owners", "node_labels", "requests", "tokens")
        # Independent queries run side by side (Prometheus evaluates up to 20 at once); the first error
        # is raised, and nothing is reported from data that did not arrive.
        with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
            try:
                futures = {name: pool.submit(self._vector, getattr(self.q, name), at) for name in names}
                got = {name: future.result() for name, future in futures.items()}
                found = {lab.get("namespace", "") for lab, _ in got["gpu_pods"]} - {""}
                namespaces = sorted(n for n in found if NAMESPACE_RE.match(n))
                if len(namespaces) < len(found):
                    obs.warnings.append(f"skipped GPU pods in namespaces whose names are not Kubernetes names: "
                                        f"{sorted(found - set(namespaces))[:5]}")
                if not namespaces:
                    self._explain_no_data(obs, at)
                    return obs
                if self._auto_chunks:
                    self.chunk_points = min(MAX_CHUNK_POINTS, max(MIN_CHUNK_POINTS,
                                                                  POINT_BUDGET // max(1, len(got["gpu_pods"]))))
                accumulator = Accumulator(self.settings)
                for a, b in self.chunks():
                    accumulator.add(self.chunk(at, a, b, namespaces, pool))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        accumulator.into(obs)
        if not obs.allocations:  # GPU requests on nodes, but never a Pending or Running pod
            obs.warnings.append(
                f"no data: {len(got['gpu_pods'])} pod(s) requested GPUs on a node in the window, but "
                "kube_pod_status_phase never showed one Pending or Running (finished pods hold nothing; is "
                "kube_pod_status_phase exported?)")
            return obs
        gpu_pods = {(a.namespace, a.pod) for a in obs.allocations}
        self._labels(obs, at, gpu_pods, got["pod_labels"], got["pod_owners"], got["node_labels"])
        for lab, v in got["requests"]:
            key = _key(lab)
            obs.requests[key] = obs.requests.get(key, 0.0) + v
            obs.stacks[key] = lab.get("stack", "")
        for lab, v in got["tokens"]:
            key = _key(lab)
            obs.tokens[key] = obs.tokens.get(key, 0.0) + v
        if not any(obs.measured_gpu_steps.get(k, 0) > 0 for k in gpu_pods):
            # With the pod label misnamed every GPU looks unallocated: no "busy without a pod" guesses then.
            obs.unallocated_busy_gpu_steps, obs.unallocated_busy_utilisation = {}, {}
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
