"""Benchmark: `mlguard report gpu` over 7 days at 1-minute resolution for 500 GPUs.

Builds a fleet of serving Deployments holding 500 GPUs (tests/rollouts/gpu_fleet.large: 25 teams,
a third of the pods idle at night, every tenth pod replaced halfway), writes it as kube-state-metrics,
DCGM exporter and vLLM series at a 1-minute interval, backfills it into Debian's Prometheus, and runs
the report as an operator would (`python -m rollouts report gpu`, a child process). Prints:

- wall time and peak memory (RSS) of the report process, and the queries it made;
- Prometheus' peak memory;
- whether the figures match the fleet's specification (GPU-hours and idle hours, to 0.1%);
- the same with ``--idle-threshold 100`` (every measured point idle: the most data the idle query
  can return, fetched in chunks split to the byte cap).

    python tests/benchmarks/bench_gpu_report.py [--gpus 500] [--days 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "rollouts"))

import gpu_fleet as gf  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("prometheus exited")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("prometheus not ready")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The report in a child process that says its own peak memory (VmHWM: ru_maxrss would keep the forking
# parent's high-water mark across exec, see bench_check.py) and CPU time when it is done.
CHILD = """
import json, resource, sys
from rollouts.__main__ import main
code = main(sys.argv[1:])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "mib": int(hwm.split()[1]) / 1024, "cpu": usage.ru_utime + usage.ru_stime}))
"""


def run_report(url: str, end: int, out: Path, *extra: str) -> tuple[dict, float, float, float]:
    """(JSON answer, wall seconds, peak RSS MiB, CPU seconds of the report process)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD, "report", "gpu", "--prometheus", url, "--end", str(end),
                           "--format", "json", "--output", str(out), *extra], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    wall = time.monotonic() - started
    lines = proc.stdout.strip().splitlines()
    stats = json.loads(lines[-1]) if lines else {"code": proc.returncode}
    if stats["code"] != 0:
        raise RuntimeError(f"report failed ({stats['code']}): {proc.stderr[-2000:]}")
    return json.loads(out.read_text()), wall, stats["mib"], stats["cpu"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--extra", nargs="*", default=[], help="more flags for the report")
    parser.add_argument("--keep", type=Path, help="keep the data directory here (and reuse it on the same day)")
    args = parser.parse_args()
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        print("needs Debian's prometheus package (scripts/setup.sh --bench)")
        return 1
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench-gpu-report-"))
    end = int(math.floor(time.time() / 86400) * 86400 - 86400 + 2 * 3600)
    marker = tmp / "fleet.json"
    t0 = time.monotonic()
    fleet = gf.large(end, gpus=args.gpus, days=args.days)
    writer, truth = gf.series(fleet)
    series = sum(len(chunks) for chunks in writer.families.values())
    if marker.is_file() and json.loads(marker.read_text()) == {"end": end, "gpus": args.gpus, "days": args.days}:
        print(f"fleet: {args.gpus} GPUs, {len(fleet.pods)} pods, {series:,} series ({args.days} d at {fleet.step} s); "
              f"reusing the blocks in {tmp / 'tsdb'}")
        del writer
    else:
        shutil.rmtree(tmp / "tsdb", ignore_errors=True)
        files, samples = writer.write(tmp / "om", file_blocks=1)
        del writer
        t1 = time.monotonic()
        gf.backfill(files, tmp / "tsdb")
        shutil.rmtree(tmp / "om", ignore_errors=True)
        marker.write_text(json.dumps({"end": end, "gpus": args.gpus, "days": args.days}))
        t2 = time.monotonic()
        print(f"fleet: {args.gpus} GPUs, {len(fleet.pods)} pods, {series:,} series, {samples:,} samples "
              f"({args.days} d at {fleet.step} s); generated in {t1 - t0:.0f} s, backfilled in {t2 - t1:.0f} s")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with gf.prometheus(tmp / "tsdb", lookback="59s", port=port, log=tmp / "prometheus.log") as prom:
        wait_ready(url, prom)
        window = args.days * 86400
        want = gf.expected(fleet, truth, window=window, threshold=5.0, grace=1800)
        runs = (("typical", ()), ("every point idle (--idle-threshold 100)", ("--idle-threshold", "100")))
        for i, (label, extra) in enumerate(runs):
            prom_cpu = cpu_seconds(prom.pid)
            doc, wall, rss, cpu = run_report(url, end, tmp / f"report-{i}.json", "--window", f"{args.days}d",
                                             *args.extra, *extra)
            prom_cpu = cpu_seconds(prom.pid) - prom_cpu
            q = doc["queries"]
            total = doc["total"]
            ok_hours = abs(total["gpu_hours"] - sum(w.gpu_hours for w in want.values())) <= 1e-3 * total["gpu_hours"]
            line = (f"report, {label}: {wall:.1f} s wall ({cpu:.1f} s CPU in the report, {prom_cpu:.1f} s in "
                    f"Prometheus), peak RSS {rss:.0f} MiB, {q['instant']} instant + {q['range']} range queries "
                    f"({q['split']} split), {total['gpu_hours']:,.0f} GPU-hours "
                    f"{'match' if ok_hours else 'DO NOT match'} the fleet")
            if not extra:
                idle_want = sum(w.idle_gpu_hours for w in want.values())
                ok_idle = abs(total["idle_gpu_hours"] - idle_want) <= 1e-3 * max(idle_want, 1)
                line += f", {total['idle_gpu_hours']:,.0f} idle GPU-hours {'match' if ok_idle else 'DO NOT match'}"
            print(line)
        print(f"prometheus: peak RSS {peak_rss_mb(prom.pid):.0f} MiB")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
