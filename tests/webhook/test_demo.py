"""The README's run command: scripts/demo.py makes its certificates, starts the webhook (and the
analysis provider), shows a denied and an allowed review and a patch, then stops."""

from __future__ import annotations

import os
import subprocess
import sys

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
    assert "gpu-limits: spec.template.spec.containers[0].resources.limits" in denied
    assert "allowed:  true" in allowed and "patch:    (none)" in allowed
    assert '"path": "/spec/tolerations"' in mutated
    assert ("analysis: http://127.0.0.1:" in out) or ("analysis: NOT STARTED" in out)
