"""The e2e suite: mlguard's webhook behind a real kube-apiserver (Kubernetes 1.20 from Debian's
source package), driven with the real kubectl. `make e2e` runs it; the default `pytest` run does not
(pyproject addopts ignore tests/e2e).

One control plane and one webhook (gunicorn over TLS as deployed: 1 worker x 8 threads, the live cluster cache, the
project's own RBAC) serve the session. The webhook configurations are the ones the prod overlay
ships (failurePolicy Fail), converted for 1.20 (url clientConfig + caBundle, no matchConditions).
Each test gets its own namespace with a GPU ResourceQuota.

A case that runs the mlguard CLI against the live cluster (``mlguard facts --kubeconfig``, ``mlguard
audit``) uses ``env.mlguard(...)`` with ``env.cp.admin_kubeconfig`` (or a user's, from
``env.cp.kubeconfig(env.cp.pki.client(user, group))``); its output goes into the transcript.

Never a silent skip: a skipped e2e test is reported as a failure (see pytest_runtest_makereport).
The kubectl transcript is printed at the end of the run and written to
$MLGUARD_E2E_ARTIFACTS/transcript.txt (default: .e2e-artifacts/ in the clone, git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_cluster import (
    REPO,
    ControlPlane,
    StartError,
    Webhook,
    build_binaries,
    objects_of,
    render,
    webhook_configurations_for_120,
)
from e2e_kubectl import TRANSCRIPT, Kubectl, Result

SHARED_CRDS = REPO.parent / "shared" / "schemas" / "crds"
ROLLOUT_CRD = SHARED_CRDS / "argo-rollouts" / "rollout-crd.yaml"   # argoproj/argo-rollouts manifests/crds
KEDA_CRD = SHARED_CRDS / "keda" / "keda.sh_scaledobjects.yaml"       # kedacore/keda config/crd/bases
BASELINE = REPO / "policies" / "catalog" / "baseline.yaml"
QUOTA_GPUS = 4
DEVELOPERS, ONCALL = "e2e:developers", "platform-oncall"   # platform-oncall: the baseline's break-glass group

TENANT_ROLE = {  # what a team's CI / developer may do in its namespaces (edit, plus Argo Rollouts)
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "e2e-tenant"},
    "rules": [{"apiGroups": ["", "apps", "batch", "argoproj.io"],
               "resources": ["pods", "configmaps", "secrets", "deployments", "deployments/scale", "replicasets",
                             "replicasets/scale",
                             "statefulsets", "statefulsets/scale", "jobs", "cronjobs", "rollouts", "rollouts/scale"],
               "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}


def tenant_binding(group: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"e2e-tenant-{group.replace(':', '-')}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-tenant"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}


@dataclass
class Env:
    """What a test works with."""

    cp: ControlPlane
    webhook: Webhook
    policyset: Path              # the file the webhook serves (hot reload: rewrite it)
    admin: Kubectl
    alice: Kubectl               # a developer (group e2e:developers)
    oncall: Kubectl              # in the break-glass group platform-oncall
    workdir: Path

    def mlguard(self, *args: str) -> Result:
        """The mlguard CLI, as an operator runs it (admin kubeconfig where a command reads the cluster)."""
        argv = [sys.executable, "-m", "policies.cli", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
        result = Result(["mlguard", *args], proc.returncode, proc.stdout, proc.stderr)
        TRANSCRIPT.entries.setdefault(TRANSCRIPT.current, []).append(
            f"$ mlguard {' '.join(args)}\n" + "\n".join(f"    {line}" for line in result.output.splitlines()[:60])
            + f"\n    (exit {result.returncode})")
        return result


def eventually(check: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (the cluster is eventually consistent: the
    controllers and the webhook's watches follow writes within moments). Fails naming ``what``."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def crd_for_120(path: Path) -> dict[str, Any]:
    """An upstream CRD made acceptable to 1.20: its names, versions, scope and subresources (the
    /scale of a Rollout) as shipped, its schema replaced by ``x-kubernetes-preserve-unknown-fields``.
    The upstream schema uses what 1.20 refuses (x-kubernetes-validations, list-map keys with
    ``default: ""``); mlguard, not the schema, is what the e2e cases exercise."""
    crd: dict[str, Any] = yaml.safe_load(path.read_text())
    for version in crd["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    crd["metadata"] = {"name": crd["metadata"]["name"]}
    return crd


def install(admin: Kubectl, objects: list[dict[str, Any]], step: str) -> None:
    result = admin.apply(objects)
    if not result.ok:
        raise StartError(f"{step}: {result.output}")


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("e2e")
    TRANSCRIPT.current = "(session setup)"
    started = time.monotonic()

    def timed(what: str) -> None:
        TRANSCRIPT.note(f"{what} ({time.monotonic() - started:.1f}s since the start)")
    cp = ControlPlane(workdir=workdir, bin_dir=build_binaries())
    timed(f"Kubernetes binaries: {cp.bin_dir}")
    cp.start()
    timed(f"control plane up: etcd, kube-apiserver {cp.server}, kube-controller-manager")
    webhook: Webhook | None = None
    try:
        admin = Kubectl(cp.admin_kubeconfig, who="admin")
        prod = render("overlays/prod")
        install(admin, objects_of(prod, "Namespace"), "create mlguard's namespace (kustomize/overlays/prod)")
        install(admin, objects_of(prod, "ClusterRole", "ClusterRoleBinding"),
                "install the webhook's RBAC (kustomize/base/webhook/rbac.yaml)")
        install(admin, [TENANT_ROLE, tenant_binding(DEVELOPERS), tenant_binding(ONCALL)], "tenant RBAC")
        for path, name in ((ROLLOUT_CRD, "rollouts.argoproj.io"), (KEDA_CRD, "scaledobjects.keda.sh")):
            crd = admin.run("apply", "--server-side", "-f", "-", manifest=crd_for_120(path))
            if not crd.ok:
                raise StartError(f"install the CRD {name} ({path}): {crd.output}")
            eventually(lambda n=name: admin.run("get", "crd", n, "-o",
                                                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                                                quiet=True).stdout == "True", what=f"the CRD {name} to be established")
        policyset = workdir / "policyset.yaml"
        shutil.copy(BASELINE, policyset)
        # namespaces the PolicySet exempts (the one list of exemptions: a namespace label no longer opts out)
        exempt = "    namespaces: [kube-system, mlguard-system, cert-manager]"
        text = policyset.read_text()
        if exempt not in text:
            raise StartError(f"{BASELINE} no longer lists its exemptions as {exempt.strip()!r}")
        policyset.write_text(text.replace(exempt, exempt[:-1] + ', "*-exempt"]'))
        timed("RBAC and the Rollout and KEDA ScaledObject CRDs installed")
        webhook = Webhook(cp, policyset=policyset, workdir=workdir).start()
        timed(f"webhook ready at {webhook.url} (cache synced)")
        install(admin, webhook_configurations_for_120(prod, url=webhook.url, ca_bundle=cp.pki.ca_b64),
                "register the webhook configurations (kustomize/overlays/prod, converted for 1.20)")
        timed("webhook registered")
        alice = Kubectl(cp.kubeconfig(cp.pki.client("alice", DEVELOPERS)), who="alice")
        oncall = Kubectl(cp.kubeconfig(cp.pki.client("bob", ONCALL)), who="bob (platform-oncall)")
        yield Env(cp=cp, webhook=webhook, policyset=policyset, admin=admin, alice=alice, oncall=oncall,
                  workdir=workdir)
    finally:
        if webhook is not None:
            webhook.stop()
        cp.stop()


def _namespace_name(nodeid: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", nodeid.split("::")[-1].lower()).strip("-")
    return ("e2e-" + name.removeprefix("test-"))[:55].rstrip("-")


@pytest.fixture
def ns(env: Env, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with a ResourceQuota of QUOTA_GPUS GPUs, once the webhook's cache knows both."""
    name = _namespace_name(request.node.nodeid)
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus", "namespace": name},
             "spec": {"hard": {"requests.nvidia.com/gpu": str(QUOTA_GPUS)}}}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    install(env.admin, [namespace, quota], f"create namespace {name} with a GPU quota")
    wait_cached(env, "namespaces", env.admin.get("namespace", name, quiet=True))
    wait_cached(env, "resourcequotas", env.admin.get("resourcequota", "gpus", name, quiet=True))
    yield name
    env.admin.run("delete", "namespace", name, "--wait=false", quiet=True)


def wait_cached(env: Env, resource: str, obj: dict[str, Any]) -> None:
    """Until the webhook's informer for ``resource`` has seen ``obj`` (as created or updated).

    /readyz reports each informer's last resourceVersion. Kubernetes calls resourceVersions opaque;
    with etcd3 storage they are etcd's global revision, so a harness may compare them as integers.
    """
    target = int(obj["metadata"]["resourceVersion"])

    def seen() -> bool:
        _, body = env.webhook.get("/readyz")
        rv = (((body.get("cache") or {}).get("resources") or {}).get(resource) or {}).get("resourceVersion")
        return rv is not None and int(rv) >= target
    eventually(seen, what=f"the webhook's {resource} cache to reach resourceVersion {target}")


@contextmanager
def reload_policyset(env: Env, change: Callable[[dict[str, Any]], None]) -> Iterator[dict[str, Any]]:
    """Edit the served PolicySet file (as a ConfigMap update would), wait until the webhook serves
    the new set, and put the original back afterwards (waiting for that too)."""
    original = env.policyset.read_text()
    _, before = env.webhook.get("/readyz")
    data = yaml.safe_load(original)
    change(data["spec"])
    env.policyset.write_text(yaml.safe_dump(data, sort_keys=False))
    TRANSCRIPT.note(f"PolicySet hot reload: {env.policyset.name} rewritten")

    def serving(digest: str, *, same: bool) -> Callable[[], bool]:
        def check() -> bool:
            served = ((env.webhook.get("/readyz")[1].get("policyset") or {}).get("digest"))
            return (served == digest) if same else (served is not None and served != digest)
        return check
    old_digest = before["policyset"]["digest"]
    eventually(serving(old_digest, same=False), what="the webhook to serve the edited PolicySet")
    try:
        yield data
    finally:
        env.policyset.write_text(original)
        eventually(serving(old_digest, same=True), what="the webhook to serve the original PolicySet again")


# ---- never a silent skip; print the transcript ------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"e2e tests never skip: {report.longrepr}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    TRANSCRIPT.current = item.nodeid


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    text = TRANSCRIPT.render()
    terminalreporter.section("e2e transcript (kubectl as users run it)")
    terminalreporter.write(text)
    target = Path(os.environ.get("MLGUARD_E2E_ARTIFACTS") or config.rootpath / ".e2e-artifacts")
    target.mkdir(parents=True, exist_ok=True)
    (target / "transcript.txt").write_text(text)
    terminalreporter.write_line(f"transcript written to {target / 'transcript.txt'}")
