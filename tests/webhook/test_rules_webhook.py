"""Team rules (spec.rules) through the running webhook (gunicorn, TLS): the example rules deny and allow as
`mlguard check` does, in the same words; a PolicySet whose rule does not compile is refused with the rule id
and the position, and the webhook keeps serving the last good set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from webhook_testlib import REPO, WebhookServer, review

from policies.manifests import load_paths

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "policies/catalog/examples"
SAMPLES = sorted(p for p in EXAMPLES.glob("*/*.yaml") if not p.name.endswith(".mlguard-test.yaml"))


@pytest.fixture(scope="module")
def server(tls, tmp_path_factory):
    work = tmp_path_factory.mktemp("rules")
    policyset = work / "policyset.yaml"
    shutil.copy(EXAMPLES / "gpu-rules.yaml", policyset)
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset)
    try:
        srv.wait("/readyz")
        yield srv, policyset
    finally:
        srv.stop()


def cli_denials(policyset, files) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", "--policyset",
                           str(policyset), *map(str, files)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr  # the denied samples deny
    out: dict[str, list[str]] = {}
    for v in json.loads(proc.stdout)["violations"]:
        assert v["action"] == "deny"
        r = v["resource"]
        out.setdefault(f"{r['kind']}/{r['namespace']}/{r['name']}", []).append(
            f"{v['policy']}: {v['path']}: {v['message']} ({v['runbook']})")
    return out


def test_example_rules_deny_and_allow_in_the_webhook_with_the_words_of_mlguard_check(server, tmp_path) -> None:
    srv, policyset = server
    copies = []  # out of policies/catalog, whose kustomization does not read them (check would skip them)
    for path in SAMPLES:
        copies.append(tmp_path / f"{path.parent.name}-{path.name}")
        shutil.copy(path, copies[-1])
    cli = cli_denials(policyset, copies)
    seen: dict[str, set[str]] = {}
    allowed = 0
    for item in load_paths([str(p) for p in SAMPLES]):
        obj = item.obj
        key = f"{obj['kind']}/{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        answer = srv.admit("/validate", review(obj, namespace=obj["metadata"]["namespace"]))
        lines = sorted(answer["status"]["message"].splitlines()) if not answer["allowed"] else []
        allowed += answer["allowed"]
        assert lines == sorted(cli.get(key, [])), key
        for line in lines:
            seen.setdefault(line.split(":", 1)[0], set()).add(key)
    # every rule denied something here, and every denied sample file was denied
    assert set(seen) == {"team-max-gpus", "vllm-tensor-parallel", "h100-prod-only"}, seen
    assert "Pod/dev-alice/h100-notebook" in seen["h100-prod-only"]
    assert "Deployment/inference/llama-8b" in seen["vllm-tensor-parallel"]
    assert "Job/scratch/finetune" in seen["team-max-gpus"]  # no team label on the namespace: the default ceiling
    assert allowed >= 8, allowed  # and the allowed samples are admitted (team ceilings need namespace labels,
    # which this webhook without a cluster does not have: the 8-GPU inference pods are denied in both places)


def test_a_broken_rule_is_refused_with_its_id_and_position_and_the_last_good_set_keeps_serving(server) -> None:
    srv, policyset = server
    denied = next(i.obj for i in load_paths([str(EXAMPLES / "h100-prod-only/denied.yaml")])
                  if i.obj["metadata"]["name"] == "h100-notebook")
    before = srv.admit("/validate", review(denied, namespace="dev-alice"))
    assert before["allowed"] is False and "h100-prod-only" in before["status"]["message"]
    good = policyset.read_text()
    doc = yaml.safe_load(good)
    doc["spec"]["rules"][2]["validations"][0]["expression"] = "request.namespace.matchez(params.namespacePattern)"
    policyset.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        end = time.monotonic() + 20
        refused: dict = {}
        while time.monotonic() < end and not refused:
            refused = srv.session.get(srv.url + "/readyz", timeout=5).json().get("refused") or {}
            time.sleep(0.2)
        errors = refused.get("errors") or []
        assert any(e.startswith("spec.rules[2].validations[0].expression (line ") and "rule h100-prod-only:" in e
                   and "'matchez'" in e and "column" in e for e in errors), errors
        after = srv.admit("/validate", review(denied, namespace="dev-alice"))
        assert after["allowed"] is False and after["status"]["message"] == before["status"]["message"]
    finally:
        policyset.write_text(good)
    end = time.monotonic() + 20
    while time.monotonic() < end and srv.session.get(srv.url + "/readyz", timeout=5).json().get("refused"):
        time.sleep(0.2)
    assert not srv.session.get(srv.url + "/readyz", timeout=5).json().get("refused")
