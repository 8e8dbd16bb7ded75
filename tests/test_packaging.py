"""The wheel ships what the installed `mlguard` reads or links: every runbook, the PolicySet catalog and the
JSON Schemas (PolicySet, test files, cluster facts)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_runbooks_schemas_and_catalog(tmp_path: Path) -> None:
    source = tmp_path / "src"  # setuptools builds in the source tree: build a copy, leave the checkout clean
    for part in ("pyproject.toml", "README.md", "policies", "webhook", "rollouts", "runbooks"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(src, source / part)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = tmp_path.glob("mlguard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    runbooks = {f"runbooks/{p.name}" for p in (ROOT / "runbooks").glob("*.md")}
    assert len(runbooks) >= 10 and runbooks <= names, sorted(runbooks - names)
    assert {"policies/schema/policyset.schema.yaml", "policies/schema/policytest.schema.yaml",
            "policies/schema/clusterfacts.schema.yaml", "policies/catalog/baseline.yaml",
            "policies/catalog/strict.yaml"} <= names
