"""`mlguard test`: test files are validated (file and line for every mistake), and a team's cases run
against its own PolicySet with namespace labels and the admission request, break-glass included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from policies.policyset import load_policyset
from policies.testing import TestFileError, read_test_file, run_all

ROOT = Path(__file__).resolve().parents[2]
TEAM = ROOT / "tests/gitops/repo/mlguard"
DENIED = ROOT / "policies/library/gpu_limits/tests/denied.yaml"


def mlguard_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policies.cli", "test", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def _suite(tmp_path: Path, text: str) -> Path:
    (tmp_path / "denied.yaml").write_text(DENIED.read_text())
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("policy: gpu-limits\ncases:\n  - name: a\n    file: denied.yaml\n    expect: fial\n",
     "suite.yaml:5: cases[0].expect: 'fial' is not one of pass, fail, allow, deny, warn, audit"),
    ("policy: gpu-limits\ncases:\n  - name: a\n    file: denied.yaml\n    expect: fail\n    contain: [x]\n",
     "suite.yaml:6: cases[0].contain: unknown key 'contain'"),
    ("policy: gpu-limits\nnamespacelabels: {}\ncases:\n  - {name: a, file: denied.yaml, expect: fail}\n",
     "suite.yaml:2: namespacelabels: unknown key 'namespacelabels'"),
    ("policy: gpu-limits\ncases:\n  - {name: a, file: denied.yaml, expect: [deny]}\n",
     "suite.yaml:3: cases[0].expect: ['deny'] is not one of"),
    ("policy: gpu-limits\ncases:\n  - {name: a, file: nowhere.yaml, expect: fail}\n",
     "suite.yaml:3: cases[0].file: nowhere.yaml: no such file"),
    ("cases:\n  - {name: a, file: denied.yaml, expect: fail}\n",
     "no PolicySet to test"),
])
def test_a_malformed_test_file_is_an_error_with_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    _suite(tmp_path, text)
    with pytest.raises(TestFileError) as err:
        run_all(tmp_path)
    assert expected in str(err.value)
    proc = mlguard_test(str(tmp_path))
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr


def test_every_mistake_is_reported_not_only_the_first(tmp_path: Path) -> None:
    path = _suite(tmp_path, "policy: gpu-limits\ncases:\n  - {name: a, file: denied.yaml, expect: passs}\n"
                            "  - {name: b, file: denied.yaml, expect: fail, resources: x}\n")
    with pytest.raises(TestFileError) as err:
        read_test_file(path)
    assert "suite.yaml:3: cases[0].expect: 'passs'" in str(err.value)
    assert "suite.yaml:4: cases[1].resources: unknown key 'resources'" in str(err.value)


def test_the_team_policyset_with_environments_overrides_and_break_glass() -> None:
    proc = mlguard_test(str(TEAM / "tests"))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[-1] == "6 passed, 0 failed"


def test_a_wrong_expectation_in_a_team_file_fails(tmp_path: Path) -> None:
    suite = yaml.safe_load((TEAM / "tests/serving.mlguard-test.yaml").read_text())
    suite["policyset"] = str(TEAM / "policyset.yaml")
    for case in suite["cases"]:
        case["file"] = str(TEAM / "tests" / case["file"])
    suite["cases"][2]["expect"] = "deny"   # the on-call's break-glass is in fact admitted
    (tmp_path / "x.mlguard-test.yaml").write_text(yaml.safe_dump(suite))
    proc = mlguard_test(str(tmp_path))
    assert proc.returncode == 1
    assert "FAIL image-digest               break-glass by the on-call group" in proc.stdout
    assert "(break-glass lifted image-digest)" in proc.stdout


def test_policyset_flag_runs_the_same_cases_against_another_policyset(tmp_path: Path) -> None:
    """Without the break-glass group, the on-call case fails: the cases really run against --policyset."""
    doc = yaml.safe_load((TEAM / "policyset.yaml").read_text())
    del doc["spec"]["breakGlass"]
    other = tmp_path / "no-break-glass.yaml"
    other.write_text(yaml.safe_dump(doc))
    proc = mlguard_test(str(TEAM / "tests"), "--policyset", str(other))
    assert proc.returncode == 1
    assert "FAIL image-digest               break-glass by the on-call group" in proc.stdout
    assert "none configured" in proc.stdout   # the webhook's own words for an ignored break-glass
    results = run_all(TEAM / "tests", policyset=load_policyset(other))
    assert [r.ok for r in results] == [True, True, False, True, True, True]


def test_the_built_in_samples_still_run() -> None:
    proc = mlguard_test()
    assert proc.returncode == 0, proc.stdout[-2000:]
    last = proc.stdout.splitlines()[-1]
    assert last.endswith(" passed, 0 failed") and int(last.split()[0]) > 150
