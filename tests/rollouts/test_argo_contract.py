"""The canary-rollout example held to Argo Rollouts' rules (argo_model.py, read from argo-rollouts
v1.9.1: utils/analysis/helpers.go, utils/analysis/factory.go, utils/template/template.go,
pkg/apis/rollouts/validation/validation_references.go, metricproviders/webmetric/webmetric.go,
metricproviders/job/job.go), and every URL it makes sent to the provider as deployed."""

from __future__ import annotations

import contextlib
import copy
import http.client
import io
import itertools
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from argo_model import (
    ArgoError,
    analysis_run,
    build_rollout_args,
    effective_count,
    flatten_args,
    merge_args,
    resolve,
    validate_metric,
    validate_references,
    web_phase,
)

from rollouts.__main__ import main as rollouts_main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "kustomize/examples/canary-rollout"
SHIPPED = yaml.safe_load((REPO / "kustomize/base/analysis/config.yaml").read_text())


def render(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def example() -> dict:
    objs = render(EXAMPLE)
    (rollout,) = [o for o in objs if o["kind"] == "Rollout"]
    return {
        "rollout": rollout,
        "templates": {o["metadata"]["name"]: o for o in objs if o["kind"] == "AnalysisTemplate"},
        "services": {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"},
        "job": render(EXAMPLE / "job")[0],
    }


def analyses(rollout: dict) -> list[tuple[str, dict]]:
    canary = rollout["spec"]["strategy"]["canary"]
    groups = [("background", canary["analysis"])]
    groups += [(f"step-{i}", s["analysis"]) for i, s in enumerate(canary["steps"]) if "analysis" in s]
    return groups


# -------------------------------------------------------------------------------------- the model
def test_the_model_refuses_what_argo_refuses(example):
    # The example before issue 13: three step templates giving `store` different values. Argo's
    # flattenArgs refuses it and the Rollout never leaves InvalidSpec; so must the model.
    templates = copy.deepcopy(example["templates"])
    for name, value in (("mlguard-input-drift", "inputs"), ("mlguard-output-drift", "outputs"),
                        ("mlguard-eval-score", "evals")):
        for arg in templates[name]["spec"]["args"]:
            if arg["name"].endswith("-store"):
                arg["name"] = "store"
                assert arg["value"] == value
    with pytest.raises(ArgoError, match="`store` specified multiple times with different values"):
        validate_references(example["rollout"], templates, example["services"])
    # An arg the templates leave open and the Rollout does not give: not resolved.
    with pytest.raises(ArgoError, match=r"args\.stable-hash was not resolved"):
        merge_args([], flatten_args([example["templates"]["mlguard-eval-score"]]))
    # A Service selecting a label the pods do not carry.
    services = copy.deepcopy(example["services"])
    services["chat-canary"]["spec"]["selector"]["app"] = "chat"
    with pytest.raises(ArgoError, match="unmatch label"):
        validate_references(example["rollout"], example["templates"], services)
    # A placeholder no arg fills: the run would end in Error.
    with pytest.raises(ArgoError, match="failed to resolve"):
        resolve("http://x/?a={{args.nope}}", [{"name": "a", "value": "1"}])


def test_the_rollout_passes_reference_validation(example):
    validate_references(example["rollout"], example["templates"], example["services"])


def test_any_combination_of_the_shipped_templates_merges(example):
    """Not only the Rollout's groups: a team may combine any of the templates (and the job one)."""
    every = [*example["templates"].values(), example["job"]]
    for size in range(2, len(every) + 1):
        for combo in itertools.combinations(every, size):
            flatten_args(list(combo))  # raises on a conflict


def test_every_metric_is_valid_and_step_metrics_end(example):
    rollout = example["rollout"]
    background = {r["templateName"] for r in rollout["spec"]["strategy"]["canary"]["analysis"]["templates"]}
    for name, template in [*example["templates"].items(), ("mlguard-error-rate-job", example["job"])]:
        for metric in template["spec"]["metrics"]:
            validate_metric(metric)
            if name in background:
                # runs until the Rollout is promoted: no count; each look at least a minute apart
                assert effective_count(metric) is None and metric["interval"], name
            elif name != "mlguard-error-rate-job":
                assert effective_count(metric) is not None, f"{name}: a step metric must end"


def test_stores_and_presets_named_by_the_examples_exist_in_the_shipped_config(example):
    stores, presets = set(), set()
    for template in example["templates"].values():
        args = {a["name"]: a.get("value") for a in template["spec"]["args"]}
        for metric in template["spec"]["metrics"]:
            query = dict(parse_qsl(urlsplit(metric["provider"]["web"]["url"]).query))
            for key, placeholder in (("store", stores), ("preset", presets)):
                if key in query:
                    placeholder.add(resolve(query[key], [{"name": k, "value": v or "x"} for k, v in args.items()]))
    flagger = next(o for o in render(EXAMPLE / "flagger") if o["kind"] == "Canary")
    stores |= {h["metadata"]["store"] for h in flagger["spec"]["analysis"]["webhooks"] if "store" in h["metadata"]}
    assert stores == {"inputs", "outputs", "evals"}
    assert stores <= set(SHIPPED["sampleStores"]), stores - set(SHIPPED["sampleStores"])
    assert presets == {"vllm"} and SHIPPED["prometheus"]["preset"] == "vllm"


def test_job_template_is_what_argo_can_read(example):
    """metricproviders/job/job.go reads only Complete/Failed: one attempt, no conditions."""
    (metric,) = example["job"]["spec"]["metrics"]
    spec = metric["provider"]["job"]["spec"]
    assert spec["backoffLimit"] == 0, "a retry that exits 0 would turn a failed check into a pass"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "check", "operator": "In",
                                                            "values": [1, 2, 3]}}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    assert "successCondition" not in metric and "failureCondition" not in metric  # the job provider has none


# ------------------------------------------------------------------ every URL, sent to the provider
def raw_get(base: str, url: str) -> tuple[int, dict]:
    """Send a resolved web-metric URL as Go's http client would: the path and query as they are."""
    parts = urlsplit(url)
    target = urlsplit(base)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=15)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}", headers={"User-Agent": "argo-rollouts/v1.9.1"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


pytestmark = pytest.mark.integration


def test_every_web_url_is_accepted_by_the_provider_as_deployed(example, shipped_server, lib):
    """Each metric of each analysis, resolved with the Rollout's args for the healthy canary, sent to
    the provider started with kustomize/base/analysis/config.yaml: never a 4xx, and a pass."""
    rollout, hashes = example["rollout"], {"stable_hash": lib.ARGO_STABLE, "canary_hash": lib.ARGO_CANARIES["healthy"]}
    seen = set()
    for name, analysis in analyses(rollout):
        run, args = analysis_run(rollout, analysis, example["templates"], name=name, started=0, **hashes)
        assert {a["name"] for a in args} >= {"stable-hash", "canary-hash", "mode"}
        for metric in run.metrics:
            url = metric["provider"]["web"]["url"]
            assert "{{" not in url and urlsplit(url).netloc == "mlguard-analysis.mlguard-system.svc"
            status, body = raw_get(shipped_server.url, url)
            assert status == 200, (metric["name"], status, body)
            assert web_phase(status, body, metric) == "Successful", (metric["name"], body["reason"])
            seen.add(metric["name"])
    assert seen == {"latency", "error-rate", "input-drift", "output-drift", "eval-score"}


def test_namespace_comes_from_the_rollout(example, lib):
    args = build_rollout_args(example["rollout"]["spec"]["strategy"]["canary"]["analysis"]["args"],
                              stable_hash="s", canary_hash="c", rollout={"metadata": {"namespace": lib.NAMESPACE}})
    assert {"name": "namespace", "value": lib.NAMESPACE} in args


def test_job_mode_exit_codes_as_argo_sees_them(example, prometheus, lib):
    """The job example's container, resolved with the Rollout's args and run here: exit 0 (Complete,
    Successful) for the healthy canary, non-zero (Failed) for the regressed one and when
    Prometheus is down: the job provider cannot tell a fail from an error."""
    (metric,) = example["job"]["spec"]["metrics"]
    rollout = example["rollout"]
    background = rollout["spec"]["strategy"]["canary"]["analysis"]

    def run_job(canary_hash: str, prometheus_url: str) -> int:
        incoming = build_rollout_args(background["args"], stable_hash=lib.ARGO_STABLE, canary_hash=canary_hash,
                                      rollout={"metadata": {"namespace": lib.NAMESPACE}})
        args = merge_args(incoming, flatten_args([example["job"]]))
        container = metric["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]
        argv = [resolve(a, args) for a in container["command"] + container["args"]]
        assert argv[:3] == ["python", "-m", "rollouts"]  # `python -m rollouts` is rollouts.__main__.main
        argv = [f"--prometheus={prometheus_url}" if a.startswith("--prometheus=") else a for a in argv[3:]]
        with contextlib.redirect_stdout(io.StringIO()):
            return rollouts_main(argv)

    def job_phase(code: int) -> str:  # job.go: Complete (exit 0, backoffLimit 0) or Failed
        return "Successful" if code == 0 else "Failed"

    assert job_phase(run_job(lib.ARGO_CANARIES["healthy"], prometheus.url)) == "Successful"
    assert job_phase(run_job(lib.ARGO_CANARIES["error-regression"], prometheus.url)) == "Failed"
    down = run_job(lib.ARGO_CANARIES["healthy"], f"http://127.0.0.1:{lib.free_port()}")
    assert down == 3 and job_phase(down) == "Failed"


def test_url_values_pass_through_unescaped(example):
    # Argo puts values into the URL verbatim: a model name with characters a query string would
    # read differently ('&', '+', '#', ' ') must not reach a template. The provider's label-value
    # pattern admits '+', which Flask would read as a space: the example's value has none.
    model = next(a["value"] for a in example["rollout"]["spec"]["strategy"]["canary"]["analysis"]["args"]
                 if a["name"] == "model")
    assert re.fullmatch(r"[A-Za-z0-9._/-]+", model)
