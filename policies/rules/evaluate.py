"""Evaluate `spec.rules` on one object: once per object, pod template or container, as the rule's scope says.

The facts a rule sees come from the same extractor as the built-in policies (policies.workload): the pod
templates at their real paths, the GPUs of a container, a pod or the whole workload at full size (any
configured resource name, DRA claims), the model a serving workload serves. A validation that is false is a
finding at the validation's path under the scope's own path (``spec.template.spec.containers[0]`` +
``args``). A rule that fails to evaluate, returns something other than a bool, or runs past the
per-request budget is a finding that denies (fail closed), naming the rule.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from policies.context import RequestInfo
from policies.gpu import DRA_QUOTA_SUFFIX, GpuConfig, container_gpus
from policies.model import Finding
from policies.rules.celenv import (
    FRAME_VARIABLES,
    SCOPES,
    WALK_DEPTH,
    EvalError,
    ParamLiterals,
    activation,
    combined_program,
    frame_activation,
    param_literal,
)
from policies.rules.ruleset import Rule, Validation
from policies.workload import PodTemplate, Workload, join

MODEL_VERSION_LABEL = "mlguard.io/model-version"
QUANTIZATION_LABEL = "mlguard.io/quantization"
Clock = Callable[[], float]
Tree = dict[str, "Tree | None"]  # the fields kept, and of each the fields kept of it (None: all of it)


@dataclass
class Budget:
    """The per-request time budget shared by every rule evaluated on one object."""

    seconds: float
    clock: Clock = time.perf_counter
    spent: float = 0.0
    exhausted_by: str | None = None

    def charge(self, rule_id: str, seconds: float) -> bool:
        """Add a rule's time; False once the budget is used up (the first rule to cross it is named)."""
        self.spent += seconds
        if self.spent > self.seconds and self.exhausted_by is None:
            self.exhausted_by = rule_id
        return self.exhausted_by is None

    def take(self, seconds: float) -> bool:
        """Charge work done for every rule at once when it fits in what is left (True); else charge nothing."""
        if self.exhausted_by is not None or self.spent + seconds > self.seconds:
            return False
        self.spent += seconds
        return True


@dataclass(frozen=True)
class RuleInput:
    """What every evaluation of a rule on this object shares."""

    workload: Workload
    gpu: GpuConfig
    environment: str | None
    namespace_labels: Mapping[str, str] | None
    request: RequestInfo | None
    old_object: Mapping[str, Any] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False)

    def instances(self, scope: str) -> list[Instance]:
        key = f"instances:{scope}"
        if key not in self._cache:
            self._cache[key] = list(_instances(scope, self))
        found: list[Instance] = self._cache[key]
        return found

    def base(self) -> Mapping[str, Any]:
        """The variables every instance of this object shares (one dict, not to be changed)."""
        if "base" not in self._cache:
            resource = self.workload.resource
            self._cache["base"] = {
                "object": self.workload.obj,
                "oldObject": self.old_object,
                "request": request_variable(self.request, self.workload),
                "namespaceObject": {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": resource.namespace,
                                                 "labels": dict(self.namespace_labels or {})}},
                "environment": self.environment,
                "model": model_variable(self.workload),
            }
        found: Mapping[str, Any] = self._cache["base"]
        return found


def request_variable(request: RequestInfo | None, workload: Workload) -> dict[str, Any]:
    """The admission request as a ValidatingAdmissionPolicy sees it (in CI: a CREATE by nobody)."""
    resource = workload.resource
    request = request or RequestInfo()
    group, _, version = resource.api_version.rpartition("/")
    return {"operation": request.operation, "namespace": resource.namespace, "name": resource.name,
            "dryRun": request.dry_run, "subResource": request.subresource,
            "kind": {"group": group, "version": version, "kind": resource.kind},
            "userInfo": {"username": request.user, "groups": list(request.groups)}}


def model_variable(workload: Workload) -> dict[str, Any] | None:
    """The served model, from the extractor's serving detection (the mlguard.io/model label, a serving kind,
    a model server's image and arguments): name ("" when it cannot be told), version and quantization from the
    serving labels, and how it was recognised. None: the workload serves no model."""
    serving = workload.serving
    if serving is None:
        return None
    labels: dict[str, Any] = dict(workload.labels)
    for tpl in workload.serving_templates():
        labels.update(tpl.labels)
    return {"name": serving.model or "", "version": str(labels.get(MODEL_VERSION_LABEL, "")),
            "quantization": str(labels.get(QUANTIZATION_LABEL, "")), "source": serving.model_source,
            "reason": serving.reason}


def _count(gpus: Mapping[str, Decimal]) -> int:
    return math.ceil(sum(gpus.values(), Decimal(0)))


def _names(gpus: Mapping[str, Decimal]) -> list[str]:
    return sorted(k.removesuffix(DRA_QUOTA_SUFFIX) for k, v in gpus.items() if v > 0)


@dataclass(frozen=True)
class RuleFinding:
    """A finding of a rule; ``failure``: the rule could not decide (an error, the budget), which denies."""

    finding: Finding
    failure: bool = False


def _fail(path: str, message: str, inst: Instance) -> RuleFinding:
    return RuleFinding(Finding(path, message, resource=_owner(inst)), failure=True)


@dataclass(frozen=True)
class Instance:
    """One place a rule is evaluated: its own variables (on top of the object's ``base``) and the path its
    findings are under."""

    path: str
    data: dict[str, Any]
    template: PodTemplate | None = None
    base: Mapping[str, Any] = field(default_factory=dict)


class Frame:
    """Every rule's view of one object, bound once: each fact is converted for the runtime a single time
    (on first use), and each validation runs over all of its scope's instances in one evaluation. Only what
    the given rules' frame programs read is built (all of it when ``rules`` is None), and of the object, its
    templates and containers only the fields the rules select (`Rule.reads`: the runtime converts a bound value
    whole, and a container's env alone may be most of an object); a pod template or container that sits inside
    an object bound whole is read from the converted object by its path, not bound again."""

    def __init__(self, given: RuleInput, params: Mapping[str, Mapping[str, Any]],
                 rules: Iterable[Rule] | None = None) -> None:
        plan = _plan(rules)
        names, scopes, trees = plan.names, plan.scopes, plan.trees
        # the validations evaluated together, the first time a rule needs its verdicts (`verdicts`)
        self.together, self._bodies, self.located = plan.together, plan.bodies, plan.located
        self._verdicts: dict[int, Any] | None = None if self.together else {}
        data: dict[str, Any] = {}
        if names & _BASE:
            base = given.base()
            data.update((k, cut(base[k], _tree_of(trees, k)) if k in ("object", "oldObject") else base[k])
                        for k in names & _BASE)
        data["variables"] = {}
        self._literals: ParamLiterals = ()
        if "mlguardP" in names:  # converted only where the one program reads a parameter it could not write in
            data["mlguardP"] = {k: v if type(v) is dict else dict(v) for k, v in params.items()}  # no copy per object
            self._literals = tuple((rule, _literals(p)) for rule, p in params.items())
        obj, tpls, ctrs = (given.instances(s) if s in scopes else [] for s in SCOPES)
        data["mlguardN"] = {"object": list(range(len(obj))), "podTemplate": list(range(len(tpls))),
                            "container": list(range(len(ctrs)))}
        if names & {"mlguardOG", "mlguardOR"}:
            data["mlguardOG"] = obj[0].data["gpus"] if obj else 0
            data["mlguardOR"] = obj[0].data["gpuResources"] if obj else []
        root = given.workload.obj
        if names & {"mlguardTL", "mlguardTP"}:
            data["mlguardTL"], data["mlguardTP"] = _bound(root, [(i.path, i.data["template"]) for i in tpls],
                                                          _tree_of(trees, "template"), "podTemplate" in plan.located)
        if names & {"mlguardTG", "mlguardTR"}:
            data["mlguardTG"] = [i.data["gpus"] for i in tpls]
            data["mlguardTR"] = [i.data["gpuResources"] for i in tpls]
        if names & {"mlguardCL", "mlguardCP"}:
            data["mlguardCL"], data["mlguardCP"] = _bound(root, [(i.path, i.data["container"]) for i in ctrs],
                                                          _tree_of(trees, "container"), "container" in plan.located)
        if "mlguardCT" in names:
            index = {id(i.template): n for n, i in enumerate(tpls)}
            data["mlguardCT"] = [index[id(i.template)] for i in ctrs]
        if names & {"mlguardCG", "mlguardCR"}:
            data["mlguardCG"] = [i.data["gpus"] for i in ctrs]
            data["mlguardCR"] = [i.data["gpuResources"] for i in ctrs]
        self.activation = frame_activation(data)
        self._sizes = {"object": len(obj), "podTemplate": len(tpls), "container": len(ctrs)}

    def passed(self, rule: Rule, budget: Budget) -> bool:
        """True when the one evaluation of every rule (`verdicts`) found each validation of ``rule`` true on every
        instance, within the budget: the rule has nothing to say and need not be looked at again."""
        if budget.exhausted_by is not None or not rule.validations or rule.scope not in self._sizes:
            return False
        together = self.verdicts(budget)
        size = self._sizes[rule.scope]
        for validation in rule.validations:
            got = together.get(id(validation.frame_runner))
            if not isinstance(got, list) or len(got) != size or not all(x is True for x in got):
                return False
        return True

    def verdicts(self, budget: Budget) -> Mapping[int, Any]:
        """The result of each validation of ``together`` (by id of its frame program) from one evaluation of all
        of them; empty when that fails (an error in any: each validation then runs on its own and the one that
        failed is named) or does not fit in the budget left (each rule then runs on its own, charged its time,
        so the rule that uses the budget up is the one named)."""
        if self._verdicts is None:
            self._verdicts = {}
            program = combined_program(self._bodies, self.located, self._literals)
            if program is not None:
                start = budget.clock()
                try:
                    got = program.run(self.activation)
                except EvalError:
                    got = None
                if isinstance(got, list) and len(got) == len(self.together) and budget.take(budget.clock() - start):
                    self._verdicts = {id(v.frame_runner): r for v, r in zip(self.together, got, strict=True)}
        return self._verdicts


_LITERALS: dict[int, tuple[Mapping[str, Any], tuple[tuple[str, str], ...]]] = {}
LITERALS_KEPT = 1024  # resolved params of rules (one per rule and kind of subject: `engine.Resolutions`)


def _literals(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Each parameter of a rule that has a CEL literal, and the literal; worked out once per resolved params
    (the engine keeps them across objects and requests, and never changes them)."""
    held = _LITERALS.get(id(params))
    if held is None or held[0] is not params:
        if len(_LITERALS) >= LITERALS_KEPT:
            _LITERALS.clear()
        found = tuple((k, text) for k, v in params.items() if isinstance(k, str)
                      and (text := param_literal(v)) is not None)
        held = _LITERALS[id(params)] = (params, found)
    return held[1]


_BASE = frozenset({"object", "oldObject", "request", "namespaceObject", "environment", "model"})
_PART = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")


@lru_cache(maxsize=4096)
def steps(path: str) -> tuple[str | int, ...] | None:
    """The keys and indexes of a field path (``spec.containers[0]`` -> spec, containers, 0), or None when it is
    deeper than the frame walks or not made of plain keys and indexes."""
    out: list[str | int] = []
    for part in path.split(".") if path else []:
        found = _PART.fullmatch(part)
        if found is None:
            return None
        out.append(found.group(1))
        out += [int(i) for i in found.group(2)[1:-1].split("][")] if found.group(2) else []
    return tuple(out) if len(out) <= WALK_DEPTH else None


def locate(root: Mapping[str, Any], path: str, value: Any) -> tuple[str | int, ...] | None:
    """The steps of ``path`` when they lead from ``root`` to ``value`` itself (the same object, not an equal one),
    else None: a value taken from elsewhere, or assembled, is not read from the object."""
    found = steps(path)
    if found is None:
        return None
    node: Any = root
    for step in found:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
        elif not isinstance(node, Mapping) or step not in node:
            return None
        node = node[step]
    return found if node is value else None


def _located(root: Mapping[str, Any], items: list[tuple[str, Any]]) -> tuple[list[Any], list[list[str | int]]]:
    """Per item: (None, its steps in the object) when it sits in it, else (the value itself, [])."""
    bound: list[Any] = []
    paths: list[list[str | int]] = []
    for path, value in items:
        at = locate(root, path, value)
        bound.append(None if at is not None else value)
        paths.append(list(at) if at is not None else [])
    return bound, paths


@dataclass(frozen=True)
class _Plan:
    """What a frame binds for a set of active rules, worked out once per set."""

    rules: tuple[Rule, ...]           # held, so that the ids keying `_PLANS` stay theirs while the entry lives
    names: frozenset[str]
    scopes: frozenset[str]
    together: tuple[Validation, ...]  # the validations that run as one program, and their frame bodies
    bodies: tuple[str, ...]
    trees: Mapping[str, Tree | None] | None  # per bindable root, the fields kept (None: all); None: all of all
    located: frozenset[str] = frozenset(SCOPES)  # the scopes whose instances are read from the object bound whole


_PLANS: dict[tuple[int, ...], _Plan] = {}
PLANS_KEPT = 256  # sets of active rules (a PolicySet has a few: rules switched off per namespace or environment)


def _plan(rules: Iterable[Rule] | None) -> _Plan:
    if rules is None:
        return _Plan((), frozenset(FRAME_VARIABLES), frozenset(SCOPES), (), (), None)
    held = tuple(rules)
    key = tuple(map(id, held))
    plan = _PLANS.get(key)
    if plan is None:
        reads: dict[str, set[tuple[str, ...]]] = {}
        for rule in held:
            for name, paths in rule.reads.items():
                reads.setdefault(name, set()).update(paths)
        together = tuple(v for rule in held if rule.validations and all(v.frame_body for v in rule.validations)
                         for v in rule.validations)
        trees = {name: field_tree(frozenset(paths)) for name, paths in reads.items()}
        whole = _tree_of(trees, "object") is None
        plan = _Plan(held, frozenset().union(*(r.frame_names for r in held)),
                     frozenset().union(*(r.frame_scopes for r in held)), together,
                     tuple(v.frame_body or "" for v in together), trees,
                     frozenset(scope for scope, root in (("podTemplate", "template"), ("container", "container"))
                               if whole and _tree_of(trees, root) is None))
        if len(_PLANS) >= PLANS_KEPT:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _tree_of(trees: Mapping[str, Tree | None] | None, root: str) -> Tree | None:
    """The fields of ``root`` to bind: None for all of it, ``{}`` for none (no rule reads it)."""
    if trees is None:
        return None
    return trees.get(root, {})


def _bound(root: Mapping[str, Any], items: list[tuple[str, Any]], tree: Tree | None, located: bool
           ) -> tuple[list[Any], list[list[str | int]]]:
    """The templates or containers as the frame binds them (`_located`'s shape): located in the object when the
    plan reads them from it (bound whole), else each one's parts the rules read (all of it: ``tree`` None)."""
    if located:
        return _located(root, items)
    return [cut(value, tree) for _, value in items], [[] for _ in items]


@lru_cache(maxsize=256)
def field_tree(paths: frozenset[tuple[str, ...]]) -> Tree | None:
    """The fields at ``paths`` as a tree (None: all of the value, when ``()`` is among them)."""
    if () in paths:
        return None
    tree: Tree = {}
    for path in sorted(paths, key=len):
        node: Tree | None = tree
        for k, step in enumerate(path):
            if node is None:
                break  # inside a field kept whole by a shorter path
            if k == len(path) - 1:
                node[step] = None
            elif step not in node:
                node[step] = {}
            node = node[step]
    return tree


def cut(value: Any, tree: Tree | None) -> Any:
    """``value`` with only the fields of ``tree`` (each kept whole, an absent one left absent, a value that is not
    a mapping kept whole where the tree would go through it): selecting any of those fields, or a part of one,
    gives what it gives on ``value``."""
    if tree is None or not (type(value) is dict or isinstance(value, Mapping)):
        return value
    out = {}
    for key, sub in tree.items():
        if key in value:
            child = value[key]
            out[key] = child if sub is None else cut(child, sub)
    return out


def instances(rule: Rule, given: RuleInput) -> list[Instance]:
    return given.instances(rule.scope)


def _instances(scope: str, given: RuleInput) -> Iterator[Instance]:
    workload = given.workload
    base = given.base()
    if scope == "object":
        total = workload.full_size_gpus(given.gpu, surge=False)
        yield Instance("", {"gpus": _count(total), "gpuResources": _names(total)}, None, base)
        return
    for i, tpl in enumerate(workload.templates):
        pod = workload.pod_gpus(i, given.gpu)
        if scope == "podTemplate":
            yield Instance(tpl.spec_path, {"template": tpl.spec, "gpus": _count(pod), "gpuResources": _names(pod)},
                           tpl, base)
            continue
        for ref in tpl.containers():
            mine = {k: v for k, v in container_gpus(ref.container, given.gpu).items() if v > 0}
            yield Instance(ref.path, {"template": tpl.spec, "container": ref.container, "gpus": _count(mine),
                                      "gpuResources": _names(mine)}, tpl, base)


def _message(validation: Validation, act: Any) -> str:
    if validation.message_runner is not None:
        try:
            text = validation.message_runner.run(act)
            if isinstance(text, str) and text.strip():
                return text
        except EvalError:
            pass  # as the API server does: fall back to the static message
    return validation.message or f"failed expression: {validation.expression}"


def _fast(rule: Rule, given: RuleInput, params: Mapping[str, Any], frame: Frame, budget: Budget
          ) -> list[RuleFinding] | None:
    """The rule over every instance in one evaluation per validation; None when it cannot decide alone (an
    error, a value that is not a bool): the per-instance path then says which instance and why."""
    if not rule.validations or any(v.frame_runner is None for v in rule.validations):
        return None
    insts = instances(rule, given)
    verdicts = []
    together = frame.verdicts(budget)
    for validation in rule.validations:
        assert validation.frame_runner is not None
        got = together.get(id(validation.frame_runner))
        try:
            got = validation.frame_runner.run(frame.activation) if got is None else got
        except EvalError:
            return None
        if not isinstance(got, list) or len(got) != len(insts) or not all(isinstance(x, bool) for x in got):
            return None
        verdicts.append(got)
    out = []
    for k, inst in enumerate(insts):
        failed = [j for j, got in enumerate(verdicts) if not got[k]]
        if failed:  # the messages of what failed only: a binding of this instance alone
            out += list(_evaluate_instance(rule, inst, params, only=set(failed)))
    return out


def evaluate_rule(rule: Rule, given: RuleInput, params: Mapping[str, Any], budget: Budget,
                  frame: Frame | None = None) -> Iterator[RuleFinding]:
    """The findings of one rule on one object; stops (and says so) when the budget is used up."""
    insts = instances(rule, given)
    if frame is not None and insts and budget.exhausted_by is None:
        frame.verdicts(budget)  # every rule's at once, charged as a whole (once per object)
        start = budget.clock()
        found = _fast(rule, given, params, frame, budget)
        spent = budget.clock() - start
        if found is not None:
            yield from found
            if not budget.charge(rule.id, spent):
                yield _fail(insts[-1].path, f"rule {rule.id} exceeded the per-request evaluation budget of "
                                            f"{budget.seconds * 1000:g} ms (spec.ruleLimits.perRequestMilliseconds); "
                                            "denied (fail closed)", insts[-1])
            return
        budget.charge(rule.id, spent)
    for inst in insts:
        if budget.exhausted_by is not None:
            yield _fail(inst.path, f"rule {rule.id} was not evaluated: the per-request rule budget of "
                                   f"{budget.seconds * 1000:g} ms was used up by rule {budget.exhausted_by}; "
                                   "denied (fail closed)", inst)
            return
        start = budget.clock()
        try:
            yield from _evaluate_instance(rule, inst, params)
        finally:
            if not budget.charge(rule.id, budget.clock() - start) and budget.exhausted_by == rule.id:
                yield _fail(inst.path, f"rule {rule.id} exceeded the per-request evaluation budget of "
                                       f"{budget.seconds * 1000:g} ms (spec.ruleLimits.perRequestMilliseconds); "
                                       "denied (fail closed)", inst)


def _owner(inst: Instance) -> Any:
    return inst.template.resource if inst.template is not None else None


def _evaluate_instance(rule: Rule, inst: Instance, params: Mapping[str, Any], *,
                       only: set[int] | None = None) -> Iterator[RuleFinding]:
    data = {**inst.base, **inst.data, "params": params, "variables": {}}
    # bind only what the rule reads: converting the object for the runtime is most of an evaluation's cost
    act = activation(rule.scope, {k: v for k, v in data.items() if k in rule.names}, internal=True)
    for j, validation in enumerate(rule.validations):
        if only is not None and j not in only:
            continue
        path = join(inst.path, validation.path) if validation.path and inst.path else (validation.path or inst.path)
        assert validation.runner is not None
        try:
            verdict = validation.runner.run(act)
        except EvalError as exc:
            yield _fail(path, f"rule {rule.id} failed: {exc} in `{validation.expression}`; denied (fail closed)", inst)
            continue
        if not isinstance(verdict, bool):
            yield _fail(path, f"rule {rule.id} failed: `{validation.expression}` gave {verdict!r}, not a bool; "
                              "denied (fail closed)", inst)
        elif not verdict:
            yield RuleFinding(Finding(path, _message(validation, act), resource=_owner(inst)))
