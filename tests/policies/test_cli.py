"""`mlguard check` and `mlguard test` as a CI pipeline runs them: real processes, exit codes, formats."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DENIED = ROOT / "policies/library/gpu_limits/tests/denied.yaml"
ALLOWED_POD = """apiVersion: v1
kind: Pod
metadata: {name: ok, namespace: team-a}
spec:
  containers: [{name: s, image: s, resources: {limits: {nvidia.com/gpu: 1}}}]
"""


LIMITS_ONLY = ROOT / "tests/policies/data/limits-only.yaml"
GOOD_STACK = """apiVersion: v1
kind: ResourceQuota
metadata: {name: gpus, namespace: team-a}
spec: {hard: {requests.nvidia.com/gpu: "4"}}
---
apiVersion: v1
kind: Pod
metadata: {name: ok, namespace: team-a, labels: {team: ml, cost-center: cc-7}}
spec:
  priorityClassName: inference-high
  nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  containers:
    - name: s
      image: s
      resources: {requests: {cpu: "2", memory: 8Gi}, limits: {memory: 8Gi, nvidia.com/gpu: 1}}
"""


def mlguard(*args: str, stdin: str | None = None, policyset: Path | None = LIMITS_ONLY
            ) -> subprocess.CompletedProcess[str]:
    """Run the CLI; by default with a PolicySet of gpu-limits alone, so counts are exact."""
    extra = ["--policyset", str(policyset)] if policyset and args and args[0] == "check" and "--policyset" \
        not in args else []
    return subprocess.run([sys.executable, "-m", "policies.cli", *args[:1], *extra, *args[1:]], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def test_denied_manifests_exit_1_with_readable_text() -> None:
    proc = mlguard("check", str(DENIED))
    assert proc.returncode == 1, proc.stderr
    assert "DENY  gpu-limits  Pod/team-a/requests-only" in proc.stdout
    assert "fix:     container `server` sets nvidia.com/gpu in requests (2) but not in limits" in proc.stdout
    assert "runbook: https://github.com/mlguard/mlguard/blob/main/runbooks/admission-denied.md#gpu-limits" \
        in proc.stdout
    assert "FAILED (denied)" in proc.stdout


def test_stdin_and_exit_0() -> None:
    proc = mlguard("check", "-", stdin=ALLOWED_POD)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_baseline_catalog_admits_a_well_formed_gpu_pod_and_denies_a_bad_one() -> None:
    good = mlguard("check", "-", stdin=GOOD_STACK, policyset=None)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 denied, 0 warnings" in good.stdout
    bad = mlguard("check", "-", stdin=GOOD_STACK.replace("limits: {memory: 8Gi, nvidia.com/gpu: 1}",
                                                         "limits: {memory: 8Gi}").replace(
        "requests: {cpu: \"2\", memory: 8Gi}", "requests: {cpu: \"2\", memory: 8Gi, nvidia.com/gpu: 1}"),
        policyset=None)
    assert bad.returncode == 1
    assert "DENY  gpu-limits  Pod/team-a/ok" in bad.stdout


def test_json_format_shape() -> None:
    proc = mlguard("check", "--format", "json", str(DENIED))
    data = json.loads(proc.stdout)
    assert data["summary"]["deny"] == len(data["violations"]) == 5
    first = data["violations"][0]
    assert set(first) >= {"policy", "action", "resource", "path", "message", "runbook"}
    assert set(first["resource"]) == {"apiVersion", "kind", "namespace", "name"}


def test_sarif_is_2_1_0_with_rules_and_locations() -> None:
    data = json.loads(mlguard("check", "--format", "sarif", str(DENIED)).stdout)
    assert data["version"] == "2.1.0"
    run = data["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["gpu-limits"]
    result = run["results"][0]
    assert result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("denied.yaml")
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1


def test_junit_counts_failures() -> None:
    root = ET.fromstring(mlguard("check", "--format", "junit", str(DENIED)).stdout)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "5" and suite.get("failures") == "5"
    assert "gpu-limits:" in (suite.find("testcase/failure").text or "")


@pytest.mark.parametrize(("content", "suffix", "expected"), [
    ("a: [b\n", ".yaml", "bad.yaml:2: not valid YAML"),
    ("hello", ".txt", "unknown file type .txt"),
])
def test_bad_input_exits_2_with_file_and_line(tmp_path: Path, content: str, suffix: str, expected: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    proc = mlguard("check", str(path))
    assert proc.returncode == 2
    assert expected in proc.stderr


def test_invalid_policyset_exits_2_with_every_error(tmp_path: Path) -> None:
    ps = tmp_path / "ps.yaml"
    ps.write_text("apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nspec:\n  policies:\n    gpu-limits: "
                  "{action: nope}\n    bogus: {}\n")
    proc = mlguard("check", "--policyset", str(ps), str(DENIED))
    assert proc.returncode == 2
    assert "spec.policies.bogus (line 6): unknown policy" in proc.stderr or "spec.policies.gpu-limits.action" \
        in proc.stderr


def test_kustomization_directory_is_rendered(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(ALLOWED_POD.replace("limits: {nvidia.com/gpu: 1}", "requests: "
                                                           "{nvidia.com/gpu: 1}"))
    (tmp_path / "kustomization.yaml").write_text("resources: [pod.yaml]\nnamespace: team-b\n")
    proc = mlguard("check", "--format", "json", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["violations"][0]["resource"]["namespace"] == "team-b"  # kustomize's namespace applied


def test_mlguard_test_runs_the_library() -> None:
    proc = mlguard("test")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert " 0 failed" in proc.stdout.splitlines()[-1]


# ---- exit codes and input ---------------------------------------------------------------------------
def test_output_that_cannot_be_written_is_exit_2_in_one_line(tmp_path: Path) -> None:
    proc = mlguard("check", "-o", str(tmp_path / "no-such-dir" / "report.sarif"), str(DENIED))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mlguard: cannot write the report to {tmp_path}/no-such-dir/report.sarif: No such file or directory"]


def test_a_path_without_objects_says_so_and_require_objects_makes_it_exit_2(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("replicas: 2\n")
    proc = mlguard("check", str(tmp_path))
    assert proc.returncode == 0
    assert f"no Kubernetes objects found in {tmp_path}" in proc.stderr
    assert "values.yaml:1: not a Kubernetes object (no apiVersion and no kind): skipped" in proc.stderr
    strict = mlguard("check", "--require-objects", str(tmp_path))
    assert strict.returncode == 2 and f"no Kubernetes objects found in {tmp_path}" in strict.stderr


def test_non_objects_are_skipped_every_one_named_unless_strict_input(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ALLOWED_POD + "---\nfoo: bar\n")
    (tmp_path / "b.json").write_text('{"extends": ["config:base"]}')
    proc = mlguard("check", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "a.yaml:7: not a Kubernetes object" in proc.stderr and "b.json:1: not a Kubernetes object" in proc.stderr
    strict = mlguard("check", "--strict-input", str(tmp_path))
    assert strict.returncode == 2 and "--strict-input: 2 document(s) are not Kubernetes objects" in strict.stderr


def test_version_and_usage() -> None:
    version = mlguard("--version")
    assert version.returncode == 0 and version.stdout.startswith("mlguard 0.")
    bare = subprocess.run([sys.executable, "-m", "policies.cli"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: mlguard ")
    assert "check" in bare.stderr and "facts" in bare.stderr and "python -m" not in bare.stderr


def test_help_names_mlguard_and_shows_defaults() -> None:
    check = mlguard("check", "--help").stdout
    assert check.startswith("usage: mlguard check ")
    assert "(default: text)" in check and "(default: deny)" in check and "(default: None)" not in check
    serve = mlguard("serve", "webhook", "--help").stdout
    assert serve.startswith("usage: mlguard serve webhook ") and "(default: 8443)" in serve
    facts = mlguard("facts", "--help").stdout
    assert facts.startswith("usage: mlguard facts ") and "--kubeconfig FILE" in facts


def test_exclude_and_mlguardignore_follow_gitignore_rules(tmp_path: Path) -> None:
    bad = ALLOWED_POD.replace("limits: {nvidia.com/gpu: 1}", "requests: {nvidia.com/gpu: 1}")
    for rel in ("apps/a.yaml", "drafts/b.yaml", "apps/c.generated.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(bad.replace("name: ok", f"name: {Path(rel).stem.replace('.', '-')}"))
    assert mlguard("check", str(tmp_path)).stdout.count("DENY") == 3
    (tmp_path / ".mlguardignore").write_text("drafts/\n")
    proc = mlguard("check", "--exclude", "*.generated.yaml", str(tmp_path))
    assert proc.stdout.count("DENY") == 1 and "Pod/team-a/a " in proc.stdout


def test_format_github_annotates_the_field_line() -> None:
    proc = mlguard("check", "--format", "github", str(DENIED))
    assert proc.returncode == 1
    first = proc.stdout.splitlines()[0]
    assert first.startswith("::error file=policies/library/gpu_limits/tests/denied.yaml,line=")
    assert ",title=mlguard gpu-limits (deny)::Pod/team-a/" in first
