"""Where a finding's field is written: the file and line a person opens to fix it.

For an object read from a file, the field's line in that file. For an object kustomize rendered, every
file that may have written the field is asked: the file that defines the object (from kustomize's origin
annotation) and each patch that targets it — a strategic-merge patch by the field's path in the patch, a
JSON 6902 patch by its operations' paths. The deepest match wins; a patch wins a tie only when it holds the
whole path (it overrides the base's value). When the field exists in the rendered object but in none of
those files (a transformer, an inline patch, a generator set it), the location says `[rendered: ...]` and names
what may have added it, pointing at the kustomization entry that lists it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.kustomize import Origin, PatchRef
from policies.locate import Hit, Scanner, Token, compose_span, compose_text, exists, tokens, walk
from policies.manifests import Located, Span


@dataclass(frozen=True)
class Location:
    """A finding's place: ``file`` as people name it (repository-relative where possible) and ``line``.
    ``rendered``: no source line holds the field; ``line`` is then that of the kustomization entry that
    (most likely) added it, named in ``via``."""

    file: str
    line: int
    rendered: bool = False
    via: str | None = None
    path: Path | None = field(default=None, compare=False)  # the file on disk

    def __str__(self) -> str:
        if self.line <= 0:  # not a file: an object in a cluster (`mlguard audit`)
            return self.file
        where = f"{self.file}:{self.line}"
        if self.rendered:
            where += f" [rendered{': ' + self.via if self.via else ''}]"
        return where


@dataclass
class Entry:
    """One object that was judged, and what is known about where it is written."""

    located: Located
    unit: str
    source: Located | None = None                  # the document that defines it (the object itself for files)
    origin: Origin | None = None
    patches: list[PatchRef] = field(default_factory=list)
    kustomization: Path | None = None              # the rendered unit's kustomization file

    @property
    def obj(self) -> dict[str, Any]:
        return self.located.obj


def _json_pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _same(tok: Token, part: str) -> bool:
    return str(tok) == part


def _name_matches(pattern: Any, names: list[str]) -> bool:
    if not isinstance(pattern, str) or not pattern:
        return True
    try:
        return any(re.fullmatch(pattern, n) for n in names if n)
    except re.error:
        return pattern in names


class Locator:
    """Finds locations for one run; patch files are read and composed once."""

    def __init__(self, display: Callable[[Path], str]) -> None:
        self.display = display
        self._patch_nodes: dict[Path, list[yaml.Node]] = {}
        self._last: tuple[Any, int, int, Scanner] | None = None

    def _patch(self, path: Path) -> list[yaml.Node]:
        if path not in self._patch_nodes:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            self._patch_nodes[path] = compose_text(text)
        return self._patch_nodes[path]

    def _scanner(self, span: Span) -> Scanner:
        """The scanner of the document that ``span`` holds: the last one asked for is kept (findings of one
        object come one after another), so its text is read and split once."""
        last = self._last
        if last is None or last[0] is not span.text or last[1] != span.start or last[2] != span.end:
            last = self._last = (span.text, span.start, span.end, Scanner(span.text[span.start:span.end]))
        return last[3]

    def locate(self, entry: Entry, path: str) -> Location:
        judged = entry.obj
        toks = tokens(judged, path)
        meta = judged.get("metadata") if isinstance(judged.get("metadata"), Mapping) else {}
        rendered_name = str((meta or {}).get("name") or "")
        source = entry.source
        source_name = str(((source.obj.get("metadata") or {}) if source else {}).get("name") or rendered_name)
        best: tuple[Hit, Path | None, str] | None = None   # (hit, file, what)

        if source is not None and source.span is not None:
            span = source.span
            # block-style YAML: found from indentation alone; anything else is composed again
            hit = self._scanner(span).scan(toks, judged, offset=span.line - 1) if span.item is None else None
            if hit is None:
                node, offset = compose_span(span)
                hit = walk(node, toks, judged, offset=offset)
            if hit is not None:
                best = (hit, source.path, "source")
        full = len(toks)
        inline: list[PatchRef] = []
        targeting: list[PatchRef] = []
        for patch in entry.patches:
            if patch.file is None:
                if self._targets_inline(patch, judged, [source_name, rendered_name]):
                    inline.append(patch)
                continue
            for hit in self._patch_hits(patch, judged, toks, [source_name, rendered_name]):
                targeting.append(patch)
                if best is None or hit.depth > best[0].depth or (hit.depth == best[0].depth == full):
                    best = (hit, patch.file, "patch")
        if best is not None and best[1] is not None and (best[0].depth == full or not exists(judged, toks)):
            return Location(self.display(best[1]), best[0].line, path=best[1])
        # the field is in the rendered object but in no file that defines or patches it
        kfile = entry.kustomization
        if inline and kfile is not None:
            p = inline[-1]
            return Location(self.display(p.kustomization), p.entry_line, True,
                            f"set by the inline patch listed at {self.display(p.kustomization)}:{p.entry_line}",
                            path=p.kustomization)
        if best is not None and best[1] is not None:
            what = (f"not in {self.display(best[1])}; set by kustomize"
                    + (f" (patches: {', '.join(self.display(p.file) for p in targeting if p.file)})"
                       if targeting else ""))
            if kfile is None:  # a plain file: the nearest line is the best there is
                return Location(self.display(best[1]), best[0].line, path=best[1])
            return Location(self.display(best[1]), best[0].line, True, what, path=best[1])
        if entry.origin is not None and entry.origin.configured_in is not None:
            conf = entry.origin.configured_in
            return Location(self.display(conf), 1, True, f"made by {entry.origin.generator or 'a generator'}",
                            path=conf)
        if kfile is not None:
            return Location(self.display(kfile), 1, True, "from a resource kustomize fetched or inflated",
                            path=kfile)
        return Location(entry.located.source, entry.located.line, path=entry.located.path)

    # ---- patches --------------------------------------------------------------------------------
    @staticmethod
    def _target_ok(target: Mapping[str, Any] | None, judged: Mapping[str, Any], names: list[str]) -> bool:
        if target is None:
            return True
        if target.get("kind") and target.get("kind") != judged.get("kind"):
            return False
        return _name_matches(target.get("name"), names)

    def _targets_inline(self, patch: PatchRef, judged: Mapping[str, Any], names: list[str]) -> bool:
        if patch.target is not None:
            return self._target_ok(patch.target, judged, names)
        try:
            doc = yaml.safe_load(patch.inline or "")
        except yaml.YAMLError:
            return False
        return isinstance(doc, Mapping) and doc.get("kind") == judged.get("kind") and \
            str((doc.get("metadata") or {}).get("name")) in names

    def _patch_hits(self, patch: PatchRef, judged: Mapping[str, Any], toks: list[Token], names: list[str]
                    ) -> list[Hit]:
        assert patch.file is not None
        nodes = self._patch(patch.file)
        if not self._target_ok(patch.target, judged, names):
            return []
        hits: list[Hit] = []
        for node in nodes:
            if isinstance(node, yaml.SequenceNode):      # JSON 6902 operations
                hits.extend(self._json6902(node, judged, toks))
            elif isinstance(node, yaml.MappingNode):     # strategic merge
                if patch.target is None and not self._smp_targets(node, judged, names):
                    continue
                hit = walk(node, toks, judged)
                if hit is not None and hit.depth > 0:
                    hits.append(hit)
        return hits

    @staticmethod
    def _smp_targets(node: yaml.MappingNode, judged: Mapping[str, Any], names: list[str]) -> bool:
        kind = name = None
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == "kind" and isinstance(v, yaml.ScalarNode):
                kind = v.value
            if isinstance(k, yaml.ScalarNode) and k.value == "metadata" and isinstance(v, yaml.MappingNode):
                for mk, mv in v.value:
                    if isinstance(mk, yaml.ScalarNode) and mk.value == "name" and isinstance(mv, yaml.ScalarNode):
                        name = mv.value
        return kind == judged.get("kind") and (name in names or any(name and name in n for n in names))

    @staticmethod
    def _json6902(node: yaml.SequenceNode, judged: Mapping[str, Any], toks: list[Token]) -> list[Hit]:
        hits = []
        for op in node.value:
            if not isinstance(op, yaml.MappingNode):
                continue
            fields = {k.value: (k, v) for k, v in op.value if isinstance(k, yaml.ScalarNode)}
            if "path" not in fields or not isinstance(fields["path"][1], yaml.ScalarNode):
                continue
            parts = _json_pointer(str(fields["path"][1].value))
            common = 0
            while common < min(len(parts), len(toks)) and (
                    _same(toks[common], parts[common]) or (parts[common] == "-" and isinstance(toks[common], int))):
                common += 1
            line = fields["path"][0].start_mark.line + 1
            if common == len(parts) and len(toks) > len(parts) and "value" in fields:
                # the operation sets a subtree: look for the rest of the path in its value
                inner = walk(fields["value"][1], toks[len(parts):], None, base_depth=len(parts))
                hits.append(inner if inner is not None else Hit(len(parts), line))
            elif common == len(parts) or common == len(toks):
                hits.append(Hit(common, line))
        return hits
