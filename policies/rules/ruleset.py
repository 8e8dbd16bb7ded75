"""`spec.rules`: a team's own rules in CEL, compiled when the PolicySet loads.

A rule that does not compile (a syntax error, an unknown variable, a validation that is not bool, a
message expression that is not a string, an expression over the size budget) refuses the whole PolicySet,
each problem named with the rule id, the field path and file line, the position in the expression and the
expression itself: the same channel as every other PolicySet error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.rules.celenv import (
    FRAME_ITEM,
    FRAME_REWRITES,
    MLGUARD_FACTS,
    Program,
    ResultKind,
    Scope,
    compile_expression,
    compile_frame,
    compile_internal,
)
from policies.rules.lexer import (
    LexError,
    comprehension_depth,
    comprehension_variables,
    free_identifiers,
    replace_identifier,
    replace_selection,
    selections,
)

DEFAULT_LIMITS = {"maxExpressionLength": 5000, "maxComprehensionDepth": 3, "perRequestMilliseconds": 50}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Validation:
    program: Program                 # as written (the export keeps `variables.<name>`)
    message: str | None
    message_program: Program | None
    path: str | None
    runner: Program | None = None          # with the rule's variables inlined: what the engine evaluates
    message_runner: Program | None = None
    frame_runner: Program | None = None    # the same over every instance of the object at once (the fast path)

    @property
    def expression(self) -> str:
        return self.program.source


@dataclass(frozen=True)
class Variable:
    name: str
    program: Program


@dataclass(frozen=True)
class Rule:
    """A compiled rule. ``config`` is its entry in the PolicySet (action, match, overrides, params)."""

    id: str
    description: str
    runbook: str
    scope: Scope
    config: Mapping[str, Any]
    variables: tuple[Variable, ...]
    validations: tuple[Validation, ...]
    facts: frozenset[str] = field(default_factory=frozenset)  # the mlguard-only facts its expressions use
    names: frozenset[str] = field(default_factory=frozenset)  # every variable its evaluation binds

    @property
    def params(self) -> Mapping[str, Any]:
        params = self.config.get("params")
        return params if isinstance(params, Mapping) else {}

    def variables_used(self, validation: Validation) -> set[str]:
        sources = [validation.expression] + ([validation.message_program.source]
                                             if validation.message_program else [])
        return {name for src in sources for name, _ in selections(src, "variables")}


@dataclass(frozen=True)
class RuleLimits:
    max_expression_length: int
    max_comprehension_depth: int
    per_request_seconds: float

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> RuleLimits:
        merged = {**DEFAULT_LIMITS, **(spec or {})}
        return cls(int(merged["maxExpressionLength"]), int(merged["maxComprehensionDepth"]),
                   float(merged["perRequestMilliseconds"]) / 1000)


Where = Callable[[Sequence[Any]], str]


def _near(source: str, line: int, column: int) -> str:
    lines = source.splitlines() or [""]
    text = lines[min(max(line, 1), len(lines)) - 1]
    start = max(column - 30, 0)
    snippet = text[start:column + 30]
    return ("..." if start else "") + snippet + ("..." if column + 30 < len(text) else "")


class _Compiler:
    def __init__(self, rule_id: str, scope: Scope, limits: RuleLimits, where: Where, errors: list[str]) -> None:
        self.rule_id = rule_id
        self.scope = scope
        self.limits = limits
        self.where = where
        self.errors = errors
        self.facts: set[str] = set()

    def error(self, path: Sequence[Any], message: str) -> None:
        self.errors.append(f"{self.where(path)}: rule {self.rule_id}: {message}")

    def compile(self, path: Sequence[Any], source: Any, *, result: ResultKind, known_variables: Sequence[str]
                ) -> Program | None:
        if not isinstance(source, str) or not source.strip():
            self.error(path, "an expression is required")
            return None
        if len(source) > self.limits.max_expression_length:
            self.error(path, f"the expression is {len(source)} characters long, over the budget of "
                             f"{self.limits.max_expression_length} (spec.ruleLimits.maxExpressionLength)")
            return None
        try:
            depth = comprehension_depth(source)
            names = {t.text for t in free_identifiers(source)}
            refs = selections(source, "variables")
        except LexError as exc:
            self.error(path, f"{exc}: {source!r}")
            return None
        if depth > self.limits.max_comprehension_depth:
            self.error(path, f"comprehensions (all, exists, map, filter ...) nest {depth} deep, over the budget of "
                             f"{self.limits.max_comprehension_depth} (spec.ruleLimits.maxComprehensionDepth): "
                             f"{source!r}")
            return None
        compiled = compile_expression(source, scope=self.scope, result=result)
        if isinstance(compiled, list):
            for problem in compiled:
                self.error(path, f"{problem.message} at line {problem.line}, column {problem.column} of the "
                                 f"expression, near `{_near(source, problem.line, problem.column)}`: {source!r}")
            return None
        for name, offset in refs:
            if name not in known_variables:
                line = source.count("\n", 0, offset) + 1
                column = offset - (source.rfind("\n", 0, offset) + 1) + 1
                defined = ", ".join(known_variables) or "none"
                self.error(path, f"undeclared reference to 'variables.{name}' at line {line}, column {column} of the "
                                 f"expression (variables defined before it: {defined}): {source!r}")
                return None
        self.facts |= names & set(MLGUARD_FACTS)
        return compiled


def compile_rules(entries: Any, *, where: Where, builtin_ids: Sequence[str], limits: RuleLimits
                  ) -> tuple[list[Rule], list[str]]:
    """Compile `spec.rules` (already valid against the JSON Schema); every problem in ``errors``."""
    errors: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        base: list[Any] = ["spec", "rules", index]
        rule_id = str(entry["id"])
        if rule_id in builtin_ids:
            errors.append(f"{where(base + ['id'])}: rule {rule_id}: the id is a built-in policy's; "
                          "choose another (rule ids and policy ids share findings, runbooks and metrics)")
            continue
        if rule_id in seen:
            errors.append(f"{where(base + ['id'])}: rule {rule_id}: the id is used twice "
                          f"(also spec.rules[{seen[rule_id]}])")
            continue
        seen[rule_id] = index
        scope: Scope = entry.get("scope", "object")
        compiler = _Compiler(rule_id, scope, limits, where, errors)
        before = len(errors)
        variables: list[Variable] = []
        for j, var in enumerate(entry.get("variables") or []):
            name = var["name"]
            path = base + ["variables", j]
            if not _VARIABLE_NAME.match(name) or name in {v.name for v in variables}:
                compiler.error(path + ["name"], f"variable name {name!r} is not an identifier, or is used twice")
                continue
            program = compiler.compile(path + ["expression"], var["expression"], result="any",
                                       known_variables=[v.name for v in variables])
            if program is not None:
                variables.append(Variable(name, program))
        names = [v.name for v in variables]
        validations: list[Validation] = []
        for j, item in enumerate(entry["validations"]):
            path = base + ["validations", j]
            program = compiler.compile(path + ["expression"], item["expression"], result="bool",
                                       known_variables=names)
            message_program = None
            if "messageExpression" in item:
                message_program = compiler.compile(path + ["messageExpression"], item["messageExpression"],
                                                   result="string", known_variables=names)
            if program is not None:
                validations.append(Validation(program, item.get("message"), message_program, item.get("path")))
        if len(errors) == before:
            runnable, bound = _inline(variables, validations, scope, rule_id)
            rules.append(Rule(rule_id, str(entry["description"]), str(entry["runbook"]), scope, entry,
                              tuple(variables), tuple(runnable), frozenset(compiler.facts), bound))
    return rules, errors


INSTANCE_NAMES = ("container", "template", "gpus", "gpuResources")


def _frame(source: str, variables: list[Variable], scope: Scope, rule_id: str) -> Program | None:
    """The validation over all instances at once, its variables bound once each (cel.bind, lazy), or None
    when the rewrite would not be faithful (a comprehension variable named like a scope variable)."""
    sources = {v.name: v.program.source for v in variables}
    needed: set[str] = set()
    todo = [n for n, _ in selections(source, "variables")]
    while todo:
        name = todo.pop()
        if name in sources and name not in needed:
            needed.add(name)
            todo += [n for n, _ in selections(sources[name], "variables")]

    def bound(text: str) -> str:
        for name in sources:
            text = replace_selection(text, "variables", name, f"mlguardV_{name}")
        return text

    source = bound(source)
    for variable in reversed(variables):
        if variable.name in needed:
            source = f"cel.bind(mlguardV_{variable.name}, {bound(variable.program.source)}, {source})"
    if comprehension_variables(source) & {*INSTANCE_NAMES, "params", FRAME_ITEM}:
        return None
    for name, replacement in FRAME_REWRITES[scope].items():
        source = replace_identifier(source, name, replacement)
    source = replace_identifier(source, "params", f"mlguardP[{json.dumps(rule_id)}]")
    return compile_frame(f"mlguardN.{scope}.map({FRAME_ITEM}, {source})")


def _inline(variables: list[Variable], validations: list[Validation], scope: Scope, rule_id: str
            ) -> tuple[list[Validation], frozenset[str]]:
    """The validations with `variables.<name>` replaced by the variable's expression, compiled: one
    evaluation binds the object once, and a variable is evaluated only where it is used (as the API server
    evaluates variables lazily: a variable that fails fails only the validations that use it)."""
    inlined: dict[str, str] = {}

    def expand(source: str) -> str:
        for name, text in inlined.items():
            source = replace_selection(source, "variables", name, f"({text})")
        return source

    for variable in variables:
        inlined[variable.name] = expand(variable.program.source)
    user_variables = variables
    out, names = [], {"variables"}
    for v in validations:
        sources = [expand(v.program.source)] + ([expand(v.message_program.source)] if v.message_program else [])
        programs = [compile_internal(src, scope) for src in sources]
        runner, message_runner = (programs + [None])[:2]
        if runner is None or (v.message_program is not None and message_runner is None):  # pragma: no cover
            raise ValueError(f"an inlined expression of {rule_id} does not compile: {sources}")
        names |= {t.text for src in sources for t in free_identifiers(src)}
        out.append(Validation(v.program, v.message, v.message_program, v.path, runner, message_runner,
                              _frame(v.program.source, user_variables, scope, rule_id)))
    return out, frozenset(names)

