"""The audit's results as OpenReports (``openreports.io/v1alpha1``), and keeping them in the cluster.

One ``Report`` per namespace (a ``ClusterReport`` for cluster-scoped objects), named ``mlguard-audit``
(``mlguard-audit-2``, ... past `MAX_RESULTS` results), labelled ``app.kubernetes.io/managed-by:
mlguard-audit``. One result per (policy, judged object): ``fail`` for a deny, ``warn`` for a warn or an
audit action, ``error`` when the policy could not judge (gpu-idle without utilisation, a policy that
raised). Passes are counted in ``summary.pass`` but not listed: ``configuration.limits.statusFilter``
says so (a namespace of 500 clean workloads x 15 policies would otherwise write 7,500 results). A
namespace whose results all pass has no report: an existing one is deleted.

Each result carries the policy's severity, the message, and in ``properties`` the field path(s), the
runbook URL, the action, the policy's version and, when the finding is on another object than the
judged one (a Rollout's workloadRef Deployment), that object. Writes are server-side apply with field
manager ``mlguard-audit``; a report whose content (timestamps aside) did not change since this process
last applied it is not written again.

The shape follows the CRDs in ../shared/schemas/crds/openreports (openreports/reports, api/openreports.io/
v1alpha1: Report and ClusterReport, ReportResult with policy, result, severity, message, properties,
resources, source, timestamp; ReportSummary pass/fail/warn/error/skip; ReportConfiguration limits).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from policies.model import Violation
from policies.registry import all_policies
from webhook.audit import Api, AuditError, AuditRun, Judged, ServedKind, list_all

GROUP, VERSION = "openreports.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NAME = "mlguard-audit"
SOURCE = "mlguard"
FIELD_MANAGER = "mlguard-audit"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlguard-audit"}
MAX_RESULTS = 1000
LISTED = ("fail", "warn", "error", "skip")
RESULTS = ("pass", "fail", "warn", "error", "skip")
REPORTS = ServedKind(GROUP, VERSION, "Report", "reports", True)
CLUSTER_REPORTS = ServedKind(GROUP, VERSION, "ClusterReport", "clusterreports", False)
MAX_MESSAGE = 4000  # a result's message; more findings of one policy on one object are counted, not repeated

Obj = dict[str, Any]


@dataclass
class Outcome:
    """One (policy, judged object) result, before it becomes a report entry."""

    policy: str
    namespace: str  # "" for a cluster-scoped object
    result: str
    judged: Judged
    violations: list[Violation] = field(default_factory=list)


def outcome_of(violations: list[Violation]) -> str:
    if any(v.error for v in violations):
        return "error"
    if any(v.action == "deny" for v in violations):
        return "fail"
    return "warn" if violations else "pass"


def outcomes(run: AuditRun) -> list[Outcome]:
    """One per (policy that judged the object, judged object); exempt objects have none."""
    out = []
    for j in run.judged:
        if j.outcome.exempt_reason:
            continue
        by_policy: dict[str, list[Violation]] = {}
        for v in j.outcome.violations:
            by_policy.setdefault(v.policy, []).append(v)
        for policy in dict.fromkeys([*j.outcome.checked, *by_policy]):
            found = by_policy.get(policy, [])
            out.append(Outcome(policy, "" if j.cluster_scoped else j.obj_key[0], outcome_of(found),
                               j, found))
    return out


def counts(items: Iterable[Outcome]) -> dict[tuple[str, str, str], int]:
    """(policy, namespace, result) -> how many: what `mlguard_audit_results` exposes."""
    out: dict[tuple[str, str, str], int] = {}
    for o in items:
        key = (o.policy, o.namespace, o.result)
        out[key] = out.get(key, 0) + 1
    return out


def _result(o: Outcome, timestamp: Mapping[str, int], run: AuditRun) -> Obj:
    j = o.judged
    namespace, kind, name = j.obj_key
    api_version = next((k.api_version for k in run.listed.kinds if k.kind == kind), "")
    resource: Obj = {"apiVersion": api_version, "kind": kind, "name": name, "uid": j.uid}
    if namespace:
        resource["namespace"] = namespace
    policy = all_policies().get(o.policy)
    entry: Obj = {"source": SOURCE, "policy": o.policy, "rule": o.policy, "result": o.result, "scored": True,
                  "timestamp": dict(timestamp), "resources": [resource]}
    if policy is not None:
        entry["severity"] = policy.severity
        entry["category"] = "GPU inference"
    if o.violations:
        first = o.violations[0]
        message = first.message
        if len(o.violations) > 1:
            message += f" (and {len(o.violations) - 1} more: " + "; ".join(v.message for v in o.violations[1:]) + ")"
        entry["message"] = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"
        props = {"action": first.action, "runbook": first.runbook,
                 "fieldPath": first.path or "<object>"}
        if len(o.violations) > 1:
            props["fieldPaths"] = ", ".join(dict.fromkeys(v.path or "<object>" for v in o.violations))
        others = sorted({str(v.resource) for v in o.violations if (v.resource.kind, v.resource.name) != (kind, name)})
        if others:  # a Rollout's findings on the Deployment its workloadRef names
            props["findingOn"] = ", ".join(others)
        if policy is not None:
            props["policyVersion"] = policy.version
        entry["properties"] = props
    return entry


def build_reports(run: AuditRun, items: list[Outcome] | None = None, *,
                  max_results: int = MAX_RESULTS) -> dict[str, list[Obj]]:
    """Namespace ("" for the ClusterReport) -> its reports; only namespaces with a result that is not a pass."""
    items = outcomes(run) if items is None else items
    seconds = int(run.started.timestamp())
    timestamp = {"seconds": seconds, "nanos": 0}
    by_ns: dict[str, list[Outcome]] = {}
    for o in items:
        by_ns.setdefault(o.namespace, []).append(o)
    out: dict[str, list[Obj]] = {}
    for namespace, mine in sorted(by_ns.items()):
        listed = sorted((o for o in mine if o.result in LISTED),
                        key=lambda o: (o.judged.obj_key[1], o.judged.obj_key[2], o.policy))
        if not listed:
            continue
        passes = sum(1 for o in mine if o.result == "pass")
        parts = [listed[i:i + max_results] for i in range(0, len(listed), max_results)]
        reports = []
        for index, part in enumerate(parts):
            summary = {r: 0 for r in RESULTS}
            for o in part:
                summary[o.result] += 1
            if index == 0:
                summary["pass"] = passes  # passes are counted once, in the first report
            meta: Obj = {"name": NAME if index == 0 else f"{NAME}-{index + 1}", "labels": dict(MANAGED_BY)}
            if namespace:
                meta["namespace"] = namespace
            reports.append({
                "apiVersion": API_VERSION, "kind": "Report" if namespace else "ClusterReport", "metadata": meta,
                "source": SOURCE,
                "configuration": {"limits": {"maxResults": max_results, "statusFilter": list(LISTED)}},
                "summary": summary,
                "results": [_result(o, timestamp, run) for o in part]})
        out[namespace] = reports
    return out


def _digest(report: Mapping[str, Any]) -> str:
    """The content that matters: results without their timestamps."""
    stripped = {**report, "results": [{k: v for k, v in r.items() if k != "timestamp"}
                                      for r in report.get("results") or []]}
    return hashlib.sha256(json.dumps(stripped, sort_keys=True).encode()).hexdigest()


@dataclass
class SyncStats:
    applied: int = 0
    unchanged: int = 0
    deleted: int = 0


class ReportWriter:
    """Applies the desired reports and deletes mlguard's reports that are no longer desired."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._applied: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> digest last applied

    def existing(self, namespace: str | None) -> list[tuple[str, str, str]]:
        """(kind, namespace, name) of the reports mlguard wrote (its label), in ``namespace`` or everywhere."""
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        found = []
        kinds = [REPORTS] if namespace else [REPORTS, CLUSTER_REPORTS]
        for kind in kinds:
            path = kind.path(namespace)
            token: str | None = None
            while True:
                query = [("labelSelector", selector), ("limit", "500")] + ([("continue", token)] if token else [])
                body = self.api.get(path, query)
                for item in body.get("items") or []:
                    meta = item.get("metadata") or {}
                    found.append((kind.kind, str(meta.get("namespace") or ""), str(meta.get("name"))))
                token = (body.get("metadata") or {}).get("continue") or None
                if not token:
                    break
        return found

    def _path(self, kind: str, namespace: str, name: str) -> str:
        base = REPORTS if kind == "Report" else CLUSTER_REPORTS
        return f"{base.path(namespace or None)}/{name}"

    def sync(self, desired: Mapping[str, list[Obj]], *, namespace: str | None = None) -> SyncStats:
        try:
            return self._sync(desired, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404 and not self._served():
                raise AuditError(f"{API_VERSION} is not served here: install the OpenReports CRDs "
                                 "(github.com/openreports/reports-api, or Kyverno 1.15+'s) to write reports") from exc
            raise

    def _served(self) -> bool:
        try:
            self.api.get(f"/apis/{GROUP}/{VERSION}")
        except ApiException:
            return False
        return True

    def _sync(self, desired: Mapping[str, list[Obj]], *, namespace: str | None = None) -> SyncStats:
        stats = SyncStats()
        wanted: set[tuple[str, str, str]] = set()
        for reports in desired.values():
            for report in reports:
                meta = report["metadata"]
                key = (report["kind"], str(meta.get("namespace") or ""), str(meta["name"]))
                wanted.add(key)
                digest = _digest(report)
                if self._applied.get(key) == digest:
                    stats.unchanged += 1
                    continue
                self.api.call("PATCH", self._path(*key), query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                              body=json.dumps(report), content_type="application/apply-patch+yaml")
                self._applied[key] = digest
                stats.applied += 1
        for key in self.existing(namespace):
            if key in wanted:
                continue
            try:
                self.api.call("DELETE", self._path(*key))
            except ApiException as exc:
                if exc.status != 404:  # already gone (the namespace was deleted): fine
                    raise
            self._applied.pop(key, None)
            stats.deleted += 1
        return stats


def list_reports(api: Api, namespace: str | None = None) -> list[Obj]:
    """mlguard's reports as the cluster holds them (tests, `--format openreports` readers)."""
    out = list(list_all(api, REPORTS, namespace=namespace))
    if not namespace:
        out += list(list_all(api, CLUSTER_REPORTS))
    return [r for r in out if all((r.get("metadata") or {}).get("labels", {}).get(k) == v
                                  for k, v in MANAGED_BY.items())]
