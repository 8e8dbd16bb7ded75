#!/usr/bin/env python3
"""Server CPU per AdmissionReview, side by side with the floor: nginx answering a static reply over
TLS on the same certificate, loaded the same way in the same run.

    python tests/benchmarks/bench_webhook_cpu.py [--duration 8] [--connections 8] [--profile] [--no-floor]

Each server is loaded by ``wrk`` (closed loop, keep-alive, ``--connections``) to saturation; the
CPU time (user + system) of the server's processes (gunicorn master and workers; nginx master and
workers) is read from /proc before and after, and divided by the requests wrk completed. The loader
shares the 2 cores with the server, so saturation means "both cores busy", not the server alone.
nginx is Debian's ``nginx-light`` (``scripts/setup.sh --bench``), 2 worker processes like the
webhook's 2 gunicorn workers, TLS 1.2+ with the webhook's certificate and key.

Two floors (``--no-floor`` skips both): each webhook configuration gets a ``GET /healthz`` row (the same
server, TLS, worker, gunicorn's HTTP parser and Flask with no review and no policy), and a two-line Flask app
under gunicorn's own gthread worker reads the same review over TLS and answers a constant: what Flask and
gunicorn cost before mlguard does anything.

``--profile`` also records the webhook workers with py-spy (when installed: ``pip install py-spy``,
a bench-only tool) and prints the top functions by own time, to see where the CPU goes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trustme
from bench_webhook import deployment_review, serve, stop

TICK = os.sysconf("SC_CLK_TCK")
NGINX_CONF = """\
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 8m;
        location / {{
            default_type application/json;
            return 200 '{reply}';
        }}
    }}
}}
"""


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICK


def wrk(url: str, body: bytes | None, work: Path, *, duration: float, connections: int) -> tuple[int, str]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency"]
    if body is not None:
        script = work / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = [[{body.decode()}]]\n")
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration + 60).stdout
    match = re.search(r"(\d+) requests in", out)
    if not match:
        raise SystemExit(f"wrk said:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} non-2xx answers\n{out}")
    p99 = re.search(r"99%\s+(\S+)", out)
    return int(match.group(1)), p99.group(1) if p99 else "?"


def measure(name: str, pid: int, url: str, body: bytes | None, work: Path, *, duration: float,
            connections: int) -> dict[str, float | str]:
    wrk(url, body, work, duration=1, connections=connections)  # warm-up
    pids = tree(pid)
    before = cpu_seconds(pids)
    started = time.monotonic()
    requests, p99 = wrk(url, body, work, duration=duration, connections=connections)
    elapsed = time.monotonic() - started
    used = cpu_seconds(pids) - before
    return {"name": name, "requests": requests, "rate": requests / elapsed, "cpu_us": used / requests * 1e6,
            "cores": used / elapsed, "p99": p99}


def start_nginx(work: Path, cert: Path, key: Path, port: int) -> subprocess.Popen:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx not installed: scripts/setup.sh --bench")
    reply = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": "0d5e2f1a-bench", "allowed": True}})
    (work / "body").mkdir(exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=port, cert=cert, key=key, reply=reply))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if len(tree(proc.pid)) >= 3:
            time.sleep(0.2)
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"nginx did not start: {(work / 'nginx-error.log').read_text()}")


# py-spy frames ("function (file:line)") marking where a sample was spent; a sample counts in every stage on its stack
STAGES = {
    "Flask, all of the app (below)": "Flask.__call__ (",
    "  the review's parse and checks": "parse_review (",
    "  policy evaluation": "Admission.validate (",
    "  the decision log line": "Logger.info (",
    "gunicorn's HTTP parser": "Request.__init__ (gunicorn",
    "TLS reads (recv)": "SSLSocket.recv_into (",
    "TLS writes (send; wall time: the woken client may run first)": "SSLSocket.send (",
}
IDLE = ("EpollSelector.select (", "PolicyStore._run (", "_worker (concurrent", "Condition.wait (")


def profile(pid: int, url: str, body: bytes, work: Path, *, duration: float, connections: int) -> None:
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not spy:
        print("  (py-spy not installed: pip install py-spy)")
        return
    workers = [p for p in tree(pid) if p != pid]
    outs = []
    procs = []
    for w in workers:
        out = work / f"profile-{w}.txt"
        outs.append(out)
        procs.append(subprocess.Popen([spy, "record", "--pid", str(w), "--duration", str(int(duration)),
                                       "--format", "raw", "--nonblocking", "--output", str(out)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    wrk(url, body, work, duration=duration - 1, connections=connections)
    for p in procs:
        p.wait(timeout=duration + 30)
    own: dict[str, int] = {}
    within: dict[str, int] = dict.fromkeys(STAGES, 0)
    total = 0
    for out in outs:
        if not out.exists():
            continue
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if any(idle in stack for idle in IDLE):
                continue  # waiting for work, or a background thread's sleep
            n = int(count)
            total += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for stage, marker in STAGES.items():
                if marker in stack:
                    within[stage] += n
    if not total:
        print("  py-spy recorded nothing")
        return
    print(f"  py-spy, share of the busy samples ({total}) spent within:")
    for stage, n in within.items():
        print(f"    {100 * n / total:5.1f}%  {stage}")
    print("  and own time of the top functions:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
        print(f"    {100 * n / total:5.1f}%  {frame}")


BARE_APP = """\
from flask import Flask, request

app = Flask(__name__)
REPLY = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"0","allowed":true}}'


@app.post("/validate")
def validate():
    request.get_data()
    return app.response_class(REPLY, mimetype="application/json")
"""


def bare_flask(work: Path, cert: Path, key: Path, body: bytes, *, duration: float,
               connections: int) -> dict[str, float | str]:
    """Flask and gunicorn alone: a two-line app that reads the review and answers a constant, under gunicorn's
    own gthread worker (2 x 4, TLS, the same certificate) -- no mlguard code at all."""
    from bench_webhook import free_port

    (work / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--chdir", str(work), "-w", "2", "--threads", "4",
                             "-k", "gthread", "--certfile", str(cert), "--keyfile", str(key), "-b",
                             f"127.0.0.1:{port}", "bare_app:app"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.monotonic() + 20
        while len(tree(proc.pid)) < 3 and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)
        return measure("Flask + gunicorn gthread 2x4, no mlguard", proc.pid, f"https://127.0.0.1:{port}/validate",
                       body, work, duration=duration, connections=connections)
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--configs", default="2x4:event-loop,2x1:event-loop,2x4:gthread",
                        help="webhook configurations, comma-separated: WORKERSxTHREADS:event-loop (THREADS app "
                             "threads, 1 = inline in the loop) or WORKERSxTHREADS:gthread")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-floor", action="store_true", help="skip the GET /healthz row of each configuration")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not installed: scripts/setup.sh --bench")
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    os.chmod(work, 0o755)  # nginx workers run as www-data
    try:
        ca = trustme.CA()
        ca_path, cert, key = work / "ca.pem", work / "tls.crt", work / "tls.key"
        ca.cert_pem.write_to_path(str(ca_path))
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        for path in (cert, key):
            os.chmod(path, 0o644)
        body = deployment_review()
        print(f"server CPU per request at saturation: wrk, {args.connections} keep-alive TLS connections, "
              f"{args.duration:.0f} s, {os.cpu_count()} CPUs shared by loader and server")
        rows = []
        from bench_webhook import free_port

        nginx_port = free_port()
        nginx = start_nginx(work, cert, key, nginx_port)
        try:
            rows.append(measure("nginx static TLS reply", nginx.pid, f"https://127.0.0.1:{nginx_port}/", body, work,
                                duration=args.duration, connections=args.connections))
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)
        if not args.no_floor:
            rows.append(bare_flask(work, cert, key, body, duration=args.duration, connections=args.connections))
        for config in args.configs.split(","):
            shape, _, model = config.partition(":")
            workers, _, threads = shape.partition("x")
            proc, port = serve(work, cert, key, ca_path, workers=int(workers), threads=int(threads or 1),
                               worker_class="gthread" if model == "gthread" else None)
            try:
                url = f"https://127.0.0.1:{port}/validate"
                rows.append(measure(f"mlguard /validate {len(body)} B Deployment ({config})", proc.pid, url, body,
                                    work, duration=args.duration, connections=args.connections))
                if not args.no_floor:
                    # the floor of this stack: the same server, TLS, worker, gunicorn's parser and Flask, no review
                    rows.append(measure(f"mlguard GET /healthz, no review ({config})", proc.pid,
                                        f"https://127.0.0.1:{port}/healthz", None, work, duration=args.duration,
                                        connections=args.connections))
                if args.profile:
                    profile(proc.pid, url, body, work, duration=args.duration, connections=args.connections)
            finally:
                stop(proc)
        print(f"  {'server':<56} {'req/s':>8} {'CPU µs/req':>11} {'cores':>6} {'p99':>9}")
        for r in rows:
            print(f"  {r['name']:<56} {r['rate']:>8.0f} {r['cpu_us']:>11.0f} {r['cores']:>6.2f} {r['p99']:>9}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
