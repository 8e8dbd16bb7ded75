"""The policy interface and the registry of policy ids."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from policies.context import EvalContext
from policies.model import Finding
from policies.workload import Workload

Severity = Literal["low", "medium", "high", "critical"]


class Policy:
    """One self-contained policy. Subclasses set the metadata and implement `check`.

    A change to what a policy denies is a version bump.
    """

    id: ClassVar[str]
    title: ClassVar[str]
    severity: ClassVar[Severity] = "medium"
    version: ClassVar[str] = "1.0.0"
    description: ClassVar[str] = ""
    runbook: ClassVar[str] = ""
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}
    defaults: ClassVar[dict[str, Any]] = {}
    # kinds the policy can deny at all (None: every workload kind); the sample-coverage test reads it
    denies_kinds: ClassVar[frozenset[str] | None] = None
    # params that exempt workloads (lists of entries with `namespaces`): the PolicySet loader refuses an entry
    # that names no namespaces (policies.policyset.label_only_exemptions)
    allowlist_params: ClassVar[tuple[str, ...]] = ()

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterable[Finding]:
        raise NotImplementedError

    @classmethod
    def runbook_path(cls) -> str:
        return cls.runbook or f"runbooks/admission-denied.md#{cls.id}"

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        return {"id": cls.id, "title": cls.title, "severity": cls.severity, "version": cls.version,
                "description": cls.description, "runbook": cls.runbook_path()}


_REGISTRY: dict[str, Policy] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy known by its id (ids are unique)."""
    if cls.id in _REGISTRY:
        raise ValueError(f"policy id {cls.id!r} registered twice")
    _REGISTRY[cls.id] = cls()
    return cls


_VIEW: Mapping[str, Policy] = MappingProxyType(_REGISTRY)


def all_policies() -> Mapping[str, Policy]:
    """Every registered policy, by id: a read-only view, no copy (this is on every admission request's
    path). The library registers itself on first use."""
    if "policies.library" not in sys.modules:
        import policies.library  # noqa: F401  (registers the policies)
    return _VIEW
