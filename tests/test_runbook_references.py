"""Every runbook that mlguard names — in a denial, a warning, an alert's runbook_url, an analysis
reason — exists, and so does the section an anchor points at."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies.registry import all_policies

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = ROOT / "runbooks"
REFERENCE = re.compile(r"runbooks/([A-Za-z0-9_.-]+\.md)(#[a-z0-9-]+)?")
SOURCES = [p for d in ("policies", "webhook", "rollouts", "kustomize", "scripts")
           for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".json", ".md")]


def anchors(path: Path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def check(reference: str) -> None:
    match = REFERENCE.search(reference)
    assert match, f"{reference!r} does not name a runbook"
    path = RUNBOOKS / match.group(1)
    assert path.is_file(), f"{reference} names a missing runbook"
    if match.group(2):
        assert match.group(2)[1:] in anchors(path), f"{reference}: no such section in {path.name}"


@pytest.mark.parametrize("policy_id", sorted(all_policies()))
def test_every_policy_runbook_exists(policy_id: str) -> None:
    check(all_policies()[policy_id].runbook_path())


def test_every_runbook_reference_in_code_and_manifests_exists() -> None:
    found = []
    for source in SOURCES:
        for match in REFERENCE.finditer(source.read_text(errors="replace")):
            found.append((source.relative_to(ROOT), match.group(0)))
    assert len({f for _, f in found}) >= 5, "expected runbook references in code and alerts"
    missing = []
    for source, reference in found:
        try:
            check(reference)
        except AssertionError as exc:
            missing.append(f"{source}: {exc}")
    assert not missing, "\n".join(missing)
