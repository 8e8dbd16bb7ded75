"""`spec.rules`: a team's own rules in CEL, compiled when the PolicySet loads.

A rule that does not compile (a syntax error, an unknown variable, a validation that is not bool, a
message expression that is not a string, an expression over the size budget) refuses the whole PolicySet,
each problem named with the rule id, the field path and file line, the position in the expression and the
expression itself: the same channel as every other PolicySet error.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.rules.celenv import (
    FRAME_REWRITES,
    FRAME_VARIABLES,
    MLGUARD_FACTS,
    Program,
    ResultKind,
    Scope,
    compile_expression,
    compile_frame,
    compile_internal,
    frame_body,
    frame_source,
)
from policies.rules.lexer import (
    LexError,
    alias_of,
    comprehension_depth,
    comprehension_variables,
    field_reads,
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
    frame_body: str | None = None          # the same with its variables inlined: its part of the rules' one program

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
    # what its frame programs read (the frame builds nothing no active rule reads): variables, and the scopes
    # whose instances they run over or take templates and containers from
    frame_names: frozenset[str] = field(default_factory=frozenset)
    frame_scopes: frozenset[str] = field(default_factory=frozenset)
    # the field paths its validations and variables read from the object, oldObject, template and container
    # (`lexer.field_reads`; ``()``: all of it): the frame binds only those parts
    reads: Mapping[str, frozenset[tuple[str, ...]]] = field(default_factory=dict)

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
            frames = [v.frame_runner.source for v in runnable if v.frame_runner is not None]
            rules.append(Rule(rule_id, str(entry["description"]), str(entry["runbook"]), scope, entry,
                              tuple(variables), tuple(runnable), frozenset(compiler.facts), bound,
                              frozenset(t.text for src in frames for t in free_identifiers(src)
                                        if t.text in FRAME_VARIABLES),
                              frozenset(n for src in frames for n, _ in selections(src, "mlguardN")),
                              _reads([v.expression for v in runnable], variables)))
    return rules, errors


READ_ROOTS = frozenset({"object", "oldObject", "template", "container"})
_ALIAS_ROOTS = READ_ROOTS | {"variables"}


def _alias_parts(parts: list[tuple[str, tuple[str, ...]]], aliases: Mapping[str, list[tuple[str, tuple[str, ...]]]]
                 ) -> list[tuple[str, tuple[str, ...]]] | None:
    """The parts of the roots a variable may be, through the variables it names (``variables.spec.template``);
    None when it may be all of `variables`."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for root, path in parts:
        if root != "variables":
            out.append((root, path))
        elif not path:
            return None
        elif path[0] in aliases:
            out += [(r, p + path[1:]) for r, p in aliases[path[0]]]
    return out


def _reads(sources: list[str], variables: Sequence[Variable]) -> dict[str, frozenset[tuple[str, ...]]]:
    """What a rule's expressions read of the values the frame can bind in part (all of each when they cannot
    be told apart). A variable that only picks a part (``object.kind == 'Pod' ? object.spec : ...``) reads
    its conditions; what is selected from it (``variables.pod.nodeSelector``) is read of each part it may be."""
    aliases: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    texts = list(sources)
    for variable in variables:
        alias = alias_of(variable.program.source, _ALIAS_ROOTS)
        parts = _alias_parts(alias[1], aliases) if alias is not None else None
        if alias is None or parts is None:
            texts.append(variable.program.source)
        else:
            texts += alias[0]
            aliases[variable.name] = parts
    found: dict[str, set[tuple[str, ...]]] = {}
    try:
        for text in texts:
            for root, paths in field_reads(text, _ALIAS_ROOTS).items():
                for path in paths:
                    if root != "variables":
                        found.setdefault(root, set()).add(path)
                    for name, parts in aliases.items():  # what is selected from an alias, of each of its parts
                        if root == "variables" and (not path or path[0] == name):
                            for part_root, part in parts:
                                found.setdefault(part_root, set()).add(part + path[1:])
    except LexError:
        return {root: frozenset({()}) for root in READ_ROOTS}
    return {root: frozenset(paths) for root, paths in found.items()}


INSTANCE_NAMES = ("container", "template", "gpus", "gpuResources")
INLINE_GROWTH = 4  # how much longer a validation may get with its variables inlined and still join the one program


def _rewrite(source: str, scope: Scope, rule_id: str) -> str | None:
    """``source`` as the frame evaluates it, over every instance of its scope, or None when the rewrite would
    not be faithful (a comprehension variable named like a scope variable or one of the frame's own)."""
    if any(n in INSTANCE_NAMES or n == "params" or n.startswith("mlguard") for n in comprehension_variables(source)):
        return None
    for name, replacement in FRAME_REWRITES[scope].items():
        source = replace_identifier(source, name, replacement)
    return frame_body(scope, replace_identifier(source, "params", f"mlguardP[{json.dumps(rule_id)}]"))


def _frame(source: str, variables: list[Variable], scope: Scope, rule_id: str) -> Program | None:
    """The validation over all instances at once, its variables bound once each (cel.bind, lazy), or None
    when the rewrite would not be faithful."""
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
    body = _rewrite(source, scope, rule_id)
    return compile_frame(frame_source(body)) if body is not None else None


def _evaluations(source: str, variables: Mapping[str, str]) -> Counter[str]:
    """How many times each variable is evaluated when ``source`` has its variables inlined."""
    found: Counter[str] = Counter()
    for name, _ in selections(source, "variables"):
        found[name] += 1
        found.update(_evaluations(variables[name], variables))  # a variable reads only those before it
    return found


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
        frame = _frame(v.program.source, user_variables, scope, rule_id)
        # evaluated with the other rules' validations in one program: there without cel.bind (in cel-expr-python
        # 0.1.3 a lazy cel.bind next to an expression whose cel.bind ran a comprehension can read a variable of
        # that comprehension: `[cel.bind(v, l.exists(i, true), v), cel.bind(p, 1, cel.bind(s, false, s))]` with
        # l = ['a', 'b'] gives [true, 'b']; chains of cel.bind, as in frame_runner, are not affected), so with its
        # variables inlined, unless that repeats too much of their work (measured on the benchmark's rules:
        # inlining every variable of the examples, each used 1-7 times, was still faster)
        uses = _evaluations(v.program.source, {x.name: x.program.source for x in variables})
        once = len(v.program.source) + sum(len(x.program.source) for x in variables if x.name in uses)
        body = _rewrite(sources[0], scope, rule_id) if frame is not None and len(sources[0]) <= INLINE_GROWTH * once \
            else None
        out.append(Validation(v.program, v.message, v.message_program, v.path, runner, message_runner, frame, body))
    return out, frozenset(names)

