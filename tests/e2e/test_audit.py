"""`mlguard audit` against the real API server: workloads created before the webhook was registered are
found; OpenReports are created, updated when a workload is fixed, and removed when the namespace is clean;
they validate against the OpenReports CRD (installed as shipped: apiextensions.k8s.io/v1, which 1.20 serves).

The audit runs as its own ServiceAccount with the ClusterRoles of kustomize/components/audit (read-only
on workloads; write on openreports.io only), with a page size of 2 so that every list is paged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SHARED_CRDS, Env, eventually, install
from e2e_cluster import REPO, WEBHOOK_NAMESPACE, free_port, objects_of
from e2e_kubectl import TRANSCRIPT
from e2e_objects import container, deployment, pod_template, rollout
from prometheus_client.parser import text_string_to_metric_families
from test_admission import DENIED
from test_operations import register

sys.path.insert(0, str(REPO / "tests" / "kustomize"))
from kustomize_testlib import CrdSchemas, validate_custom

OPENREPORTS = SHARED_CRDS / "openreports"
AUDIT_USER = f"system:serviceaccount:{WEBHOOK_NAMESPACE}:mlguard-audit"


def component_objects(tmp: Path) -> list[dict[str, Any]]:
    """kustomize/components/audit as an overlay would include it."""
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": WEBHOOK_NAMESPACE,
        "components": [os.path.relpath(REPO / "kustomize" / "components" / "audit", tmp)]}))
    proc = subprocess.run(["kubectl", "kustomize", str(tmp)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def auditor(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OpenReports CRDs and the audit's RBAC installed; the audit ServiceAccount's kubeconfig."""
    for path in sorted(OPENREPORTS.glob("*.yaml")):
        result = env.admin.run("apply", "--server-side", "-f", str(path))
        assert result.ok, result.output
    for name in ("reports.openreports.io", "clusterreports.openreports.io"):
        eventually(lambda n=name: env.admin.run("get", "crd", n, "-o",
                                                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                                                quiet=True).stdout == "True", what=f"CRD {name} established")
    rbac = objects_of(component_objects(tmp_path_factory.mktemp("audit-component")), "ClusterRole",
                      "ClusterRoleBinding")
    install(env.admin, rbac, "install the audit's RBAC (kustomize/components/audit/rbac.yaml)")
    return env.cp.kubeconfig(env.cp.pki.client(AUDIT_USER, "system:serviceaccounts"))


def audit(env: Env, kubeconfig: Path, *args: str) -> Any:
    return env.mlguard("audit", "--kubeconfig", str(kubeconfig), "--page-size", "2", *args)


def sneaky(name: str, ns: str) -> dict[str, Any]:
    """No GPU request, but NVIDIA_VISIBLE_DEVICES=all: GPUs other pods were given (gpu-isolation denies)."""
    return deployment(name, ns, template=pod_template(name, container(name, gpus=None,
                                                                      env={"NVIDIA_VISIBLE_DEVICES": "all"})))


def web(ns: str) -> dict[str, Any]:
    """A CPU Deployment: every policy passes."""
    return deployment("web", ns, template=pod_template("web", container("web", gpus=None)))


@contextmanager
def unguarded(env: Env) -> Iterator[None]:
    """The webhook configurations removed for the block's duration, then registered again (overlays/prod)."""
    removed = env.admin.run("delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "mlguard")
    assert removed.ok, removed.output
    TRANSCRIPT.note("webhook configurations deleted: the API server admits without mlguard")
    try:
        yield
    finally:
        register(env, "overlays/prod")
        TRANSCRIPT.note("webhook configurations registered again (overlays/prod)")


def create_unguarded(env: Env, obj: dict[str, Any]) -> None:
    """Create ``obj`` while no webhook is registered (retried until the API server's own view of the
    webhook configurations has followed the delete)."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    eventually(lambda: env.alice.apply(obj).ok, what=f"{name} admitted without mlguard")


def results_of(report: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """(policy, kind, name) -> result."""
    return {(r["policy"], r["resources"][0]["kind"], r["resources"][0]["name"]): r["result"]
            for r in report.get("results") or []}


def validate(report: dict[str, Any]) -> None:
    """The stored Report against the OpenReports CRD's schema (strict: an unknown field is an error); the
    metadata the API server adds (uid, resourceVersion, managedFields, ...) is not the audit's."""
    meta = {k: v for k, v in report["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
    validate_custom({**report, "metadata": meta}, CrdSchemas(OPENREPORTS))


def reports(env: Env, ns: str) -> list[dict[str, Any]]:
    """mlguard's Reports in ``ns`` as kubectl shows them (with managedFields: who wrote what)."""
    return env.admin.items("reports.openreports.io", ns, "--show-managed-fields")


def test_audit_finds_and_reports_what_predates_the_webhook(env: Env, ns: str, auditor: Path) -> None:
    with unguarded(env):
        for obj in (sneaky("tool", ns), rollout("llm", ns, template=pod_template("llm", container(requests_only=True))),
                    web(ns)):
            create_unguarded(env, obj)
    eventually(lambda: len(env.admin.items("pods", ns)) >= 2, what="the Deployments' pods")
    # admission refuses the same Deployment now (once the API server has seen the configurations again)
    eventually(lambda: DENIED in env.alice.apply(sneaky("tool-again", ns), "--dry-run=server").stderr,
               what="the webhook to deny such a Deployment")

    found = audit(env, auditor, "--namespace", ns, "--format", "json")
    assert found.returncode == 1, found.output
    data = json.loads(found.stdout)
    hits = {(v["policy"], v["resource"]["kind"], v["resource"]["name"]): v for v in data["violations"]}
    assert hits[("gpu-isolation", "Deployment", "tool")]["action"] == "deny"
    assert hits[("gpu-isolation", "Deployment", "tool")]["path"] == "spec.template.spec.containers[0].env[0].value"
    assert hits[("gpu-limits", "Rollout", "llm")]["action"] == "deny"
    assert "runbooks/" in hits[("gpu-limits", "Rollout", "llm")]["runbook"]
    assert not [v for v in data["violations"] if v["resource"]["name"] == "web"]
    # owned ReplicaSets and Pods are judged through their Deployments: reported once, on the Deployment
    assert {v["resource"]["kind"] for v in data["violations"]} <= {"Deployment", "Rollout"}
    assert "objects judged" in found.stderr and "owned objects judged through their controllers" in found.stderr

    # the whole cluster, as text: the same findings among the others
    everything = audit(env, auditor)
    assert everything.returncode == 1
    assert f"Deployment/{ns}/tool" in everything.stdout and "mlguard audit:" in everything.stdout

    # reports: created, one per namespace, valid against the CRD, written by server-side apply
    written = audit(env, auditor, "--namespace", ns, "--write-reports")
    assert written.returncode == 1, written.output
    [report] = reports(env, ns)
    assert report["metadata"]["name"] == "mlguard-audit"
    validate(report)
    assert "mlguard-audit" in {m.get("manager") for m in report["metadata"].get("managedFields") or []}
    results = results_of(report)
    assert results[("gpu-isolation", "Deployment", "tool")] == "fail"
    assert results[("gpu-limits", "Rollout", "llm")] == "fail"
    assert not [k for k in results if k[2] == "web"]           # passes are counted, not listed
    assert report["summary"]["fail"] == sum(1 for r in results.values() if r == "fail")
    assert report["summary"]["pass"] > 0
    TRANSCRIPT.note(f"Report {ns}/mlguard-audit summary: {report['summary']}")
    first_version = report["metadata"]["resourceVersion"]

    # fixed through the webhook: the report follows
    fixed = deployment("tool", ns, template=pod_template("tool", container("tool", gpus=None)))
    assert env.alice.apply(fixed).ok
    assert audit(env, auditor, "--namespace", ns, "--write-reports").returncode == 1
    [report] = reports(env, ns)
    assert report["metadata"]["resourceVersion"] != first_version
    results = results_of(report)
    assert ("gpu-isolation", "Deployment", "tool") not in results
    assert results[("gpu-limits", "Rollout", "llm")] == "fail"
    validate(report)

    # the namespace clean (the Rollout gone; the CPU Deployments pass): the report is deleted
    assert env.admin.run("delete", "rollout", "llm", "-n", ns).ok
    clean = audit(env, auditor, "--namespace", ns, "--write-reports")
    assert clean.returncode == 0, clean.output
    assert reports(env, ns) == []


def test_audit_is_read_only_and_says_what_it_could_not_list(env: Env, ns: str, auditor: Path) -> None:
    """Without the read rules (only the report writer's role), the audit refuses to call the result clean."""
    only_reports = env.cp.kubeconfig(env.cp.pki.client("e2e-reports-only", "e2e:reports-only"))
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "e2e-reports-only"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "mlguard-audit-reports"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "e2e:reports-only"}]}
    install(env.admin, [binding], "bind only the report writer's role")
    result = audit(env, only_reports, "--namespace", ns)
    assert result.returncode == 2, result.output
    assert "NOT AUDITED" in result.stderr or "403" in result.stderr
    # the audit's own identity cannot change a workload
    denied = env.admin.run("auth", "can-i", "patch", "deployments", "--as", AUDIT_USER, "-n", ns)
    assert denied.stdout.strip() == "no"


def test_in_cluster_loop_writes_reports_and_serves_the_metric(env: Env, ns: str, auditor: Path) -> None:
    """`python -m webhook audit --loop` (what the audit Deployment runs): reports written every interval,
    mlguard_audit_results on /metrics with its help text."""
    with unguarded(env):
        create_unguarded(env, sneaky("tool", ns))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(auditor), "--loop",
                             "--interval", "2s", "--write-reports", "--metrics-port", str(port), "--namespace", ns],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def scraped() -> str | None:
            import urllib.request
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                return None
            return text if f'namespace="{ns}"' in text else None
        text = eventually(scraped, what="the audit loop's first run on /metrics")
        assert "# HELP mlguard_audit_results Results of the last audit" in text
        samples = {(s.labels["policy"], s.labels["result"]): s.value
                   for family in text_string_to_metric_families(text) if family.name == "mlguard_audit_results"
                   for s in family.samples if s.labels.get("namespace") == ns}
        assert samples[("gpu-isolation", "fail")] == 1, samples
        assert samples[("gpu-limits", "pass")] == 1, samples
        line = f"mlguard_audit_results{{policy=gpu-isolation, namespace={ns}, result=fail}} = 1"
        report = eventually(lambda: reports(env, ns), what="the loop's Report")[0]
        assert results_of(report)[("gpu-isolation", "Deployment", "tool")] == "fail"
        TRANSCRIPT.note(f"audit loop /metrics: {line}")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        TRANSCRIPT.note("audit loop log (first lines):\n" + "\n".join(out.splitlines()[:5]))
    assert proc.returncode == 0
