"""Walking a GitOps repository for `mlguard check`: what to render, what to read, what to skip and why.

- A directory holding a kustomization is one unit, rendered with `kubectl kustomize`. The files its
  kustomizations read (resources, patches, generator inputs, ...) are never read as objects on their own;
  a YAML file inside a kustomization's directory that none of them reads is not applied by Argo CD either,
  and is reported and skipped. A kustomization that another one in the walk builds on (a base) is checked
  through that one; a `kind: Component` only through the kustomizations that use it.
- A Helm chart (a directory with Chart.yaml) is skipped with a note saying how to check it.
- `--exclude GLOB` and `.mlguardignore` files use .gitignore's rules (the `pathspec` library); hidden files
  and directories are not walked. A directory reached twice (a symlink, a loop) is read once.
- A file given by name is read as the repository would use it: a patch or a base file checks the
  kustomization that reads it; a file inside a chart is skipped with the chart's note.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from policies.kustomize import Kustomization, closure, kustomization_file, read_kustomization
from policies.manifests import MANIFEST_SUFFIXES, ManifestError

IGNORE_FILE = ".mlguardignore"
HELM_HINT = ("render it and check the output: `helm template RELEASE {dir} -f VALUES | mlguard check -` "
             "(or list it under helmCharts in a kustomization)")


@dataclass(frozen=True)
class InputNote:
    """Something about the input that a reader must know: what was skipped, and why."""

    source: str
    message: str
    line: int | None = None
    kind: str = "skipped"   # skipped | not-object | conflict

    def __str__(self) -> str:
        return f"{self.source}{f':{self.line}' if self.line else ''}: {self.message}"


@dataclass
class Walk:
    files: list[Path] = field(default_factory=list)        # plain manifest files, in order
    units: list[Path] = field(default_factory=list)        # kustomization directories to render
    stdin: bool = False
    notes: list[InputNote] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    kustomizations: dict[Path, Kustomization | None] = field(default_factory=dict)  # by resolved directory


def _stop_dir(path: Path) -> Path | None:
    """The repository root above ``path`` (a directory holding .git), where looking up stops."""
    for parent in [path, *path.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def _ancestors(path: Path) -> list[Path]:
    """Directories above a file, nearest first, up to the repository root (or the filesystem root)."""
    stop = _stop_dir(path.parent)
    out = []
    for parent in path.parents:
        out.append(parent)
        if stop is not None and parent == stop:
            break
    return out


class _Ignore:
    """`--exclude` patterns and the `.mlguardignore` files met on the way, with .gitignore semantics."""

    def __init__(self, excludes: Sequence[str], cwd: Path) -> None:
        self.cwd = cwd
        self.excludes = pathspec.GitIgnoreSpec.from_lines(list(excludes)) if excludes else None
        self._files: dict[Path, pathspec.GitIgnoreSpec | None] = {}

    def _file_spec(self, directory: Path) -> pathspec.GitIgnoreSpec | None:
        if directory not in self._files:
            spec = None
            path = directory / IGNORE_FILE
            if path.is_file():
                try:
                    spec = pathspec.GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8").splitlines())
                except (OSError, UnicodeDecodeError):
                    spec = None
            self._files[directory] = spec
        return self._files[directory]

    def ignored(self, path: Path, root: Path, *, is_dir: bool) -> bool:
        suffix = "/" if is_dir else ""
        if self.excludes is not None:
            rels = {os.path.relpath(path, root)}
            if not os.path.relpath(path, self.cwd).startswith(".."):
                rels.add(os.path.relpath(path, self.cwd))
            if any(self.excludes.match_file(r + suffix) for r in rels):
                return True
        # .mlguardignore files from the walk's root down to the path's directory
        for directory in [root, *reversed([p for p in path.parents if p != root and root in p.parents])]:
            spec = self._file_spec(directory)
            if spec is not None and spec.match_file(os.path.relpath(path, directory) + suffix):
                return True
        return False


class Walker:
    def __init__(self, *, excludes: Sequence[str] = (), display: Callable[[Path], str], cwd: Path | None = None
                 ) -> None:
        self.display = display
        self.ignore = _Ignore(excludes, (cwd or Path.cwd()).resolve())
        self.out = Walk()
        self._visited: set[Path] = set()
        self._found: list[Path] = []           # kustomization directories met in the walk
        self._explicit: list[Path] = []        # directories and units asked for by name
        self._charts: set[Path] = set()
        self._candidates: list[tuple[Path, Path]] = []   # (file, directory of its nearest kustomization or itself)

    # ---- public ---------------------------------------------------------------------------------
    def walk(self, paths: Sequence[str]) -> Walk:
        for raw in paths:
            if raw == "-":
                self.out.stdin = True
                continue
            path = Path(raw)
            if not path.exists():
                self.out.errors.append(ManifestError(raw, "no such file or directory"))
            elif path.is_dir():
                if kustomization_file(path) is not None:
                    self._explicit.append(path)
                self._dir(path, root=path, top=True)
            else:
                self._explicit_file(path, raw)
        self._settle()
        return self.out

    # ---- walking --------------------------------------------------------------------------------
    def _kustomization(self, directory: Path) -> Kustomization | None:
        real = directory.resolve()
        if real not in self.out.kustomizations:
            self.out.kustomizations[real] = read_kustomization(directory)
        return self.out.kustomizations[real]

    def _chart(self, directory: Path) -> None:
        real = directory.resolve()
        if real not in self._charts:
            self._charts.add(real)
            shown = self.display(directory)
            self.out.notes.append(InputNote(shown, "Helm chart: not checked (its templates are not manifests); "
                                                   + HELM_HINT.format(dir=shown)))

    def _dir(self, directory: Path, *, root: Path, top: bool = False, owner: Path | None = None) -> None:
        real = directory.resolve()
        if real in self._visited:
            if directory.is_symlink() or not top:
                self.out.notes.append(InputNote(self.display(directory), f"a link to {self.display(real)}, "
                                                "which is already read: not read again"))
            return
        self._visited.add(real)
        if (directory / "Chart.yaml").is_file():
            self._chart(directory)
            return
        if kustomization_file(directory) is not None:
            self._found.append(directory)
            self._kustomization(directory)
            owner = directory
        try:
            children = sorted(directory.iterdir())
        except OSError as exc:
            self.out.errors.append(ManifestError(self.display(directory), f"cannot list: {exc.strerror or exc}"))
            return
        for child in children:
            if child.name.startswith("."):
                continue
            is_dir = child.is_dir()
            if self.ignore.ignored(child, root, is_dir=is_dir):
                continue
            if is_dir:
                self._dir(child, root=root, owner=owner)
            elif child.suffix in MANIFEST_SUFFIXES and child.is_file():
                self._candidates.append((child, owner or child.parent))

    def _explicit_file(self, path: Path, raw: str) -> None:
        absolute = Path(os.path.abspath(path))
        root = _stop_dir(absolute.parent) or (self.ignore.cwd if self.ignore.cwd in absolute.parents
                                              else absolute.parent)
        if self.ignore.ignored(absolute, root, is_dir=False):  # pre-commit passes ignored files by name too
            self.out.notes.append(InputNote(self.display(path), f"ignored (--exclude or {IGNORE_FILE})"))
            return
        if path.suffix not in MANIFEST_SUFFIXES:
            self.out.errors.append(ManifestError(raw, f"unknown file type {path.suffix or '(none)'}: expected "
                                                      ".yaml, .yml or .json"))
            return
        for parent in _ancestors(path):
            if (parent / "Chart.yaml").is_file():
                self._chart(parent)
                return
        for parent in _ancestors(path):
            if kustomization_file(parent) is None:
                continue
            k = self._kustomization(parent)
            # a file a kustomization reads checks that kustomization (or, when another one in this run builds
            # on it, that one: a base file and its overlay's patch changed together check the overlay)
            if path.name in ("kustomization.yaml", "kustomization.yml", "Kustomization") and parent == path.parent:
                self._found.append(parent)
                return
            files = {f.resolve() for kk in closure(parent, self.out.kustomizations) for f in kk.files()}
            if path.resolve() in files:
                self._found.append(parent)
                return
            if k is not None:
                self._candidates.append((path, parent))
                return
        self._candidates.append((path, path.parent))

    # ---- deciding -------------------------------------------------------------------------------
    def _settle(self) -> None:
        found = list(dict.fromkeys(d.resolve() for d in self._found))
        shown = {d.resolve(): d for d in self._found}
        explicit = {d.resolve() for d in self._explicit}
        consumed: set[Path] = set()
        used_by: dict[Path, Path] = {}   # a directory another kustomization in the walk builds on -> that one
        for d in found:
            for k in closure(shown[d], self.out.kustomizations):
                consumed |= {f.resolve() for f in k.files()}
                for dep in k.directories():
                    if dep.resolve() != d:
                        used_by.setdefault(dep.resolve(), d)
        for d in found:
            kz = self.out.kustomizations.get(d)
            where = self.display(shown[d])
            if kz is not None and kz.error:
                self.out.errors.append(ManifestError(self.display(kz.file), kz.error))
                continue
            if kz is not None and kz.is_component:
                user = used_by.get(d)
                self.out.notes.append(InputNote(where, "kustomize Component: checked through "
                                                + (self.display(shown.get(user, user)) if user else
                                                   "the kustomizations that use it (none in this run)")))
                continue
            if d in used_by and d not in explicit:
                user = used_by[d]
                self.out.notes.append(InputNote(where, f"kustomize base: checked as part of "
                                                       f"{self.display(shown.get(user, user))}"))
                continue
            self.out.units.append(shown[d])
        seen_files: set[Path] = set()
        for path, owner in self._candidates:
            real = path.resolve()
            if real in consumed or real in seen_files:
                continue
            seen_files.add(real)
            owning = self.out.kustomizations.get(owner.resolve()) if kustomization_file(owner) else None
            if owning is not None:  # inside a kustomization's directory, but none of the kustomizations reads it
                self.out.notes.append(InputNote(self.display(path), f"not read by {self.display(owning.file)} "
                                                "(so Argo CD does not apply it either): skipped"))
                continue
            self.out.files.append(path)
