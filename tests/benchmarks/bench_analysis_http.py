"""Benchmark: every check over HTTP through gunicorn at the documented maximum sizes.

    python tests/benchmarks/bench_analysis_http.py

Sizes: input-drift on 100,000 x 20 numeric features (jsonl and npy, KS + PSI) and on 2,000 x 384 embeddings
(npy, MMD, permutations raised to reach the anytime look alpha), output-drift on 100,000 responses,
eval-score on 20,000 golden items, latency and error-rate against a real Prometheus (90 minutes of
vLLM series). Prints seconds per answer (median and max of 3) and checks each is under 8 s.

Each gunicorn worker imports the checks (scipy.stats among them) on its first analysis, which adds
close to a second to that one answer. So the cost does not land on whichever case runs first, the
script first sends cheap eval-score requests until every worker has answered one (a worker's first
answer is the slow one), prints those first answers, then times the cases on warm workers.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[2]
BUDGET = 8.0
WORKERS = 2
COLD = 0.3  # seconds: a first answer (imports) takes longer than this, a warm eval-score answer far less


def load_conftest():  # the test fixtures' data generator and server helpers
    spec = importlib.util.spec_from_file_location("rollouts_conftest", REPO / "tests/rollouts/conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rollouts_conftest"] = module
    spec.loader.exec_module(module)
    return module


def write_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    n, d = 100_000, 20
    for name, shift in (("baseline", 0.0), ("canary", 0.05)):
        x = rng.normal(shift, 1.0, (n, d))
        with open(root / f"inputs-{name}.jsonl", "w") as fh:
            for row in x:
                fh.write(json.dumps({f"f{i}": round(float(v), 5) for i, v in enumerate(row)}) + "\n")
        np.save(root / f"inputs-{name}.npy", x)
        np.save(root / f"emb-{name}.npy", rng.normal(shift, 1.0, (2000, 384)).astype(np.float32))
        lengths = rng.poisson(200 + 10 * shift * 20, n)
        refused = rng.random(n) < 0.02
        with open(root / f"outputs-{name}.jsonl", "w") as fh:
            for a, b in zip(lengths, refused, strict=True):
                fh.write(json.dumps({"response_length": int(a), "refused": bool(b)}) + "\n")
        correct = rng.random(20_000) < (0.85 - shift)
        with open(root / f"eval-{name}.jsonl", "w") as fh:
            for i, c in enumerate(correct):
                fh.write(json.dumps({"id": f"q{i}", "correct": bool(c)}) + "\n")


def main() -> int:
    cf = load_conftest()
    tmp = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    procs = []
    try:
        t = time.perf_counter()
        (tmp / "samples").mkdir()
        write_data(tmp / "samples")
        print(f"data written in {time.perf_counter() - t:.1f}s "
              f"(inputs jsonl {(tmp / 'samples/inputs-baseline.jsonl').stat().st_size / 1e6:.0f} MB)")
        end = time.time() - 30
        cf.generate(cf.scenario_pods(end), end=end).write(tmp / "data.om")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"),
                        str(tmp / "tsdb")], check=True, capture_output=True)
        (tmp / "prometheus.yml").write_text("global: {}\nscrape_configs: []\n")
        port = cf.free_port()
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(prom)
        cf.wait_http(f"http://127.0.0.1:{port}/-/ready", proc=prom)
        config = tmp / "config.yaml"
        config.write_text("sampleLimits: {maxBytes: 134217728, maxRows: 200000}\n")
        srv = cf.start_server(["--prometheus", f"http://127.0.0.1:{port}", "--config", str(config),
                               "--sample-store", f"bench={tmp / 'samples'}", "--workers", str(WORKERS)],
                              tmp=tmp)
        procs.append(srv.proc)
        pair = {"store": "bench"}
        warm = {**pair, "baseline": "eval-baseline.jsonl", "canary": "eval-canary.jsonl"}
        first: list[float] = []
        for _ in range(40):  # bounded: stop once every worker has given its (slow) first answer
            t = time.perf_counter()
            requests.get(f"{srv.url}/v1/analyses/eval-score", params=warm, timeout=30).raise_for_status()
            if (elapsed := time.perf_counter() - t) > COLD:
                first.append(elapsed)
            if len(first) == WORKERS:
                break
        print(f"warm-up: first answer of each worker {', '.join(f'{x:.2f}s' for x in first)} "
              f"(imports; {len(first)} of {WORKERS} workers seen)")
        cases = {
            "input-drift (100k x 20, KS+PSI)": ("input-drift", {**pair, "baseline": "inputs-baseline.jsonl",
                                                              "canary": "inputs-canary.jsonl", "psi": "true"}),
            "input-drift (100k x 20 npy, KS+PSI)": ("input-drift", {**pair, "baseline": "inputs-baseline.npy",
                                                                  "canary": "inputs-canary.npy", "psi": "true"}),
            "input-drift (2000 x 384 MMD, 1000/side)": ("input-drift", {**pair, "baseline": "emb-baseline.npy",
                                                                       "canary": "emb-canary.npy",
                                                                       "embedding": "vec"}),
            "output-drift (100k responses)": ("output-drift", {**pair, "baseline": "outputs-baseline.jsonl",
                                                               "canary": "outputs-canary.jsonl"}),
            "eval-score (20k items)": ("eval-score", {**pair, "baseline": "eval-baseline.jsonl",
                                                      "canary": "eval-canary.jsonl"}),
            "latency (vLLM, 1h window)": ("latency", cf.vllm_params(cf.VLLM_SLOW)),
            "error-rate (vLLM, 1h window)": ("error-rate", cf.vllm_params(cf.VLLM_SLOW)),
        }
        worst = 0.0
        print(f"{'check':45s} {'verdict':13s} {'median s':>9s} {'max s':>7s}")
        for label, (check, params) in cases.items():
            times, verdict = [], "?"
            for _ in range(3):
                t = time.perf_counter()
                resp = requests.get(f"{srv.url}/v1/analyses/{check}", params=params, timeout=30)
                times.append(time.perf_counter() - t)
                body = resp.json()
                verdict = body.get("verdict") or f"HTTP {resp.status_code}: {body['error']['message'][:60]}"
            worst = max(worst, max(times))
            print(f"{label:45s} {verdict:13s} {statistics.median(times):9.2f} {max(times):7.2f}")
        print(f"slowest answer {worst:.2f}s; budget {BUDGET:.0f}s: {'OK' if worst < BUDGET else 'OVER BUDGET'}")
        return 0 if worst < BUDGET else 1
    finally:
        for proc in procs:
            cf.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
