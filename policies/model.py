"""The data every part of mlguard speaks: resources, findings, violations, reports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Action = Literal["deny", "warn", "audit", "off"]
EnforcementPoint = Literal["ci", "admission", "audit"]
ACTIONS: tuple[Action, ...] = ("deny", "warn", "audit", "off")  # strongest first


def weakest(a: Action, b: Action | None) -> Action:
    """The weaker of two actions (a finding's cap never makes a warn a deny)."""
    return a if b is None or ACTIONS.index(a) >= ACTIONS.index(b) else b


@dataclass(frozen=True, order=True)
class Resource:
    """Identity of a Kubernetes object as a person names it."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any], *, default_namespace: str = "default") -> Resource:
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            meta = {}
        return cls(
            api_version=str(obj.get("apiVersion", "")),
            kind=str(obj.get("kind", "")),
            namespace=str(meta.get("namespace") or default_namespace),
            name=str(meta.get("name") or meta.get("generateName") or "<unnamed>"),
        )

    @property
    def group(self) -> str:
        return self.api_version.split("/", 1)[0] if "/" in self.api_version else ""

    def to_json(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Finding:
    """What a policy reports: the offending field and what to change.

    ``note`` findings are not violations: they tell the reader what admission will do
    (for example a toleration the mutating webhook adds).
    """

    path: str
    message: str
    note: bool = False
    resource: Resource | None = None  # set when the finding belongs to another object (workloadRef)
    action: Action | None = None  # a cap: e.g. "warn" for what cannot be seen offline; never raises the action
    # At UPDATE (onlyNewViolations) a finding is old only when the old object had one of the same policy at the
    # same path with the same identity and an amount no larger. The identity defaults to the message with its
    # numbers left out (see `identity_of`); a policy whose finding is about a thing the message does not spell out
    # (eval-gate: the model, version, digests it checked) sets it. The amount is what may grow: GPUs of a
    # container or a pod, GPUs a workload needs at full size.
    amount: Decimal | None = field(default=None, compare=False)
    identity: str | None = field(default=None, compare=False)
    # the policy could not judge (the data it needs is missing: Prometheus unreachable): an error result of
    # the audit, never a pass
    error: bool = False


@dataclass(frozen=True)
class Violation:
    """A finding with the policy, action, resource and runbook attached."""

    policy: str
    action: Action
    resource: Resource
    path: str
    message: str
    runbook: str
    amount: Decimal | None = field(default=None, compare=False)  # see Finding
    identity: str = field(default="", compare=False)  # the finding's own identity; "" for the default (identity_of)
    error: bool = False  # not a verdict: the policy could not judge (see Finding.error)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "action": self.action,
            "resource": self.resource.to_json(),
            "path": self.path,
            "message": self.message,
            "runbook": self.runbook,
        }
        if self.error:
            out["error"] = True
        return out

    def line(self) -> str:
        """``policy: path: what to change (runbook)`` — the form used in denials and CI logs."""
        return f"{self.policy}: {self.path}: {self.message} ({self.runbook})"


_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def identity_of(violation: Violation) -> str:
    """What a violation is about, for UPDATE comparisons: its finding's own identity, else its message with every
    number replaced (a count that changes is an amount, not another finding). Worked out only when an UPDATE
    compares (not on every evaluation)."""
    return violation.identity or _NUMBER.sub("#", violation.message)


@dataclass(frozen=True)
class Note:
    """Something admission will change; reported by `mlguard check`, never a violation."""

    policy: str
    resource: Resource
    path: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "resource": self.resource.to_json(), "path": self.path,
                "message": self.message}


@dataclass
class Report:
    """Everything one evaluation found."""

    resources: list[Resource] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)
    exempt: list[tuple[Resource, str]] = field(default_factory=list)

    def by_action(self, action: Action) -> list[Violation]:
        return [v for v in self.violations if v.action == action]

    @property
    def denied(self) -> bool:
        return any(v.action == "deny" for v in self.violations)

    def summary(self) -> dict[str, int]:
        return {
            "resources": len(self.resources),
            "deny": len(self.by_action("deny")),
            "warn": len(self.by_action("warn")),
            "audit": len(self.by_action("audit")),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "violations": [v.to_json() for v in self.violations],
            "notes": [n.to_json() for n in self.notes],
            "summary": self.summary(),
        }
