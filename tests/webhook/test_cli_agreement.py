"""One evaluation path: `mlguard check` and the running webhook (gunicorn, TLS) give the same verdict,
in the same words, for the same manifests — every sample of the policies whose verdict depends only
on the object itself (eval-gate included, with its signed attestations).

Policies that consult cluster facts (gpu-quota, gpu-isolation's ConfigMap lookups, canary-required's
workloadRef) are left out on purpose: in CI the facts come from the manifest set, at admission from
the live cluster, so their inputs differ by design.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from webhook_testlib import REPO, WebhookServer, review

from policies.manifests import load_paths
from policies.owners import controller_ref
from policies.workload import pod_templates

pytestmark = pytest.mark.integration

LIBRARY = REPO / "policies/library"
OBJECT_ONLY = ["gpu-limits", "gpu-resource-names", "gpu-companion-resources", "gpu-tolerations",
               "gpu-node-selection", "gpu-priority-class", "serving-probes", "image-digest", "gpu-job-deadline",
               "cost-labels", "eval-gate"]


def agreement_policyset(path: Path) -> None:
    strict = yaml.safe_load((REPO / "policies/catalog/strict.yaml").read_text())
    suite = yaml.safe_load((LIBRARY / "eval_gate/tests/suite.yaml").read_text())
    spec = strict["spec"]
    spec["evalKeys"] = suite["policyset"]["evalKeys"]  # the TEST-ONLY keys the samples are signed with
    spec["environments"]["namespaces"] = {"dev": ["*-dev"], "staging": ["*-staging"], "prod": ["*-prod"]}
    spec["mutations"] = {"tolerations": False}  # the webhook validates what it is sent; no mutation first
    spec["policies"] = {k: v for k, v in spec["policies"].items() if k in OBJECT_ONLY}
    spec["policyCount"] = len(spec["policies"])
    for config in spec["policies"].values():
        config.pop("onlyNewViolations", None)
    path.write_text(yaml.safe_dump(strict))


NOW = re.compile(r"\(now [0-9TZ:-]+")  # eval-gate names the moment of checking: "(now T)", "(now T, ..."


def same_words(lines: list[str]) -> list[str]:
    return sorted(NOW.sub("(now", line) for line in lines)


# objects another object's verdict may depend on: in the manifest set offline, from the cluster at admission
RESOLVED = ("workloadRef", "resourceClaim", "kind: ServingRuntime", "kind: ClusterServingRuntime",
            "kind: TrainingRuntime", "kind: ClusterTrainingRuntime", "kind: WorkflowTemplate",
            "kind: ClusterWorkflowTemplate", "kind: Node")


def samples() -> list[Path]:
    """Every sample file (the per-kind ones under tests/kinds too), but those whose verdict needs other
    objects: a Rollout's workloadRef Deployment, a DRA ResourceClaim(Template), an InferenceService's
    ServingRuntime, a TrainJob's runtime, the Node a nodeName names are in the manifest set offline and
    come from the cluster at admission (facts, like quotas; the webhook's caches are tested on their own)."""
    files = [*LIBRARY.glob("*/tests/*.yaml"), *LIBRARY.glob("*/tests/kinds/*.yaml")]
    return sorted(p for p in files if p.name != "suite.yaml" and not any(r in p.read_text() for r in RESOLVED))


@pytest.fixture(scope="module")
def agreement(tls, tmp_path_factory):
    work = tmp_path_factory.mktemp("agreement")
    policyset = work / "policyset.yaml"
    agreement_policyset(policyset)
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset)
    try:
        srv.wait("/readyz")
        yield srv, policyset
    finally:
        srv.stop()


def test_check_and_webhook_agree_on_every_sample(agreement) -> None:
    server, policyset = agreement
    files = samples()
    proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--format", "json", "--policyset",
                           str(policyset), *map(str, files)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    cli: dict[str, list[str]] = {}
    for v in json.loads(proc.stdout)["violations"]:
        if v["action"] == "deny":
            r = v["resource"]
            cli.setdefault(f"{r['kind']}/{r['namespace']}/{r['name']}", []).append(
                f"{v['policy']}: {v['path']}: {v['message']} ({v['runbook']})")
    located = load_paths([str(f) for f in files])
    keys = [f"{i.obj['kind']}/{i.obj['metadata'].get('namespace', 'default')}/{i.obj['metadata']['name']}"
            for i in located]
    compared = denied = 0
    for item, key in zip(located, keys, strict=True):
        obj = item.obj
        if not pod_templates(obj):  # every kind with a pod template, the generically found ones too
            continue
        meta = obj["metadata"]
        if keys.count(key) > 1:  # the same name in two sample files: the CLI report merges them
            continue
        if controller_ref(obj) is not None:
            # a controller reference is believed on facts, like a quota: offline when the owner is in the checked
            # set, at admission from the controller's identity or the cache (tests/webhook/
            # test_no_self_granted_exemptions.py and tests/policies judge both sides)
            continue
        answer = server.admit("/validate", review(obj, namespace=meta.get("namespace", "default")))
        webhook_lines = same_words(answer["status"]["message"].splitlines()) if not answer["allowed"] else []
        assert webhook_lines == same_words(cli.get(key, [])), f"{key} ({item.source}) differs"
        compared += 1
        denied += bool(webhook_lines)
    assert compared > 100 and denied > 50, (compared, denied)
