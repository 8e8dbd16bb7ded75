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
