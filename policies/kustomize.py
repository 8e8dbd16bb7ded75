"""Kustomizations: what a kustomization reads, and its rendering mapped back to the files that define it.

Field names are those of kustomize's `types.Kustomization` (sigs.k8s.io/kustomize/api/types/kustomization.go,
as vendored in kubernetes/kubernetes): `resources`, `components`, `bases` (deprecated), `patches` (path or
inline `patch`, optional `target`), `patchesStrategicMerge`, `patchesJson6902`, the generators'
`files`/`envs`/`env`, `crds`, `configurations`, `generators`, `transformers`, `validators`, `replacements`,
`openapi.path`, `helmCharts`/`helmGlobals`.

Rendering: `kubectl kustomize` of a temporary kustomization that lists the directory as its one resource
and sets `buildMetadata: [originAnnotations]`, so the user's files are never touched. Kustomize then
annotates every object with `config.kubernetes.io/origin` (key as in
vendor/sigs.k8s.io/kustomize/api/internal/utils/annotations.go): `path:` of the file that defined it,
relative to the temporary directory, or `configuredIn:`/`configuredBy:` for an object a generator made.
The annotation is removed again before anything judges the object.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from policies.manifests import KUSTOMIZATIONS, Located, ManifestError, Parsed, load_file, parse_documents

ORIGIN = "config.kubernetes.io/origin"
_REMOTE = re.compile(r"^(https?://|git@|ssh://|github\.com/|gitlab\.com/|bitbucket\.org/)|\?ref=|//")


def kustomization_file(directory: Path) -> Path | None:
    return next((directory / k for k in KUSTOMIZATIONS if (directory / k).is_file()), None)


@dataclass(frozen=True)
class PatchRef:
    """One patch a kustomization applies: a file (or inline text), its kind and its target."""

    kustomization: Path         # the kustomization file that lists it
    entry_line: int             # the line of its entry there
    file: Path | None           # None for an inline patch
    target: Mapping[str, Any] | None
    inline: str | None = None


@dataclass
class Kustomization:
    """What one kustomization file says, as far as reading a repository needs."""

    directory: Path
    file: Path
    kind: str = "Kustomization"
    resources: list[Path] = field(default_factory=list)     # local files and directories
    remote: list[str] = field(default_factory=list)          # remote resources (need the network)
    components: list[Path] = field(default_factory=list)
    patches: list[PatchRef] = field(default_factory=list)
    other_files: set[Path] = field(default_factory=set)      # generator inputs, configurations, crds, ...
    error: str | None = None

    @property
    def is_component(self) -> bool:
        return self.kind == "Component"

    def directories(self) -> list[Path]:
        """Local directories it builds on (bases, other kustomizations, components)."""
        return [p for p in [*self.resources, *self.components] if p.is_dir()]

    def files(self) -> set[Path]:
        """Every local file it reads itself (not those of the directories it builds on)."""
        out = {p for p in self.resources if p.is_file()} | self.other_files | {self.file}
        out |= {p.file for p in self.patches if p.file is not None}
        return out


def _lines(node: yaml.Node | None, key: str) -> list[int]:
    """Lines of the items of a top-level list ``key`` in a composed kustomization."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in v.value]
    return []


def read_kustomization(directory: Path) -> Kustomization | None:
    """The kustomization of a directory, or None when it has none. Problems are kept in ``error``."""
    path = kustomization_file(directory)
    if path is None:
        return None
    k = Kustomization(directory, path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        k.error = f"cannot read {path.name}: {exc}"
        return k
    if not isinstance(data, Mapping):
        k.error = f"{path.name} is not a mapping"
        return k
    k.kind = str(data.get("kind") or "Kustomization")

    def local(entry: Any) -> Path | None:
        if not isinstance(entry, str) or not entry or _REMOTE.search(entry):
            if isinstance(entry, str) and entry:
                k.remote.append(entry)
            return None
        return Path(os.path.normpath(directory / entry))

    for key in ("resources", "bases"):
        for entry in data.get(key) or []:
            p = local(entry)
            if p is not None:
                k.resources.append(p)
    k.components = [p for e in data.get("components") or [] if (p := local(e)) is not None]

    def patch_entries(key: str) -> Iterator[tuple[int, Any]]:
        entries = data.get(key) or []
        lines = _lines(root, key)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            yield (lines[i] if i < len(lines) else 1), entry

    def targeted(line: int, entry: Any) -> None:
        """A `patches` or `patchesJson6902` entry: a file (path) or the patch inline, with a target."""
        if isinstance(entry, Mapping):
            target = entry.get("target") if isinstance(entry.get("target"), Mapping) else None
            if isinstance(entry.get("path"), str):
                k.patches.append(PatchRef(path, line, Path(os.path.normpath(directory / entry["path"])), target))
            elif isinstance(entry.get("patch"), str):
                k.patches.append(PatchRef(path, line, None, target, entry["patch"]))

    for line, entry in patch_entries("patches"):
        targeted(line, entry)
    for line, entry in patch_entries("patchesStrategicMerge"):
        if isinstance(entry, str) and "\n" not in entry and not entry.lstrip().startswith(("apiVersion", "{")):
            k.patches.append(PatchRef(path, line, Path(os.path.normpath(directory / entry)), None))
        elif isinstance(entry, str):
            k.patches.append(PatchRef(path, line, None, None, entry))
    for line, entry in patch_entries("patchesJson6902"):
        targeted(line, entry)

    for key in ("configMapGenerator", "secretGenerator"):
        for gen in data.get(key) or []:
            if not isinstance(gen, Mapping):
                continue
            for f in [*(gen.get("files") or []), *(gen.get("envs") or []), gen.get("env")]:
                if isinstance(f, str):
                    k.other_files.add(Path(os.path.normpath(directory / f.split("=", 1)[-1])))
    for key in ("crds", "configurations", "generators", "transformers", "validators"):
        for f in data.get(key) or []:
            p = local(f) if isinstance(f, str) else None
            if p is None:
                continue
            if p.is_dir():  # generators and transformers may name a kustomization directory
                k.resources.append(p)
            else:
                k.other_files.add(p)
    for rep in data.get("replacements") or []:
        if isinstance(rep, Mapping) and isinstance(rep.get("path"), str):
            k.other_files.add(Path(os.path.normpath(directory / rep["path"])))
    openapi = data.get("openapi")
    if isinstance(openapi, Mapping) and isinstance(openapi.get("path"), str):
        k.other_files.add(Path(os.path.normpath(directory / openapi["path"])))
    for chart in data.get("helmCharts") or []:
        if isinstance(chart, Mapping) and isinstance(chart.get("valuesFile"), str):
            k.other_files.add(Path(os.path.normpath(directory / chart["valuesFile"])))
    globals_ = data.get("helmGlobals")
    if isinstance(globals_, Mapping) and isinstance(globals_.get("chartHome"), str):
        k.other_files.add(Path(os.path.normpath(directory / globals_["chartHome"])))
    return k


def closure(directory: Path, cache: dict[Path, Kustomization | None] | None = None) -> list[Kustomization]:
    """The kustomization of ``directory`` and of every local directory it builds on, transitively."""
    cache = {} if cache is None else cache
    out: list[Kustomization] = []
    seen: set[Path] = set()
    stack = [directory]
    while stack:
        d = stack.pop()
        real = d.resolve()
        if real in seen:
            continue
        seen.add(real)
        if real not in cache:
            cache[real] = read_kustomization(d)
        k = cache[real]
        if k is None:
            continue
        out.append(k)
        stack.extend(k.directories())
    return out


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise ManifestError("kubectl", "not installed: rendering a kustomization needs `kubectl kustomize`")
    return path


def _run(directory: Path, display: str) -> str:
    try:
        proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                              timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ManifestError(display, "kubectl kustomize timed out (120 s)") from exc
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()
        raise ManifestError(display, f"kubectl kustomize failed: {message[-1] if message else proc.returncode}")
    return proc.stdout


def render_plain(directory: Path) -> str:
    """`kubectl kustomize DIR`, as Argo CD renders it."""
    return _run(directory, f"{directory} (kustomize)")


def render_with_origins(directory: Path, display: str) -> tuple[str, Path]:
    """Render with origin annotations, through a temporary kustomization beside nothing of the user's.
    Returns the output and the temporary directory the origin paths are relative to (already removed;
    only its path matters)."""
    with tempfile.TemporaryDirectory(prefix="mlguard-kustomize-") as tmp:
        wrapper = Path(tmp)
        rel = os.path.relpath(directory.resolve(), wrapper.resolve())
        (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [rel], "buildMetadata": ["originAnnotations"]}))
        return _run(wrapper, display), wrapper.resolve()


@dataclass(frozen=True)
class Origin:
    """Where kustomize says a rendered object came from."""

    path: Path | None             # the file that defined it
    configured_in: Path | None    # the kustomization whose generator made it
    generator: str | None


def pop_origin(obj: dict[str, Any], base: Path) -> Origin:
    """Remove the origin annotation (and an annotations map it leaves empty) and read it."""
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    raw = annotations.pop(ORIGIN, None) if isinstance(annotations, dict) else None
    if isinstance(annotations, dict) and not annotations and isinstance(meta, dict):
        del meta["annotations"]
    try:
        data = yaml.safe_load(raw) if isinstance(raw, str) else None
    except yaml.YAMLError:
        data = None
    if not isinstance(data, Mapping) or data.get("repo"):
        return Origin(None, None, None)
    path = Path(os.path.normpath(base / data["path"])) if isinstance(data.get("path"), str) else None
    conf = Path(os.path.normpath(base / data["configuredIn"])) if isinstance(data.get("configuredIn"), str) \
        else None
    by = data.get("configuredBy")
    generator = str(by.get("kind")) if isinstance(by, Mapping) and by.get("kind") else None
    return Origin(path, conf, generator)


@dataclass
class SourceIndex:
    """Files read once per run (bases, patches), parsed, by path."""

    display: Any  # Callable[[Path], str]: how a file is named to people
    _files: dict[Path, Parsed | None] = field(default_factory=dict)

    def parsed(self, path: Path) -> Parsed | None:
        if path not in self._files:
            try:
                self._files[path] = load_file(path, self.display(path))
            except ManifestError:
                self._files[path] = None
        return self._files[path]

    def find(self, path: Path, kind: str, rendered_name: str) -> Located | None:
        """The object of ``kind`` in ``path`` that the rendered one comes from: the same name, else the
        longest name the rendered one contains (namePrefix/nameSuffix), else the only one of that kind."""
        parsed = self.parsed(path)
        if parsed is None:
            return None
        same_kind = [o for o in parsed.objects if o.obj.get("kind") == kind]
        best: Located | None = None
        best_len = -1
        for o in same_kind:
            name = str((o.obj.get("metadata") or {}).get("name") or "")
            if name == rendered_name:
                return o
            if name and name in rendered_name and len(name) > best_len:
                best, best_len = o, len(name)
        if best is None and len(same_kind) == 1:
            best = same_kind[0]
        return best


@dataclass
class Rendered:
    """A kustomization's objects, each with the file that defines it (``Located.path``, ``span``) when
    kustomize knows it."""

    directory: Path
    objects: list[tuple[Located, Origin, Located | None]]   # (rendered, origin, source object)
    kustomizations: list[Kustomization]

    @cached_property
    def patches(self) -> list[PatchRef]:
        return [p for k in reversed(self.kustomizations) for p in k.patches]


def render_unit(directory: Path, display: str, index: SourceIndex,
                cache: dict[Path, Kustomization | None] | None = None) -> Rendered:
    text, base = render_with_origins(directory, display)
    parsed = parse_documents(text, display)
    objects = []
    for item in parsed.objects:
        origin = pop_origin(item.obj, base)
        source = None
        if origin.path is not None:
            name = str((item.obj.get("metadata") or {}).get("name") or "")
            source = index.find(origin.path, str(item.obj.get("kind")), name)
        objects.append((item, origin, source))
    return Rendered(directory, objects, closure(directory, cache))
