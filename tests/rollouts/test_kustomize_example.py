"""The canary-rollout example renders with kubectl kustomize and validates against the Argo Rollouts CRDs."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rollouts.checks import check_names
from rollouts.flagger import STATUS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "kustomize/examples/canary-rollout"
CRDS = Path("/work/shared/schemas/crds/argo-rollouts")
CRD_FILES = {"Rollout": "rollout-crd.yaml", "AnalysisTemplate": "analysis-template-crd.yaml"}


def render(path: Path) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is required to render the kustomize example")
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(strict(crd_schema(kind)))


def crd_schema(kind: str) -> dict:
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def strict(schema: dict) -> dict:
    """additionalProperties: false on every object with properties (the API server prunes unknown fields)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(EXAMPLE)


def test_every_object_validates(objects):
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("AnalysisTemplate") == 5 and kinds.count("Rollout") == 1
    assert kinds.count("Service") == 3 and kinds.count("PodMonitor") == 1
    for obj in [*objects, *render(EXAMPLE / "job")]:
        if obj["kind"] in CRD_FILES:
            validator = crd_validator(obj["kind"])
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
            assert not errors, (obj["kind"], obj["metadata"]["name"], errors)
        elif obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # against its CRD in tests/kustomize/test_render.py
        else:
            kubernetes_validate.validate(obj, "1.33", strict=True)


def test_a_wrong_field_is_caught_by_the_validation():
    bad = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "x"},
           "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x", "jsonpath": "{$.verdict}"}}}]}}
    assert list(crd_validator("AnalysisTemplate").iter_errors(bad))


def test_templates_follow_the_contract(objects):
    templates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "AnalysisTemplate"}
    assert {n.removeprefix("mlguard-") for n in templates} == set(check_names())
    for name, tpl in templates.items():
        args = {a["name"]: a.get("value") for a in tpl["spec"]["args"]}
        assert {"stable-hash", "canary-hash"} <= set(args) and args["mode"] == "anytime"
        (metric,) = tpl["spec"]["metrics"]
        assert metric["successCondition"] == 'result == "pass"'
        assert metric["failureCondition"] == 'result == "fail"'
        assert "failureLimit" in metric and "consecutiveErrorLimit" in metric
        web = metric["provider"]["web"]
        assert web["jsonPath"] == "{$.verdict}" and web["timeoutSeconds"] < 10
        url = urlsplit(web["url"])
        assert url.netloc == "mlguard-analysis.mlguard-system.svc"
        assert url.path == f"/v1/analyses/{name.removeprefix('mlguard-')}"
        query = parse_qs(url.query)
        assert query["mode"] == ["{{args.mode}}"] and query["caller"] == ["argo"]
        used = set(re.findall(r"\{\{args\.([a-z-]+)\}\}", web["url"]))
        assert used <= set(args), (name, used - set(args))


def test_rollout_uses_templates_as_background_and_step_analysis(objects):
    (rollout,) = [o for o in objects if o["kind"] == "Rollout"]
    canary = rollout["spec"]["strategy"]["canary"]
    background = {t["templateName"] for t in canary["analysis"]["templates"]}
    steps = {t["templateName"] for s in canary["steps"] if "analysis" in s for t in s["analysis"]["templates"]}
    assert background == {"mlguard-latency", "mlguard-error-rate"}
    assert steps == {"mlguard-input-drift", "mlguard-output-drift", "mlguard-eval-score"}
    hashes = {a["name"]: a["valueFrom"]["podTemplateHashValue"] for a in canary["analysis"]["args"]
              if "podTemplateHashValue" in a.get("valueFrom", {})}
    assert hashes == {"stable-hash": "Stable", "canary-hash": "Latest"}
    pod = rollout["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert {"mlguard.io/model", "team", "cost-center"} <= set(labels)
    spec = pod["spec"]
    assert spec["priorityClassName"] == "inference-high"
    assert "nvidia.com/gpu.product" in spec["nodeSelector"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    for c in spec["containers"]:
        assert re.search(r"@sha256:[0-9a-f]{64}$", c["image"])
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert {"readinessProbe", "livenessProbe"} <= set(c)


def test_own_configurations_rewrite_template_names(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(EXAMPLE, overlay)}]\nnamePrefix: team-a-\nimages:\n  - name: vllm/vllm-openai\n"
        "    digest: sha256:" + "ab" * 32 + "\n")
    objs = render(overlay)
    (rollout,) = [o for o in objs if o["kind"] == "Rollout"]
    canary = rollout["spec"]["strategy"]["canary"]
    names = {t["templateName"] for t in canary["analysis"]["templates"]}
    names |= {t["templateName"] for s in canary["steps"] if "analysis" in s for t in s["analysis"]["templates"]}
    templates = {o["metadata"]["name"] for o in objs if o["kind"] == "AnalysisTemplate"}
    assert names == templates and all(n.startswith("team-a-mlguard-") for n in names)
    assert canary["canaryService"] == "team-a-chat-canary" and canary["stableService"] == "team-a-chat-stable"
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"].endswith("ab" * 32)


def test_flagger_example_wires_each_hook_as_flagger_reads_it():
    """Flagger v1.44 pkg/controller/scheduler.go, scheduler_hooks.go: see rollouts/flagger.py."""
    objs = render(EXAMPLE / "flagger")
    (canary,) = [o for o in objs if o["kind"] == "Canary"]
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    assert canary["apiVersion"] == "flagger.app/v1beta1"
    assert canary["spec"]["targetRef"]["name"] == deployment["metadata"]["name"]
    app_label = deployment["spec"]["selector"]["matchLabels"]["app"]
    assert app_label != canary["metadata"]["name"], "the example shows the label value is not the name"
    gates: dict[str, set[str]] = {}
    for hook in canary["spec"]["analysis"]["webhooks"]:
        url = urlsplit(hook["url"])
        check = url.path.removeprefix("/v1/flagger/")
        assert url.path.startswith("/v1/flagger/") and check in check_names()
        meta = hook["metadata"]
        assert all(isinstance(v, str) for v in meta.values())
        assert hook["type"] != "rollback" and meta["hook"] == hook["type"], hook["name"]
        assert hook["type"] in STATUS and int(hook["timeout"].rstrip("s")) < 10
        if check in ("latency", "error-rate"):
            assert hook["type"] != "pre-rollout" and meta["label_value"] == app_label, hook["name"]
        gates.setdefault(check, set()).add(hook["type"])
    # What may roll back (rollout hooks) is also what must pass before promotion.
    for check, types in gates.items():
        if "rollout" in types:
            assert "confirm-promotion" in types, check
    assert STATUS["rollout"]["inconclusive"] == 200 and STATUS["confirm-promotion"]["inconclusive"] > 202


def test_own_configurations_cover_the_documented_rollout_references():
    """Compared with Argo Rollouts' published transform (read from ../shared, not copied)."""
    ours = yaml.safe_load((EXAMPLE / "kustomizeconfig/rollouts.yaml").read_text())
    upstream = yaml.safe_load(
        Path("/work/shared/schemas/kustomize/argo-rollouts/rollout-transform-kustomize-v5.yaml").read_text())

    def refs(doc: dict) -> set[tuple[str, str]]:
        return {(nr["kind"], f["path"]) for nr in doc["nameReference"] for f in nr["fieldSpecs"]
                if f.get("kind") == "Rollout"}

    missing = {r for r in refs(upstream) if r[0] != "Mapping"} - refs(ours)
    assert not missing, sorted(missing)
    labels = {f["path"] for f in ours["commonLabels"] if f["kind"] == "Rollout"}
    assert {"spec/selector/matchLabels", "spec/template/metadata/labels"} <= labels
