"""Reading manifests: YAML/JSON text to Kubernetes objects, each with the file and line it came from.

One libyaml pass per file: every document is composed (its node gives the line where it starts and the
span of its text) and constructed; the node is then dropped. A field's line is found later, only for the
objects that have a finding, by composing that one document's text again (`policies.locate`).
Documents that are not Kubernetes objects are returned as `Skipped`, never dropped in silence.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


STR, MAP, SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
INT, BOOL, NULL, MERGE = "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", \
    "tag:yaml.org,2002:merge"
_BOOLS: dict[str, bool] = yaml.constructor.SafeConstructor.bool_values
_RESOLVED: dict[str, str] = {}   # plain scalar -> its implicit tag (the tag depends on the text alone)
# PyYAML's resolver picks the regexes to try by a plain scalar's first character: a scalar whose first character
# starts none of them (most names, images, paths) is a string without a look (and is not cached: names are many)
_FIRSTS = frozenset(k for k in _Base.yaml_implicit_resolvers if k)
_PLAIN_RESOLVE = not _Base.yaml_path_resolvers and None not in _Base.yaml_implicit_resolvers


class _Loader(_Base):  # type: ignore[misc]
    """libyaml's safe loader, made cheaper where thousands of manifests repeat themselves:

    - the implicit tag of a plain scalar depends only on its text: resolved once per distinct text
      (PyYAML's resolver runs a regex per scalar and is most of the parse time);
    - documents are built by `_build` (plain dicts, lists, interned strings), and only the rarer tags
      (floats, timestamps, octal, merge keys, binary) go through PyYAML's SafeConstructor;
    - every string is interned: the same keys and values (apiVersion, containers, nvidia.com/gpu, ...)
      repeat in every object; one copy of each saves a third of what parsed objects hold.
    Measured on 10,000 workloads: 0.4x the time of `yaml.load_all(..., CSafeLoader)`, the same objects.
    """

    if _PLAIN_RESOLVE:
        # without path resolvers PyYAML's descend/ascend_resolver return at once; libyaml's composer calls both for
        # every node (a million Python frames in 10,000 manifests): builtins that take the same arguments and do
        # nothing (a slice of them, an int) cost a tenth
        descend_resolver = slice
        ascend_resolver = int

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if _PLAIN_RESOLVE:  # what BaseResolver.resolve answers without path resolvers, without its frames
            if kind is yaml.ScalarNode:
                if not implicit[0] or (value and value[0] not in _FIRSTS):
                    return STR
            elif kind is yaml.MappingNode:
                return MAP
            elif kind is yaml.SequenceNode:
                return SEQ
        if kind is yaml.ScalarNode and implicit[0]:
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) < 50_000:
                    _RESOLVED[value] = tag
            return tag
        return super().resolve(kind, value, implicit)


def _interned_str(loader: Any, node: yaml.ScalarNode) -> str:
    return sys.intern(str(node.value))


_Loader.add_constructor(STR, _interned_str)


class _NeedsConstructor(Exception):
    """A document with merge keys: PyYAML's constructor builds it."""


_intern = sys.intern
_MappingNode, _SequenceNode = yaml.MappingNode, yaml.SequenceNode


def _build(loader: Any, node: yaml.Node, memo: dict[int, Any]) -> Any:
    tag = node.tag
    if tag == STR:
        return _intern(node.value)
    cls = node.__class__
    if cls is _MappingNode and tag == MAP:
        done = memo.get(id(node))
        if done is not None:
            return done
        out: dict[Any, Any] = {}
        memo[id(node)] = out
        for key_node, value_node in node.value:
            if key_node.tag == STR:
                key = _intern(key_node.value)
            elif key_node.tag == MERGE:
                raise _NeedsConstructor
            else:
                key = _build(loader, key_node, memo)
                if isinstance(key, list | dict):
                    raise _NeedsConstructor   # an unhashable key: PyYAML says why
            out[key] = _intern(value_node.value) if value_node.tag == STR else _build(loader, value_node, memo)
        return out
    if cls is _SequenceNode and tag == SEQ:
        done = memo.get(id(node))
        if done is not None:
            return done
        items: list[Any] = []
        memo[id(node)] = items
        for item in node.value:
            items.append(_intern(item.value) if item.tag == STR else _build(loader, item, memo))
        return items
    if tag == INT:
        text = node.value
        if text.isdigit() and (text == "0" or text[0] != "0"):
            return int(text)
    elif tag == BOOL:
        return _BOOLS[node.value.lower()]
    elif tag == NULL:
        return None
    return loader.construct_object(node, deep=True)


def _construct(loader: Any, node: yaml.Node) -> Any:
    try:
        return _build(loader, node, {})
    except _NeedsConstructor:
        return loader.construct_document(node)
    finally:  # construct_object keeps what it built for aliases: forget it between documents
        loader.constructed_objects, loader.recursive_objects, loader.state_generators = {}, {}, []


class ManifestError(ValueError):
    """Bad input: a file that cannot be read or parsed, named with its line."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source, self.line, self.problem = source, line, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")


class FileText:
    """A file's text, read again from disk when a piece of it is needed (a document with a finding), instead of
    held for the whole run. Only for files of printable ASCII with \\n line ends (`plain_ascii`), where the
    parser's character offsets are byte offsets. A file that changed or vanished since gives no text (the
    finding is then placed at its object's first line)."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __getitem__(self, part: slice) -> str:
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                return os.pread(fd, part.stop - part.start, part.start).decode("ascii")
            finally:
                os.close(fd)
        except (OSError, UnicodeDecodeError, ValueError):
            return ""


# anything but printable ASCII, tab and \n: such bytes parse as the same text, give the same marks and errors
_NOT_PLAIN = re.compile(rb"[^\t\n\x20-\x7e]")


def plain_ascii(data: bytes) -> bool:
    return _NOT_PLAIN.search(data) is None


@dataclass(frozen=True, slots=True)
class Span:
    """Where a document's text sits in its file: ``text[start:end]`` begins on line ``line`` (1-based).
    ``item`` is the index in a ``kind: List``'s items when the object is one of them."""

    text: str | FileText = field(repr=False)
    start: int
    end: int
    line: int
    item: int | None = None


@dataclass(frozen=True, slots=True)
class Located:
    """An object and where it came from: the file (as shown to people), its first line, its text."""

    obj: dict[str, Any]
    source: str
    line: int
    span: Span | None = None
    path: Path | None = None  # the file on disk, when there is one


@dataclass(frozen=True)
class Skipped:
    """A document that is not a Kubernetes object (a mapping with apiVersion and kind)."""

    source: str
    line: int
    reason: str


@dataclass
class Parsed:
    objects: list[Located] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("kind"), str) and bool(doc.get("kind")) \
        and isinstance(doc.get("apiVersion"), str) and bool(doc.get("apiVersion"))


def _describe(doc: Any) -> str:
    if isinstance(doc, dict):
        missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str) or not doc.get(k)]
        return f"not a Kubernetes object (no {' and no '.join(missing)})"
    return f"not a Kubernetes object (a {type(doc).__name__}, not a mapping with apiVersion and kind)"


def _line_start(text: str | bytes, index: int) -> int:
    return (text.rfind("\n", 0, index) if isinstance(text, str) else text.rfind(b"\n", 0, index)) + 1


def parse_documents(text: str, source: str, *, path: Path | None = None) -> Parsed:
    """Every object of a (multi-document) YAML or JSON text, with its line; `kind: List` (and `*List` with
    items) is flattened. Raises ManifestError for text that is not YAML at all."""
    out = Parsed()
    for found in iter_documents(text, source, path=path):
        (out.objects if isinstance(found, Located) else out.skipped).append(found)  # type: ignore[arg-type]
    return out


def iter_documents(text: str | bytes, source: str, *, path: Path | None = None,
                   spans: str | FileText | None = None) -> Iterator[Located | Skipped]:
    """`parse_documents`, one object (or skipped document) at a time, in the order of the text: a caller that
    keeps only a summary of each holds one document at a time. Raises ManifestError (when it reaches the
    place) for text that is not YAML at all. ``text`` may be the bytes of a `plain_ascii` file (libyaml reads
    them without a copy), with ``spans`` what the spans of its documents read (a `FileText`)."""
    loader = _Loader(text)
    shown: str | FileText
    if spans is not None:
        shown = spans
    elif isinstance(text, str):
        shown = text
    else:
        raise TypeError("bytes need spans=")
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = _construct(loader, node)
            line = node.start_mark.line + 1
            if doc is None:
                continue
            if not _is_object(doc):
                yield Skipped(source, line, _describe(doc))
                continue
            start = _line_start(text, node.start_mark.index)
            span = Span(shown, start, node.end_mark.index, node.start_mark.line + 1)
            kind = doc["kind"]
            if kind == "List" or (kind.endswith("List") and isinstance(doc.get("items"), list)):
                nodes = _items_nodes(node)
                for i, item in enumerate(doc.get("items") or []):
                    item_line = nodes[i].start_mark.line + 1 if i < len(nodes) else line
                    if not _is_object(item):
                        yield Skipped(source, item_line, f"items[{i}]: {_describe(item)}")
                        continue
                    yield Located(item, source, item_line, Span(shown, start, span.end, span.line, i), path)
                continue
            yield Located(doc, source, line, span, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ManifestError(source, f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                            mark.line + 1 if mark else None) from exc
    finally:
        loader.dispose()


def _items_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "items" and isinstance(value, yaml.SequenceNode):
                return list(value.value)
    return []


def read_bytes(path: Path, source: str | None = None) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ManifestError(source or str(path), f"cannot read: {exc.strerror or exc}") from exc


def read_text(path: Path, source: str | None = None) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(source or str(path), f"cannot read: {getattr(exc, 'strerror', None) or exc}") from exc


def load_file(path: Path, source: str | None = None) -> Parsed:
    return parse_documents(read_text(path, source), source or str(path), path=path)


def load_paths(paths: list[str]) -> list[Located]:
    """Objects of plain files, `-` (stdin) and kustomization directories, strictly: anything that is not a
    Kubernetes object is an error. (`mlguard check` walks repositories with `policies.repo` instead; this is
    for a single file of facts or manifests, as the webhook's facts file and `mlguard eval verify` read.)"""
    from policies.kustomize import render_plain  # kustomize imports this module

    out: list[Located] = []
    for raw in paths:
        if raw == "-":
            parsed = parse_documents(sys.stdin.read(), "<stdin>")
        else:
            p = Path(raw)
            if p.is_dir() and any((p / k).is_file() for k in KUSTOMIZATIONS):
                parsed = parse_documents(render_plain(p), f"{raw} (kustomize)")
            elif p.is_dir():
                out.extend(load_paths(sorted(str(c) for c in p.iterdir()
                                             if c.suffix in MANIFEST_SUFFIXES and not c.name.startswith("."))))
                continue
            elif not p.exists():
                raise ManifestError(raw, "no such file or directory")
            elif p.suffix not in MANIFEST_SUFFIXES:
                raise ManifestError(raw, f"unknown file type {p.suffix or '(none)'}: expected .yaml, .yml or .json")
            else:
                parsed = load_file(p, raw)
        if parsed.skipped:
            first = parsed.skipped[0]
            raise ManifestError(first.source, first.reason, first.line)
        out.extend(parsed.objects)
    return out
