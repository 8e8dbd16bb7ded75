"""From a parsed AdmissionRequest to a Decision: the policy library decides, this applies the
webhook's rules around it (operations, subresources, UPDATE, dry-run, break-glass, mutation).

Nothing here re-implements a policy: `policies.engine.evaluate_object` is the one entry point the
CLI uses too, `policies.engine.new_violations` filters UPDATEs, `policies.mutations` mutates Pods.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from policies.context import ClusterFacts, EmptyFacts, RequestInfo
from policies.decision import break_glass, effective_violations
from policies.engine import Evaluated, Resolutions, evaluate_object, new_violations
from policies.model import Resource, Violation
from policies.mutations import mutate_admitted_pod
from policies.policyset import PolicySet
from policies.selectors import Subject
from webhook.review import AdmissionRequest, Decision, clip_warning

RESOLVED_SUBJECTS = 1024  # kinds of subject (namespace, kind, labels, requester) whose resolutions are kept
QUOTA_POLICY = "gpu-quota"
SCALABLE_KINDS = {"deployments": ("apps/v1", "Deployment"), "replicasets": ("apps/v1", "ReplicaSet"),
                  "statefulsets": ("apps/v1", "StatefulSet"), "rollouts": ("argoproj.io/v1alpha1", "Rollout"),
                  "leaderworkersets": ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")}
# LeaderWorkerSet writes its group size on every pod it creates (sigs.k8s.io/lws, api/leaderworkerset/v1:
# SizeAnnotationKey); the Scale of a LeaderWorkerSet counts groups, each of that many pods.
LWS_SIZE_ANNOTATION = "leaderworkerset.sigs.k8s.io/size"


@dataclass
class Outcome:
    """A Decision plus what the log line and the metrics need."""

    decision: Decision
    label: str                                   # allowed | denied | warned
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    break_glass: list[str] = field(default_factory=list)   # policies whose deny break-glass lifted
    reason: str = ""                             # why nothing was evaluated (exempt, DELETE, status, ...)


def request_info(request: AdmissionRequest) -> RequestInfo:
    user = request.get("userInfo") or {}
    return RequestInfo(operation=request["operation"], user=str(user.get("username") or ""),
                       groups=tuple(user.get("groups") or ()), subresource=str(request.get("subResource") or ""),
                       dry_run=bool(request.get("dryRun", False)))


def _allow(reason: str) -> Outcome:
    return Outcome(Decision(allowed=True), "allowed", reason=reason)


def _object_with_namespace(obj: Mapping[str, Any], namespace: str) -> Mapping[str, Any]:
    """At CREATE the object may carry no namespace yet: the request says where it goes."""
    meta = obj.get("metadata")
    if namespace and (not isinstance(meta, Mapping) or not meta.get("namespace")):
        patched = dict(obj)
        patched["metadata"] = {**(meta if isinstance(meta, Mapping) else {}), "namespace": namespace}
        return patched
    return obj


class Admission:
    """Evaluates AdmissionRequests under one PolicySet and one set of cluster facts."""

    def __init__(self, *, facts: ClusterFacts | None = None, own_namespace: str | None = None,
                 dry_run: bool = False, max_warnings: int = 10) -> None:
        self.facts = facts or EmptyFacts()
        self.own_namespace = own_namespace
        self.dry_run = dry_run
        self.max_warnings = max_warnings
        # the policies' resolutions per kind of subject under the PolicySet in force (engine.Resolutions): a
        # fresh cache for every new PolicySet, and one that has seen RESOLVED_SUBJECTS kinds of subject starts
        # over, so varied labels cost a re-resolution, never unbounded memory
        self._resolved: tuple[PolicySet | None, Resolutions] = (None, {})

    # ---- validate -----------------------------------------------------------------------------
    def validate(self, request: AdmissionRequest, policyset: PolicySet) -> Outcome:
        operation = request["operation"]
        subresource = request.get("subResource") or ""
        if operation in ("DELETE", "CONNECT"):
            return _allow(f"{operation} is always allowed")
        if subresource == "status":
            return _allow("status updates are always allowed")
        if subresource == "scale":
            return self._validate_scale(request, policyset)
        if subresource and subresource != "ephemeralcontainers":
            return _allow(f"subresource {subresource} is not checked")
        info = request_info(request)
        namespace = request.get("namespace") or ""
        obj = _object_with_namespace(request.get("object") or {}, namespace)
        current = self._evaluate(obj, policyset, info, namespace)
        if current.exempt_reason:
            return _allow(current.exempt_reason)
        violations = current.violations
        old = request.get("oldObject")
        if operation == "UPDATE" and isinstance(old, Mapping):
            previous = self._evaluate(_object_with_namespace(old, namespace), policyset, info, namespace)
            violations = new_violations(current, previous)
        retired = policyset.retired_opt_out(namespace, self.facts.namespace_labels(namespace))
        return self._decide(violations, current.errors, obj=obj, info=info, policyset=policyset,
                            notices=(retired,) if retired else ())

    def _evaluate(self, obj: Mapping[str, Any], policyset: PolicySet, info: RequestInfo,
                  namespace: str) -> Evaluated:
        held, resolutions = self._resolved
        if held is not policyset or len(resolutions) >= RESOLVED_SUBJECTS:
            resolutions = {}
            self._resolved = (policyset, resolutions)  # one assignment: the app threads see either pair whole
        return evaluate_object(obj, policyset, point="admission", facts=self.facts, request=info,
                               own_namespace=self.own_namespace, default_namespace=namespace or "default",
                               resolutions=resolutions)

    def _validate_scale(self, request: AdmissionRequest, policyset: PolicySet) -> Outcome:
        """A Scale of a Deployment/ReplicaSet/StatefulSet/Rollout/LeaderWorkerSet: the GPU quota
        look-ahead only.

        The Scale carries no pod template: the workload's own, from the cluster cache, sizes it
        (a Rollout's from its newest ReplicaSet, with the canary default surge, as Rollouts are not
        cached). Failing that (a LeaderWorkerSet, or a workload not cached yet), one running pod of
        the workload stands in for the template (a LeaderWorkerSet's pods carry its group size);
        with neither, the scale is allowed with a warning that the look-ahead could not run.
        """
        if QUOTA_POLICY not in policyset.enabled_policies():
            return _allow("gpu-quota is not enabled")
        resource = request["resource"].get("resource", "")
        if resource not in SCALABLE_KINDS:
            return _allow(f"scale of {resource} is not checked")
        namespace = request.get("namespace") or ""
        exempt = policyset.exempt_namespace(namespace, own_namespace=self.own_namespace)
        if exempt:
            return _allow(exempt)
        name = request.get("name") or str(((request.get("object") or {}).get("metadata") or {}).get("name", ""))
        target, problem = self._scale_target(resource, namespace, name)
        if target is None:
            return Outcome(Decision(allowed=True, warnings=(clip_warning(problem),)), "warned",
                           reason="scale without a template")

        def as_workload(scale: Any) -> dict[str, Any]:
            replicas = ((scale or {}).get("spec") or {}).get("replicas", 0) if isinstance(scale, Mapping) else 0
            obj = copy.deepcopy(target)
            obj["spec"]["replicas"] = replicas if isinstance(replicas, int) else 0
            return obj

        info = request_info(request)
        current = self._evaluate(as_workload(request.get("object")), policyset, info, namespace)
        if current.exempt_reason:
            return _allow(current.exempt_reason)
        violations = [v for v in current.violations if v.policy == QUOTA_POLICY]
        old = request.get("oldObject")
        if isinstance(old, Mapping):
            previous = self._evaluate(as_workload(old), policyset, info, namespace)
            violations = [v for v in new_violations(current, previous) if v.policy == QUOTA_POLICY]
        errors = [e for e in current.errors if e == QUOTA_POLICY]
        return self._decide(violations, errors, obj=request.get("object") or {}, info=info, policyset=policyset)

    def _scale_target(self, resource: str, namespace: str, name: str) -> tuple[dict[str, Any] | None, str]:
        """The workload a Scale resizes, as an object with a pod template (``spec.replicas`` to be
        set), or None and why the look-ahead cannot run."""
        api_version, kind = SCALABLE_KINDS[resource]
        meta = {"name": name, "namespace": namespace}
        if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
            found = self.facts.resolve_object(namespace, kind, name)
            spec = found.get("spec") if isinstance(found, Mapping) else None
            if isinstance(spec, Mapping) and isinstance(spec.get("template"), Mapping):
                return {"apiVersion": api_version, "kind": kind, "metadata": meta,
                        "spec": copy.deepcopy(dict(spec))}, ""
        elif kind == "Rollout":
            owned = getattr(self.facts, "owned_replicasets", None)
            for rs in owned(namespace, kind, name) if owned else []:
                template = (rs.get("spec") or {}).get("template")
                if isinstance(template, Mapping):
                    return {"apiVersion": api_version, "kind": kind, "metadata": meta,
                            "spec": {"template": copy.deepcopy(dict(template)), "strategy": {"canary": {}}}}, ""
        finder = getattr(self.facts, "workload_pods", None)
        pods = finder(namespace, kind, name) if finder else []
        if not pods:
            return None, (f"{QUOTA_POLICY}: {resource}/{name} in {namespace} is not in the webhook's cache and has "
                          "no running pod to size the scale by; the GPU quota look-ahead did not run")
        pod = pods[0]
        pod_template = {"metadata": copy.deepcopy(pod.get("metadata") or {}),
                        "spec": copy.deepcopy(pod.get("spec") or {})}
        if kind == "LeaderWorkerSet":
            size = str((_meta(pod).get("annotations") or {}).get(LWS_SIZE_ANNOTATION, ""))
            if not size.isascii() or not size.isdigit() or int(size) < 1:
                return None, (f"{QUOTA_POLICY}: the pods of {resource}/{name} in {namespace} do not say their group "
                              f"size ({LWS_SIZE_ANNOTATION}); the GPU quota look-ahead did not run")
            return {"apiVersion": api_version, "kind": kind, "metadata": meta,
                    "spec": {"leaderWorkerTemplate": {"size": int(size), "workerTemplate": pod_template}}}, ""
        return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {"template": pod_template}}, ""

    def _decide(self, violations: list[Violation], errors: list[str], *, obj: Mapping[str, Any],
                info: RequestInfo, policyset: PolicySet, notices: tuple[str, ...] = ()) -> Outcome:
        effective = effective_violations(violations, dry_run=self.dry_run or policyset.dry_run)
        denies = [v for v in effective if v.action == "deny"]
        warns = [v for v in effective if v.action == "warn"]
        audits = [v for v in effective if v.action == "audit"]
        warnings = [clip_warning(n) for n in notices] + [clip_warning(f"{v.policy}: {v.path}: {v.message}")
                                                          for v in warns]
        audit: dict[str, str] = {}
        for v in audits:
            line = f"{v.path}: {v.message}"
            audit[v.policy] = f"{audit[v.policy]}; {line}" if v.policy in audit else line
        glass = break_glass(denies, obj=obj, info=info, policyset=policyset)
        lifted = list(glass.lifted)
        note = glass.note
        if lifted:
            audit["break-glass"] = clip_warning(f"user {info.user} lifted {', '.join(lifted)}: {glass.reason}")
            warnings.insert(0, clip_warning(
                f"break-glass by {info.user}: denied by {', '.join(lifted)} but allowed; this is audited"))
            warnings[1:1] = [clip_warning(v.line()) for v in denies]
            denies = []
        warnings = _bounded(warnings, self.max_warnings)
        if denies:
            lines = [v.line() for v in denies]
            if note:
                lines.append(note)
            decision = Decision(allowed=False, code=403, message="\n".join(lines), warnings=tuple(warnings),
                                audit_annotations=audit)
            return Outcome(decision, "denied", effective, errors)
        label = "warned" if warnings else "allowed"
        return Outcome(Decision(allowed=True, warnings=tuple(warnings), audit_annotations=audit), label, effective,
                       errors, lifted)

    # ---- mutate -------------------------------------------------------------------------------
    def mutate(self, request: AdmissionRequest, policyset: PolicySet) -> Outcome:
        """Pods at CREATE only; an RFC 6902 patch from the policy library's mutated copy."""
        kind = request["kind"].get("kind")
        if request["operation"] != "CREATE" or kind != "Pod" or request.get("subResource"):
            return _allow("only Pods are mutated, at CREATE")
        namespace = request.get("namespace") or ""
        pod: Mapping[str, Any] = request.get("object") or {}
        exempt = policyset.exempt_namespace(namespace or str(_meta(pod).get("namespace") or ""),
                                            own_namespace=self.own_namespace)
        if exempt:
            return _allow(exempt)
        resource = Resource.of(dict(pod), default_namespace=namespace or "default")
        ns_labels = self.facts.namespace_labels(resource.namespace) or {}
        subject = Subject(resource=resource, object_labels=_meta(pod).get("labels") or {},
                          namespace_labels=ns_labels, environment=policyset.environment(resource.namespace, ns_labels),
                          request=request_info(request))
        if not policyset.selects(subject):
            return _allow("not selected by the PolicySet's match/exclude")
        pod = _object_with_namespace(pod, namespace)  # both sides alike: the patch never touches it
        mutated = mutate_admitted_pod(pod, policyset, facts=self.facts)
        patch = jsonpatch.make_patch(pod, mutated).patch
        return Outcome(Decision(allowed=True, patch=patch or None), "allowed",
                       reason="mutated" if patch else "nothing to mutate")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _bounded(warnings: list[str], limit: int) -> list[str]:
    if len(warnings) <= limit:
        return warnings
    return warnings[: limit - 1] + [f"... and {len(warnings) - limit + 1} more mlguard warnings"]
