#!/usr/bin/env python3
"""What CEL rules (spec.rules) cost: the baseline PolicySet plus 0, 10 and 50 rules.

    python tests/benchmarks/bench_rules.py [--duration 60] [--rate 60] [--objects 400] [--instructions]

Three figures per rule count:
- admission p50/p99 over HTTP: one webhook (gunicorn, TLS, 2 workers x 4 threads) per rule count, all up at once,
  answering bench_webhook.py's 8 KB vLLM Deployment review; one open-loop loader sends to them in turn (0, 10,
  50, 0, 10, 50 ...) at ``--rate`` requests/s each for ``--duration`` seconds, latency from the scheduled send
  time. Taking turns puts each count under the same machine at the same moment (the loader shares the 2 cores,
  and on this VM the load moves a single server's p99 by milliseconds between runs). What the rules add at p99
  is the difference with the 0-rule server's p99, with a 95% interval from a block bootstrap (1-second blocks
  of every server's samples resampled together, fixed seed: stalls that hit neighbouring requests stay together);
- in-process p50/p99 of one `evaluate_object` at admission on the same object (no sockets), and from it the
  cost per rule per object (the mean's growth from 0 to 50 rules, divided by 50); and the median of one
  evaluation 5 ms after the last, as a server sees it between reviews (on this VM a process that slept runs the
  same evaluation 3-4 times slower than back-to-back: the servers' decision times follow that figure);
- `mlguard check` throughput (objects/s) on a directory of generated GPU Deployments and Pods;
- with ``--instructions``: instructions per in-process evaluation counted by callgrind, the figure that does
  not move with the machine's load.

The rules are a mix of what teams write: object rules on labels and fields, pod-template rules on GPUs and
node selectors, container rules on images and arguments (the three shipped examples among them), all run
in every scope they name.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests
import trustme
import yaml

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[2]))

from bench_webhook import FACTS, Sample, deployment_review, fixed_rate, free_port, interleaved, percentile, stop  # noqa: E402

REPO = HERE.parents[2]
EXAMPLES = REPO / "policies" / "catalog" / "examples" / "gpu-rules.yaml"
TEMPLATES: list[dict[str, Any]] = [
    {"scope": "object", "validations": [{"expression": "object.metadata.?labels.?team.orValue('') != ''",
                                         "message": "every workload names its team"}]},
    {"scope": "podTemplate", "params": {"max": 8},
     "validations": [{"expression": "gpus <= params.max", "messageExpression": "'too many GPUs: ' + string(gpus)"}]},
    {"scope": "container", "validations": [{"expression": "!container.image.endsWith(':latest')",
                                            "message": "pin the image"}]},
    {"scope": "container", "params": {"registries": ["registry.example.com/", "nvcr.io/"]},
     "validations": [{"expression": "params.registries.exists(r, container.image.startsWith(r))",
                      "message": "images come from the approved registries"}]},
    {"scope": "object", "validations": [{"expression": "!has(object.spec.replicas) || object.spec.replicas <= 16",
                                         "message": "at most 16 replicas"}]},
    {"scope": "podTemplate", "validations": [{
        "expression": "gpus == 0 || (has(template.nodeSelector) && 'nvidia.com/gpu.product' in template.nodeSelector)",
        "message": "GPU pods select a GPU class"}]},
    {"scope": "container", "validations": [{
        "expression": "gpus == 0 || quantity(string(container.?resources.?limits.?memory.orValue('0')))"
                      ".isGreaterThan(quantity('1Gi'))", "message": "GPU containers set a memory limit"}]},
]


def rules(count: int) -> list[dict[str, Any]]:
    examples = yaml.safe_load(EXAMPLES.read_text())["spec"]["rules"]
    pool = examples + TEMPLATES
    out = []
    for i in range(count):
        rule = copy.deepcopy(pool[i % len(pool)])
        rule.update({"id": f"bench-rule-{i:02d}", "description": "benchmark rule", "action": "deny",
                     "runbook": "runbooks/team-rules.md"})
        rule.pop("match", None)  # every rule runs on every object (h100-prod-only names core kinds)
        out.append(rule)
    return out


def policyset(count: int) -> str:
    doc = yaml.safe_load((REPO / "policies" / "catalog" / "baseline.yaml").read_text())
    doc["spec"]["rules"] = rules(count)
    doc["spec"]["ruleCount"] = count
    doc["spec"]["evalKeys"] = {"keys": []}
    doc["spec"]["policies"].pop("eval-gate", None)
    doc["spec"]["policyCount"] = len(doc["spec"]["policies"])
    return yaml.safe_dump(doc, sort_keys=False)


def evaluation(text: str, body: bytes) -> Callable[[], object]:
    """One admission evaluation of the review's object under the PolicySet ``text``, as the webhook makes it
    (each policy's and rule's resolution kept across requests)."""
    from policies.context import RequestInfo
    from policies.engine import Resolutions, evaluate_object
    from policies.policyset import parse_policyset

    ps = parse_policyset(text, source="bench")
    obj = json.loads(body)["request"]["object"]
    info = RequestInfo(operation="CREATE", user="system:serviceaccount:argocd:argocd-application-controller")
    known: Resolutions = {}
    return lambda: evaluate_object(obj, ps, point="admission", request=info, resolutions=known)


def in_process(text: str, body: bytes, *, n: int = 2000) -> tuple[float, float, float, float, float]:
    evaluate = evaluation(text, body)
    for _ in range(100):
        evaluate()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        evaluate()
        times.append(time.perf_counter() - start)
    times.sort()
    cpu = float("inf")  # CPU time per call, best of 7 rounds: what a busy machine changes least
    for _ in range(7):
        start = time.process_time()
        for _ in range(300):
            evaluate()
        cpu = min(cpu, (time.process_time() - start) / 300)
    # as a server between reviews: the process sleeps, and on this VM wakes to caches without its code and data
    return (statistics.fmean(times) * 1e3, times[n // 2] * 1e3, times[int(n * 0.99)] * 1e3, cpu * 1e3,
            median_after(evaluate, 0.005) * 1e3)


def median_after(call: Callable[[], object], gap: float, n: int = 400) -> float:
    """The median seconds of ``call`` run ``n`` times, each ``gap`` seconds after the last (0: back-to-back)."""
    times = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cel_floor(n: int = 400) -> tuple[float, float]:
    """The least one call into the CEL runtime costs (an Activation and the program `true`), median microseconds
    back-to-back and 5 ms after the last: what a rule costs before it reads anything, once per object."""
    from policies.rules.celenv import frame_environment

    env = frame_environment()
    program = env.compile("true")
    back_to_back, slept = (median_after(lambda: program.eval(env.Activation({})), gap, n) * 1e6 for gap in (0.0, 0.005))
    return back_to_back, slept


def evaluate_many(count: int, n: int) -> None:
    """``n`` admission evaluations (after 20 to warm up) of the benchmark's review with ``count`` rules: what
    `instructions` runs under callgrind. What the warm-up leaves is frozen out of the garbage collector: a full
    collection walks every object the process holds, and when one falls inside the ``n`` evaluations or not
    moved the count by up to 15%."""
    evaluate = evaluation(policyset(count), deployment_review())
    for _ in range(20):
        evaluate()
    gc.collect()
    gc.freeze()
    functools.reduce(lambda _, __: evaluate(), range(n), None)  # `instructions` counts inside this call only


def instructions(count: int, n: int = 300) -> int:
    """Instructions per evaluation, counted by valgrind's callgrind inside the loop of ``n`` evaluations only
    (`evaluate_many`: start-up and imports alone vary by ~1% between runs, which is ~100,000 instructions per
    evaluation over 300 of them), divided by ``n``: the same for the same code and input, whatever else the
    machine does."""
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          "--toggle-collect=functools_reduce", sys.executable, str(HERE), "--evaluate",
                          f"{count},{n}"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict and set orders each run
    return int(out.stderr.rsplit("Collected :", 1)[1].split()[0]) // n


def decision_times(log: Path) -> list[float]:
    """The server's own time per answer (parsed body to built response, seconds), from its decision log lines."""
    out = []
    for line in log.read_text().splitlines():
        if '"duration_ms"' in line:
            out.append(json.loads(line)["duration_ms"] / 1000)
    return sorted(out)


def added_p99(samples: list[Sample], base: int, other: int, *, block: float = 1.0, resamples: int = 2000,
              seed: int = 20261203) -> tuple[float, float, float]:
    """What server ``other`` adds to server ``base``'s p99 (ms), and a 95% interval: a block bootstrap over
    ``block``-second slices of the run, each slice taking both servers' samples with it."""
    def p99(values: np.ndarray) -> float:
        return float(np.sort(values)[min(len(values) - 1, int(0.99 * len(values)))]) * 1000

    slices: dict[int, dict[int, list[float]]] = {}
    for server, offset, latency in samples:
        slices.setdefault(int(offset // block), {}).setdefault(server, []).append(latency)
    keys = sorted(slices)
    parts = {server: [np.asarray(slices[k].get(server, []), dtype=float) for k in keys] for server in (base, other)}
    point = p99(np.concatenate(parts[other])) - p99(np.concatenate(parts[base]))
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(keys), len(keys))
        found.append(p99(np.concatenate([parts[other][i] for i in chosen]))
                     - p99(np.concatenate([parts[base][i] for i in chosen])))
    lo, hi = np.percentile(found, [2.5, 97.5])
    return point, float(lo), float(hi)


def serve(work: Path, cert: Path, key: Path, policyset_file: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    facts = work / "facts.yaml"
    facts.write_text(FACTS)
    metrics_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-", dir=work))
    env = {**os.environ, "MLGUARD_WEBHOOK_FACTS_FILE": str(facts), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    log = (work / f"webhook-{port}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--cert", str(cert), "--key", str(key), "--policyset", str(policyset_file),
                             "--workers", "2", "--threads", "4"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port, work / f"webhook-{port}.log"


def ready(port: int, ca: Path, proc: subprocess.Popen[bytes]) -> None:
    session = requests.Session()
    session.trust_env = False
    end = time.monotonic() + 30
    while time.monotonic() < end and proc.poll() is None:
        try:
            if session.get(f"https://127.0.0.1:{port}/readyz", verify=str(ca), timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("webhook did not become ready")


def manifests(root: Path, count: int) -> None:
    body = json.loads(deployment_review())["request"]["object"]
    for i in range(count):
        obj = copy.deepcopy(body)
        obj["metadata"]["name"] = f"llm-{i:04d}"
        if i % 2:  # half of them bare Pods
            obj = {"apiVersion": "v1", "kind": "Pod", "metadata": obj["metadata"],
                   "spec": obj["spec"]["template"]["spec"]}
        (root / f"obj-{i:04d}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))


def check_rate(root: Path, policyset_file: Path, count: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", str(root), "--policyset",
                               str(policyset_file), "--format", "json", "-o", os.devnull], cwd=REPO,
                              capture_output=True, text=True, check=False)
        best = min(best, time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(proc.stderr)
    return count / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (every rule count at once)")
    parser.add_argument("--rate", type=float, default=60.0,
                        help="requests per second to each server (100 each to three servers saturates 2 cores)")
    parser.add_argument("--objects", type=int, default=400, help="objects for the mlguard check run")
    parser.add_argument("--counts", default="0,10,50")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per evaluation with valgrind (deterministic; ~1 min per count)")
    parser.add_argument("--evaluate", help=argparse.SUPPRESS)  # COUNT,N: the callgrind subject
    args = parser.parse_args()
    if args.evaluate:
        evaluate_many(*(int(x) for x in args.evaluate.split(",")))
        return 0
    if args.instructions and not shutil.which("valgrind"):
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    counts = [int(c) for c in args.counts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-rules-"))
    try:
        ca_obj = trustme.CA()
        ca, cert, key = work / "ca.pem", work / "tls.crt", work / "tls.key"
        ca_obj.cert_pem.write_to_path(str(ca))
        issued = ca_obj.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        body = deployment_review()
        objects = work / "manifests"
        objects.mkdir()
        manifests(objects, args.objects)
        print(f"CEL rules on top of the baseline PolicySet: {len(body)} byte Deployment review, {os.cpu_count()} CPUs "
              f"(shared with the loader), {args.rate:.0f} req/s to each server in turn for {args.duration:.0f} s; "
              f"check on {args.objects} objects (best of 3 runs, process start included)")
        print(f"  {'rules':>5}  {'in-process CPU ms':>17}  {'wall mean/p50/p99 ms':>22}  {'HTTP p50 ms':>11}  "
              f"{'HTTP p99 ms':>11}  {'errors':>6}  {'check objects/s':>15}")
        means, files, inproc = {}, {}, {}
        for count in counts:
            text = policyset(count)
            files[count] = work / f"policyset-{count}.yaml"
            files[count].write_text(text)
            inproc[count] = in_process(text, body)
            means[count] = inproc[count][3]
        # One server per rule count, all up at once, loaded in turn by one schedule (see the module's docstring).
        servers = {count: serve(work, cert, key, files[count]) for count in counts}
        try:
            for proc, port, _log in servers.values():
                ready(port, ca, proc)
                fixed_rate(port, str(ca), body, rate=50, duration=1.0)  # warm-up
            samples, errors, _took = interleaved([port for _proc, port, _log in servers.values()], str(ca), body,
                                                 rate=args.rate * len(counts), duration=args.duration)
        finally:
            for proc, _port, _log in servers.values():
                stop(proc)
        latencies = {i: sorted(s[2] for s in samples if s[0] == i) for i in range(len(counts))}
        inside = {count: decision_times(log) for count, (_proc, _port, log) in servers.items()}
        for i, count in enumerate(counts):
            mean, p50, p99, cpu, _idle = inproc[count]
            rate = check_rate(objects, files[count], args.objects)
            print(f"  {count:>5}  {cpu:>17.3f}  {mean:>6.3f} / {p50:>5.3f} / {p99:>6.3f}  "
                  f"{percentile(latencies[i], 0.50):>11.2f}  {percentile(latencies[i], 0.99):>11.2f}  "
                  f"{errors[i]:>6}  {rate:>15.0f}")
        if 0 in counts:
            base = counts.index(0)
            for i, count in enumerate(counts):
                if count:
                    point, lo, hi = added_p99(samples, base, i)
                    print(f"  {count} rules add at HTTP p99: {point:+.2f} ms (95% interval {lo:+.2f} to {hi:+.2f}; "
                          f"{len(latencies[i]):,} and {len(latencies[base]):,} requests); at p50 "
                          f"{percentile(latencies[i], 0.5) - percentile(latencies[base], 0.5):+.2f} ms; in process "
                          f"at p99 {inproc[count][2] - inproc[0][2]:+.3f} ms")
            print("  one in-process evaluation 5 ms after the last (a server between reviews), median ms: " + ", ".join(
                f"{count} rules {inproc[count][4]:.3f} (back-to-back {inproc[count][1]:.3f})" for count in counts))
            trivial, slept = cel_floor()
            print(f"  one call into the CEL runtime (an Activation and `true`), median: {trivial:.1f} us back-to-back, "
                  f"{slept:.1f} us 5 ms after the last")
            print("  the servers' own time per answer (parsed body to built response, from their decision logs, "
                  "warm-up included), p50 / p99 ms: " + ", ".join(
                      f"{count} rules {percentile(inside[count], 0.5):.2f} / {percentile(inside[count], 0.99):.2f}"
                      for count in counts))
        if args.instructions:
            counted = {count: instructions(count) for count in counts}
            print("  instructions per evaluation (callgrind): " + ", ".join(
                f"{count} rules {n:,}" for count, n in counted.items()) + (
                f"; 10 rules add {counted[10] - counted[0]:,}" if 0 in counted and 10 in counted else ""))
        if 0 in means and max(counts) > 0:
            top = max(counts)
            per_rule = (means[top] - means[0]) / top * 1000
            print(f"  cost per rule per object (in-process CPU time, 0 -> {top} rules): {per_rule:.1f} us; "
                  f"10 rules add {(means.get(10, means[top]) - means[0]) * 1000:.0f} us of CPU per object")
            with open("/proc/loadavg") as f:
                print(f"  load average during the run: {f.read().split()[0]} on {os.cpu_count()} CPUs")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
