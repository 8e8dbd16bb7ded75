"""`spec.rules`: a team's own rules in CEL, compiled when the PolicySet loads.

A rule that does not compile (a syntax error, an unknown variable, a validation that is not bool, a
message expression that is not a string, an expression over the size budget) refuses the whole PolicySet,
each problem named with the rule id, the field path and file line, the position in the expression and the
expression itself: the same channel as every other PolicySet error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.rules.celenv import MLGUARD_FACTS, Program, ResultKind, Scope, compile_expression
from policies.rules.lexer import LexError, comprehension_depth, free_identifiers, selections

DEFAULT_LIMITS = {"maxExpressionLength": 5000, "maxComprehensionDepth": 3, "perRequestMilliseconds": 50}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Validation:
    program: Program
    message: str | None
    message_program: Program | None
    path: str | None

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
            rules.append(Rule(rule_id, str(entry["description"]), str(entry["runbook"]), scope, entry,
                              tuple(variables), tuple(validations), frozenset(compiler.facts)))
    return rules, errors

