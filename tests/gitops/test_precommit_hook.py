"""The pre-commit hook as pre-commit runs it: its `files`/`exclude` regexes (Python `re.search` on each path,
as pre-commit matches them) select the changed files, which are passed to `mlguard check` in one run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "tests/gitops/repo"
[HOOK] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())


def selected(paths: list[str]) -> list[str]:
    return [p for p in paths if re.search(HOOK["files"], p) and not re.search(HOOK["exclude"], p)]


def run_hook(files: list[str]) -> subprocess.CompletedProcess[str]:
    entry = HOOK["entry"].split()
    assert entry[:2] == ["mlguard", "check"]
    return subprocess.run([sys.executable, "-m", "policies.cli", *entry[1:], "--format", "json", *files],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_all_files_no_abort_no_patch_or_chart_judged() -> None:
    """`pre-commit run --all-files`: chart files, patches, values and JSON configs are all passed."""
    every = sorted(str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and not p.is_symlink())
    files = selected(every)
    assert {"charts/vllm/values.yaml", "charts/vllm/templates/deployment.yaml", "renovate.json",
            "apps/llm/overlays/staging/replicas.yaml", "apps/llm/overlays/staging/gpu-70b.yaml"} <= set(files)
    assert ".github/workflows/mlguard.yaml" not in files
    proc = run_hook(files)
    assert proc.returncode == 1, proc.stderr   # the overlay (through its patches) with the platform's quota
    data = json.loads(proc.stdout)
    assert [(v["policy"], v["resource"]["namespace"]) for v in data["violations"] if v["action"] == "deny"] == [
        ("gpu-quota", "team-a")]
    assert all(v["resource"]["namespace"] != "default" for v in data["violations"])
    assert "Helm chart: not checked" in proc.stderr


def test_a_changed_patch_alone_checks_its_overlay_without_a_false_quota_denial() -> None:
    proc = run_hook(selected(["apps/llm/overlays/staging/gpu-70b.yaml"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    quota = [v for v in json.loads(proc.stdout)["violations"] if v["policy"] == "gpu-quota"]
    assert [v["action"] for v in quota] == ["audit"] and "needs 16" in quota[0]["message"]


def test_a_changed_helm_values_file_is_skipped_with_the_way_to_check_it() -> None:
    proc = run_hook(selected(["charts/vllm/values.yaml", "charts/vllm/Chart.yaml"]))
    assert proc.returncode == 0
    assert "helm template RELEASE charts/vllm" in proc.stderr or "helm template RELEASE tests/gitops/repo/charts/vllm" \
        in proc.stderr
