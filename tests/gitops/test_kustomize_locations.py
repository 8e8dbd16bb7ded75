"""Where a field that no file holds is reported: a field an inline patch adds is `[rendered: ...]` at the
kustomization entry that adds it; rendering never touches the user's tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: vllm
spec:
  template:
    spec:
      containers:
      - name: server
        image: vllm/vllm-openai:v0.6.3
"""
OVERLAY = """namespace: team-z
resources: [../base]
patches:
- target: {kind: Deployment, name: vllm}
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/resources
      value: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 1}}
"""


def test_a_field_an_inline_patch_adds_is_rendered_at_its_entry(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "base").mkdir()
    (tmp_path / "base/deployment.yaml").write_text(BASE)
    (tmp_path / "base/kustomization.yaml").write_text("resources: [deployment.yaml]\n")
    (tmp_path / "ov").mkdir()
    (tmp_path / "ov/kustomization.yaml").write_text(OVERLAY)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", "ov"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    by_policy = {v["policy"]: v["source"] for v in json.loads(proc.stdout)["violations"]}
    assert by_policy["gpu-companion-resources"] == {
        "file": "ov/kustomization.yaml", "line": 4, "rendered": True,
        "via": "set by the inline patch listed at ov/kustomization.yaml:4"}
    # a field the base holds is still at its own line in the base
    assert by_policy["gpu-priority-class"] == {"file": "base/deployment.yaml", "line": 7}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
