"""A CEL tokenizer (github.com/google/cel-spec doc/langdef.md, "Syntax"): enough to find identifiers outside
string literals, so a rule's `params` can be inlined for export and `variables.<name>` references checked."""

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


def free_identifiers(source: str) -> list[Token]:
    """Identifiers that name a variable: not a field selection (``a.b``: ``b``), not a function or method
    name (``size(...)``, ``x.all(...)``)."""
    toks = tokens(source)
    out = []
    for i, tok in enumerate(toks):
        if tok.kind != "ident":
            continue
        after = toks[i + 1].text if i + 1 < len(toks) else ""
        before = toks[i - 1].text if i else ""
        if before in (".", "?.", ".?") or after == "(":
            continue
        out.append(tok)
    return out


def selections(source: str, root: str) -> list[tuple[str, int]]:
    """``root.<name>`` references (``variables.gpuCount``): (name, offset of root)."""
    toks = tokens(source)
    out = []
    for i, tok in enumerate(toks[:-2]):
        before = toks[i - 1].text if i else ""
        if tok.kind == "ident" and tok.text == root and before not in (".", "?.", ".?") \
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
        before = toks[i - 1].text if i else ""
        if tok.kind == "ident" and tok.text == root and before not in (".", "?.", ".?") \
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
