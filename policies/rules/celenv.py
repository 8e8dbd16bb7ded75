"""The CEL environment of `spec.rules`: one runtime for CI and the webhook.

The runtime is cel-expr-python (Google's cel-cpp behind Python bindings), chosen by measurement: on the
cel-spec conformance cases that need no protobuf messages it passed 1588 of 1688 (cel-python 984,
common-expression-language 1114; cel-spec at 508bd98, measured in a scratch venv, no script kept), and 1594 of
1632 (cel-python 951, common-expression-language 1101) on cel-spec v0.25.1 with
tests/benchmarks/cel_conformance.py, which reproduces the comparison; it type-checks (an unknown variable or a
non-bool validation is refused when the PolicySet loads, with its position) and it evaluates a rule in 5-30 us
once the object is bound.

The environment offers what a ValidatingAdmissionPolicy author has in Kubernetes 1.33 that the runtime
can do (k8s.io/apiserver/pkg/cel/environment/base.go): the standard library, the strings (v2), sets and
optional extensions, and Kubernetes' quantity, lists, regex and URL libraries (`k8slib`). Not offered:
the authorizer, IP/CIDR, format, semver and image libraries, and two-variable comprehensions; an
expression that uses them is refused at load ("undeclared reference"), never evaluated wrongly.
Kubernetes does not offer cel-cpp's math, encoders, cel.bind or lists-extension functions either, so they
are left out: a rule that compiles here uses nothing the API server lacks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

from cel_expr_python import cel

from policies.rules.k8slib import INTERNAL_MATCHES, internal_library, kubernetes_library
from policies.rules.lexer import LexError, free_identifiers, replace_identifier, selected, tokens

Scope = Literal["object", "podTemplate", "container"]
SCOPES: tuple[Scope, ...] = ("object", "podTemplate", "container")
# what the API server binds in a ValidatingAdmissionPolicy (`authorizer` aside)
VAP_VARIABLES = ("object", "oldObject", "request", "namespaceObject", "params", "variables")
# what only mlguard knows: the extractor's facts about pod templates, GPUs and models
MLGUARD_FACTS = ("environment", "gpus", "gpuResources", "model", "template", "container")
SCOPE_FACTS: Mapping[Scope, tuple[str, ...]] = {
    "object": ("environment", "gpus", "gpuResources", "model"),
    "podTemplate": ("environment", "gpus", "gpuResources", "model", "template"),
    "container": ("environment", "gpus", "gpuResources", "model", "template", "container"),
}
_TYPES: Mapping[str, Any] = {"gpus": cel.Type.INT, "gpuResources": cel.Type.List(cel.Type.STRING)}
_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


@dataclass(frozen=True)
class CompileError:
    """One problem the compiler found, at a 1-based line and column of the expression."""

    message: str
    line: int
    column: int


class EvalError(Exception):
    """An expression that failed at run time (no such key, division by zero, a non-bool result ...)."""


EXTENSIONS = "extensions:\n  - name: strings\n  - name: sets\n  - name: optional\n"


@cache
def environment(scope: Scope, internal: bool = False) -> Any:
    """The CEL environment of a scope: the variables it binds, the libraries every scope has. The internal one
    (what the engine runs, never what a rule is checked against) adds cel.bind and compiled-pattern matches."""
    config = cel.NewEnvConfigFromYaml(EXTENSIONS + ("  - name: bindings\n" if internal else ""))
    names = VAP_VARIABLES + SCOPE_FACTS[scope]
    return cel.NewEnv(config=config, variables={n: _TYPES.get(n, cel.Type.DYN) for n in names},
                      extensions=[kubernetes_library()] + ([internal_library()] if internal else []))


def internal_source(source: str) -> str:
    """``source`` with matches() calls made the engine's compiled-pattern matches (same RE2 semantics)."""
    toks = tokens(source)
    out, last = [], 0
    for i, tok in enumerate(toks[:-1]):
        if tok.kind == "ident" and tok.text == "matches" and toks[i + 1].text == "(":
            out.append(source[last:tok.start])
            out.append(INTERNAL_MATCHES)
            last = tok.start + len(tok.text)
    out.append(source[last:])
    return "".join(out)


def compile_internal(source: str, scope: Scope) -> Program | None:
    """A program the engine runs (already checked as written), or None when it does not compile."""
    try:
        return Program(source, environment(scope, True).compile(internal_source(source)))
    except RuntimeError:
        return None


# The frame: one binding per object for every rule. The runtime converts a bound value on its first use, whole,
# once per binding: so each fact is a variable of its own (a rule that reads only containers never converts the
# object), and a validation runs over all its instances at once: `mlguardN.<scope>.map(mlguardK, <expression>)`
# with `container` read as `mlguardC[mlguardK]`, `template` as `mlguardT[...]`, `params` as `mlguardP[<rule>]`.
FRAME_ITEM = "mlguardK"
FRAME_REWRITES: Mapping[str, Mapping[str, str]] = {
    "object": {"gpus": "mlguardOG", "gpuResources": "mlguardOR"},
    "podTemplate": {"template": "mlguardT[mlguardK]", "gpus": "mlguardTG[mlguardK]",
                    "gpuResources": "mlguardTR[mlguardK]"},
    "container": {"container": "mlguardC[mlguardK]", "template": "mlguardT[mlguardCT[mlguardK]]",
                  "gpus": "mlguardCG[mlguardK]", "gpuResources": "mlguardCR[mlguardK]"},
}
# A pod template or container that sits inside the object (nearly always: `spec.template.spec.containers[0]`) is
# not bound again: converting it would convert most of the object a second and third time (measured on the
# benchmark's 8 KB Deployment: object 65 us, its template 55 us, its container 55 us). The frame reads it from the
# converted object instead, by its path (`mlguardTP`/`mlguardCP`: keys and indexes, found in the object by
# identity, at most WALK_DEPTH deep); one that does not (a workloadRef's Deployment, a spec mlguard assembles,
# a deeper path) is bound as before (`mlguardTL`/`mlguardCL`, null for the located ones).
WALK_DEPTH = 12
FRAME_VARIABLES = ("object", "oldObject", "request", "namespaceObject", "environment", "model", "variables",
                   "mlguardN", "mlguardP", "mlguardOG", "mlguardOR", "mlguardTL", "mlguardTP", "mlguardTG",
                   "mlguardTR", "mlguardCL", "mlguardCP", "mlguardCT", "mlguardCG", "mlguardCR")


def _walk(root: str, steps: str, lo: int = 0, hi: int = WALK_DEPTH) -> str:
    """``root`` at the path ``steps`` (0 to WALK_DEPTH keys and indexes), choosing on its length by halves: the
    parser allows 32 levels of nesting, and a chain of 12 conditionals would take most of them."""
    if lo == hi:
        return root + "".join(f"[{steps}[{i}]]" for i in range(lo))
    mid = (lo + hi) // 2
    return f"({steps}.size() <= {mid} ? {_walk(root, steps, lo, mid)} : {_walk(root, steps, mid + 1, hi)})"


def _located(scope: Scope, bound: str, paths: str) -> str:
    return (f"mlguardN.{scope}.map(mlguardI, {bound}[mlguardI] != null ? {bound}[mlguardI] : "
            f"{_walk('object', f'{paths}[mlguardI]')})")


def frame_body(scope: Scope, body: str) -> str:
    """A validation (rewritten for the frame) over every instance of its scope."""
    return f"mlguardN.{scope}.map({FRAME_ITEM}, {body})"


def frame_source(body: str, located: frozenset[str] = frozenset(SCOPES)) -> str:
    """``body`` (one or more validations' frame bodies) with the pod templates and containers it reads taken
    from the object where they sit in it (for the scopes in ``located``: worked out once per evaluation, whatever
    the number of validations), or read as bound (the others: the frame binds each one's selected fields)."""
    used = {t.text for t in free_identifiers(body)}
    parts: tuple[tuple[Scope, str, str, str], ...] = (("container", "mlguardC", "mlguardCL", "mlguardCP"),
                                                      ("podTemplate", "mlguardT", "mlguardTL", "mlguardTP"))
    for scope, name, bound, paths in parts:
        if name not in used:
            continue
        if scope in located:
            body = f"cel.bind({name}, {_located(scope, bound, paths)}, {body})"
        else:  # no walk in the program: the runtime plans a program on every evaluation, and the walk is most of it
            body = replace_identifier(body, name, bound)
    return body


INT64 = (-(2**63), 2**63 - 1)
ParamLiterals = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # per rule id, per parameter: its CEL literal


def param_literal(value: Any) -> str | None:
    """``value`` as a CEL literal that the runtime reads as the same value it converts from Python, or None when
    there is none (a map key that is not a string, int or bool; an int outside int64; a float that is not
    finite; a type YAML may give that JSON has not)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value) if INT64[0] <= value <= INT64[1] else None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes (\" \\ \n \u0001 ...) are CEL's
    if isinstance(value, (list, tuple)):
        items = [param_literal(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        pairs = []
        for k, v in value.items():
            key, item = param_literal(k) if isinstance(k, (str, int)) else None, param_literal(v)
            if key is None or item is None:
                return None
            pairs.append(f"{key}: {item}")
        return "{" + ", ".join(pairs) + "}"
    return None


def inline_params(source: str, literals: Mapping[str, Mapping[str, str]]) -> str:
    """``source`` with each ``mlguardP["<rule>"].<name>`` (a rule's ``params.<name>``) that has a literal in
    ``literals`` written as that literal: converting every rule's params for the runtime on every evaluation cost
    more than the rules' own expressions. Left as they are: a name the params lack (it fails as it did), a
    method call, an optional selection (``params.?name``) and a selection has() tests (it needs a selection)."""
    try:
        toks = tokens(source)
    except LexError:
        return source
    out, last = [], 0
    for i in range(len(toks) - 5):
        tok = toks[i]
        if not (tok.kind == "ident" and tok.text == "mlguardP" and not selected(toks, i)
                and [t.text for t in toks[i + 1:i + 5:2]] == ["[", "]"] and toks[i + 2].kind == "string"
                and toks[i + 4].text == "." and toks[i + 5].kind == "ident"):
            continue
        if (i + 6 < len(toks) and toks[i + 6].text == "(") or (i >= 2 and toks[i - 1].text == "("
                                                              and toks[i - 2].text == "has"):
            continue
        try:
            rule = json.loads(toks[i + 2].text)
        except ValueError:
            continue
        text = literals.get(rule, {}).get(toks[i + 5].text) if isinstance(rule, str) else None
        if text is not None:
            out += [source[last:tok.start], f"({text})"]
            last = toks[i + 5].start + len(toks[i + 5].text)
    return "".join(out) + source[last:]


@lru_cache(maxsize=64)
def combined_program(bodies: tuple[str, ...], located: frozenset[str] = frozenset(SCOPES),
                     literals: ParamLiterals = ()) -> Program | None:
    """Every frame body of a set of active rules as one program, giving the list of their results: one call
    into the runtime per object instead of one per validation (each costs ~3 us however small the expression),
    the templates and containers located once (``located``: see `frame_source`), the rules' params written in
    as literals (``literals``: see `inline_params`). None when it does not compile (each validation then runs on
    its own). Keyed by the bodies and params themselves (the same text is the same program); a few sets per
    PolicySet."""
    source = "[" + ", ".join(bodies) + "]"
    if literals:
        inlined = compile_frame(frame_source(inline_params(source, {r: dict(p) for r, p in literals}), located))
        if inlined is not None:
            return inlined
    return compile_frame(frame_source(source, located))


@cache
def frame_environment() -> Any:
    """The frame's environment; it also has cel.bind (lazy, as the API server's variables), which the rules'
    own environment leaves out as Kubernetes does: only the engine writes it, for a rule's variables."""
    config = cel.NewEnvConfigFromYaml(EXTENSIONS + "  - name: bindings\n")
    return cel.NewEnv(config=config, variables={n: cel.Type.DYN for n in FRAME_VARIABLES},
                      extensions=[kubernetes_library(), internal_library()])


def compile_frame(source: str) -> Program | None:
    """A frame expression (already checked in its own scope's form), or None when it does not compile."""
    try:
        return Program(source, frame_environment().compile(internal_source(source)))
    except RuntimeError:
        return None


def frame_activation(data: Mapping[str, Any]) -> Any:
    return frame_environment().Activation(dict(data))


def _errors(text: str) -> list[CompileError]:
    found = [CompileError(m.group(3).replace(" (in container '')", "").strip(), int(m.group(1)), int(m.group(2)))
             for m in _ERROR.finditer(text)]
    return found or [CompileError(text.strip().splitlines()[0] if text.strip() else "does not compile", 1, 1)]


class Program:
    """A compiled expression, evaluated against one Activation."""

    __slots__ = ("expression", "result_type", "source")

    def __init__(self, source: str, expression: Any) -> None:
        self.source = source
        self.expression = expression
        self.result_type = str(expression.return_type().name())

    def run(self, activation: Any) -> Any:
        value = self.expression.eval(activation)
        kind = value.type().name()
        if kind == "ERROR":
            raise EvalError(str(value.value()))
        return value.plain_value() if kind not in ("BOOL", "STRING", "INT") else value.value()


ResultKind = Literal["bool", "string", "any"]
_ACCEPTED: Mapping[ResultKind, tuple[str, ...]] = {"bool": ("BOOL", "DYN"), "string": ("STRING", "DYN"), "any": ()}


def compile_expression(source: str, *, scope: Scope, result: ResultKind) -> Program | list[CompileError]:
    """Compile and type-check; a validation must be bool (or dyn, checked when it runs), a message string."""
    try:
        expression = environment(scope).compile(source)
    except RuntimeError as exc:
        return _errors(str(exc))
    program = Program(source, expression)
    accepted = _ACCEPTED[result]
    if accepted and program.result_type not in accepted:
        want = "bool" if result == "bool" else "string"
        return [CompileError(f"the expression evaluates to {program.result_type.lower()}, not {want}", 1, 1)]
    return program


def activation(scope: Scope, data: Mapping[str, Any], *, internal: bool = False) -> Any:
    """Bind the variables of one evaluation (every program of the environment may run against it)."""
    return environment(scope, internal).Activation(dict(data))
