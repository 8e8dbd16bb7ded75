"""kustomize/components/audit: renders into an overlay, every object valid at the pinned Kubernetes version,
read-only on every kind the audit lists (each kind of the extractor's table granted), writes only
openreports.io reports, one replica that never overlaps itself, and the metrics port the dashboard reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from kustomize_testlib import NAMESPACE, REPO, Obj, find, one, render, validate_builtin

from policies.kinds import TABLE

COMPONENT = REPO / "kustomize" / "components" / "audit"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    tmp = tmp_path_factory.mktemp("with-audit")
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NAMESPACE,
        "resources": [os.path.relpath(REPO / "kustomize" / "overlays" / "prod", tmp)],
        "components": [os.path.relpath(COMPONENT, tmp)],
        # what an overlay that lists the component does: its images transformer (prod's pin) applies to it
        "images": yaml.safe_load((REPO / "kustomize/overlays/prod/kustomization.yaml").read_text())["images"]}))
    return render(Path(tmp))


def audit_objects(objects: list[Obj]) -> list[Obj]:
    """The component's own objects (components/prometheus adds the audit's ServiceMonitor)."""
    return [o for o in objects if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "audit"
            and o["kind"] != "ServiceMonitor"]


def test_every_object_is_valid_and_in_mlguard_system(objects: list[Obj]) -> None:
    mine = audit_objects(objects)
    assert sorted(o["kind"] for o in mine) == ["ClusterRole", "ClusterRole", "ClusterRoleBinding",
                                              "ClusterRoleBinding", "Deployment", "NetworkPolicy", "Service",
                                              "ServiceAccount"]
    for obj in mine:
        validate_builtin(obj)
        if not obj["kind"].startswith("Cluster"):
            assert obj["metadata"]["namespace"] == NAMESPACE


def rules(role: Obj) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_read_only_on_every_kind_it_lists_and_writes_only_reports(objects: list[Obj]) -> None:
    read = rules(one(objects, "ClusterRole", "mlguard-audit-read"))
    assert {v for _, _, v in read} == {"get", "list"}
    for group, kind in TABLE:
        plural = kind.lower() + "s"
        assert {(group, plural, "get"), (group, plural, "list")} <= read, f"{kind}.{group or 'core'} not granted"
    for extra in (("", "namespaces"), ("", "resourcequotas")):
        assert (*extra, "list") in read
    write = rules(one(objects, "ClusterRole", "mlguard-audit-reports"))
    assert {(g, r) for g, r, _ in write} == {("openreports.io", "reports"), ("openreports.io", "clusterreports")}
    for name in ("mlguard-audit-read", "mlguard-audit-reports"):
        binding = one(objects, "ClusterRoleBinding", name)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlguard-audit", "namespace": NAMESPACE}]


def test_one_writer_with_the_audit_loop_and_its_metrics(objects: list[Obj]) -> None:
    deploy = one(objects, "Deployment", "mlguard-audit")
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mlguard-audit"
    [container] = pod["containers"]
    webhook = one(objects, "Deployment", "mlguard-webhook")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == webhook["image"] and "@sha256:" in container["image"]
    args = container["args"]
    assert args[:2] == ["audit", "--in-cluster"] and "--loop" in args and "--write-reports" in args
    assert args[args.index("--metrics-port") + 1] == "9102"
    policyset = args[args.index("--policyset") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert os.path.dirname(policyset) in mounts
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = one(objects, "Service", "mlguard-audit")
    assert service["spec"]["ports"][0]["port"] == 9102
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    # the policy set it reads is the one the webhook serves (the same ConfigMap)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[os.path.dirname(policyset)]]["configMap"]["name"] == "mlguard-policyset"
    assert find(objects, "ConfigMap", "mlguard-policyset")
