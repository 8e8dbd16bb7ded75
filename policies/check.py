"""One `mlguard check` run: walk the paths, render and read, deduplicate, judge, and locate every finding.

Identity is (API group, kind, namespace, name). Within one rendered unit (a kustomization's output, or all
plain files together) an identity is judged once; the same identity defined again with the same content
elsewhere is counted once (a directory symlink, two overlays sharing an object); defined with different
content, both definitions are judged and reported as a conflict with both locations. Quota usage counts
each identity once (`ManifestFacts`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.context import ManifestFacts
from policies.engine import evaluate_object
from policies.kustomize import Kustomization, Rendered, SourceIndex, kustomization_file, render_unit
from policies.manifests import ManifestError, Parsed, load_file, parse_documents
from policies.model import Note, Report, Resource, Violation
from policies.policyset import PolicySet
from policies.repo import InputNote, Walker
from policies.snapshot import ClusterSnapshot
from policies.sources import Entry, Location, Locator

Identity = tuple[str, str, str, str]
OWN_GROUP = "mlguard.io/"
OWN_KINDS = ("PolicySet", "PolicyTest", "ClusterFacts")


def identity(obj: Mapping[str, Any]) -> Identity:
    res = Resource.of(dict(obj))
    return res.group, res.kind, res.namespace, res.name


def repository_root(start: Path | None = None) -> Path:
    """The directory paths are shown relative to: the git work tree holding ``start`` (the current
    directory), else ``start`` itself. SARIF names it as %SRCROOT%."""
    here = (start or Path.cwd()).resolve()
    for parent in [here, *here.parents]:
        if (parent / ".git").exists():
            return parent
    return here


def displayer(root: Path) -> Callable[[Path], str]:
    @functools.lru_cache(maxsize=65536)
    def display(path: Path) -> str:
        absolute = Path(os.path.abspath(path))
        try:
            return absolute.relative_to(root).as_posix() or "."
        except ValueError:
            return str(absolute)
    return display


@dataclass(frozen=True)
class LocatedViolation:
    """A violation and where to fix it."""

    violation: Violation
    location: Location


@dataclass
class CheckResult:
    report: Report
    findings: list[LocatedViolation] = field(default_factory=list)
    note_locations: dict[int, Location] = field(default_factory=dict)   # id(note) -> location
    inputs: list[InputNote] = field(default_factory=list)    # skipped input, conflicts
    errors: list[ManifestError] = field(default_factory=list)
    root: Path = field(default_factory=Path.cwd)
    command: str = "mlguard check"  # how the summary line names the run (`mlguard audit` reuses the renderers)

    @property
    def objects(self) -> int:
        return len(self.report.resources)


@dataclass
class CheckOptions:
    policyset: PolicySet
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None
    cluster: ClusterSnapshot | None = None
    excludes: Sequence[str] = ()
    strict_input: bool = False
    root: Path | None = None
    jobs: int = 0  # kustomize renders in parallel (0: one per core, at most 4)


def _read_files(paths: list[Path], display: Callable[[Path], str], stdin: bool,
                errors: list[ManifestError]) -> list[Parsed]:
    parsed = []
    if stdin:
        try:
            parsed.append(parse_documents(sys.stdin.read(), "<stdin>"))
        except ManifestError as exc:
            errors.append(exc)
    for path in paths:
        try:
            parsed.append(load_file(path, display(path)))
        except ManifestError as exc:
            errors.append(exc)
    return parsed


def _render(units: list[Path], display: Callable[[Path], str], index: SourceIndex,
            cache: dict[Path, Kustomization | None], jobs: int) -> list[Rendered | ManifestError]:
    def one(unit: Path) -> Rendered | ManifestError:
        try:
            return render_unit(unit, display(unit), index, cache)
        except ManifestError as exc:
            return exc
    workers = jobs or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(units) <= 1:
        return [one(u) for u in units]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, units))


def _where(entry: Entry) -> str:
    src = entry.source or entry.located
    return f"{src.source}:{src.line}"


def run_check(paths: Sequence[str], options: CheckOptions) -> CheckResult:
    root = options.root or repository_root()
    display = displayer(root)
    result = CheckResult(Report(), root=root)
    walk = Walker(excludes=options.excludes, display=display).walk(paths)
    result.inputs.extend(walk.notes)
    result.errors.extend(walk.errors)
    index = SourceIndex(display)

    # ---- read and render -----------------------------------------------------------------------
    units: list[tuple[str, list[Entry]]] = []
    files_entries: list[Entry] = []
    for parsed in _read_files(walk.files, display, walk.stdin, result.errors):
        for skipped in parsed.skipped:
            result.inputs.append(InputNote(skipped.source, f"{skipped.reason}: skipped", skipped.line,
                                           "not-object"))
        for o in parsed.objects:
            if str(o.obj.get("apiVersion", "")).startswith(OWN_GROUP) and o.obj.get("kind") in OWN_KINDS:
                result.inputs.append(InputNote(o.source, f"mlguard's own {o.obj['kind']}, not a cluster object: "
                                                         "not checked", o.line))
                continue
            files_entries.append(Entry(o, "files", source=o))
    if files_entries:
        units.append(("files", files_entries))
    for unit, rendered in zip(walk.units, _render(walk.units, display, index, walk.kustomizations, options.jobs),
                              strict=True):
        if isinstance(rendered, ManifestError):
            result.errors.append(rendered)
            continue
        kfile = kustomization_file(unit)
        entries = [Entry(obj, display(unit), source=src, origin=origin, patches=rendered.patches,
                         kustomization=kfile) for obj, origin, src in rendered.objects]
        units.append((display(unit), entries))

    # ---- one identity, once ----------------------------------------------------------------------
    judged: list[Entry] = []
    defined: dict[Identity, list[Entry]] = {}
    for _, entries in units:
        for entry in entries:
            others = defined.setdefault(identity(entry.obj), [])
            if any(seen.obj == entry.obj for seen in others):
                continue  # the same object again (a link, a file read twice, a shared base): counted once
            if others:
                seen = others[0]
                result.inputs.append(InputNote(
                    _where(entry), f"{Resource.of(entry.obj)} is also defined, differently, at {_where(seen)}: "
                                   "both definitions are checked; quota usage counts the larger", kind="conflict"))
            others.append(entry)
            judged.append(entry)

    # ---- judge ------------------------------------------------------------------------------------
    facts = ManifestFacts([e.obj for e in judged], extra_labels=options.namespace_labels, cluster=options.cluster,
                          workloads=options.policyset.workloads)
    locator = Locator(display)
    by_unit: dict[str, dict[Resource, Entry]] = {}
    for entry in judged:
        by_unit.setdefault(entry.unit, {}).setdefault(Resource.of(entry.obj), entry)
    seen_findings: set[tuple[Any, ...]] = set()
    report = result.report
    resolutions: dict[tuple[Any, ...], Any] = {}  # each policy resolved once per kind of subject
    for entry in judged:
        outcome = evaluate_object(entry.obj, options.policyset, point="ci", facts=facts, resolutions=resolutions)
        report.resources.append(outcome.resource)
        if outcome.exempt_reason:
            report.exempt.append((outcome.resource, outcome.exempt_reason))
        report.policy_errors.extend(outcome.errors)
        for v in outcome.violations:
            target = entry if v.resource == outcome.resource else by_unit[entry.unit].get(v.resource, entry)
            location = locator.locate(target, v.path)
            fkey: tuple[Any, ...] = (v.policy, v.resource, v.path, v.message, location)
            if fkey not in seen_findings:
                seen_findings.add(fkey)
                report.violations.append(v)
                result.findings.append(LocatedViolation(v, location))
        for n in outcome.notes:
            target = entry if n.resource == outcome.resource else by_unit[entry.unit].get(n.resource, entry)
            location = locator.locate(target, n.path)
            if ("note", n.policy, n.resource, n.path, n.message, location) not in seen_findings:
                seen_findings.add(("note", n.policy, n.resource, n.path, n.message, location))
                report.notes.append(n)
                result.note_locations[id(n)] = location
    return result


def note_location(result: CheckResult, note: Note) -> Location | None:
    return result.note_locations.get(id(note))
