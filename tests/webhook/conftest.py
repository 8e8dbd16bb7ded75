"""Fixtures for the webhook: TLS material (trustme), a fake Kubernetes API (list+watch JSON), and
gunicorn over TLS serving the test PolicySet with the live cluster cache pointed at the fake API.

Session-scoped: one gunicorn (2 workers) serves most tests; tests that change the server's state
(hot reload, certificate rotation) start their own.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_fakeapi import FakeApi
from webhook_testlib import TEST_POLICYSET, WebhookServer, gpu_deployment, gpu_pod


class Tls:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.ca_path = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.cert_path, self.key_path = self.issue("server")

    def issue(self, name: str, ca: trustme.CA | None = None) -> tuple[Path, Path]:
        cert = (ca or self.ca).issue_cert("127.0.0.1", "localhost")
        cert_path, key_path = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(cert_path), append=True)
        cert.private_key_pem.write_to_path(str(key_path))
        return cert_path, key_path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


def seed(api: FakeApi) -> None:
    """team-a: quota 16 GPUs; Deployment llm (ReplicaSet llm-7d9f) holds 2 x 1 GPU, StatefulSet other
    1 GPU, a finished job pod 4 GPUs (not counted); Deployment idle (2 GPUs a pod) has 0 replicas.
    team-b: no quota."""
    for ns, labels in (("team-a", {"mlguard.io/environment": "prod"}), ("team-b", {}),
                       ("mlguard-system", {}), ("kube-system", {})):
        api.add("namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns, **labels}}})
    api.add("resourcequotas", {"metadata": {"name": "gpus", "namespace": "team-a"},
                               "spec": {"hard": {"requests.nvidia.com/gpu": "16"}}})
    api.add("deployments", gpu_deployment("llm", "team-a", gpus=1, replicas=2))
    api.add("replicasets", {**gpu_deployment("llm-7d9f", "team-a", gpus=1, replicas=2), "metadata": {
        "name": "llm-7d9f", "namespace": "team-a", "uid": "uid-llm-7d9f", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm", "uid": "uid-llm", "controller": True}]}})
    api.add("deployments", gpu_deployment("idle", "team-a", gpus=2, replicas=0))   # no pods to go by
    api.add("pods", gpu_pod("llm-7d9f-aaaaa", "team-a", gpus=1, owner=("ReplicaSet", "llm-7d9f")))
    api.add("pods", gpu_pod("llm-7d9f-bbbbb", "team-a", gpus=1, owner=("ReplicaSet", "llm-7d9f")))
    api.add("pods", gpu_pod("other-0", "team-a", gpus=1, owner=("StatefulSet", "other")))
    api.add("pods", gpu_pod("batch-x1", "team-a", gpus=4, owner=("Job", "batch"), phase="Succeeded"))


@pytest.fixture(scope="session")
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    api.start()
    seed(api)
    yield api
    api.stop()


@pytest.fixture(scope="session")
def kubeconfig(fake_api: FakeApi, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert fake_api.server is not None
    path = tmp_path_factory.mktemp("kube") / "config"
    fake_api.write_kubeconfig(path)
    return path


@pytest.fixture(scope="session")
def server(tls: Tls, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    """gunicorn, 2 workers, TLS, the test PolicySet, cluster cache on the fake API."""
    work = tmp_path_factory.mktemp("webhook")
    policyset = work / "policyset.yaml"
    shutil.copy(TEST_POLICYSET, policyset)
    srv = WebhookServer(workdir=work, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset,
                        env={"MLGUARD_WEBHOOK_CLUSTER_CACHE": "true", "MLGUARD_WEBHOOK_KUBECONFIG": str(kubeconfig)})
    try:
        srv.wait("/readyz")
        yield srv
    finally:
        srv.stop()
