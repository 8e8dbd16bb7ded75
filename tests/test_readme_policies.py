"""The README's policy table lists every registered policy once, with the runbook its findings link."""

from __future__ import annotations

import re
from pathlib import Path

from policies.registry import all_policies

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows() -> dict[str, str]:
    text = README.read_text().split("### Policies", 1)[1].split("\n## ", 1)[0]  # up to the next section
    return {m.group(1): line for line in text.splitlines() if (m := re.match(r"\| `([a-z0-9-]+)` \|", line))}


def test_the_readme_table_has_a_row_per_registered_policy() -> None:
    assert set(_rows()) == set(all_policies()), "README.md's policy table and the registry disagree"


def test_each_row_links_the_runbook_its_findings_link() -> None:
    for policy_id, line in _rows().items():
        path = all_policies()[policy_id].runbook_path()  # runbooks/<file>.md[#anchor]
        assert f"]({path})" in line, f"README row of {policy_id} does not link {path}"
