"""From a finding's field path to the line of that field in a YAML (or JSON) source.

A policy names the field it objects to as a dotted path (``spec.template.spec.containers[0].resources.limits``;
keys may hold dots themselves, such as ``metadata.annotations.mlguard.io/model``). `tokens` splits it against
the object it was found on, so a key with dots stays one key. `walk` follows the tokens through a composed
YAML node tree and returns the line of the deepest field that exists there: the field itself, or, for a
field that is missing (``add limits``), the nearest parent that holds it.

List items are matched by their ``name`` (containers, env, volumes, ports), falling back to the index: the
object that was judged (a kustomize rendering) may list containers in another order than the file that
defines them, as a strategic-merge patch merges lists by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from policies.manifests import Span

Token = str | int
MERGE_KEYS = ("name", "mountPath", "containerPort", "devicePath")
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def tokens(obj: Any, path: str) -> list[Token]:
    """Split a dotted field path into keys and indices, using ``obj`` to keep dotted keys whole. Parts of the
    path that do not exist in ``obj`` are split at dots."""
    out: list[Token] = []
    rest = path
    current: Any = obj
    while rest:
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                break
            try:
                index = int(rest[1:close])
            except ValueError:
                break
            out.append(index)
            current = current[index] if isinstance(current, list) and -len(current) <= index < len(current) else None
            rest = rest[close + 1:].removeprefix(".")
            continue
        key = None
        if isinstance(current, Mapping):
            for k in current:
                if isinstance(k, str) and (rest == k or rest.startswith(k + ".") or rest.startswith(k + "[")) \
                        and (key is None or len(k) > len(key)):
                    key = k
        if key is None:
            cut = min((i for i in (rest.find("."), rest.find("[")) if i >= 0), default=len(rest))
            key = rest[:cut]
            current = None
        else:
            current = current[key]
        out.append(key)
        rest = rest[len(key):].removeprefix(".")
    return out


def exists(obj: Any, toks: Sequence[Token]) -> bool:
    """True when every token of the path is present in ``obj``."""
    current = obj
    for tok in toks:
        if isinstance(tok, int):
            if not isinstance(current, list) or not -len(current) <= tok < len(current):
                return False
        elif not isinstance(current, Mapping) or tok not in current:
            return False
        current = current[tok]
    return True


@dataclass(frozen=True)
class Hit:
    """How far a path reached into a node tree: ``depth`` tokens found, the last of them on ``line``."""

    depth: int
    line: int


def _scalar(node: yaml.Node) -> Any:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _key_value(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _pick_item(node: yaml.SequenceNode, index: int, judged: Any) -> yaml.Node | None:
    """The source item for the judged list's ``index``: the one with the same merge key, else by index."""
    if isinstance(judged, list) and -len(judged) <= index < len(judged) and isinstance(judged[index], Mapping):
        for key in MERGE_KEYS:
            want = judged[index].get(key)
            if want is None:
                continue
            if isinstance(want, Mapping | list):
                break  # only a scalar names an item (a list's text could read like another item's scalar)
            for item in node.value:
                if isinstance(item, yaml.MappingNode):
                    found = _key_value(item, key)
                    if found is not None and str(_scalar(found[1])) == str(want):
                        return item
            break
    if -len(node.value) <= index < len(node.value):
        picked: yaml.Node = node.value[index]
        return picked
    return None


def walk(node: yaml.Node | None, toks: Sequence[Token], judged: Any = None, *, base_depth: int = 0,
         offset: int = 0) -> Hit | None:
    """Follow ``toks`` through ``node``; ``judged`` is the object the path was found on (for list items);
    ``offset`` is added to every line (a document composed on its own, out of a longer file)."""
    if node is None:
        return None
    hit = Hit(base_depth, node.start_mark.line + 1 + offset)
    for i, tok in enumerate(toks):
        if isinstance(tok, int) and isinstance(node, yaml.SequenceNode):
            item = _pick_item(node, tok, judged)
            if item is None:
                break
            node = item
            hit = Hit(base_depth + i + 1, item.start_mark.line + 1 + offset)
            judged = judged[tok] if isinstance(judged, list) and -len(judged) <= tok < len(judged) else None
        elif isinstance(tok, str) and isinstance(node, yaml.MappingNode):
            found = _key_value(node, tok)
            if found is None:
                break
            key, node = found
            hit = Hit(base_depth + i + 1, key.start_mark.line + 1 + offset)
            judged = judged.get(tok) if isinstance(judged, Mapping) else None
        else:
            break
    return hit


def compose_span(span: Span) -> tuple[yaml.Node | None, int]:
    """The node tree of one document (or one List item) and the offset of its lines in the whole file."""
    offset = span.line - 1
    try:
        node = yaml.compose(span.text[span.start:span.end], Loader=_Loader)
    except yaml.YAMLError:
        return None, offset
    if span.item is not None:
        items = _key_value(node, "items") if isinstance(node, yaml.MappingNode) else None
        if items is None or not isinstance(items[1], yaml.SequenceNode) or span.item >= len(items[1].value):
            return None, offset
        node = items[1].value[span.item]
    return node, offset


def compose_text(text: str) -> list[yaml.Node]:
    """Every document node of a text (for patch files, read once)."""
    try:
        return [n for n in yaml.compose_all(text, Loader=_Loader) if n is not None]
    except yaml.YAMLError:
        return []


# ---- the fast path: block-style YAML read line by line -----------------------------------------------
# Most manifests are block-style YAML as kubectl, kustomize and editors write them. For those, a field's line
# is found from indentation alone, without composing the document again (which costs about as much as
# parsing it). Anything this reader does not fully understand (flow collections on the path, quoted or
# complex keys, tabs, anchors) makes it give up (None), and `compose_span` + `walk` decide instead.
# A property test checks that it never disagrees with the composer.
_PLAIN_KEY = re.compile(r"([^\s'\"{}\[\],&*!|>%@`#?:-][^\s:#]*(?::[^\s#][^\s:#]*)*|-[^\s:#]+):(?:\s|$)")


class _Unsure(Exception):
    """The fast reader cannot be sure: let the composer decide."""


_TAB_INDENT = re.compile(r"^ *\t", re.M)


class _Lines:
    """A document's lines, each with (indent, is a list item, content column), or None (blank, comment)."""

    def __init__(self, text: str) -> None:
        if _TAB_INDENT.search(text):
            raise _Unsure
        self.lines = text.split("\n")
        self.info = [self.shape(line, line.lstrip(" ")) for line in self.lines]

    @staticmethod
    def shape(line: str, stripped: str) -> tuple[int, bool, int] | None:
        if not stripped or stripped[0] == "#":
            return None
        indent = len(line) - len(stripped)
        if stripped[0] == "-" and (len(stripped) == 1 or stripped[1] == " "):
            rest = stripped[1:].lstrip(" ")
            return (indent, True, len(line) - len(rest) if rest and rest[0] != "#" else -1)
        return (indent, False, indent)

    def key_at(self, i: int, col: int) -> str | None:
        """The plain key that line ``i`` holds at column ``col``; _Unsure for a key it cannot read."""
        text = self.lines[i][col:]
        m = _PLAIN_KEY.match(text)
        if m:
            return m.group(1)
        if text[:1] in ("'", '"', "?", "{", "[", "&", "*", "!", "|", ">", "%", "@", "`") or ": " in text \
                or text.endswith(":"):
            raise _Unsure
        return None   # a scalar (a list item's value): no key here

    def value_start(self, i: int, col: int, key: str) -> str:
        return self.lines[i][col + len(key) + 1:].strip()


def _region_end(lines: _Lines, start: int, end: int, col: int) -> int:
    """Where the value of the key on line ``start`` (keys at column ``col``) ends."""
    for j in range(start + 1, end):
        info = lines.info[j]
        if info is None:
            continue
        indent, dash, _ = info
        if indent < col or (indent == col and not dash):
            return j
    return end


def _find_key(lines: _Lines, first: int, end: int, col: int, key: str) -> int | None:
    """The line of ``key`` in the mapping whose keys sit at ``col`` (its first line may be a list item's)."""
    for j in range(first, end):
        info = lines.info[j]
        if info is None:
            continue
        indent, dash, content = info
        if indent < col and not (dash and j == first):
            break
        at = content if (dash and j == first) else (indent if not dash else -1)
        if at != col:
            continue
        found = lines.key_at(j, col)
        if found == key:
            return j
        if found is None and not dash:
            raise _Unsure   # a line at key level that is not a key
    return None


class Scanner:
    """`scan` of one document's text, its lines read once for every path asked of it (an object's findings)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: _Lines | None = None
        self._unsure = False

    def scan(self, toks: Sequence[Token], judged: Any, *, offset: int) -> Hit | None:
        if self._lines is None and not self._unsure:
            try:
                self._lines = _Lines(self.text)
            except _Unsure:
                self._unsure = True
        if self._lines is None:
            return None
        try:
            return _scan(self._lines, toks, judged, offset)
        except (_Unsure, IndexError):
            return None


def scan(text: str, toks: Sequence[Token], judged: Any, *, offset: int) -> Hit | None:
    """The line of the deepest existing field of ``toks`` in block-style YAML ``text``; None when unsure."""
    return Scanner(text).scan(toks, judged, offset=offset)


def _scan(lines: _Lines, toks: Sequence[Token], judged: Any, offset: int) -> Hit | None:
    first = next((j for j in range(len(lines.lines)) if lines.info[j] is not None
                  and not lines.lines[j].startswith(("---", "%"))), None)
    if first is None:
        return None
    info = lines.info[first]
    assert info is not None
    if info[1]:
        raise _Unsure
    col, end = info[0], len(lines.lines)
    hit = Hit(0, first + 1 + offset)
    kind = "map"   # what the current region is: a mapping with keys at `col`, or a sequence
    for depth, tok in enumerate(toks):
        if isinstance(tok, str):
            if kind != "map":
                raise _Unsure
            j = _find_key(lines, first, end, col, tok)
            if j is None:
                return hit
            hit = Hit(depth + 1, j + 1 + offset)
            value = lines.value_start(j, col, tok)
            stop = _region_end(lines, j, end, col)
            judged = judged.get(tok) if isinstance(judged, Mapping) else None
            if depth + 1 == len(toks):
                return hit
            if value and not value.startswith("#"):
                raise _Unsure   # an inline value (flow collection, scalar, anchor) on the path
            nxt = next((k for k in range(j + 1, stop) if lines.info[k] is not None), None)
            if nxt is None:
                return hit
            n_indent, n_dash, _ = lines.info[nxt]  # type: ignore[misc]
            first, end = nxt, stop
            if n_dash:
                kind, col = "seq", n_indent
            else:
                kind, col = "map", n_indent
        else:
            if kind != "seq":
                raise _Unsure
            items = [k for k in range(first, end) if (i := lines.info[k]) is not None and i[1] and i[0] == col]
            pick = _pick_line(lines, items, end, tok, judged)
            if pick is None:
                return hit
            hit = Hit(depth + 1, pick + 1 + offset)
            judged = judged[tok] if isinstance(judged, list) and -len(judged) <= tok < len(judged) else None
            if depth + 1 == len(toks):
                return hit
            item_end = next((k for k in items if k > pick), end)
            _, _, content = lines.info[pick]  # type: ignore[misc]
            if content < 0:   # "-" alone: the item's mapping starts on the next line
                nxt = next((k for k in range(pick + 1, item_end) if lines.info[k] is not None), None)
                if nxt is None:
                    return hit
                first, end, col = nxt, item_end, lines.info[nxt][0]  # type: ignore[index]
            else:
                if lines.key_at(pick, content) is None:
                    raise _Unsure   # a scalar item on the path
                first, end, col = pick, item_end, content
            kind = "map"
    return hit


def _pick_line(lines: _Lines, items: list[int], end: int, index: int, judged: Any) -> int | None:
    if isinstance(judged, list) and -len(judged) <= index < len(judged) and isinstance(judged[index], Mapping):
        for key in MERGE_KEYS:
            want = judged[index].get(key)
            if want is None:
                continue
            if isinstance(want, Mapping | list):
                break  # as _pick_item: only a scalar names an item (`name: [0]` is not named "[0]")
            for n, start in enumerate(items):
                stop = items[n + 1] if n + 1 < len(items) else end
                _, _, content = lines.info[start]  # type: ignore[misc]
                # the item's own keys: on its dash line, or (a bare "-") on its first line below; never a
                # deeper mapping's keys (`- name:` holding `name: x` one level down is not named x)
                if content >= 0:
                    cols = {content}
                else:
                    below = next((info for j in range(start + 1, stop)
                                  if (info := lines.info[j]) is not None), None)
                    cols = {below[0]} if below is not None and not below[1] else set()
                for col in cols:
                    at = _find_key(lines, start, stop, col, key)
                    if at is not None and lines.value_start(at, col, key).strip("'\"") == str(want):
                        return start
            break
    if -len(items) <= index < len(items):
        return items[index]
    return None
