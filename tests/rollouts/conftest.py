"""Fixtures for the analysis provider: a real Prometheus loaded with backfilled series, real gunicorn.

Data: every series of the four serving stacks (vLLM, TGI, Triton, KServe), named and labelled as
those servers export them, plus the ``rollouts_pod_template_hash`` label Prometheus attaches from
the pod. Generated with a fixed seed for the last ``HISTORY`` seconds at a 15 s scrape interval,
written as OpenMetrics, backfilled with ``promtool tsdb create-blocks-from openmetrics`` into the
TSDB directory, then Prometheus is started on 127.0.0.1 (it loads the blocks at start).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # argo_model, flagger_model beside the tests
HISTORY = 90 * 60  # seconds of data
SCRAPE = 15
NAMESPACE = "ml-serving"

# Hashes of each scenario: (stable, canary).
VLLM_GOOD = ("6f7d8c9b5", "7a8b9c0d1")  # canary like stable
VLLM_SLOW = ("6f7d8c9b5", "8c9d0e1f2")  # canary 1.6x latency, 0.9% errors (significant, below ceiling)
VLLM_ERRORS = ("6f7d8c9b5", "9d0e1f2a3")  # canary 5% errors (above ceiling)
VLLM_NEW = ("6f7d8c9b5", "5b6c7d8e9")  # canary started 5 minutes ago: window still filling
# A stable that was faster and had fewer errors before its canary started 30 minutes ago, and is like
# the canary since (another time of day): judged over the canary's lifetime, the canary is fine.
VLLM_LATE = ("1c2d3e4f5", "2d3e4f5a6")
LATE_CANARY_AGE = 1800
PRESET_HASHES = {"tgi": ("4a1b2c3d4", "4e5f6a7b8"), "triton": ("3a1b2c3d4", "3e5f6a7b8"),
                 "kserve": ("2a1b2c3d4", "2e5f6a7b8")}
TRITON_NO_FAILURES = "3f0e1d2c3"  # a Triton canary without any failure series
# KServe on Knative >= 1.19 (OpenTelemetry names; 1.19-1.20 and 1.21+), stable and canary.
KSERVE_OTEL = {"kn_serving_invocation_duration_seconds": ("2c1b2c3d4", "2d5f6a7b8"),
               "kn_queueproxy_app_duration_seconds": ("2f1b2c3d4", "2a5f6a7b8")}
VLLM_NO_ERROR_SERIES = "1a2b3c4d5"  # a vLLM canary that never answered 5xx: no status="5xx" series at all
VLLM_NAN_ERRORS = "1e2f3a4b5"  # a vLLM canary whose 5xx counter is NaN (a broken exporter)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# Canary timelines for the examples' contract tests (test_canary_timeline.py): the canaries start
# TIMELINE seconds before the end of the data, beside stable pods that run all along.
TIMELINE = 50 * 60
ARGO_STABLE = "7c6b5a4d3"
ARGO_CANARIES = {  # scenario -> pod-template hash of its canary
    "healthy": "8e7f6a5b4", "warm-up": "8f7e6d5c4", "latency-regression": "9a8b7c6d5",
    "error-regression": "9b8c7d6e5", "eval-regression": "8a9b0c1d2",
}
FLAGGER_APPS = {"healthy": "llama-good", "warm-up": "llama-warm", "latency-regression": "llama-slow"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ---------------------------------------------------------------- synthetic serving metrics
class Series:
    """Cumulative series of one family, written as OpenMetrics 'unknown' samples."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}

    def add(self, name: str, labels: dict[str, str], ts: float, value: float) -> None:
        lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        self.lines.setdefault(name, []).append(f"{name}{{{lab}}} {value:.6f} {ts:.3f}")

    def write(self, path: Path) -> None:
        with open(path, "w") as fh:
            for name, lines in self.lines.items():
                fh.write(f"# TYPE {name} unknown\n")
                fh.write("\n".join(lines))
                fh.write("\n")
            fh.write("# EOF\n")


@dataclass
class Pod:
    stack: str
    hash: str | None  # rollouts_pod_template_hash; None for pods outside Argo Rollouts (Flagger)
    pod: str
    start: float  # unix seconds: first scrape
    latency_scale: float = 1.0
    error_ratio: float = 0.002
    rate: float = 5.0  # requests per second
    labels: dict[str, str] | None = None  # more pod labels Prometheus attaches (Flagger's app)
    error_series: bool = True  # False: the server never answered 5xx, so it has no 5xx series
    nan_errors: bool = False  # the error counter reads NaN
    traffic_from: float | None = None  # unix seconds: no requests before (pods up, no traffic yet)
    variant: str = ""  # stack-specific: the metric name for the kserve-otel stack
    before: tuple[float, float, float] | None = None  # (until, latency_scale, error_ratio) before a time


def _histogram(series: Series, *, name: str, labels: dict[str, str], ts: float, buckets: list[float],
               counts: np.ndarray, total: float, le_fmt: str = "{:g}") -> None:
    cum = np.cumsum(counts)
    for le, c in zip(buckets, cum[:-1], strict=False):
        series.add(f"{name}_bucket", {**labels, "le": le_fmt.format(le)}, ts, float(c))
    series.add(f"{name}_bucket", {**labels, "le": "+Inf"}, ts, float(cum[-1]))
    series.add(f"{name}_count", labels, ts, float(cum[-1]))
    series.add(f"{name}_sum", labels, ts, total)


LAT_BUCKETS = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0]
TOKEN_BUCKETS = [16, 32, 64, 128, 256, 512, 1024, 2048]


def generate(pods: list[Pod], *, end: float, seed: int = 7) -> Series:
    rng = np.random.default_rng(seed)
    series = Series()
    for pod in pods:
        lat_counts = np.zeros(len(LAT_BUCKETS) + 1)
        tok_counts = np.zeros(len(TOKEN_BUCKETS) + 1)
        lat_sum = tok_sum = 0.0
        ok = err = 0
        base = {"namespace": NAMESPACE, "pod": pod.pod, **(pod.labels or {})}
        if pod.hash is not None:
            base["rollouts_pod_template_hash"] = pod.hash
        ts = pod.start
        while ts <= end:
            scale, ratio = pod.latency_scale, pod.error_ratio
            if pod.before is not None and ts < pod.before[0]:
                scale, ratio = pod.before[1], pod.before[2]
            n = rng.poisson(pod.rate * SCRAPE) if pod.traffic_from is None or ts >= pod.traffic_from else 0
            lat = rng.lognormal(mean=np.log(0.9), sigma=0.45, size=n) * scale
            toks = rng.lognormal(mean=np.log(180), sigma=0.6, size=n)
            e = int(rng.binomial(n, ratio))
            ok += n - e
            err += e
            lat_counts += np.bincount(np.searchsorted(LAT_BUCKETS, lat, side="left"),
                                      minlength=len(LAT_BUCKETS) + 1)
            tok_counts += np.bincount(np.searchsorted(TOKEN_BUCKETS, toks, side="left"),
                                      minlength=len(TOKEN_BUCKETS) + 1)
            lat_sum += float(lat.sum())
            tok_sum += float(toks.sum())
            if pod.stack == "vllm":
                lab = {**base, "job": "vllm", "model_name": MODEL}
                _histogram(series, name="vllm:e2e_request_latency_seconds", labels=lab, ts=ts,
                           buckets=LAT_BUCKETS, counts=lat_counts, total=lat_sum)
                _histogram(series, name="vllm:request_generation_tokens", labels=lab, ts=ts,
                           buckets=TOKEN_BUCKETS, counts=tok_counts, total=tok_sum, le_fmt="{:.1f}")
                series.add("vllm:request_success_total", {**lab, "finished_reason": "stop"}, ts, float(ok))
                http = {**base, "job": "vllm", "handler": "/v1/chat/completions", "method": "POST"}
                series.add("http_requests_total", {**http, "status": "2xx"}, ts, float(ok))
                if pod.error_series:
                    series.add("http_requests_total", {**http, "status": "5xx"}, ts,
                               float("nan") if pod.nan_errors else float(err))
                # Not completions, not counted: clients polling /v1/models (vLLM counts that route
                # too) ten times as often as they chat would dilute any error ratio tenfold.
                series.add("http_requests_total", {**base, "job": "vllm", "handler": "/v1/models", "method": "GET",
                                                   "status": "2xx"}, ts, float(10 * ok))
            elif pod.stack == "tgi":
                lab = {**base, "job": "tgi"}
                _histogram(series, name="tgi_request_duration", labels=lab, ts=ts, buckets=LAT_BUCKETS,
                           counts=lat_counts, total=lat_sum)
                _histogram(series, name="tgi_request_generated_tokens", labels=lab, ts=ts,
                           buckets=TOKEN_BUCKETS, counts=tok_counts, total=tok_sum)
                series.add("tgi_request_count", lab, ts, float(ok + err))
                series.add("tgi_request_success", lab, ts, float(ok))
                series.add("tgi_request_failure", {**lab, "err": "generation"}, ts, float(err))
            elif pod.stack == "triton":
                lab = {**base, "job": "triton", "model": "llama-8b-trtllm", "version": "1"}
                series.add("nv_inference_request_success", lab, ts, float(ok))
                if pod.error_ratio > 0:  # a model that never failed has no failure series (lazy reason label)
                    series.add("nv_inference_request_failure", {**lab, "reason": "BACKEND"}, ts, float(err))
                series.add("nv_inference_count", lab, ts, float(ok + err))
                series.add("nv_inference_request_duration_us", lab, ts, lat_sum * 1e6)
            elif pod.stack == "kserve-otel":
                # Knative >= 1.19: the queue-proxy's OpenTelemetry histogram, status as an attribute.
                lab = {**base, "job": "kserve", "model_name": "sklearn-iris"}
                _histogram(series, name="request_predict_seconds", labels=lab, ts=ts, buckets=LAT_BUCKETS,
                           counts=lat_counts, total=lat_sum)
                qp = {**base, "job": "queue-proxy", "kn_revision_name": "sklearn-iris-predictor-00002"}
                series.add(f"{pod.variant}_count", {**qp, "http_response_status_code": "200"}, ts, float(ok))
                if pod.error_series:
                    series.add(f"{pod.variant}_count", {**qp, "http_response_status_code": "500"}, ts, float(err))
            elif pod.stack == "kserve":
                lab = {**base, "job": "kserve", "model_name": "sklearn-iris"}
                _histogram(series, name="request_predict_seconds", labels=lab, ts=ts, buckets=LAT_BUCKETS,
                           counts=lat_counts, total=lat_sum)
                qp = {**base, "job": "queue-proxy", "configuration_name": "sklearn-iris-predictor",
                      "revision_name": "sklearn-iris-predictor-00002"}
                series.add("revision_app_request_count", {**qp, "response_code": "200",
                                                          "response_code_class": "2xx"}, ts, float(ok))
                series.add("revision_app_request_count", {**qp, "response_code": "500",
                                                          "response_code_class": "5xx"}, ts, float(err))
            ts += SCRAPE
    return series


def scenario_pods(end: float) -> list[Pod]:
    start = end - HISTORY
    stable = VLLM_GOOD[0]
    pods = [
        Pod("vllm", stable, "vllm-stable-a", start),
        Pod("vllm", stable, "vllm-stable-b", start),
        Pod("vllm", VLLM_GOOD[1], "vllm-good", start),
        Pod("vllm", VLLM_SLOW[1], "vllm-slow", start, latency_scale=1.6, error_ratio=0.009),
        Pod("vllm", VLLM_ERRORS[1], "vllm-errors", start, error_ratio=0.05),
        Pod("vllm", VLLM_NEW[1], "vllm-new", end - 300),
    ]
    for stack, (s, c) in PRESET_HASHES.items():
        pods.append(Pod(stack, s, f"{stack}-stable", start))
        pods.append(Pod(stack, c, f"{stack}-canary", start, latency_scale=1.6))
    pods.append(Pod("triton", TRITON_NO_FAILURES, "triton-nofail", start, error_ratio=0.0))
    for variant, (s, c) in KSERVE_OTEL.items():
        pods.append(Pod("kserve-otel", s, f"kserve-otel-stable-{s}", start, variant=variant))
        pods.append(Pod("kserve-otel", c, f"kserve-otel-canary-{c}", start, variant=variant, error_ratio=0.05))
    pods.append(Pod("vllm", VLLM_NO_ERROR_SERIES, "vllm-no-errors", start, error_ratio=0.0, error_series=False))
    pods.append(Pod("vllm", VLLM_NAN_ERRORS, "vllm-nan", start, nan_errors=True))
    pods += timeline_pods(end)
    canary_start = end - LATE_CANARY_AGE
    pods.append(Pod("vllm", VLLM_LATE[0], "vllm-late-stable", start, error_ratio=0.008,
                    before=(canary_start, 0.7, 0.001)))
    pods.append(Pod("vllm", VLLM_LATE[1], "vllm-late-canary", canary_start, error_ratio=0.008))
    return pods


# How each timeline scenario's canary differs from stable.
SCENARIO_TRAITS: dict[str, dict] = {
    "healthy": {},
    "warm-up": {"rate": 1.0, "traffic_after": 240},  # first requests 4 minutes after the pods are up, and few
    "latency-regression": {"latency_scale": 1.6},
    "error-regression": {"error_ratio": 0.05},
    "eval-regression": {},  # healthy in Prometheus, worse on the golden set (sample store)
}


def timeline_pods(end: float) -> list[Pod]:
    """Stable pods all along; each scenario's canary from ``end - TIMELINE`` (Argo and Flagger)."""
    start, t0 = end - HISTORY, end - TIMELINE
    pods = [Pod("vllm", ARGO_STABLE, f"argo-stable-{i}", start) for i in range(3)]
    for scenario, hash_ in ARGO_CANARIES.items():
        traits = dict(SCENARIO_TRAITS[scenario])
        after = traits.pop("traffic_after", None)
        pods.append(Pod("vllm", hash_, f"argo-canary-{scenario}", t0, **traits,
                        traffic_from=None if after is None else t0 + after))
    for scenario, app in FLAGGER_APPS.items():
        traits = dict(SCENARIO_TRAITS[scenario])
        after = traits.pop("traffic_after", None)
        pods += [Pod("vllm", None, f"{app}-primary-{i}", start, labels={"app": f"{app}-primary"}) for i in range(2)]
        pods.append(Pod("vllm", None, f"{app}-canary", t0, labels={"app": app}, **traits,
                        traffic_from=None if after is None else t0 + after))
    return pods


@dataclass
class PromServer:
    url: str
    data_end: float


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        pytest.fail("the prometheus and promtool binaries (Debian package 'prometheus') are required")
    tmp = tmp_path_factory.mktemp("prometheus")
    data, tsdb = tmp / "data.om", tmp / "tsdb"
    tsdb.mkdir()
    end = time.time() - 30
    generate(scenario_pods(end), end=end).write(data)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(data), str(tsdb)],
                   check=True, capture_output=True, timeout=120)
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tsdb}",
         "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}",
         "--query.lookback-delta=5m"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", proc=proc, timeout=60)
        yield PromServer(url=url, data_end=end)
    finally:
        stop(proc)
        log.close()


# ---------------------------------------------------------------- sample stores
def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_samples(root: Path) -> None:
    rng = np.random.default_rng(11)
    n = 2000

    def inputs(shift: float, cat_p: list[float]) -> list[dict]:
        x = rng.normal(shift, 1.0, n)
        y = rng.exponential(2.0, n)
        cats = rng.choice(["en", "de", "fr"], size=n, p=cat_p)
        return [{"prompt_tokens": float(a), "temperature": float(b), "lang": str(c)}
                for a, b, c in zip(x, y, cats, strict=True)]

    write_jsonl(root / "inputs/baseline.jsonl", inputs(0.0, [0.6, 0.3, 0.1]))
    write_jsonl(root / "inputs/canary-same.jsonl", inputs(0.0, [0.6, 0.3, 0.1]))
    write_jsonl(root / "inputs/canary-shifted.jsonl", inputs(0.5, [0.6, 0.3, 0.1]))
    write_jsonl(root / "inputs/canary-small.jsonl", inputs(0.0, [0.6, 0.3, 0.1])[:40])
    emb_base = rng.normal(0, 1, (400, 32))
    (root / "emb").mkdir(parents=True)
    np.save(root / "emb/baseline.npy", emb_base)
    np.save(root / "emb/canary-same.npy", rng.normal(0, 1, (300, 32)))
    np.save(root / "emb/canary-shifted.npy", rng.normal(0.4, 1, (300, 32)))
    write_jsonl(root / "emb/records-base.jsonl", [{"vec": r.tolist()} for r in emb_base[:200]])
    write_jsonl(root / "emb/records-shift.jsonl", [{"vec": (r + 0.5).tolist()} for r in rng.normal(0, 1, (200, 32))])

    def outputs(mean_len: float, refusal: float) -> list[dict]:
        lengths = rng.poisson(mean_len, n)
        refused = rng.random(n) < refusal
        return [{"response_length": int(a), "refused": bool(b)} for a, b in zip(lengths, refused, strict=True)]

    write_jsonl(root / "outputs/stable.jsonl", outputs(200, 0.02))
    write_jsonl(root / "outputs/canary-same.jsonl", outputs(200, 0.02))
    write_jsonl(root / "outputs/canary-refuses.jsonl", outputs(200, 0.08))
    write_jsonl(root / "outputs/canary-longer.jsonl", outputs(230, 0.02))

    items = 400
    truth = rng.random(items) < 0.85
    write_jsonl(root / "eval/baseline.jsonl", [{"id": f"q{i}", "correct": bool(t)} for i, t in enumerate(truth)])
    same = truth.copy()
    flip = rng.choice(items, 10, replace=False)
    same[flip] = ~same[flip]
    write_jsonl(root / "eval/canary-same.jsonl", [{"id": f"q{i}", "correct": bool(t)} for i, t in enumerate(same)])
    worse = truth.copy()
    worse[rng.choice(np.flatnonzero(truth), 40, replace=False)] = False
    write_jsonl(root / "eval/canary-worse.jsonl", [{"id": f"q{i}", "correct": bool(t)} for i, t in enumerate(worse)])
    write_jsonl(root / "eval/canary-partial.jsonl",
                [{"id": f"q{i}", "correct": bool(t)} for i, t in enumerate(truth[:20])])
    (root / "bad").mkdir()
    (root / "bad/directory.jsonl").mkdir()  # a directory where an object is expected
    (root / "bad/broken.jsonl").write_text('{"a": 1}\nnot json\n')
    np.save(root / "bad/three-d.npy", np.zeros((2, 2, 2)))


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samples")
    make_samples(root)
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # a client that hangs up mid-answer
        pass


@pytest.fixture(scope="session")
def http_store(sample_dir: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the sample directory (an HTTP(S) sample store)."""
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(sample_dir), **kw)  # noqa: E731
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def analysis_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(
        "prometheus:\n"
        "  timeoutSeconds: 3\n"
        "  queries:\n"
        "    broken_latency: 'histogram_quantile(${quantile}, sum by (le) (rate(x_bucket{${selector}}[${interval}])'\n"
        "    vllm_ttft: 'histogram_quantile(${quantile}, sum by (le) "
        "(rate(vllm:e2e_request_latency_seconds_bucket{${selector}}[${interval}])))'\n"
        "defaults:\n  alpha: 0.01\n  mode: anytime\n  maxLooks: 20\n"
    )
    return path


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path


def start_server(args: list[str], *, tmp: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), **(env or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp / f"gunicorn-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollouts", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc, timeout=60)
    return Server(url=url, proc=proc, log=log_path)


@pytest.fixture(scope="session")
def server(prometheus: PromServer, sample_dir: Path, http_store: str, analysis_config: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m rollouts serve`` (gunicorn, 2 workers) against the real Prometheus and stores."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    srv = start_server(
        ["--prometheus", prometheus.url, "--config", str(analysis_config), "--workers", "2",
         "--sample-store", f"local={sample_dir}", "--sample-store", f"web={http_store}"],
        tmp=tmp,
    )
    try:
        yield srv
    finally:
        stop(srv.proc)


@pytest.fixture(scope="session")
def dead_prometheus_server(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The provider pointed at a Prometheus that is down (a closed port)."""
    tmp = tmp_path_factory.mktemp("gunicorn-dead")
    srv = start_server(["--prometheus", f"http://127.0.0.1:{free_port()}", "--workers", "1",
                        "--sample-store", f"local={sample_dir}"], tmp=tmp)
    try:
        yield srv
    finally:
        stop(srv.proc)


@contextlib.contextmanager
def silent_tcp_server() -> Iterator[str]:
    """Accepts connections and never answers: a Prometheus that hangs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns: list[socket.socket] = []
    stop_flag = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop_flag.is_set():
            try:
                conn, _ = sock.accept()
                conns.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop_flag.set()
        thread.join(timeout=2)
        for c in conns:
            c.close()
        sock.close()


ARGO_UA = "argo-rollouts/v1.7.2 (https://github.com/argoproj/argo-rollouts)"


def vllm_params(pair: tuple[str, str], **extra: str) -> dict[str, str]:
    return {"preset": "vllm", "stable": pair[0], "canary": pair[1], "namespace": NAMESPACE,
            "model": MODEL, "window": "1h", "step": "1m", **extra}


def analysis(url: str, check: str, params: dict[str, str], *, method: str = "GET",
             headers: dict[str, str] | None = None) -> requests.Response:
    """Call the provider like Argo's web provider does; the answer is always JSON."""
    if method == "GET":
        resp = requests.get(f"{url}/v1/analyses/{check}", params=params, headers=headers, timeout=15)
    else:
        resp = requests.post(f"{url}/v1/analyses/{check}", json=params, headers=headers, timeout=15)
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:200]
    body = resp.json()
    if resp.status_code == 200:
        assert body["verdict"] in ("pass", "fail", "inconclusive")
        for key in ("check", "method", "statistic", "p_value", "threshold", "samples", "reason", "details",
                    "runbook", "mode"):
            assert key in body, key
    else:
        assert "verdict" not in body and body["error"]["status"] == resp.status_code
    return resp


@pytest.fixture(scope="session")
def lib():  # the conftest module itself: helpers and constants for the tests
    return sys.modules[__name__]


# ---------------------------------------------------------------- the examples' sample stores
EXAMPLE_STORES = ("inputs", "outputs", "evals")  # named in kustomize/base/analysis/config.yaml


def make_example_samples(root: Path) -> dict[str, Path]:
    """The objects the example AnalysisTemplates and the Flagger Canary read, per timeline scenario:
    what a request logger and an eval runner would have written during each canary."""
    rng = np.random.default_rng(23)
    stores = {name: root / name for name in EXAMPLE_STORES}
    n = 1500

    def inputs() -> list[dict]:
        return [{"prompt_tokens": float(p), "max_tokens": float(m), "temperature": float(t), "language": str(lang)}
                for p, m, t, lang in zip(rng.lognormal(5.5, 0.6, n), rng.choice([256.0, 512.0, 1024.0], n),
                                         rng.uniform(0, 1, n), rng.choice(["en", "de", "fr"], n, p=[0.6, 0.3, 0.1]),
                                         strict=True)]

    def outputs() -> list[dict]:
        return [{"response_length": int(a), "refused": bool(b)}
                for a, b in zip(rng.poisson(220, n), rng.random(n) < 0.02, strict=True)]

    items = 600
    truth = rng.random(items) < 0.86

    def golden(worse: bool) -> list[dict]:
        answers = truth.copy()
        if worse:  # 60 items the stable model gets right, the canary wrong
            answers[rng.choice(np.flatnonzero(truth), 60, replace=False)] = False
        else:  # a few flips either way
            flips = rng.choice(items, 8, replace=False)
            answers[flips] = ~answers[flips]
        return [{"id": f"q{i}", "correct": bool(a)} for i, a in enumerate(answers)]

    write_jsonl(stores["inputs"] / f"baselines/{MODEL}/inputs.jsonl", inputs())
    write_jsonl(stores["outputs"] / f"stable/{ARGO_STABLE}/outputs.jsonl", outputs())
    write_jsonl(stores["evals"] / f"golden/{MODEL}/{ARGO_STABLE}.jsonl",
                [{"id": f"q{i}", "correct": bool(a)} for i, a in enumerate(truth)])
    for scenario, hash_ in ARGO_CANARIES.items():
        write_jsonl(stores["inputs"] / f"canary/{hash_}/inputs.jsonl", inputs())
        write_jsonl(stores["outputs"] / f"canary/{hash_}/outputs.jsonl", outputs())
        write_jsonl(stores["evals"] / f"golden/{MODEL}/{hash_}.jsonl", golden(worse=scenario == "eval-regression"))
    # The Flagger Canary's pre-rollout eval (fixed keys: Flagger has no per-revision value to template).
    write_jsonl(stores["evals"] / "golden/llama-3.1-8b-instruct/stable.jsonl",
                [{"id": f"q{i}", "correct": bool(a)} for i, a in enumerate(truth)])
    write_jsonl(stores["evals"] / "golden/llama-3.1-8b-instruct/candidate.jsonl", golden(worse=False))
    return stores


@pytest.fixture(scope="session")
def example_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_example_samples(tmp_path_factory.mktemp("example-stores"))


SHIPPED_CONFIG = REPO / "kustomize/base/analysis/config.yaml"


@pytest.fixture(scope="session")
def shipped_server(prometheus: PromServer, example_stores: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The provider as deployed: the shipped config, with its Prometheus URL and sample stores (by
    the same names) pointed at the test's Prometheus and directories."""
    tmp = tmp_path_factory.mktemp("gunicorn-shipped")
    stores = [arg for name, path in example_stores.items() for arg in ("--sample-store", f"{name}={path}")]
    srv = start_server(["--config", str(SHIPPED_CONFIG), "--prometheus", prometheus.url, *stores], tmp=tmp)
    try:
        yield srv
    finally:
        stop(srv.proc)
