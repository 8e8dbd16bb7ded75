"""Reports for people and machines: text, json, sarif (2.1.0), junit, github (workflow annotations).

Every format names the same file and line for a finding (`CheckResult.findings`): the file as a path
relative to the repository root (the git work tree the check ran in) and the line of the offending field.
SARIF gives that path with ``uriBaseId: "%SRCROOT%"`` (and the root's absolute URI in
``originalUriBaseIds``), which is how GitHub code scanning places an alert on a line of the checkout.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

from policies.check import CheckResult
from policies.model import Resource, Violation
from policies.policyset import PolicySet
from policies.registry import all_policies
from policies.sources import Location

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SRCROOT = "%SRCROOT%"
LEVELS = {"deny": "error", "warn": "warning", "audit": "note"}
WORD = {"deny": "DENY", "warn": "WARN", "audit": "AUDIT"}
ORDER = ("deny", "warn", "audit")


def mlguard_version() -> str:
    try:
        return version("mlguard")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _sorted(result: CheckResult) -> list[tuple[Violation, Location]]:
    return sorted(((f.violation, f.location) for f in result.findings),
                  key=lambda p: (ORDER.index(p[0].action), p[1].file, p[1].line, str(p[0].resource), p[0].policy))


def _verdict(result: CheckResult, fail_on: str) -> bool:
    return any(v.action in (("deny",) if fail_on == "deny" else ("deny", "warn")) for v in result.report.violations)


def summary_line(result: CheckResult, fail_on: str = "deny") -> str:
    s = result.report.summary()
    verdict = f"FAILED ({'denied' if result.report.denied else 'warnings'})" if _verdict(result, fail_on) \
        else "passed"
    errors = sum(1 for v in result.report.violations if v.error)
    unjudged = f", {errors} not judged (ERROR: the data a policy needs is missing)" if errors else ""
    return (f"{result.command}: {s['resources']} resources, {s['deny']} denied, {s['warn']} warnings, "
            f"{s['audit']} audit, {len(result.report.notes)} notes{unjudged}: {verdict}")


def text_chunks(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> Iterator[str]:
    for v, loc in _sorted(result):
        yield (f"{'ERROR' if v.error else WORD[v.action]:<5} {v.policy}  {v.resource}  ({loc})\n"
               f"      at:      {v.path or '<object>'}\n"
               f"      fix:     {v.message}\n"
               f"      runbook: {v.runbook}\n")
    for n in result.report.notes:
        where = result.note_locations.get(id(n))
        yield f"NOTE  {n.policy}  {n.resource}: {n.message}" + (f"  ({where})" if where else "") + "\n"
    yield summary_line(result, fail_on) + "\n"


def render_text(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> str:
    return "".join(text_chunks(result, policyset, fail_on))


def _source(loc: Location) -> dict[str, Any]:
    out: dict[str, Any] = {"file": loc.file, "line": loc.line}
    if loc.rendered:
        out["rendered"] = True
        if loc.via:
            out["via"] = loc.via
    return out


class _Items:
    """A list to write item by item (`_json_chunks`), made when it is written: a report of 60,000 findings is never
    held as one tree of dicts nor as one string."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


_STRING = json.encoder.encode_basestring_ascii   # json.dumps' own (C) string encoder


class _Unusual(Exception):
    """A value `_item_json` leaves to json.dumps."""


def _item_json(value: Any, pad: str) -> str:
    """``json.dumps(value, indent=2)`` for what reports hold (dicts with string keys, lists, strings, ints, bools,
    None), with every line after the first prefixed by ``pad``; json.dumps' indenting encoder is pure Python
    and was a tenth of `mlguard check`'s time. Anything else raises _Unusual."""
    cls = value.__class__
    if cls is str:
        return _STRING(value)
    if cls is dict:
        if not value:
            return "{}"
        inner = pad + "  "
        parts = []
        for k, v in value.items():
            if k.__class__ is not str:
                raise _Unusual
            parts.append(_STRING(k) + ": " + _item_json(v, inner))
        return "{" + inner + ("," + inner).join(parts) + pad + "}"
    if cls is list:
        if not value:
            return "[]"
        inner = pad + "  "
        return "[" + inner + ("," + inner).join(_item_json(v, inner) for v in value) + pad + "]"
    if cls is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise _Unusual


def _dumps(value: Any, pad: str) -> str:
    try:
        return _item_json(value, pad)
    except _Unusual:
        return json.dumps(value, indent=2).replace("\n", pad)


def _json_chunks(value: Any, level: int = 0) -> Iterator[str]:
    """``json.dumps(value, indent=2)``, the same text, in pieces: one per item of an `_Items`."""
    pad = "\n" + "  " * (level + 1)
    if isinstance(value, _Items):
        first = True
        for item in value.items:
            yield ("[" if first else ",") + pad + _dumps(item, pad)
            first = False
        yield "[]" if first else "\n" + "  " * level + "]"
    elif isinstance(value, dict) and value and all(k.__class__ is str for k in value):
        first = True
        for key, item in value.items():
            yield ("{" if first else ",") + pad + json.dumps(key) + ": "
            first = False
            yield from _json_chunks(item, level + 1)
        yield "\n" + "  " * level + "}"
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield ("[" if i == 0 else ",") + pad
            yield from _json_chunks(item, level + 1)
        yield "\n" + "  " * level + "]"
    else:
        yield _dumps(value, "\n" + "  " * level)


def _json_violations(result: CheckResult) -> Iterator[dict[str, Any]]:
    for v, loc in _sorted(result):
        item = v.to_json()
        item["source"] = _source(loc)
        yield item


def _json_notes(result: CheckResult) -> Iterator[dict[str, Any]]:
    for n in result.report.notes:
        item = n.to_json()
        where = result.note_locations.get(id(n))
        if where:
            item["source"] = _source(where)
        yield item


def json_chunks(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> Iterator[str]:
    data = {"violations": _Items(_json_violations(result)), "notes": _Items(_json_notes(result)),
            "summary": result.report.summary(),
            "inputs": [{"source": i.source, "line": i.line, "message": i.message} for i in result.inputs],
            "failed": _verdict(result, fail_on)}
    yield from _json_chunks(data)
    yield "\n"


def render_json(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> str:
    return "".join(json_chunks(result, policyset, fail_on))


def _rule(policy_id: str, policyset: PolicySet) -> dict[str, Any]:
    policies = all_policies()
    meta = policies[policy_id].metadata() if policy_id in policies else {
        "title": policy_id, "description": "", "runbook": "", "severity": "high", "version": ""}
    rule: dict[str, Any] = {
        "id": policy_id,
        "name": policy_id,
        "shortDescription": {"text": meta["title"]},
        "fullDescription": {"text": meta["description"] or meta["title"]},
        "properties": {"severity": meta["severity"], "tags": ["kubernetes", "gpu", "mlguard"]},
    }
    if meta["runbook"]:
        rule["helpUri"] = policyset.runbook_url(meta["runbook"])
        rule["help"] = {"text": f"Runbook: {rule['helpUri']}"}
    if meta.get("version"):
        rule["properties"]["version"] = meta["version"]
    return rule


def _artifact(loc: Location) -> dict[str, Any] | None:
    if loc.file.startswith("<"):  # <stdin>: no artifact to point at
        return None
    if Path(loc.file).is_absolute():
        return {"uri": Path(loc.file).as_uri()}
    return {"uri": quote(loc.file), "uriBaseId": SRCROOT}


def _sarif_results(pairs: list[tuple[Violation, Location]], rule_ids: list[str]) -> Iterator[dict[str, Any]]:
    index = {rule: i for i, rule in enumerate(rule_ids)}
    for v, loc in pairs:
        location: dict[str, Any] = {
            "logicalLocations": [{"fullyQualifiedName": f"{v.resource}#{v.path}", "kind": "resource"}]}
        artifact = _artifact(loc)
        if artifact is not None:
            location["physicalLocation"] = {"artifactLocation": artifact, "region": {"startLine": loc.line}}
        text = f"{v.resource}: {v.path}: {v.message} (runbook: {v.runbook})"
        if loc.rendered:
            text += f" [rendered by kustomize{': ' + loc.via if loc.via else ''}]"
        yield {
            "ruleId": v.policy,
            "ruleIndex": index[v.policy],
            "level": LEVELS[v.action],
            "message": {"text": text},
            "locations": [location],
            "partialFingerprints": {"mlguard/v1": f"{v.policy}|{v.resource}|{v.path}"},
            "properties": {"action": v.action, "resource": v.resource.to_json(), "path": v.path,
                           "rendered": loc.rendered},
        }


def sarif_chunks(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> Iterator[str]:
    pairs = _sorted(result)
    rule_ids = sorted({v.policy for v, _ in pairs})
    notifications = [{"level": "note", "message": {"text": str(i)}} for i in result.inputs]
    notifications += [{"level": "error", "message": {"text": str(e)}} for e in result.errors]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "mlguard", "informationUri": "https://github.com/mlguard/mlguard",
                            "version": mlguard_version(), "rules": [_rule(r, policyset) for r in rule_ids]}},
        "originalUriBaseIds": {SRCROOT: {"uri": result.root.as_uri() + "/"}},
        "invocations": [{"executionSuccessful": not result.errors,
                         "toolExecutionNotifications": notifications}],
        "results": _Items(_sarif_results(pairs, rule_ids)),
    }
    sarif = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
    yield from _json_chunks(sarif)
    yield "\n"


def render_sarif(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> str:
    return "".join(sarif_chunks(result, policyset, fail_on))


def render_junit(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> str:
    failing = ("deny",) if fail_on == "deny" else ("deny", "warn")
    by_resource: dict[Resource, list[tuple[Violation, Location]]] = {r: [] for r in result.report.resources}
    for v, loc in _sorted(result):
        by_resource.setdefault(v.resource, []).append((v, loc))
    failures = sum(1 for vs in by_resource.values() if any(v.action in failing for v, _ in vs))
    suite = ET.Element("testsuite", name="mlguard check", tests=str(len(by_resource)), failures=str(failures),
                       errors=str(len(result.errors)), skipped="0")
    ET.SubElement(suite, "properties").append(
        ET.Element("property", name="summary", value=json.dumps(result.report.summary())))
    for resource, violations in by_resource.items():
        case = ET.SubElement(suite, "testcase", classname=f"{resource.kind}.{resource.namespace}",
                             name=resource.name)
        if violations:
            case.set("file", violations[0][1].file)
            case.set("line", str(violations[0][1].line))
        bad = [(v, loc) for v, loc in violations if v.action in failing]
        if bad:
            fail = ET.SubElement(case, "failure", message=f"{len(bad)} policy violation(s)", type=f"mlguard.{fail_on}")
            fail.text = "\n".join(f"{loc}: {v.line()}" for v, loc in bad)
        others = [(v, loc) for v, loc in violations if v.action not in failing]
        if others:
            ET.SubElement(case, "system-out").text = "\n".join(f"{v.action}: {loc}: {v.line()}" for v, loc in others)
    if result.inputs:
        ET.SubElement(suite, "system-err").text = "\n".join(str(i) for i in result.inputs)
    suites = ET.Element("testsuites", name="mlguard", tests=suite.get("tests", "0"),
                        failures=suite.get("failures", "0"))
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _escape_data(text: str) -> str:
    # GitHub's workflow commands: % \r \n in data; also : and , in properties
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_chunks(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> Iterator[str]:
    """GitHub Actions workflow commands (`::error file=F,line=L,title=T::message`), one per finding: the
    runner shows each on the pull request's changed line. Deny is an error, warn a warning, audit a notice."""
    command = {"deny": "error", "warn": "warning", "audit": "notice"}
    for v, loc in _sorted(result):
        props = ",".join([f"file={_escape_property(loc.file)}", f"line={loc.line}",
                          f"title={_escape_property(f'mlguard {v.policy} ({v.action})')}"])
        message = f"{v.resource}: {v.path}: {v.message} (runbook: {v.runbook})"
        if loc.rendered:
            message += f" [rendered by kustomize{': ' + loc.via if loc.via else ''}]"
        yield f"::{command[v.action]} {props}::{_escape_data(message)}\n"
    for i in result.inputs:
        yield f"::notice title=mlguard input::{_escape_data(str(i))}\n"
    yield summary_line(result, fail_on) + "\n"


def render_github(result: CheckResult, policyset: PolicySet, fail_on: str = "deny") -> str:
    return "".join(github_chunks(result, policyset, fail_on))


Renderer = Callable[[CheckResult, PolicySet, str], str]
RENDERERS: dict[str, Renderer] = {"text": render_text, "json": render_json, "sarif": render_sarif,
                                  "junit": render_junit, "github": render_github}
# the same reports in pieces, for writing a large one without holding it whole (`mlguard check -o FILE`)
Chunks = Callable[[CheckResult, PolicySet, str], Iterable[str]]
CHUNKS: dict[str, Chunks] = {"text": text_chunks, "json": json_chunks, "sarif": sarif_chunks,
                             "junit": lambda *args: [render_junit(*args)], "github": github_chunks}
