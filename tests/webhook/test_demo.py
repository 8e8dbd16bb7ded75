"""The README's run command: scripts/demo.py makes its certificates, starts the webhook (and the
analysis provider), shows a denied and an allowed review and a patch, then stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webhook_testlib import REPO, free_port

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--exit-after-demo", "--port", str(free_port()),
         "--analysis-port", str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "demo OK" in out
    denied, allowed, mutated = out.split("\n## ")[1:4]
    assert "allowed:  false" in denied and "status:   403" in denied
    assert "gpu-isolation: spec.template.spec.containers[1].env[0].value" in denied
    assert "allowed:  true" in allowed and "patch:    (none)" in allowed
    assert '"path": "/spec/tolerations"' in mutated
    assert ("analysis: http://127.0.0.1:" in out) or ("analysis: NOT STARTED" in out)


def _alive(pid: int) -> bool:
    """True while a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _holding(path: str) -> list[int]:
    """Processes whose command line or environment names ``path`` (a server started with its key file)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                text = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                text += f.read()
        except OSError:
            continue
        if path.encode() in text and _alive(int(entry)):
            found.append(int(entry))
    return found


STOP_BITS = sum(1 << (sig - 1) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))


def _blocked(pid: int) -> int:
    """The signals ``pid`` blocks (SigBlk of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("SigBlk:")), 16)


def test_double_ctrl_c_leaves_no_server_or_key_behind() -> None:
    """`make run` serving, then Ctrl-C twice in quick succession (the terminal sends SIGINT to the foreground
    process group): the demo exits, both servers' process groups are gone and the directory holding the
    private key is removed."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen([sys.executable, "-u", "scripts/demo.py", "--port", str(free_port()),
                             "--analysis-port", str(free_port())], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if "serving until Ctrl-C" in line:
                break
        text = "".join(out)
        assert "serving until Ctrl-C" in text, text
        work = re.search(r"certificate for 127\.0\.0\.1 in (\S+)", text).group(1)
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        assert len(pids) == 2 and Path(work, "tls.key").is_file() and _holding(work), text
        for pid in pids:  # the servers can be stopped by a signal: none of the demo's stop signals is blocked
            assert not _blocked(pid) & STOP_BITS, (pid, hex(_blocked(pid)))
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(out) + rest
    assert proc.returncode == 0, text
    assert not Path(work).exists(), text
    assert not any(_alive(pid) for pid in pids), text
    assert _holding(work) == [], text
