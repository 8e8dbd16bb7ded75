"""The one evaluation path: the CLI and the webhook both call `evaluate`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policies.context import ClusterFacts, EmptyFacts, EvalContext, RequestInfo
from policies.model import EnforcementPoint, Finding, Note, Report, Resource, Violation, identity_of, weakest
from policies.mutations import planned_mutations
from policies.policyset import PolicySet
from policies.registry import all_policies
from policies.rules.evaluate import Budget, Frame, RuleInput, evaluate_rule
from policies.rules.ruleset import Rule
from policies.selectors import Subject, as_blocks
from policies.workload import extract

log = logging.getLogger("mlguard.policies")
EXTRACTOR = "workload"  # the "policy" of the extractor's notes
SELECTED = ("selected",)  # the PolicySet's own match/exclude, kept with the resolutions of a subject
# Each policy's and rule's resolution per kind of subject (`_subject_key`): one evaluation of many objects (a PR's
# manifests, an audit) or many admission requests under one PolicySet resolves each policy once per kind of subject.
Resolutions = dict[tuple[Any, ...], dict[Any, Any]]


@dataclass(frozen=True)
class Evaluated:
    """One object's outcome, with the raw findings kept for UPDATE comparisons."""

    resource: Resource
    violations: list[Violation]
    notes: list[Note]
    exempt_reason: str | None
    only_new: frozenset[str]
    errors: list[str]
    checked: tuple[str, ...] = ()  # the policies that judged the object (their action was not off)


def _subject_key(subject: Subject, policyset: PolicySet) -> tuple[Any, ...] | None:
    """What a policy's resolution depends on (PolicySet.resolve reads only the subject): objects of one namespace
    and kind, with the same values of the labels the set's selectors name, resolve alike (an object's own `app`
    label, different for every workload, does not split them). None when a label value cannot be a key (then
    nothing is shared)."""
    res = subject.resource
    keys = policyset.selector_label_keys
    objects, namespaces = subject.object_labels, subject.namespace_labels
    if keys is not None:
        objects = {k: v for k, v in objects.items() if k in keys[0]}
        namespaces = {k: v for k, v in namespaces.items() if k in keys[1]}
    try:
        key = (res.namespace, res.kind, res.group, frozenset(objects.items()), frozenset(namespaces.items()),
               subject.environment, subject.request)
        hash(key)
    except TypeError:
        return None
    return key


def evaluate_object(obj: Mapping[str, Any], policyset: PolicySet, *, point: EnforcementPoint,
                    facts: ClusterFacts | None = None, request: RequestInfo | None = None,
                    own_namespace: str | None = None, keys: Any = None,
                    default_namespace: str = "default",
                    resolutions: Resolutions | None = None,
                    old_object: Mapping[str, Any] | None = None) -> Evaluated:
    """Evaluate every enabled policy and rule on one object. An exception inside a policy denies the
    object with ``policy <id> failed: ...`` (fail closed) and leaves the other policies running; a rule that
    fails or runs past the budget denies the same way (`policies.rules.evaluate`)."""
    facts = facts or EmptyFacts()
    gpu = policyset.gpu
    resource = Resource.of(dict(obj), default_namespace=default_namespace)
    exempt = policyset.exempt_namespace(resource.namespace, own_namespace=own_namespace)
    if exempt:
        return Evaluated(resource, [], [], exempt, frozenset(), [])
    ns_labels = facts.namespace_labels(resource.namespace) or {}
    environment = policyset.environment(resource.namespace, ns_labels)
    retired = policyset.retired_opt_out(resource.namespace, ns_labels)
    raw_meta = obj.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    labels = meta.get("labels")
    subject = Subject(resource=resource, object_labels=labels if isinstance(labels, Mapping) else {},
                      namespace_labels=ns_labels,
                      environment=environment, request=request)
    subject_key = _subject_key(subject, policyset) if resolutions is not None else None
    known: dict[Any, Any] | None = None
    if resolutions is not None and subject_key is not None:
        known = resolutions.get(subject_key)
        if known is None:
            known = resolutions[subject_key] = {}
    selected = known.get(SELECTED) if known is not None else None
    if selected is None:
        selected = policyset.selects(subject)
        if known is not None:
            known[SELECTED] = selected
    if not selected:
        return Evaluated(resource, [], [], "not selected by the PolicySet's match/exclude", frozenset(), [])
    workload = extract(obj, gpu=gpu, default_namespace=default_namespace, resolve_claim=facts.resolve_claim,
                       resolve_object=facts.resolve_object, config=policyset.workloads)
    ctx = EvalContext(gpu=gpu, facts=facts, point=point, request=request, mutations=policyset.mutations,
                      environment=environment, keys=keys, policyset=policyset)
    violations: list[Violation] = []
    notes: list[Note] = []
    errors: list[str] = []
    only_new: set[str] = set()
    checked: list[str] = []
    registry = all_policies()
    # a Rollout with workloadRef is checked through its Deployment: findings name the Deployment
    owner = next((t.resource for t in workload.templates if t.resource is not None), resource)
    # objects without pod templates are skipped, but a Rollout whose workloadRef could not be resolved
    # still has a strategy to check (canary-required)
    checkable = bool(workload.templates) or resource.kind == "Rollout"
    # what the extractor wants the reader to know: a generic template, an unresolved claim or runtime
    notes.extend(Note(EXTRACTOR, owner, path, f"{path}: {message}") for path, message in workload.notes)
    if retired:
        notes.append(Note("exemptions", resource, "metadata.namespace", retired))
    for policy_id in policyset.enabled_policies():
        resolved = known.get(policy_id) if known is not None else None
        if resolved is None:
            resolved = policyset.resolve(policy_id, subject=subject, point=point)
            if known is not None:
                known[policy_id] = resolved
        if resolved.action == "off":
            continue
        if resolved.only_new:
            only_new.add(policy_id)
        checked.append(policy_id)
        policy = registry[policy_id]
        try:
            findings: list[Finding] = list(policy.check(workload, resolved.params, ctx)) if checkable else []
        except Exception as exc:  # fail closed, keep the others running
            log.exception("policy %s failed on %s", policy_id, resource)
            errors.append(policy_id)
            # at the audit an error result (the object is not judged), elsewhere a denial (fail closed)
            violations.append(Violation(policy_id, "deny", resource, "", f"policy {policy_id} failed: {exc!r}",
                                        policyset.runbook_url(policy.runbook_path()), error=point == "audit"))
            continue
        for f in dict.fromkeys(findings):  # two templates (KServe components) may report the same field once
            target = f.resource or owner
            if f.note:
                notes.append(Note(policy_id, target, f.path, f.message))
            else:
                violations.append(Violation(policy_id, weakest(resolved.action, f.action), target, f.path,
                                            f.message, policyset.runbook_url(policy.runbook_path()),
                                            amount=f.amount, identity=f.identity or "", error=f.error))
    if policyset.rules:
        given = RuleInput(workload=workload, gpu=gpu, environment=environment, namespace_labels=ns_labels,
                          request=request, old_object=old_object)
        budget = Budget(policyset.rule_limits.per_request_seconds)
        active = []
        for rule in policyset.rules:
            if not (checkable or _names_kinds(rule)):
                continue  # like the policies: objects without pod templates, unless the rule names its kinds
            # rule ids never are policy ids, but a rule's key is a tuple all the same
            resolved = known.get(("rule", rule.id)) if known is not None else None
            if resolved is None:
                resolved = policyset.resolve_rule(rule, subject=subject, point=point)
                if known is not None:
                    known[("rule", rule.id)] = resolved
            if resolved.action != "off":
                active.append((rule, resolved))
                checked.append(rule.id)
        frame = Frame(given, {rule.id: resolved.params for rule, resolved in active}, [rule for rule, _ in active]) \
            if active else None
        for rule, resolved in active:
            if resolved.only_new:
                only_new.add(rule.id)
            if frame is not None and frame.passed(rule, budget):
                continue
            for found in dict.fromkeys(evaluate_rule(rule, given, resolved.params, budget, frame)):
                f = found.finding
                runbook = policyset.rule_runbook_url(rule.runbook)
                if found.failure:
                    errors.append(rule.id)
                # a rule that failed to evaluate: at the audit an error result, elsewhere a denial (fail closed)
                violations.append(Violation(rule.id, "deny" if found.failure else resolved.action, f.resource or owner,
                                            f.path, f.message, runbook, error=found.failure and point == "audit"))
    if point == "ci" and policyset.mutations:
        # what the mutating webhook will add to the Pods, whether or not a policy mentioned it
        said = {(n.resource, n.message) for n in notes}
        for m in planned_mutations(workload, mutations=policyset.mutations, gpu=gpu):
            if (owner, m.message) not in said:
                notes.append(Note("mutation", owner, m.path, m.message))
    return Evaluated(resource, violations, notes, None, frozenset(only_new), errors, tuple(checked))


def _names_kinds(rule: Rule) -> bool:
    """True when every match block of the rule names kinds: the rule then applies to objects of those kinds,
    whether or not they hold a pod template."""
    blocks = as_blocks(rule.config.get("match"))
    return bool(blocks) and all("kinds" in b for b in blocks)


def evaluate(objects: Iterable[Mapping[str, Any]], policyset: PolicySet, *, point: EnforcementPoint,
             facts: ClusterFacts | None = None, request: RequestInfo | None = None,
             own_namespace: str | None = None, keys: Any = None) -> Report:
    """Evaluate a set of objects (a PR's manifests, or one admission request's object)."""
    report = Report()
    seen: set[tuple[Any, ...]] = set()
    resolutions: Resolutions = {}
    for obj in objects:
        if not isinstance(obj, Mapping):
            continue
        result = evaluate_object(obj, policyset, point=point, facts=facts, request=request,
                                 own_namespace=own_namespace, keys=keys, resolutions=resolutions)
        report.resources.append(result.resource)
        if result.exempt_reason:
            report.exempt.append((result.resource, result.exempt_reason))
        report.policy_errors.extend(result.errors)
        for v in result.violations:
            key = (v.policy, v.resource, v.path, v.message)
            if key not in seen:  # a workloadRef Deployment is reached twice
                seen.add(key)
                report.violations.append(v)
        for n in result.notes:
            note_key = ("note", n.policy, n.resource, n.path, n.message)
            if note_key not in seen:
                seen.add(note_key)
                report.notes.append(n)
    return report


def new_violations(current: Evaluated, previous: Evaluated) -> list[Violation]:
    """For UPDATE: drop violations of `onlyNewViolations` policies that the old object already had, so a
    scale-down or a label change is never blocked by an old violation. A violation is old only when the old
    object had one of the same policy, at the same path, about the same thing (`Violation.identity`: for
    eval-gate the model, version, digests and images it was checked for), with an amount no larger (GPUs per
    container or pod, GPUs needed at full size). A container with 9 GPUs growing to 64 is new; so is an
    attestation problem on a workload that now names another model version, artifact or image."""
    old: dict[tuple[str, str, str], list[Violation]] = {}
    for v in previous.violations:
        old.setdefault((v.policy, v.path, identity_of(v)), []).append(v)
    kept = []
    for v in current.violations:
        before = old.get((v.policy, v.path, identity_of(v)))
        if v.policy in current.only_new and before and not _grew(v, before):
            continue
        kept.append(v)
    return kept


def _grew(violation: Violation, before: list[Violation]) -> bool:
    """The amount grew past every old one's; an amount where the old finding had none is new too."""
    if violation.amount is None:
        return False
    amounts = [b.amount for b in before if b.amount is not None]
    return not amounts or violation.amount > max(amounts)
