"""Benchmark: the analysis provider's deadline under a slow, a huge and a crowded day.

    python tests/benchmarks/bench_deadline.py [--concurrency 50]

Through gunicorn (2 workers, the shipped gthread worker and its defaults: 7 s budget from arrival,
2 analyses per worker, 1 s minimum to start), it measures:

1. a trickling Prometheus: headers, then a body byte every 0.1 s; headers a line every 0.1 s; a
   server that accepts and never answers; answer status and seconds;
2. N concurrent heavy requests (input-drift on 100,000 x 20 jsonl features, 32 MB each side, the
   documented maximum; half of them on the npy version): how many got 200 / 503 / 504, the slowest
   answer of each kind;
3. a 150 MB Prometheus answer: status, seconds, and the peak resident memory (VmHWM) of the worker
   that read it.

Every answer must be JSON and non-2xx where it is not a verdict, within the budget (plus the
scheduling noise of a shared machine); the script prints the worst case and exits 1 if an answer
took longer than Argo's 10 s or a worker's peak memory reached 300 MB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
ARGO_TIMEOUT = 10.0
MEMORY_LIMIT_MB = 300


def load(name: str, path: Path):  # a helper module from the tests (not a package)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class FakePrometheus:
    """A TCP server that reads a request and hands the socket to ``answer``."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                self.answer(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def trickle_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(600):
        conn.sendall(b"1\r\n \r\n")
        time.sleep(0.1)


def trickle_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(600):
        conn.sendall(b"X: y\r\n")
        time.sleep(0.1)


def silent(conn: socket.socket) -> None:
    time.sleep(60)


def huge(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    conn.sendall(b'{"status":"success","data":{"resultType":"vector","result":[')
    row = b'{"metric":{"pod":"' + b"x" * 200 + b'"},"value":[1,"1"]},'
    for _ in range(150 * 1024 * 1024 // len(row)):
        conn.sendall(row)


def timed_get(url: str, params: dict) -> tuple[int, float, str]:
    t = time.perf_counter()
    try:
        resp = requests.get(url, params=params, timeout=30)
    except requests.RequestException as exc:
        return 0, time.perf_counter() - t, type(exc).__name__
    elapsed = time.perf_counter() - t
    body = resp.json()  # always JSON, or this raises
    kind = body.get("verdict") or body["error"]["type"]
    return resp.status_code, elapsed, kind


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--slots", type=int, default=0, help="maxConcurrentAnalyses (default: the shipped default)")
    parser.add_argument("--only", choices=("trickle", "heavy", "huge"), help="run one scenario")
    args = parser.parse_args()
    cf = load("rollouts_conftest", REPO / "tests/rollouts/conftest.py")
    bench = load("bench_analysis_http", REPO / "tests/benchmarks/bench_analysis_http.py")
    tmp = Path(tempfile.mkdtemp(prefix="bench-deadline-"))
    procs: list[subprocess.Popen] = []
    fakes: list[FakePrometheus] = []
    worst = 0.0
    ok = True
    try:
        (tmp / "samples").mkdir()
        bench.write_data(tmp / "samples")
        config = tmp / "config.yaml"
        config.write_text("sampleLimits: {maxBytes: 134217728, maxRows: 200000}\n"
                          + (f"maxConcurrentAnalyses: {args.slots}\n" if args.slots else ""))

        trickles = (("body byte every 0.1 s", trickle_body), ("header line every 0.1 s", trickle_headers),
                    ("never answers", silent))
        if args.only in (None, "trickle"):
            print("1. trickling Prometheus (error-rate, budget 7 s)")
        for name, answer in trickles if args.only in (None, "trickle") else ():
            fake = FakePrometheus(answer)
            fakes.append(fake)
            srv = cf.start_server(["--prometheus", fake.url, "--config", str(config), "--workers", "2"], tmp=tmp)
            procs.append(srv.proc)
            status, seconds, kind = timed_get(f"{srv.url}/v1/analyses/error-rate",
                                              {"preset": "vllm", "stable": "a1", "canary": "b2"})
            print(f"   {name:28s} HTTP {status} {kind:16s} {seconds:5.2f} s")
            worst = max(worst, seconds)
            ok &= status >= 500 and seconds < ARGO_TIMEOUT
            cf.stop(srv.proc)

        if args.only in (None, "heavy"):
            worst, ok = heavy(cf, tmp, config, args.concurrency, worst, ok)
        if args.only in (None, "huge"):
            worst, ok = huge_answer(cf, tmp, config, fakes, worst, ok)
        print(f"worst answer {worst:.2f} s (Argo gives up at {ARGO_TIMEOUT:.0f} s): {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        for proc in procs:
            cf.stop(proc)
        for fake in fakes:
            fake.close()
        shutil.rmtree(tmp, ignore_errors=True)


WARM = {"store": "bench", "baseline": "eval-baseline.jsonl", "canary": "eval-canary.jsonl"}


def heavy(cf, tmp: Path, config: Path, concurrency: int, worst: float, ok: bool) -> tuple[float, bool]:
    print(f"2. {concurrency} concurrent heavy requests (input-drift 100,000 x 20, jsonl and npy)")
    srv = cf.start_server(["--config", str(config), "--sample-store", f"bench={tmp / 'samples'}",
                           "--workers", "2"], tmp=tmp)
    try:
        for _ in range(8):  # every worker imports scipy on its first analysis
            requests.get(f"{srv.url}/v1/analyses/eval-score", params=WARM, timeout=30)
        cases = [{"store": "bench", "baseline": f"inputs-baseline.{ext}", "canary": f"inputs-canary.{ext}",
                  "psi": "true"} for ext in ("jsonl", "npy")]
        for label, case in zip(("jsonl", "npy"), cases, strict=True):
            status, seconds, kind = timed_get(f"{srv.url}/v1/analyses/input-drift", case)
            print(f"   alone, {label:5s}: HTTP {status} {kind} {seconds:5.2f} s")
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(timed_get, f"{srv.url}/v1/analyses/input-drift", cases[i % 2])
                       for i in range(concurrency)]
            results = [f.result() for f in futures]
    finally:
        cf.stop(srv.proc)
    by_status: dict[int, list[float]] = {}
    for status, seconds, _ in results:
        by_status.setdefault(status, []).append(seconds)
    for status, times in sorted(by_status.items()):
        print(f"   HTTP {status}: {len(times):3d} answers, median {statistics.median(times):5.2f} s, "
              f"slowest {max(times):5.2f} s")
    print(f"   kinds: {dict(Counter(kind for _, _, kind in results))}")
    slowest = max(s for _, s, _ in results)
    ok &= all(status in (200, 503, 504) for status, _, _ in results) and slowest < ARGO_TIMEOUT
    return max(worst, slowest), ok


def huge_answer(cf, tmp: Path, config: Path, fakes: list[FakePrometheus], worst: float,
                ok: bool) -> tuple[float, bool]:
    print("3. a 150 MB Prometheus answer (maxBytes 8 MiB)")
    fake = FakePrometheus(huge)
    fakes.append(fake)
    srv = cf.start_server(["--prometheus", fake.url, "--config", str(config), "--workers", "1"], tmp=tmp)
    try:
        requests.get(f"{srv.url}/v1/analyses/eval-score", params=WARM, timeout=30)  # imports (no store: 400)
        (pid,) = worker_pids(srv.proc.pid)
        before = peak_rss_mb(pid)
        status, seconds, kind = timed_get(f"{srv.url}/v1/analyses/error-rate",
                                          {"preset": "vllm", "stable": "a1", "canary": "b2"})
        after = peak_rss_mb(pid)
    finally:
        cf.stop(srv.proc)
    print(f"   HTTP {status} {kind} in {seconds:.2f} s; worker peak RSS {before:.0f} MB before, {after:.0f} MB after")
    ok &= status == 502 and after < MEMORY_LIMIT_MB
    return max(worst, seconds), ok


if __name__ == "__main__":
    sys.exit(main())
