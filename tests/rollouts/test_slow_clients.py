"""Slow clients against the analysis provider (issue 14): connections trickling request headers or a
body are closed at the read deadline, and a normal client is served meanwhile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp: Path, sample_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    """``python -m rollouts serve`` (2 workers, the shipped gunicorn config), a 2 s read deadline."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "MLGUARD_ANALYSIS_READ_TIMEOUT": "2"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp / "gunicorn.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rollouts", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "2", "--prometheus", f"http://127.0.0.1:{_free_port()}",
                                 "--sample-store", f"local={sample_dir}"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url, log
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(log.read_text())

pytestmark = pytest.mark.integration


def _trickle(port: int, kind: str, stop_flag: threading.Event, closed: list[int]) -> None:
    """One connection at a time, one byte every 0.25 s; reopened when the server closes it."""
    while not stop_flag.is_set():
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            if kind == "headers":
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                sock.sendall(b"POST /v1/analyses/error-rate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                             b"\r\nContent-Length: 100000\r\n\r\n{")
            while not stop_flag.wait(0.25):
                sock.sendall(b"a")
                sock.setblocking(False)
                try:
                    if sock.recv(1 << 16) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                sock.setblocking(True)
        except OSError:
            closed.append(1)
        finally:
            sock.close()


def test_trickling_clients_are_cut_off_and_do_not_starve_argo(sample_dir: Path, tmp_path: Path) -> None:
    proc, url, log = _serve(tmp_path, sample_dir)
    port = int(url.rsplit(":", 1)[1])
    stop_flag = threading.Event()
    closed: list[int] = []
    attackers = [threading.Thread(target=_trickle, args=(port, kind, stop_flag, closed), daemon=True)
                 for kind in ["headers"] * 8 + ["body"] * 8]
    try:
        for t in attackers:
            t.start()
        time.sleep(0.5)
        latencies, failures = [], []
        end = time.monotonic() + 5
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                resp = requests.get(url + "/healthz", timeout=10)
                if resp.status_code != 200:
                    failures.append(resp.status_code)
            except requests.RequestException as exc:
                failures.append(repr(exc))
            latencies.append(time.perf_counter() - started)
        stop_flag.set()
        for t in attackers:
            t.join(timeout=10)
        assert not failures, failures[:5]
        assert len(latencies) >= 20 and max(latencies) < 2.0, (len(latencies), max(latencies))
        assert len(closed) >= 16, len(closed)  # each trickler was cut off at the 2 s deadline at least once
        assert "closed a slow connection" in log.read_text()
    finally:
        stop_flag.set()
        proc.terminate()
        proc.wait(timeout=30)
