"""Reading manifests for `mlguard check`: files, directories, stdin, kustomize directories."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """Bad input: a file that cannot be read or parsed, named with its line."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source, self.line = source, line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Located:
    """An object and where it came from."""

    obj: dict[str, Any]
    source: str
    line: int


def parse_documents(text: str, source: str) -> list[Located]:
    """Every object of a (multi-document) YAML or JSON text; `kind: List` is flattened."""
    out: list[Located] = []
    try:
        fast = _fast_documents(text)
        if fast is not None:
            for line, doc in fast:
                if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
                    break
                out.append(Located(doc, source, line))
            else:
                return out
            out = []
        pairs = _compose_and_construct(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ManifestError(source, f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                            mark.line + 1 if mark else None) from exc
    for node, doc in pairs:
        if doc is None:
            continue
        line = node.start_mark.line + 1 if node is not None else 1
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise ManifestError(source, "not a Kubernetes object (a mapping with apiVersion and kind)", line)
        if doc["kind"] == "List" or (doc["kind"].endswith("List") and isinstance(doc.get("items"), list)):
            items = doc.get("items") or []
            item_nodes = _items_nodes(node)
            for i, item in enumerate(items):
                if not isinstance(item, dict) or not item.get("kind"):
                    raise ManifestError(source, f"items[{i}] is not a Kubernetes object", line)
                item_line = item_nodes[i].start_mark.line + 1 if i < len(item_nodes) else line
                out.append(Located(item, source, item_line))
            continue
        out.append(Located(doc, source, line))
    return out


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


_MARKER = re.compile(r"^---(?:[ \t]|$)")


def _fast_documents(text: str) -> list[tuple[int, Any]] | None:
    """Documents with their first line, parsed by libyaml in one pass; None when the marker scan
    does not line up with what the parser saw (then the slower node-by-node path decides)."""
    docs = list(yaml.load_all(text, Loader=_Loader))
    starts: list[int] = []
    pending: int | None = None
    seen_content = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _MARKER.match(line):
            if pending is not None or seen_content:
                starts.append(pending or number)
            pending, seen_content = None, True
            rest = line[3:].strip()
            if rest and not rest.startswith("#"):
                pending = number
            continue
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.startswith("%") and pending is None:
            pending = number
        if stripped:
            seen_content = True
    if pending is not None:
        starts.append(pending)
    real = [d for d in docs if d is not None]
    if len(starts) < len(real) or any(isinstance(d, dict) and str(d.get("kind", "")).endswith("List") for d in real):
        return None
    # empty documents have no content line: pair the non-empty ones in order
    if len(starts) != len(real):
        return None
    return list(zip(starts, real, strict=True))


def _compose_and_construct(text: str) -> list[tuple[yaml.Node, Any]]:
    """Parse once, keeping each document's node (for line numbers) and its value."""
    loader = _Loader(text)
    try:
        out: list[tuple[yaml.Node, Any]] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                out.append((node, loader.construct_document(node)))
        return out
    finally:
        loader.dispose()


def _items_nodes(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "items" and isinstance(value, yaml.SequenceNode):
                return list(value.value)
    return []


def render_kustomize(directory: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ManifestError(str(directory), "is a kustomization but kubectl is not installed")
    try:
        proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                              timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ManifestError(str(directory), "kubectl kustomize timed out") from exc
    if proc.returncode != 0:
        raise ManifestError(str(directory), f"kubectl kustomize failed: {proc.stderr.strip()}")
    return proc.stdout


def _is_kustomization(directory: Path) -> bool:
    return any((directory / k).is_file() for k in KUSTOMIZATIONS)


def load_paths(paths: list[str]) -> list[Located]:
    """Load every path: `-` is stdin, a kustomization directory is rendered, other directories are
    walked for .yaml/.yml/.json files (skipping nested kustomization roots' raw files)."""
    out: list[Located] = []
    for raw in paths:
        if raw == "-":
            out.extend(parse_documents(sys.stdin.read(), "<stdin>"))
            continue
        path = Path(raw)
        if not path.exists():
            raise ManifestError(raw, "no such file or directory")
        if path.is_dir():
            out.extend(_load_dir(path))
        elif path.suffix in MANIFEST_SUFFIXES:
            out.extend(_load_file(path))
        else:
            raise ManifestError(raw, f"unknown file type {path.suffix or '(none)'}: expected .yaml, .yml or .json")
    return out


def _load_file(path: Path) -> list[Located]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), f"cannot read: {exc}") from exc
    return parse_documents(text, str(path))


def _load_dir(directory: Path) -> list[Located]:
    if _is_kustomization(directory):
        return parse_documents(render_kustomize(directory), f"{directory} (kustomize)")
    out: list[Located] = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            out.extend(_load_dir(child))
        elif child.suffix in MANIFEST_SUFFIXES:
            out.extend(_load_file(child))
    return out
