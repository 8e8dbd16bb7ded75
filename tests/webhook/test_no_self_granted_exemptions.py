"""Issue 14, part B, attacked from outside as a tenant would: exemptions an object grants itself.

A running webhook (gunicorn, TLS) serving the shipped baseline catalog, and `mlguard check` on the same
manifests, must judge a tenant's object fully whatever labels, owner references or namespace labels it carries.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from webhook_testlib import REPO, WebhookServer, review

pytestmark = pytest.mark.integration
BASELINE = REPO / "policies/catalog/baseline.yaml"
DIGEST = "registry.example.com/tools@sha256:" + "a" * 64
COST = {"team": "search", "cost-center": "cc-1234"}


def exporter_impostor(namespace: str = "team-a") -> dict[str, Any]:
    """The issue's attack: a tenant pod labelled as NVIDIA's DCGM exporter that sets NVIDIA_VISIBLE_DEVICES=all,
    mounts the host's /dev, runs privileged and tolerates every taint."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "not-an-exporter", "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "dcgm-exporter", **COST}},
            "spec": {"tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "shell", "image": DIGEST,
                                     "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                                     "securityContext": {"privileged": True},
                                     "volumeMounts": [{"name": "dev", "mountPath": "/host/dev"}]}],
                     "volumes": [{"name": "dev", "hostPath": {"path": "/dev"}}]}}


def node_exporter_impostor(namespace: str = "team-a") -> dict[str, Any]:
    """A CPU pod labelled as prometheus-node-exporter that tolerates the GPU taint: a squatter on GPU nodes."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "squatter", "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "prometheus-node-exporter", **COST}},
            "spec": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "c", "image": DIGEST,
                                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}


@pytest.fixture(scope="module")
def baseline_server(tls: Any, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    """gunicorn over TLS serving the shipped baseline catalog, its cluster cache on the fake API."""
    work = tmp_path_factory.mktemp("baseline-webhook")
    policyset = work / "baseline.yaml"
    shutil.copy(BASELINE, policyset)
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset,
                        env={"MLGUARD_WEBHOOK_CLUSTER_CACHE": "true", "MLGUARD_WEBHOOK_KUBECONFIG": str(kubeconfig)},
                        workers=1, threads=2)
    try:
        srv.wait("/readyz")
        yield srv
    finally:
        srv.stop()


def check(tmp_path: Path, *objects: dict[str, Any], policyset: Path = BASELINE) -> tuple[int, str]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    out = subprocess.run([sys.executable, "-m", "policies.cli", "check", str(path), "--policyset", str(policyset)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_a_tenant_pod_labelled_dcgm_exporter_is_denied_at_admission(baseline_server: WebhookServer) -> None:
    out = baseline_server.admit("/validate", review(exporter_impostor()))
    assert out["allowed"] is False
    message = out["status"]["message"]
    for expected in ("gpu-isolation: spec.containers[0].env[0].value: container `shell` sets NVIDIA_VISIBLE_DEVICES=all",
                     "gpu-isolation: spec.volumes[0].hostPath.path: volume `dev` mounts host path /dev",
                     "gpu-isolation: spec.containers[0].securityContext.privileged:",
                     "gpu-tolerations: spec.tolerations: pod uses no GPU but tolerates every taint",
                     "runbooks/admission-denied.md#gpu-isolation", "runbooks/admission-denied.md#gpu-tolerations"):
        assert expected in message, message


def test_a_tenant_pod_labelled_node_exporter_squats_no_gpu_node(baseline_server: WebhookServer,
                                                                 tmp_path: Path) -> None:
    out = baseline_server.admit("/validate", review(node_exporter_impostor()))
    assert out["allowed"] is False
    assert "gpu-tolerations: spec.tolerations: pod uses no GPU but tolerates nvidia.com/gpu:NoSchedule" in \
        out["status"]["message"]
    code, text = check(tmp_path, node_exporter_impostor())
    assert code == 1 and "DENY  gpu-tolerations  Pod/team-a/squatter" in text, text


def test_the_same_attack_is_denied_by_mlguard_check(tmp_path: Path) -> None:
    for policyset in (BASELINE, REPO / "policies/catalog/strict.yaml"):
        code, text = check(tmp_path, exporter_impostor(), policyset=policyset)
        assert code == 1, text
        assert "DENY  gpu-isolation  Pod/team-a/not-an-exporter" in text, text
        assert "DENY  gpu-tolerations  Pod/team-a/not-an-exporter" in text, text


def test_the_label_still_exempts_within_the_namespace_it_names(baseline_server: WebhookServer,
                                                                 tmp_path: Path) -> None:
    """The catalogs' allowlists keep working for the real installations they name: the standalone
    dcgm-exporter chart in monitoring (by label within the namespace), the GPU operator's namespace."""
    real = exporter_impostor("monitoring")
    real["metadata"]["name"] = "dcgm-exporter-x7k2p"
    code, text = check(tmp_path, real)
    assert code == 0 and "0 denied" in text, text
    operator = copy.deepcopy(real)
    operator["metadata"]["namespace"] = "gpu-operator"
    del operator["metadata"]["labels"]["app.kubernetes.io/name"]
    code, text = check(tmp_path, operator)
    assert code == 0 and "0 denied" in text, text
    # the label in monitoring exempts from isolation only what it names: another label there does not
    other = copy.deepcopy(real)
    other["metadata"]["labels"]["app.kubernetes.io/name"] = "grafana"
    assert baseline_server.admit("/validate", review(other))["allowed"] is False
