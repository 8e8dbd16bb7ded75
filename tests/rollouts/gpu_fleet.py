"""A synthetic GPU fleet as its exporters would report it, and what its bill should be.

Series are named and labelled as kube-state-metrics (``internal/store/pod.go``, ``node.go``: resource
names sanitised, ``label_<key>`` labels, one ``kube_pod_status_phase`` series per phase), DCGM
exporter (``DCGM_FI_DEV_GPU_UTIL{gpu, UUID, device, modelName, Hostname, pod, namespace, container}``;
empty pod labels on GPUs allocated to no pod; no GPU_UTIL for MIG slices, which DCGM does not support)
and the serving stacks (the names in rollouts/presets.py) export them. Every sample lies on the
step grid; Prometheus is started with a lookback shorter than the step, so a series ends at its last
sample as a scraped one ends at its staleness marker (backfilled blocks carry none).

:func:`expected` computes the report's figures from the specification (the per-point arrays the
series were written from), not from anything Prometheus answers.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STATIC_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
DAY = 86400
H100, L40S, A100, L4 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"
DCGM_MODEL = {H100: "NVIDIA H100 80GB HBM3", L40S: "NVIDIA L40S", A100: "NVIDIA A100-SXM4-80GB", L4: "NVIDIA L4"}
PRICES = {  # per GPU-hour, the test's price file
    H100: {"on-demand": 6.98, "spot": 2.45, "reserved": 4.40},
    L40S: {"on-demand": 1.86, "spot": 0.74},
    f"{A100}/mig-3g.40gb": {"on-demand": 2.05},
    # NVIDIA-L4 has no price: its hours are unpriced, never free.
}


@dataclass
class Node:
    name: str
    product: str | None  # None: the node has no GPU class label
    capacity: str | None  # karpenter.sh/capacity-type
    gpus: int = 8


@dataclass
class Pod:
    namespace: str
    name: str
    node: str  # "" never scheduled
    gpus: int  # the containers' GPU requests, summed
    created: float
    deleted: float  # the pod object (and its kube-state-metrics series) goes away
    phases: list[tuple[float, str]]  # (from, phase), from created on
    labels: dict[str, str] = field(default_factory=dict)
    owner: tuple[str, str] = ("<none>", "<none>")
    init_gpus: int = 0
    resource: str = "nvidia.com/gpu"
    stack: str | None = None  # vllm | tgi | triton
    busy: float = 60.0  # utilisation (percent) in working hours
    night: float = 60.0  # utilisation outside working hours (07:00-20:00 UTC)
    lull: bool = False  # a 15-minute dip below any threshold at 12:00 UTC (shorter than the grace)
    rate: float = 2.0  # requests per second in working hours (a tenth at night)
    dcgm: bool = True  # DCGM reports utilisation for its GPUs (not for MIG slices)

    @property
    def effective_gpus(self) -> int:
        return max(self.gpus, self.init_gpus)

    def phase_at(self, t: np.ndarray) -> np.ndarray:
        out = np.full(t.shape, "", dtype=object)
        for start, phase in self.phases:
            out[t >= start] = phase
        out[(t < self.created) | (t >= self.deleted)] = ""
        return out


@dataclass
class Fleet:
    end: float  # the last grid point
    step: int
    history: float  # seconds of data before the end
    nodes: list[Node]
    pods: list[Pod]
    squatters: list[tuple[str, int, float, float, float]]  # (node, gpu index, from, to, util): busy, no pod
    replicasets: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    seed: int = 5

    @property
    def grid(self) -> np.ndarray:
        return np.arange(self.end - self.history, self.end + 1, self.step, dtype=np.float64)


def _hour(t: np.ndarray) -> np.ndarray:
    return (t % DAY) / 3600


def working(t: np.ndarray) -> np.ndarray:
    h = _hour(t)
    return (h >= 7) & (h < 20)


THRESHOLD = 5.0  # the tests' idle threshold: no pod's mean utilisation comes within 0.01 of it


def utilisation(pod: Pod, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per GPU (rows) and point (columns): the profile plus a little noise, in [0, 100], two decimals
    (written exactly). A point whose mean would sit next to THRESHOLD is moved off it, so float
    rounding in Prometheus' avg can never flip a comparison the test makes exactly."""
    base = np.where(working(t), pod.busy, pod.night)
    if pod.lull:
        h = _hour(t)
        base = np.where((h >= 12) & (h < 12.25), 1.0, base)
    noise = rng.normal(0, 0.4, size=(pod.gpus, t.size))
    util = np.round(np.clip(base[None, :] + noise + np.arange(pod.gpus)[:, None] * 0.3, 0, 99.9), 2)
    near = np.abs(util.mean(axis=0) - THRESHOLD) < 0.01
    util[:, near] += 0.05
    return util


# ------------------------------------------------------------------------------------------ fleets

def three_teams(end: float, *, step: int = 300) -> Fleet:
    """Three teams (llm, vision, search), an unlabelled research notebook, GPU classes priced on
    demand, spot and reserved, one without a price, a MIG slice, a finished Job, a pod that never got
    a node, a rollout that replaced a pod mid-week, and a GPU busy without any pod."""
    week = 7 * DAY
    start = end - week - 2 * 3600  # data start: two hours before the window (the grace period looks back)
    t0 = end - week  # window start
    nodes = [
        Node("gpu-h100-a", H100, "on-demand"), Node("gpu-h100-b", H100, "reserved"),
        Node("gpu-l40s-a", L40S, "spot"), Node("gpu-a100-mig", A100, "on-demand"),
        Node("gpu-l4-a", None, None),
    ]

    def team(name: str, cc: str, model: str | None = None) -> dict[str, str]:
        return {"team": name, "cost-center": cc, **({"mlguard.io/model": model} if model else {})}

    rs = "ReplicaSet"
    pods = [
        Pod("team-llm", "vllm-llama-70b-7d9f6c-x2k4q", "gpu-h100-a", 4, start, end + 1,
            [(start, "Running")], team("llm", "cc-4410", "llama-3.1-70b-instruct"),
            (rs, "vllm-llama-70b-7d9f6c"), stack="vllm", busy=72, night=0.8, lull=True, rate=3.0),
        # a rollout mid-week: the old pod goes, the new one downloads its model for 30 minutes first
        Pod("team-llm", "vllm-mistral-7b-5c8d7b-aaaaa", "gpu-l40s-a", 1, start, t0 + 3.5 * DAY,
            [(start, "Running")], team("llm", "cc-4410", "mistral-7b-instruct"),
            (rs, "vllm-mistral-7b-5c8d7b"), stack="vllm", busy=45, night=20, rate=1.5),
        Pod("team-llm", "vllm-mistral-7b-6f9e8c-bbbbb", "gpu-l40s-a", 1, t0 + 3.5 * DAY - 1800, end + 1,
            [(t0 + 3.5 * DAY - 1800, "Pending"), (t0 + 3.5 * DAY, "Running")],
            team("llm", "cc-4410", "mistral-7b-instruct"), (rs, "vllm-mistral-7b-6f9e8c"),
            stack="vllm", busy=45, night=3, rate=1.5),
        # init container asks for 2 GPUs, the server for 1: the scheduler holds 2
        Pod("team-llm", "quantize-check-q7w", "gpu-h100-a", 1, t0 + 2 * DAY, t0 + 2 * DAY + 6 * 3600,
            [(t0 + 2 * DAY, "Running"), (t0 + 2 * DAY + 5 * 3600, "Succeeded")], team("llm", "cc-4410"),
            ("Job", "quantize-check"), init_gpus=2, busy=90, night=90),
        Pod("team-vision", "triton-detector-0", "gpu-h100-b", 2, start, end + 1, [(start, "Running")],
            team("vision", "cc-5120", "yolo-detector"), ("StatefulSet", "triton-detector"), stack="triton",
            busy=64, night=35, rate=8.0),
        Pod("team-vision", "tgi-captioner-84c6d-zz9r2", "gpu-l40s-a", 1, start, end + 1, [(start, "Running")],
            team("vision", "cc-5120", "blip-captioner"), (rs, "tgi-captioner-84c6d"), stack="tgi",
            busy=30, night=2, rate=0.8),
        # a backfill Job: runs two days, then Succeeded (its requests stay exported until deleted)
        Pod("team-search", "embeddings-backfill-p8x", "gpu-h100-a", 2, t0 + DAY, t0 + 4 * DAY,
            [(t0 + DAY, "Running"), (t0 + 3 * DAY, "Succeeded")], team("search", "cc-6030", "bge-large"),
            ("Job", "embeddings-backfill"), busy=95, night=95),
        # a MIG slice: DCGM exports no GPU_UTIL for it, so its hours are unmeasured
        Pod("team-search", "vllm-rerank-66b7f-m1g", "gpu-a100-mig", 1, start, end + 1, [(start, "Running")],
            team("search", "cc-6030", "bge-reranker"), (rs, "vllm-rerank-66b7f"),
            resource="nvidia.com/mig-3g.40gb", stack="vllm", rate=1.0, dcgm=False),
        # no team, cost center or model label: its own "unattributed" row, on a GPU class with no price
        Pod("research", "notebook-ana", "gpu-l4-a", 1, start, end + 1, [(start, "Running")], {},
            busy=4, night=0.5),
        # never scheduled (node ""): holds nothing
        Pod("team-llm", "vllm-llama-405b-0", "", 8, t0 + 5 * DAY, end + 1, [(t0 + 5 * DAY, "Pending")],
            team("llm", "cc-4410", "llama-3.1-405b-instruct"), ("StatefulSet", "vllm-llama-405b")),
    ]
    squatters = [("gpu-h100-b", 7, t0 + 4 * DAY + 9 * 3600, t0 + 4 * DAY + 19 * 3600, 88.0)]
    replicasets = {(p.namespace, p.owner[1]): ("Deployment", p.owner[1].rsplit("-", 1)[0])
                   for p in pods if p.owner[0] == rs}
    return Fleet(end=end, step=step, history=week + 2 * 3600, nodes=nodes, pods=pods, squatters=squatters,
                 replicasets=replicasets)


def large(end: float, *, gpus: int = 500, step: int = 60, days: int = 7, seed: int = 11) -> Fleet:
    """``gpus`` GPUs for the benchmark: serving Deployments of 1-8 GPUs over 25 teams, a third of them
    idle at night, every tenth pod replaced halfway through."""
    rng = np.random.default_rng(seed)
    window = days * DAY
    start = end - window - 3600
    node_size = 8
    nodes = [Node(f"gpu-node-{i:03d}", [H100, L40S, A100][i % 3], ["on-demand", "spot", "reserved"][i % 3])
             for i in range((gpus + node_size - 1) // node_size)]
    pods: list[Pod] = []
    free = {n.name: n.gpus for n in nodes}
    remaining, i = gpus, 0
    while remaining > 0:
        size = int(min(remaining, rng.choice([1, 1, 2, 4, 8])))
        node = next((n for n, f in free.items() if f >= size), None)
        if node is None:
            size, node = 1, next(n for n, f in free.items() if f >= 1)
        free[node] -= size
        remaining -= size
        team_i = i % 25
        labels = {"team": f"team-{team_i:02d}", "cost-center": f"cc-{1000 + team_i}",
                  "mlguard.io/model": f"model-{i % 40:02d}"}
        night = 1.0 if i % 3 == 0 else 40.0
        common = dict(labels=labels, stack="vllm", busy=float(rng.uniform(30, 90)), night=night,
                      rate=float(rng.uniform(0.5, 4)))
        if i % 10 == 0:
            mid = end - window / 2
            pods.append(Pod(f"ns-{team_i:02d}", f"serve-{i:04d}-a", node, size, start, mid, [(start, "Running")],
                            owner=("ReplicaSet", f"serve-{i:04d}-a"), **common))  # type: ignore[arg-type]
            pods.append(Pod(f"ns-{team_i:02d}", f"serve-{i:04d}-b", node, size, mid, end + 1, [(mid, "Running")],
                            owner=("ReplicaSet", f"serve-{i:04d}-b"), **common))  # type: ignore[arg-type]
        else:
            pods.append(Pod(f"ns-{team_i:02d}", f"serve-{i:04d}", node, size, start, end + 1, [(start, "Running")],
                            owner=("ReplicaSet", f"serve-{i:04d}"), **common))  # type: ignore[arg-type]
        i += 1
    return Fleet(end=end, step=step, history=window + 3600, nodes=nodes, pods=pods, squatters=[], seed=seed)


# ------------------------------------------------------------------------------------------ series

def _sanitize(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


BLOCK_SECONDS = 2 * 3600  # promtool's block range (Prometheus 2.42 cannot make it longer)
FILE_BLOCKS = 6  # blocks per file: fewer files cost promtool start-ups, longer ones re-reads


class OpenMetricsWriter:
    """Collects series and writes them as OpenMetrics, one file per FILE_BLOCKS two-hour blocks.

    promtool (2.42) re-reads its whole input once per two-hour block it creates: a week in one file
    is parsed 96 times (a minute for 300,000 samples); one file per block costs 97 start-ups (14 s).
    """

    def __init__(self) -> None:
        self.families: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = defaultdict(list)

    def add(self, name: str, labels: dict[str, str], t: np.ndarray, values: np.ndarray) -> None:
        if t.size == 0:
            return
        lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        self.families[name].append((f"{name}{{{lab}}} ", np.asarray(t, dtype=np.float64),
                                    np.asarray(values, dtype=np.float64)))

    def write(self, directory: Path, *, file_blocks: int = FILE_BLOCKS) -> tuple[list[Path], int]:
        """One file per ``file_blocks`` blocks that hold samples; returns the files and the sample count."""
        directory.mkdir(parents=True, exist_ok=True)
        lo = min(float(t[0]) for chunks in self.families.values() for _, t, _ in chunks)
        hi = max(float(t[-1]) for chunks in self.families.values() for _, t, _ in chunks)
        files, samples = [], 0
        span = BLOCK_SECONDS * file_blocks
        block = int(lo // span) * span
        while block <= hi:
            path = directory / f"block-{block}.om"
            written = 0
            with open(path, "w") as fh:
                for name, chunks in self.families.items():
                    lines = []
                    for prefix, t, v in chunks:
                        a, b = np.searchsorted(t, [block, block + span])
                        lines.extend(f"{prefix}{x:.15g} {ts:.0f}" for x, ts in zip(v[a:b], t[a:b], strict=True))
                    if lines:
                        fh.write(f"# TYPE {name} unknown\n")
                        fh.write("\n".join(lines))
                        fh.write("\n")
                        written += len(lines)
                fh.write("# EOF\n")
            if written:
                files.append(path)
                samples += written
            else:
                path.unlink()
            block += span
        return files, samples


@dataclass
class Truth:
    """What each pod did at each grid point (from the specification)."""

    alloc: dict[str, np.ndarray]  # pod name -> GPUs held per point
    measured: dict[str, np.ndarray]  # pod name -> bool per point: utilisation reported
    util: dict[str, np.ndarray]  # pod name -> mean utilisation per point (nan when not measured)
    requests: dict[str, np.ndarray]  # pod name -> requests counted at each point (increment)
    tokens: dict[str, np.ndarray]


def series(fleet: Fleet, *, extra: OpenMetricsWriter | None = None) -> tuple[OpenMetricsWriter, Truth]:
    rng = np.random.default_rng(fleet.seed)
    t = fleet.grid
    out = extra or OpenMetricsWriter()
    truth = Truth({}, {}, {}, {}, {})
    for node in fleet.nodes:
        labels = {"node": node.name}
        if node.product:
            labels["label_nvidia_com_gpu_product"] = node.product
        if node.capacity:
            labels["label_karpenter_sh_capacity_type"] = node.capacity
        out.add("kube_node_labels", {**labels, "job": "kube-state-metrics"}, t, np.ones(t.size))
    node_of = {n.name: n for n in fleet.nodes}
    held_until: dict[str, dict[int, float]] = defaultdict(dict)  # node -> GPU index -> free again from
    for (ns, rs_name), (kind, name) in fleet.replicasets.items():
        out.add("kube_replicaset_owner", {"namespace": ns, "replicaset": rs_name, "owner_kind": kind,
                                          "owner_name": name, "owner_is_controller": "true",
                                          "job": "kube-state-metrics"}, t, np.ones(t.size))
    for pod in fleet.pods:
        exists = (t >= pod.created) & (t < pod.deleted)
        te = t[exists]
        phase = pod.phase_at(t)
        ksm = {"namespace": pod.namespace, "pod": pod.name, "uid": f"uid-{pod.name}", "job": "kube-state-metrics"}
        resource = _sanitize(pod.resource)
        out.add("kube_pod_container_resource_requests",
                {**ksm, "container": "main", "node": pod.node, "resource": resource, "unit": "integer"},
                te, np.full(te.size, float(pod.gpus)))
        out.add("kube_pod_container_resource_requests",
                {**ksm, "container": "main", "node": pod.node, "resource": "cpu", "unit": "core"}, te,
                np.full(te.size, 4.0))
        if pod.init_gpus:
            out.add("kube_pod_init_container_resource_requests",
                    {**ksm, "container": "warmup", "node": pod.node, "resource": resource, "unit": "integer"},
                    te, np.full(te.size, float(pod.init_gpus)))
        for p in STATIC_PHASES:
            out.add("kube_pod_status_phase", {**ksm, "phase": p}, te, (phase[exists] == p).astype(float))
        out.add("kube_pod_labels", {**ksm, **{"label_" + _sanitize(k).lower(): v for k, v in pod.labels.items()},
                                    "label_app": pod.name.split("-")[0]}, te, np.ones(te.size))
        out.add("kube_pod_owner", {**ksm, "owner_kind": pod.owner[0], "owner_name": pod.owner[1],
                                   "owner_is_controller": "true"}, te, np.ones(te.size))
        held = exists & (pod.node != "") & np.isin(phase, ["Pending", "Running"])
        running = exists & (phase == "Running") & (pod.node != "")
        truth.alloc[pod.name] = np.where(held, float(pod.effective_gpus), 0.0)
        util = utilisation(pod, t, rng)
        has_util = running & pod.dcgm
        truth.measured[pod.name] = has_util
        truth.util[pod.name] = np.where(has_util, util.mean(axis=0), np.nan)
        if pod.node:
            node = node_of[pod.node]
            gpus = [i for i in range(node.gpus) if held_until[pod.node].get(i, -math.inf) <= pod.created][:pod.gpus]
            assert len(gpus) == pod.gpus, f"{node.name} has no {pod.gpus} free GPUs for {pod.name}"
            for gpu in gpus:
                held_until[pod.node][gpu] = pod.deleted
            if pod.dcgm:
                for k, gpu in enumerate(gpus):
                    out.add("DCGM_FI_DEV_GPU_UTIL", _dcgm(node, gpu, pod), t[has_util], util[k][has_util])
        # serving counters while running; a counter starts at 0 when its process starts
        incr = np.zeros(t.size)
        tokens = np.zeros(t.size)
        if pod.stack:
            rate = np.where(working(t), pod.rate, pod.rate / 10)
            incr = np.where(running, rng.poisson(rate * fleet.step), 0).astype(float)
            first_running = np.argmax(running) if running.any() else 0
            incr[first_running] = 0.0  # the first scrape of a new process
            tokens = np.round(incr * rng.lognormal(np.log(180), 0.3, size=t.size))
            _serving(out, pod, t[running], np.cumsum(incr)[running], np.cumsum(tokens)[running], rng)
        truth.requests[pod.name] = incr
        truth.tokens[pod.name] = tokens if pod.stack in ("vllm", "tgi") else np.zeros(t.size)
    # GPUs allocated to no pod: DCGM reports them with empty pod labels
    for node in fleet.nodes:
        for gpu in range(node.gpus):
            if gpu in held_until[node.name]:  # (a GPU a pod gave back reads 0%: not written)
                continue
            util = np.zeros(t.size)
            for where, index, lo, hi, level in fleet.squatters:
                if where == node.name and index == gpu:
                    util = np.where((t >= lo) & (t < hi), level, 0.0)
            out.add("DCGM_FI_DEV_GPU_UTIL", _dcgm(node, gpu, None), t, util)
    return out, truth


def _dcgm(node: Node, gpu: int, pod: Pod | None) -> dict[str, str]:
    return {"gpu": str(gpu), "UUID": f"GPU-{node.name}-{gpu}", "device": f"nvidia{gpu}",
            "modelName": DCGM_MODEL.get(node.product or L4, "NVIDIA L4"), "Hostname": node.name,
            "DCGM_FI_DRIVER_VERSION": "550.90.07", "job": "dcgm-exporter",
            "pod": pod.name if pod else "", "namespace": pod.namespace if pod else "",
            "container": "main" if pod else ""}


def _serving(out: OpenMetricsWriter, pod: Pod, t: np.ndarray, requests: np.ndarray, tokens: np.ndarray,
             rng: np.random.Generator) -> None:
    base = {"namespace": pod.namespace, "pod": pod.name}
    if pod.stack == "vllm":
        http = {**base, "job": "vllm", "method": "POST", "handler": "/v1/chat/completions"}
        out.add("http_requests_total", {**http, "status": "2xx"}, t, requests)
        # /v1/models is counted by vLLM too, ten times as often: not a completion, not a request here
        out.add("http_requests_total", {**base, "job": "vllm", "method": "GET", "handler": "/v1/models",
                                        "status": "2xx"}, t, 10 * requests)
        lab = {**base, "job": "vllm", "model_name": pod.labels.get("mlguard.io/model", "m")}
        out.add("vllm:request_generation_tokens_sum", lab, t, tokens)
        out.add("vllm:request_generation_tokens_count", lab, t, requests)
        out.add("vllm:num_requests_waiting", lab, t, np.floor(rng.exponential(2.0, t.size)))
        out.add("vllm:num_requests_running", lab, t, np.floor(rng.exponential(6.0, t.size)))
    elif pod.stack == "tgi":
        lab = {**base, "job": "tgi"}
        out.add("tgi_request_count", lab, t, requests)
        out.add("tgi_request_success", lab, t, requests)
        out.add("tgi_request_generated_tokens_sum", lab, t, tokens)
        out.add("tgi_request_generated_tokens_count", lab, t, requests)
    elif pod.stack == "triton":
        lab = {**base, "job": "triton", "model": pod.labels.get("mlguard.io/model", "m"), "version": "1"}
        failures = np.floor(requests / 500)
        out.add("nv_inference_request_success", lab, t, requests - failures)
        out.add("nv_inference_request_failure", {**lab, "reason": "BACKEND"}, t, failures)
        out.add("nv_inference_count", lab, t, requests)


# ------------------------------------------------------------------------------------------ the bill

@dataclass
class Expected:
    gpu_hours: float = 0.0
    measured_gpu_hours: float = 0.0
    idle_gpu_hours: float = 0.0
    util_gpu_hours: float = 0.0
    cost: float = 0.0
    idle_cost: float = 0.0
    unpriced_gpu_hours: float = 0.0
    requests: float | None = None
    tokens: float | None = None
    serving_cost: float = 0.0
    token_cost: float = 0.0


def idle_points(candidate: np.ndarray, grace_points: int) -> np.ndarray:
    """Points that belong to a run of at least ``grace_points`` consecutive candidates."""
    out = np.zeros(candidate.size, dtype=bool)
    i = 0
    while i < candidate.size:
        if not candidate[i]:
            i += 1
            continue
        j = i
        while j < candidate.size and candidate[j]:
            j += 1
        if j - i >= grace_points:
            out[i:j] = True
        i = j
    return out


def gpu_class(fleet: Fleet, pod: Pod) -> str:
    product = next(n.product for n in fleet.nodes if n.name == pod.node) or "unknown"
    if pod.resource.startswith("nvidia.com/mig-"):
        return f"{product}/{pod.resource.split('/', 1)[1]}"
    return product


def expected(fleet: Fleet, truth: Truth, *, window: float, threshold: float, grace: float,
             prices: dict[str, dict[str, float]] | None = None) -> dict[tuple[str, ...], Expected]:
    """The bill by (namespace, team, cost_center, model, gpu_class), from the specification."""
    t = fleet.grid
    in_window = t > fleet.end - window
    hours = fleet.step / 3600
    grace_points = max(1, int(np.ceil(grace / fleet.step)))
    rows: dict[tuple[str, ...], Expected] = defaultdict(Expected)
    for pod in fleet.pods:
        alloc = truth.alloc[pod.name]
        if not (alloc[in_window] > 0).any():
            continue
        node = next(n for n in fleet.nodes if n.name == pod.node)
        cls = gpu_class(fleet, pod)
        column = node.capacity or "on-demand"
        price = (prices or {}).get(cls, {}).get(column)
        key = (pod.namespace, pod.labels.get("team", "unattributed"), pod.labels.get("cost-center", "unattributed"),
               pod.labels.get("mlguard.io/model", "unattributed"), cls)
        row = rows[key]
        measured = truth.measured[pod.name] & (alloc > 0)
        util = np.nan_to_num(truth.util[pod.name])
        idle = idle_points(measured & (util < threshold), grace_points)
        gpu_hours = alloc[in_window].sum() * hours
        row.gpu_hours += gpu_hours
        row.measured_gpu_hours += alloc[in_window & measured].sum() * hours
        row.util_gpu_hours += (alloc * util)[in_window & measured].sum() * hours
        idle_hours = alloc[in_window & idle].sum() * hours
        row.idle_gpu_hours += idle_hours
        if price is None:
            row.unpriced_gpu_hours += gpu_hours
        else:
            row.cost += gpu_hours * price
            row.idle_cost += idle_hours * price
        if pod.stack:
            row.requests = (row.requests or 0) + truth.requests[pod.name][in_window].sum()
            row.serving_cost += gpu_hours * (price or 0)
            if pod.stack in ("vllm", "tgi"):
                row.tokens = (row.tokens or 0) + truth.tokens[pod.name][in_window].sum()
                row.token_cost += gpu_hours * (price or 0)
    for node_name, _, lo, hi, level in fleet.squatters:
        if level < threshold:
            continue
        node = next(n for n in fleet.nodes if n.name == node_name)
        busy = in_window & (t >= lo) & (t < hi)
        cls = node.product or "unknown"
        key = ("unattributed",) * 4 + (cls,)
        gpu_hours = busy.sum() * hours
        rows[key].gpu_hours += gpu_hours
        rows[key].measured_gpu_hours += gpu_hours
        rows[key].util_gpu_hours += gpu_hours * level
        price = (prices or {}).get(cls, {}).get("on-demand")
        if price is None:
            rows[key].unpriced_gpu_hours += gpu_hours
        else:
            rows[key].cost += gpu_hours * price
    return dict(rows)


# ------------------------------------------------------------------------------------------ Prometheus

def backfill(files: list[Path], tsdb: Path, *, jobs: int = 2) -> None:
    """``promtool tsdb create-blocks-from openmetrics`` for each file, ``jobs`` at a time."""
    tsdb.mkdir(parents=True, exist_ok=True)
    pending = list(files)
    running: list[tuple[subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < jobs:
            path = pending.pop(0)
            proc = subprocess.Popen(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(path),
                                     str(tsdb)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            running.append((proc, path))
        proc, path = running.pop(0)
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            for other, _ in running:
                other.kill()
            raise RuntimeError(f"promtool create-blocks-from {path.name} failed: {err.decode()[-2000:]}")


@contextlib.contextmanager
def prometheus(tsdb: Path, *, lookback: str, port: int, log: Path) -> Iterator[subprocess.Popen]:
    if not shutil.which("prometheus"):
        raise RuntimeError("the prometheus binary (Debian package 'prometheus') is required")
    config = tsdb.parent / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
             "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}",
             f"--query.lookback-delta={lookback}", "--query.max-samples=100000000"],
            stdout=handle, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
