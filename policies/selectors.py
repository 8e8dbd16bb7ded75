"""Match and exclude blocks of a PolicySet: namespaces, selectors, kinds, users, groups."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policies.model import Resource

if TYPE_CHECKING:  # policies.context imports the workload extractor, which matches label selectors
    from policies.context import RequestInfo


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels AND matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown label selector operator {op!r}")
        present = key in labels
        if (op == "In" and (not present or labels[key] not in values)) or (
                op == "NotIn" and present and labels[key] in values) or (
                op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


@dataclass(frozen=True)
class Subject:
    """What a match block is tested against."""

    resource: Resource
    object_labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]
    environment: str | None
    request: RequestInfo | None


def _globs(patterns: Sequence[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _kind_matches(kinds: Sequence[str], resource: Resource) -> bool:
    for k in kinds:
        if "/" in k:
            group, _, kind = k.rpartition("/")
            if kind == resource.kind and group == resource.group:
                return True
        elif k == resource.kind or k == "*":
            return True
    return False


def block_matches(block: Mapping[str, Any], subject: Subject, *, unknown: bool) -> bool:
    """True when every criterion of the block holds.

    Criteria about the requester (users, groups, serviceAccounts) cannot be known in CI: they
    count as ``unknown`` (True for `match`, so CI checks what admission may check; False for
    `exclude`, so CI never skips what admission would not).
    """
    if "namespaces" in block and not _globs(block["namespaces"], subject.resource.namespace):
        return False
    if "namespaceSelector" in block and not label_selector_matches(block["namespaceSelector"],
                                                                   subject.namespace_labels):
        return False
    if "objectSelector" in block and not label_selector_matches(block["objectSelector"], subject.object_labels):
        return False
    if "environments" in block and subject.environment not in block["environments"]:
        return False
    if "kinds" in block and not _kind_matches(block["kinds"], subject.resource):
        return False
    request = subject.request
    for key in ("users", "groups", "serviceAccounts"):
        if key not in block:
            continue
        if request is None:
            if not unknown:
                return False
            continue
        if key == "users" and not _globs(block[key], request.user):
            return False
        if key == "groups" and not any(_globs(block[key], g) for g in request.groups):
            return False
        if key == "serviceAccounts" and not (request.service_account and _globs(block[key], request.service_account)):
            return False
    return True


def as_blocks(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def matches(match: Any, exclude: Any, subject: Subject) -> bool:
    """A subject is selected when some match block holds (or none is given) and no exclude block does."""
    blocks = as_blocks(match)
    if blocks and not any(block_matches(b, subject, unknown=True) for b in blocks):
        return False
    return not any(block_matches(b, subject, unknown=False) for b in as_blocks(exclude))
