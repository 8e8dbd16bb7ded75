"""A CEL tokenizer (github.com/google/cel-spec doc/langdef.md, "Syntax"): enough to find identifiers outside
string literals, so a rule's `params` can be inlined for export and `variables.<name>` references checked, and
the fields a rule selects from the object told (the engine binds only those)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"""
  (?P<ws>[ \t\r\n\f]+|//[^\n]*)
 |(?P<string>[rR]?[bB]?[rR]?(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
 |(?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)[uU]?)
 |(?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
 |(?P<op>==|!=|<=|>=|&&|\|\||\?\.|\.\?|[-+*/%!<>?:.,()\[\]{}])
""", re.X | re.S)


class LexError(ValueError):
    """Text that is not CEL at all (an unterminated string): the compiler reports it precisely."""


@dataclass(frozen=True)
class Token:
    kind: str      # string | number | ident | op
    text: str
    start: int     # offset in the expression


def tokens(source: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(source):
        found = _TOKEN.match(source, pos)
        if found is None:
            raise LexError(f"unexpected {source[pos]!r} at offset {pos}")
        kind = found.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, found.group(), pos))
        pos = found.end()
    return out


def selected(toks: list[Token], i: int) -> bool:
    """True when ``toks[i]`` is a field selected from the value before it (``a.b``: ``b``); not when the dot
    only makes the name absolute (``.object``, ``x + .object``: the variable ``object``)."""
    if i == 0 or toks[i - 1].text not in (".", "?.", ".?"):
        return False
    value_end = toks[i - 2] if i >= 2 else None
    return value_end is not None and (value_end.kind in ("ident", "string", "number")
                                      or value_end.text in (")", "]", "}"))


def free_identifiers(source: str) -> list[Token]:
    """Identifiers that name a variable: not a field selection (``a.b``: ``b``), not a function or method
    name (``size(...)``, ``x.all(...)``)."""
    toks = tokens(source)
    out = []
    for i, tok in enumerate(toks):
        if tok.kind != "ident":
            continue
        after = toks[i + 1].text if i + 1 < len(toks) else ""
        if selected(toks, i) or after == "(":
            continue
        out.append(tok)
    return out


def selections(source: str, root: str) -> list[tuple[str, int]]:
    """``root.<name>`` references (``variables.gpuCount``): (name, offset of root)."""
    toks = tokens(source)
    out = []
    for i, tok in enumerate(toks[:-2]):
        if tok.kind == "ident" and tok.text == root and not selected(toks, i) \
                and toks[i + 1].text == "." and toks[i + 2].kind == "ident":
            out.append((toks[i + 2].text, tok.start))
    return out


def replace_identifier(source: str, name: str, replacement: str) -> str:
    """``source`` with every free use of the identifier ``name`` replaced (strings and fields untouched)."""
    out, last = [], 0
    for tok in free_identifiers(source):
        if tok.text == name:
            out.append(source[last:tok.start])
            out.append(replacement)
            last = tok.start + len(tok.text)
    out.append(source[last:])
    return "".join(out)


MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def comprehension_depth(source: str) -> int:
    """How deeply comprehension macros (``all``, ``exists``, ``map``, ...) nest: each level multiplies the
    work by the size of a list, so the budget bounds it."""
    toks = tokens(source)
    stack: list[bool] = []  # per open parenthesis: does it open a macro call?
    depth = deepest = 0
    for i, tok in enumerate(toks):
        if tok.text in ("(", "[", "{"):
            macro = tok.text == "(" and i >= 2 and toks[i - 1].text in MACROS and toks[i - 2].text == "."
            stack.append(macro)
            if macro:
                depth += 1
                deepest = max(deepest, depth)
        elif tok.text in (")", "]", "}") and stack and stack.pop():
            depth -= 1
    return deepest


def replace_selection(source: str, root: str, name: str, replacement: str) -> str:
    """``source`` with every ``root.name`` (a free ``root``) replaced, e.g. ``variables.x`` -> ``(...)``."""
    toks = tokens(source)
    out, last = [], 0
    for i, tok in enumerate(toks[:-2]):
        if tok.kind == "ident" and tok.text == root and not selected(toks, i) \
                and toks[i + 1].text == "." and toks[i + 2].text == name:
            out.append(source[last:tok.start])
            out.append(replacement)
            last = toks[i + 2].start + len(name)
    out.append(source[last:])
    return "".join(out)


def comprehension_variables(source: str) -> set[str]:
    """The names comprehension macros bind (``x`` in ``list.all(x, ...)``)."""
    toks = tokens(source)
    return {toks[i + 1].text for i in range(1, len(toks) - 2)
            if toks[i].text == "(" and toks[i - 1].text in MACROS and toks[i + 1].kind == "ident"
            and toks[i + 2].text == ","}


def field_reads(source: str, roots: frozenset[str]) -> dict[str, set[tuple[str, ...]]]:
    """Per root variable the expression names freely: the field paths it reads from it by plain selection
    (``object.metadata.?labels.?team.orValue('')`` -> ``('metadata', 'labels', 'team')``: the chain of ``.name``
    and ``.?name`` up to anything else: an index, a method or macro call, an operator). A use that selects
    nothing (``object`` passed on whole, indexed, a macro's own variable) reads ``()``: all of it."""
    toks = tokens(source)
    found: dict[str, set[tuple[str, ...]]] = {}
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or tok.text not in roots or selected(toks, i) \
                or (i + 1 < len(toks) and toks[i + 1].text == "("):
            continue
        path: list[str] = []
        j = i + 1
        while j + 1 < len(toks) and toks[j].text in (".", ".?") and toks[j + 1].kind == "ident" \
                and not (j + 2 < len(toks) and toks[j + 2].text == "("):
            path.append(toks[j + 1].text)
            j += 2
        found.setdefault(tok.text, set()).add(tuple(path))
    return found


def _chain(toks: list[Token]) -> tuple[str, tuple[str, ...]] | None:
    """``(root, path)`` when the tokens are exactly one selection chain (``object.spec.template``, in parentheses
    or not), else None."""
    toks = _unwrapped(toks)
    if not toks or toks[0].kind != "ident" or len(toks) % 2 == 0:
        return None
    path = []
    for i in range(1, len(toks), 2):
        if toks[i].text not in (".", ".?") or toks[i + 1].kind != "ident":
            return None
        path.append(toks[i + 1].text)
    return toks[0].text, tuple(path)


def _unwrapped(toks: list[Token]) -> list[Token]:
    """The tokens without the parentheses that enclose all of them."""
    while len(toks) >= 2 and toks[0].text == "(" and toks[-1].text == ")" and _closes(toks) == len(toks) - 1:
        toks = toks[1:-1]
    return toks


def _closes(toks: list[Token]) -> int:
    """The index of the bracket that closes ``toks[0]``, or -1."""
    depth = 0
    for i, tok in enumerate(toks):
        depth += tok.text in ("(", "[", "{")
        depth -= tok.text in (")", "]", "}")
        if depth == 0:
            return i
    return -1


def _branches(toks: list[Token]) -> tuple[list[list[Token]], list[list[Token]]] | None:
    """A conditional expression split into its conditions and the expressions it may give (``c ? a : d ? b : e``:
    [c, d] and [a, b, e]); one branch when there is no conditional at the top level; None when the split fails."""
    toks = _unwrapped(toks)
    depth, start = 0, -1
    for i, tok in enumerate(toks):
        depth += tok.text in ("(", "[", "{")
        depth -= tok.text in (")", "]", "}")
        if depth == 0 and tok.text == "?":
            start = i
            break
    if start < 0:
        return [], [toks]
    depth, pending = 0, 0
    for j in range(start, len(toks)):
        text = toks[j].text
        depth += text in ("(", "[", "{")
        depth -= text in (")", "]", "}")
        if depth == 0 and text == "?":
            pending += 1
        elif depth == 0 and text == ":":
            pending -= 1
            if pending == 0:
                first, second = _branches(toks[start + 1:j]), _branches(toks[j + 1:])
                if first is None or second is None or start == 0:
                    return None
                return [toks[:start], *first[0], *second[0]], first[1] + second[1]
    return None


def alias_of(source: str, roots: frozenset[str]) -> tuple[list[str], list[tuple[str, tuple[str, ...]]]] | None:
    """When the expression's value is one of some parts of the roots (``object.kind == 'Pod' ? object.spec :
    object.spec.template.spec``) or a value that reads no root: the text of each of its conditions (what it
    reads itself) and the parts it may give; else None."""
    try:
        split = _branches(tokens(source))
    except LexError:
        return None
    if split is None:
        return None
    conditions, results = split
    parts = []
    for result in results:
        chain = _chain(result)
        if chain is not None and chain[0] in roots:
            parts.append(chain)
        elif any(t.text in roots for t in free_identifiers(" ".join(t.text for t in result))):
            return None
    return [" ".join(t.text for t in c) for c in conditions], parts
