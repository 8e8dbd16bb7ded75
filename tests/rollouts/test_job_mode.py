"""Job mode (Argo's job provider): ``python -m rollouts check``, exit 0 pass, 1 fail, 2 inconclusive, 3 error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run_job(lib, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(lib.REPO)}
    return subprocess.run([sys.executable, "-m", "rollouts", "check", *args], cwd=str(lib.REPO), env=env,
                          capture_output=True, text=True, timeout=60)


def params(lib, pair) -> list[str]:
    out = []
    for k, v in lib.vllm_params(pair).items():
        out += ["--param", f"{k}={v}"]
    return out


@pytest.mark.parametrize(("pair_name", "code", "verdict"),
                         [("VLLM_GOOD", 0, "pass"), ("VLLM_ERRORS", 1, "fail"), ("VLLM_NEW", 2, "inconclusive")])
def test_exit_codes(prometheus, lib, pair_name, code, verdict):
    check = "latency" if pair_name == "VLLM_NEW" else "error-rate"
    proc = run_job(lib, [check, "--prometheus", prometheus.url, *params(lib, getattr(lib, pair_name))])
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["verdict"] == verdict


def test_error_exit_3_when_prometheus_down(lib):
    proc = run_job(lib, ["latency", "--prometheus", f"http://127.0.0.1:{lib.free_port()}",
                         *params(lib, lib.VLLM_GOOD)])
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["error"]["type"] == "source_unavailable"


def test_error_exit_3_on_bad_param_and_unknown_check(prometheus, lib):
    assert run_job(lib, ["latency", "--prometheus", prometheus.url, "--param", "nonsense"]).returncode == 3
    assert run_job(lib, ["no-such-check", "--prometheus", prometheus.url]).returncode == 3


def test_text_format_and_sample_store(sample_dir, lib):
    proc = run_job(lib, ["eval-score", "--sample-store", f"golden={sample_dir}", "--format", "text",
                         "--param", "store=golden", "--param", "baseline=eval/baseline.jsonl",
                         "--param", "canary=eval/canary-worse.jsonl"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("eval-score: FAIL")


def test_serve_refuses_a_bad_config_before_starting(lib, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prometheus:\n  url: not-a-url\ndefaults: {mode: sometimes}\n")
    env = {**os.environ, "PYTHONPATH": str(lib.REPO)}
    proc = subprocess.run([sys.executable, "-m", "rollouts", "serve", "--port", "0", "--config", str(bad)],
                          cwd=str(lib.REPO), env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "prometheus/url" in proc.stderr and "defaults/mode" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "rollouts", "serve", "--sample-store", "no-equals-sign"],
                          cwd=str(lib.REPO), env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "NAME=DIR_OR_URL" in proc.stderr
