"""`mlguard check` reads a file a document at a time and keeps each object compactly until it is judged: what
it reports must be what judging the whole set at once reports, placed on the same lines, with the cross-object
arithmetic (gpu-quota's look-ahead) seeing objects from before and after each one."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from policies.check import CheckOptions, run_check
from policies.cli import main
from policies.context import ManifestFacts
from policies.engine import evaluate
from policies.output import RENDERERS, _Items, _json_chunks
from policies.policyset import default_policyset_path, load_policyset

POLICYSET = load_policyset(default_policyset_path())


def deployment(i: int, gpus: int, ns: str = "team-a", replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"d{i}", "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": f"d{i}"}},
                     "template": {"metadata": {"labels": {"app": f"d{i}"}}, "spec": {"containers": [
                         {"name": "s", "image": f"registry.example.com/m{i}:1",
                          "resources": {"limits": {"nvidia.com/gpu": gpus}} if gpus else {}}]}}}}


def quota(ns: str, gpus: int) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpu", "namespace": ns},
            "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus)}}}


def check(tmp_path: Path, *texts: str) -> tuple[object, list[Path]]:
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"f{i}.yaml"
        path.write_bytes(text.encode())
        paths.append(path)
    return run_check([str(p) for p in paths], CheckOptions(policyset=POLICYSET, root=tmp_path)), paths


def keys(violations) -> set[tuple]:
    return {(v.policy, str(v.resource), v.path, v.message, v.action) for v in violations}


def test_the_same_findings_as_judging_the_whole_set_at_once(tmp_path: Path) -> None:
    objects = [deployment(i, gpus=i % 3, ns=f"team-{i % 4}", replicas=1 + i % 2) for i in range(300)]
    objects += [quota(f"team-{n}", 40) for n in range(4)]
    result, _ = check(tmp_path, yaml.safe_dump_all(objects, sort_keys=False))
    whole = evaluate(objects, POLICYSET, point="ci", facts=ManifestFacts(objects, workloads=POLICYSET.workloads))
    assert keys(result.report.violations) == keys(whole.violations)
    assert any(v.policy == "gpu-quota" for v in whole.violations)   # the look-ahead had something to say


def test_quota_look_ahead_counts_objects_before_and_after_and_the_quota_last(tmp_path: Path) -> None:
    # the quota is the last document: the first workload is judged knowing the ones after it
    objects = [deployment(0, gpus=4), *[deployment(i, gpus=2) for i in range(1, 50)], quota("team-a", 10)]
    result, _ = check(tmp_path, yaml.safe_dump_all(objects, sort_keys=False))
    over = {str(v.resource): v.message for v in result.report.violations if v.policy == "gpu-quota"}
    assert "other workloads in `team-a` use 98" in over["Deployment/team-a/d0"]     # 49 x 2 after it
    assert "other workloads in `team-a` use 100" in over["Deployment/team-a/d49"]   # 4 + 48 x 2 before it
    # its own need at full size: 1 pod + 1 surge pod, 4 GPUs each
    assert Decimal(8) == next(v.amount for v in result.report.violations if str(v.resource) == "Deployment/team-a/d0"
                              and v.policy == "gpu-quota")


@pytest.mark.parametrize("flavour", ["ascii", "utf-8", "crlf"])
def test_a_finding_late_in_a_long_stream_is_on_its_field_line(tmp_path: Path, flavour: str) -> None:
    objects = [deployment(i, gpus=0) for i in range(400)] + [deployment(400, gpus=1)]
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if flavour == "utf-8":
        text = "# modèle: données\n" + text.replace("registry.example.com/m1:1", "registry.example.com/m1:1 # é")
    if flavour == "crlf":
        text = text.replace("\n", "\r\n")
    result, [path] = check(tmp_path, text)
    lines = path.read_bytes().decode().splitlines()
    last_doc = max(i for i, line in enumerate(lines) if line.strip() == "name: d400")
    found = {f.violation.path: f.location for f in result.findings
             if str(f.violation.resource) == "Deployment/team-a/d400"}
    where = {"spec.template.spec.containers[0].resources": "resources:", "spec.replicas": "replicas: 1"}
    for path_in_object, line in where.items():
        assert found[path_in_object].file == "f0.yaml"
        assert lines[found[path_in_object].line - 1].strip() == line and found[path_in_object].line > last_doc


def test_a_file_that_fails_to_parse_late_contributes_nothing(tmp_path: Path) -> None:
    good = yaml.safe_dump_all([deployment(1, gpus=1), quota("team-a", 1)], sort_keys=False)
    broken = yaml.safe_dump_all([deployment(i, gpus=1) for i in range(2, 30)], sort_keys=False) + "---\na: [b\n"
    result, _ = check(tmp_path, good, broken)
    assert [e.source for e in result.errors] == ["f1.yaml"]
    assert {str(r) for r in result.report.resources} == {"Deployment/team-a/d1", "ResourceQuota/team-a/gpu"}
    [over] = [v.message for v in result.report.violations if v.policy == "gpu-quota"]
    assert "other workloads in `team-a` use 0," in over   # none of the broken file's 28 GPU workloads


def test_an_object_marshal_cannot_hold_is_judged_too(tmp_path: Path) -> None:
    text = yaml.safe_dump(deployment(1, gpus=1), sort_keys=False).replace(
        "\nmetadata:\n", "\nmetadata:\n  creationTimestamp: 2024-01-01T00:00:00Z\n", 1)
    assert "datetime" in repr(yaml.safe_load(text))
    result, _ = check(tmp_path, text, text)
    assert [str(r) for r in result.report.resources] == ["Deployment/team-a/d1"]   # the second copy: once
    assert result.findings and not result.inputs


def test_the_same_object_written_in_another_key_order_is_one_object(tmp_path: Path) -> None:
    obj = deployment(1, gpus=1)
    reordered = {"kind": obj["kind"], "metadata": obj["metadata"], "apiVersion": obj["apiVersion"], "spec": obj["spec"]}
    changed = deployment(1, gpus=2)
    result, _ = check(tmp_path, yaml.safe_dump(obj, sort_keys=False), yaml.safe_dump(reordered, sort_keys=False))
    assert len(result.report.resources) == 1 and not result.inputs
    result, _ = check(tmp_path, yaml.safe_dump(obj, sort_keys=False), yaml.safe_dump(changed, sort_keys=False))
    assert len(result.report.resources) == 2
    assert [n.kind for n in result.inputs] == ["conflict"] and "f0.yaml:1" in result.inputs[0].message


@pytest.mark.parametrize("data", [
    {}, [], {"a": []}, {"a": {}}, {"a": [1, {"b": [], "c": {"d": "é\n\"x\""}}], "e": None, "f": 1.5, "g": True},
    [[], [{}], {"x": [1, 2]}],
    {"a": [True, False, None, 0, -5, 10**30, "x\u2028\t\\", "ü😀"], "b": {"c": [[], {}]}},
    {1: "an int key"}, {"f": 1.5e300, "n": float("inf")}, {"d": [{"e": 2.0}]},
])
def test_json_in_pieces_is_json_dumps(data) -> None:
    assert "".join(_json_chunks(data)) == json.dumps(data, indent=2)
    wrapped = {"items": _Items(iter([data, data])), "rest": [data]}
    assert "".join(_json_chunks(wrapped)) == json.dumps({"items": [data, data], "rest": [data]}, indent=2)


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_the_report_written_in_pieces_is_the_rendered_one(tmp_path: Path, fmt: str) -> None:
    objects = [deployment(i, gpus=i % 3) for i in range(20)] + [quota("team-a", 3)]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    out = tmp_path / f"out.{fmt}"
    code = main(["check", "--format", fmt, "-o", str(out), str(tmp_path / "m.yaml")])
    result = run_check([str(tmp_path / "m.yaml")], CheckOptions(policyset=POLICYSET))
    assert code == 1 and out.read_text() == RENDERERS[fmt](result, POLICYSET, "deny")
