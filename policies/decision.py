"""What admission does with a verdict's violations: dry-run and break-glass. Pure, so the webhook and
`mlguard test` (a team testing its PolicySet's break-glass) apply the same rule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policies.context import RequestInfo
from policies.model import Violation
from policies.policyset import PolicySet

BREAK_GLASS_ANNOTATION = "mlguard.io/break-glass"


def effective_violations(violations: Iterable[Violation], *, dry_run: bool) -> list[Violation]:
    """Dry-run turns each deny into a warn and an audit; off findings never get here."""
    out: list[Violation] = []
    for v in violations:
        if v.action == "deny" and dry_run:
            out.append(Violation(v.policy, "warn", v.resource, v.path, v.message, v.runbook))
            out.append(Violation(v.policy, "audit", v.resource, v.path, v.message, v.runbook))
        elif v.action in ("deny", "warn", "audit"):
            out.append(v)
    return out


@dataclass(frozen=True)
class BreakGlass:
    """``lifted``: the policies whose denials the annotation lifts (always audited), with ``reason``;
    ``note``: why an annotation present was ignored."""

    lifted: tuple[str, ...] = ()
    reason: str = ""
    note: str = ""


def break_glass(denies: list[Violation], *, obj: Mapping[str, Any], info: RequestInfo,
                policyset: PolicySet) -> BreakGlass:
    """The `mlguard.io/break-glass: "<reason>"` annotation lifts denials only for the PolicySet's
    `spec.breakGlass` groups or users; for anyone else it is ignored, and the denial says so."""
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    reason = annotations.get(BREAK_GLASS_ANNOTATION) if isinstance(annotations, Mapping) else None
    if not denies or not isinstance(reason, str) or not reason.strip():
        return BreakGlass()
    groups = tuple((policyset.break_glass or {}).get("groups") or ())
    users = tuple((policyset.break_glass or {}).get("users") or ())
    if any(g in groups for g in info.groups) or (info.user and info.user in users):
        return BreakGlass(tuple(sorted({v.policy for v in denies})), reason.strip())
    return BreakGlass(note=f"break-glass annotation {BREAK_GLASS_ANNOTATION} ignored: user "
                           f"{info.user or '<unknown>'} is not in a break-glass group "
                           f"({', '.join(groups) or 'none configured'})")
