"""One `mlguard check` run: walk the paths, render and read, deduplicate, judge, and locate every finding.

Identity is (API group, kind, namespace, name). Within one rendered unit (a kustomization's output, or all
plain files together) an identity is judged once; the same identity defined again with the same content
elsewhere is counted once (a directory symlink, two overlays sharing an object); defined with different
content, both definitions are judged and reported as a conflict with both locations. Quota usage counts
each identity once (`ManifestFacts`).

Memory stays a small multiple of the input however many objects it holds: documents are parsed one at a time,
and each object is kept marshalled (`_Held`) with what the cross-object policies need summarised in
`ManifestFacts` (identities, quotas, namespaces, each workload's GPU need); an object is loaded back only to
be judged, its lines are read back from disk only when it has a finding, and then it is dropped.
"""

from __future__ import annotations

import functools
import marshal
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.context import ManifestFacts, Prepared
from policies.engine import evaluate_object
from policies.kustomize import Kustomization, Origin, PatchRef, Rendered, SourceIndex, kustomization_file, render_unit
from policies.manifests import (
    FileText,
    Located,
    ManifestError,
    Skipped,
    Span,
    iter_documents,
    plain_ascii,
    read_bytes,
    read_text,
)
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


def _compact(obj: dict[str, Any]) -> Any:
    """The object marshalled; the object itself when marshal cannot hold it (a YAML timestamp is a datetime)."""
    try:
        return marshal.dumps(obj)
    except (ValueError, RecursionError):
        return obj


def _expand(held: Any) -> dict[str, Any]:
    obj: dict[str, Any] = held if isinstance(held, dict) else marshal.loads(held)
    return obj


@dataclass(slots=True)
class _Held:
    """One object to judge, held compactly until its turn (`marshal`: a fifth of the parsed object's memory,
    loaded back in a tenth of its parse time), and what is known about where it is written."""

    blob: Any   # `_compact`
    resource: Resource
    unit: str
    source: str
    line: int
    span: Span | None
    path: Path | None
    defined_by: Located | None = None   # kustomize: the document that defines it (plain files: itself)
    origin: Origin | None = None
    patches: list[PatchRef] | None = None
    kustomization: Path | None = None

    def obj(self) -> dict[str, Any]:
        return _expand(self.blob)

    def entry(self, obj: dict[str, Any]) -> Entry:
        located = Located(obj, self.source, self.line, self.span, self.path)
        if self.patches is None:  # a plain file
            return Entry(located, self.unit, source=located)
        return Entry(located, self.unit, source=self.defined_by, origin=self.origin, patches=self.patches,
                     kustomization=self.kustomization)

    def where(self) -> str:
        src = self.defined_by
        return f"{src.source}:{src.line}" if src is not None else f"{self.source}:{self.line}"


class _Judged:
    """The objects to judge, each identity once, and the facts about all of them (`ManifestFacts`), built one
    object at a time: at no point are all parsed objects in memory."""

    def __init__(self, facts: ManifestFacts) -> None:
        self.facts = facts
        self.conflicts: list[InputNote] = []
        self.held: list[_Held] = []
        self.defined: dict[Identity, _Held | list[_Held]] = {}
        self.by_unit: dict[str, dict[Resource, _Held]] = {}

    def stage(self, obj: dict[str, Any], unit: str, located: Located, defined_by: Located | None = None,
              origin: Origin | None = None, patches: list[PatchRef] | None = None, kustomization: Path | None = None
              ) -> tuple[_Held, Prepared]:
        compact = _compact(obj)
        prepared = self.facts.prepare(obj, compact)
        return _Held(compact, prepared.resource, unit, located.source, located.line, located.span, located.path,
                     defined_by, origin, patches, kustomization), prepared

    def add(self, staged: list[tuple[_Held, Prepared]]) -> None:
        """Objects of one file (or rendered unit) that read to its end: judged unless the same object is
        already there (a link, a file read twice, a shared base: counted once)."""
        for held, prepared in staged:
            res = held.resource
            key: Identity = (res.group, res.kind, res.namespace, res.name)
            found = self.defined.get(key)
            others = [] if found is None else found if isinstance(found, list) else [found]
            if others:
                if any(seen.blob == held.blob or seen.obj() == held.obj() for seen in others):
                    continue
                seen = others[0]
                self.conflicts.append(InputNote(
                    held.where(), f"{res} is also defined, differently, at {seen.where()}: "
                                  "both definitions are checked; quota usage counts the larger", kind="conflict"))
                self.defined[key] = [*others, held]
            else:
                self.defined[key] = held
            self.held.append(held)
            self.by_unit.setdefault(held.unit, {}).setdefault(res, held)
            self.facts.add_prepared(prepared)


class _Entries:
    """Where the findings of one judged object are written: its own entry, or (a finding that names another
    object of its unit, as a Rollout's findings name its workloadRef Deployment) that object's."""

    def __init__(self, held: _Held, obj: dict[str, Any], resource: Resource, judged: _Judged) -> None:
        self.entry = held.entry(obj)
        self.held, self.resource, self.judged = held, resource, judged
        self.others: dict[Resource, Entry] = {}

    def of(self, resource: Resource) -> Entry:
        if resource == self.resource:
            return self.entry
        if resource not in self.others:
            other = self.judged.by_unit[self.held.unit].get(resource)
            self.others[resource] = self.entry if other is None else other.entry(other.obj())
        return self.others[resource]


def _is_own(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(OWN_GROUP) and obj.get("kind") in OWN_KINDS


def _read_file(path: Path | None, judged: _Judged, display: Callable[[Path], str], notes: list[InputNote],
               errors: list[ManifestError]) -> None:
    """One plain file (None: stdin), a document at a time; its objects count only when all of it parses."""
    inputs: list[InputNote] = []
    own: list[InputNote] = []
    staged: list[tuple[_Held, Prepared]] = []
    try:
        if path is None:
            documents = iter_documents(sys.stdin.read(), "<stdin>")
        else:
            shown = display(path)
            data = read_bytes(path, shown)
            if plain_ascii(data):  # parsed as it is, and read again from disk for the lines of findings
                documents = iter_documents(data, shown, path=path, spans=FileText(path))
            else:
                del data
                documents = iter_documents(read_text(path, shown), shown, path=path)
        for found in documents:
            if isinstance(found, Skipped):
                inputs.append(InputNote(found.source, f"{found.reason}: skipped", found.line, "not-object"))
                continue
            obj = found.obj
            if _is_own(obj):
                own.append(InputNote(found.source, f"mlguard's own {obj['kind']}, not a cluster object: "
                                                   "not checked", found.line))
                continue
            staged.append(judged.stage(obj, "files", found))
    except ManifestError as exc:
        errors.append(exc)
        return
    notes.extend(inputs)
    notes.extend(own)
    judged.add(staged)


def run_check(paths: Sequence[str], options: CheckOptions) -> CheckResult:
    root = options.root or repository_root()
    display = displayer(root)
    result = CheckResult(Report(), root=root)
    walk = Walker(excludes=options.excludes, display=display).walk(paths)
    result.inputs.extend(walk.notes)
    result.errors.extend(walk.errors)
    index = SourceIndex(display)
    facts = ManifestFacts(extra_labels=options.namespace_labels, cluster=options.cluster,
                          workloads=options.policyset.workloads, gpu=options.policyset.gpu, load=marshal.loads)
    judged = _Judged(facts)

    # ---- read and render, each identity once: only a compact copy of each object is kept --------------
    if walk.stdin:
        _read_file(None, judged, display, result.inputs, result.errors)
    for path in walk.files:
        _read_file(path, judged, display, result.inputs, result.errors)
    for unit, rendered in zip(walk.units, _render(walk.units, display, index, walk.kustomizations, options.jobs),
                              strict=True):
        if isinstance(rendered, ManifestError):
            result.errors.append(rendered)
            continue
        kfile = kustomization_file(unit)
        shown = display(unit)
        judged.add([judged.stage(o.obj, shown, o, src, origin, rendered.patches, kfile)
                    for o, origin, src in rendered.objects])
    result.inputs.extend(judged.conflicts)

    # ---- judge, one object at a time, and locate what was found ---------------------------------------
    locator = Locator(display)
    seen_findings: set[tuple[Any, ...]] = set()
    report = result.report
    resolutions: dict[tuple[Any, ...], Any] = {}  # each policy resolved once per kind of subject
    for held in judged.held:
        obj = held.obj()
        outcome = evaluate_object(obj, options.policyset, point="ci", facts=facts, resolutions=resolutions)
        report.resources.append(outcome.resource)
        if outcome.exempt_reason:
            report.exempt.append((outcome.resource, outcome.exempt_reason))
        report.policy_errors.extend(outcome.errors)
        if not outcome.violations and not outcome.notes:
            continue
        entries = _Entries(held, obj, outcome.resource, judged)
        for v in outcome.violations:
            location = locator.locate(entries.of(v.resource), v.path)
            fkey: tuple[Any, ...] = (v.policy, v.resource, v.path, v.message, location)
            if fkey not in seen_findings:
                seen_findings.add(fkey)
                report.violations.append(v)
                result.findings.append(LocatedViolation(v, location))
        for n in outcome.notes:
            location = locator.locate(entries.of(n.resource), n.path)
            if ("note", n.policy, n.resource, n.path, n.message, location) not in seen_findings:
                seen_findings.add(("note", n.policy, n.resource, n.path, n.message, location))
                report.notes.append(n)
                result.note_locations[id(n)] = location
    return result


def note_location(result: CheckResult, note: Note) -> Location | None:
    return result.note_locations.get(id(note))
