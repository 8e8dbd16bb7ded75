"""Safety properties of mlguard's own workloads in every overlay: pods, RBAC, PDBs, network, images."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kustomize_testlib import CATALOG, NAMESPACE, REPO, Obj, Renders, find, labels_match, one

from webhook.cluster import CACHED

IMAGE = "ghcr.io/mlguard/mlguard"
EXPECTED_REPLICAS = {
    "dev": {"mlguard-webhook": 1, "mlguard-analysis": 1},
    "staging": {"mlguard-webhook": 2, "mlguard-analysis": 2},
    "prod": {"mlguard-webhook": 3, "mlguard-analysis": 2},
}
EXPECTED_POLICYSET = {"dev": "baseline.yaml", "staging": "strict.yaml", "prod": "strict.yaml"}
EXPECTED_DRY_RUN = {"dev": "true", "staging": "false", "prod": "false"}
POD_LABELS = {"team": "platform", "cost-center": "platform-infra", "app.kubernetes.io/name": "mlguard"}
COMPONENT = {"mlguard-webhook": "webhook", "mlguard-analysis": "analysis"}


def render_overlay(renders: Renders, overlay: str) -> list[Obj]:
    return renders(f"kustomize/overlays/{overlay}")


def container(deploy: Obj) -> Obj:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per mlguard pod"
    return containers[0]


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def mounts_of(deploy: Obj) -> dict[str, tuple[str, Obj]]:
    """mountPath -> (volume name, volume)."""
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"].get("volumes", [])}
    return {m["mountPath"]: (m["name"], volumes[m["name"]]) for m in container(deploy)["volumeMounts"]}


def test_exactly_the_two_deployments(renders: Renders, overlay: str) -> None:
    names = sorted(d["metadata"]["name"] for d in find(render_overlay(renders, overlay), "Deployment"))
    assert names == ["mlguard-analysis", "mlguard-webhook"]


def test_every_namespaced_object_is_in_mlguard_system(renders: Renders, overlay: str) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                      "MutatingWebhookConfiguration"}
    for obj in render_overlay(renders, overlay):
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["kind"]
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, (obj["kind"], obj["metadata"]["name"])


def test_replicas_per_overlay(renders: Renders, overlay: str) -> None:
    for name, count in EXPECTED_REPLICAS[overlay].items():
        assert one(render_overlay(renders, overlay), "Deployment", name)["spec"]["replicas"] == count


@pytest.mark.parametrize("name", ["mlguard-webhook", "mlguard-analysis"])
def test_pod_security(renders: Renders, overlay: str, name: str) -> None:
    deploy = one(render_overlay(renders, overlay), "Deployment", name)
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert not sc.get("privileged")
        assert sc.get("runAsUser", pod["securityContext"]["runAsUser"]) != 0
        # A read-only root filesystem needs a writable /tmp (gunicorn heartbeat, scratch).
        assert "/tmp" in mounts_of(deploy)
        assert "emptyDir" in mounts_of(deploy)["/tmp"][1]
        assert env_of(c)["TMPDIR"]["value"] == "/tmp"


@pytest.mark.parametrize("name", ["mlguard-webhook", "mlguard-analysis"])
def test_resources_probes_and_spread(renders: Renders, overlay: str, name: str) -> None:
    deploy = one(render_overlay(renders, overlay), "Deployment", name)
    c = container(deploy)
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section]), section
    port_name = c["ports"][0]["name"]
    scheme = "HTTPS" if name == "mlguard-webhook" else "HTTP"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == port_name
        assert c[probe]["httpGet"].get("scheme", "HTTP") == scheme
    spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {t["topologyKey"] for t in spread}
    keys = [(t["topologyKey"]) for t in spread]
    assert len(keys) == len(set(keys)), "one constraint per topology key"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert all(labels_match(t["labelSelector"], pod_labels) for t in spread)
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_prod_webhook_replicas_must_spread_over_nodes(renders: Renders) -> None:
    deploy = one(render_overlay(renders, "prod"), "Deployment", "mlguard-webhook")
    spread = {t["topologyKey"]: t for t in deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"


@pytest.mark.parametrize("name", ["mlguard-webhook", "mlguard-analysis"])
def test_pod_labels(renders: Renders, overlay: str, name: str) -> None:
    deploy = one(render_overlay(renders, overlay), "Deployment", name)
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert POD_LABELS.items() <= labels.items()
    assert labels["app.kubernetes.io/component"] == COMPONENT[name]
    assert labels_match(deploy["spec"]["selector"], labels)
    # The selector is immutable: cost labels must not be part of it.
    assert set(deploy["spec"]["selector"]["matchLabels"]) == {"app.kubernetes.io/name",
                                                             "app.kubernetes.io/component"}


def test_images_are_pinned(renders: Renders, overlay: str) -> None:
    for deploy in find(render_overlay(renders, overlay), "Deployment"):
        image = container(deploy)["image"]
        assert image.startswith(IMAGE + ":"), image
        assert not image.endswith(":latest")
        assert re.fullmatch(IMAGE + r":[0-9]+\.[0-9]+\.[0-9]+(@sha256:[0-9a-f]{64})?", image), image
        if overlay in ("staging", "prod"):
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{overlay} must pin a digest: {image}"
        assert container(deploy)["imagePullPolicy"] == "IfNotPresent"


def test_base_names_the_image_through_kustomize_images(renders: Renders) -> None:
    base = yaml.safe_load((REPO / "kustomize/base/kustomization.yaml").read_text())
    assert {"name": "mlguard", "newName": IMAGE} .items() <= base["images"][0].items()
    for path in (REPO / "kustomize/base").rglob("deployment.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "mlguard", path


def test_webhook_container_contract(renders: Renders, overlay: str) -> None:
    deploy = one(render_overlay(renders, overlay), "Deployment", "mlguard-webhook")
    c = container(deploy)
    assert c["command"] == ["mlguard"]
    assert c["args"] == ["serve", "webhook", "--host", "0.0.0.0", "--port", "8443",
                         "--cert", "/etc/mlguard/tls/tls.crt", "--key", "/etc/mlguard/tls/tls.key",
                         "--policyset", f"/etc/mlguard/policyset/{EXPECTED_POLICYSET[overlay]}"]
    env = env_of(c)
    assert env["MLGUARD_WEBHOOK_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["MLGUARD_WEBHOOK_DRY_RUN"]["value"] == EXPECTED_DRY_RUN[overlay]
    assert env["MLGUARD_WEBHOOK_CLUSTER_CACHE"]["value"] == "true"
    assert c["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    mounts = mounts_of(deploy)
    assert mounts["/etc/mlguard/tls"][1]["secret"]["secretName"] == "mlguard-webhook-tls"
    assert mounts["/etc/mlguard/policyset"][1]["configMap"]["name"] == "mlguard-policyset"
    for m in container(deploy)["volumeMounts"]:
        assert "subPath" not in m, "subPath mounts are never updated: hot reload would break"


def test_analysis_container_contract(renders: Renders, overlay: str) -> None:
    objs = render_overlay(renders, overlay)
    deploy = one(objs, "Deployment", "mlguard-analysis")
    c = container(deploy)
    assert c["command"] == ["mlguard"]
    assert c["args"] == ["serve", "analysis", "--host", "0.0.0.0", "--port", "8080",
                         "--config", "/etc/mlguard/analysis/config.yaml"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    config_map_name = mounts_of(deploy)["/etc/mlguard/analysis"][1]["configMap"]["name"]
    assert config_map_name.startswith("mlguard-analysis-config")
    config = yaml.safe_load(one(objs, "ConfigMap", config_map_name)["data"]["config.yaml"])
    assert config["prometheus"]["url"] == "http://prometheus-operated.monitoring.svc:9090"
    assert config["sampleStores"], "a sample store is configured"
    assert config.get("allowRawQueries", False) is False


def test_analysis_config_is_accepted_by_the_provider(renders: Renders) -> None:
    """The ConfigMap's config.yaml passes the analysis provider's own schema."""
    import rollouts.config as rollouts_config
    objs = render_overlay(renders, "prod")
    cm = next(o for o in find(objs, "ConfigMap") if o["metadata"]["name"].startswith("mlguard-analysis-config"))
    document = yaml.safe_load(cm["data"]["config.yaml"])
    rollouts_config.validate_document(document)
    with pytest.raises(rollouts_config.ConfigError):
        rollouts_config.validate_document({**document, "unknownKey": 1})


def test_services_route_to_the_pods(renders: Renders, overlay: str) -> None:
    objs = render_overlay(renders, overlay)
    for name, port, target in (("mlguard-webhook", 443, "https"), ("mlguard-analysis", 80, "http")):
        svc = one(objs, "Service", name)
        pod_labels = one(objs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels_match({"matchLabels": svc["spec"]["selector"]}, pod_labels)
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, target)]
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_each_deployment_has_a_pdb_that_allows_one_disruption(renders: Renders, overlay: str) -> None:
    objs = render_overlay(renders, overlay)
    for deploy in find(objs, "Deployment"):
        pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in find(objs, "PodDisruptionBudget") if labels_match(p["spec"]["selector"], pod_labels)]
        assert len(pdbs) == 1, deploy["metadata"]["name"]
        spec = pdbs[0]["spec"]
        replicas = deploy["spec"]["replicas"]
        # Never blocks a node drain for good, never lets a drain take every replica at once.
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] == 1
        else:
            assert 1 <= spec["minAvailable"] < replicas
        assert spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


def test_rbac_is_list_watch_on_exactly_what_the_webhook_reads(renders: Renders, overlay: str) -> None:
    objs = render_overlay(renders, overlay)
    assert [r["metadata"]["name"] for r in find(objs, "ClusterRole")] == ["mlguard-webhook"]
    assert find(objs, "Role") == [] and find(objs, "RoleBinding") == []
    role = one(objs, "ClusterRole", "mlguard-webhook")
    granted = set()
    for rule in role["rules"]:
        assert sorted(rule["verbs"]) == ["list", "watch"], rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    # exactly the informers of webhook/cluster.py, no more and no less
    cached = {(c.api_version.rpartition("/")[0], c.name) for c in CACHED}
    assert cached >= {("", "pods"), ("apps", "deployments"), ("apps", "replicasets")}
    assert granted == cached | {("resource.k8s.io", "resourceclaims"), ("resource.k8s.io", "resourceclaimtemplates")}
    assert ("", "secrets") not in granted   # never: list on Secrets hands over their values
    binding = one(objs, "ClusterRoleBinding", "mlguard-webhook")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "mlguard-webhook"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlguard-webhook", "namespace": NAMESPACE}]


def test_analysis_provider_has_no_api_access(renders: Renders, overlay: str) -> None:
    objs = render_overlay(renders, overlay)
    assert one(objs, "ServiceAccount", "mlguard-analysis")["automountServiceAccountToken"] is False
    pod = one(objs, "Deployment", "mlguard-analysis")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mlguard-analysis"
    assert pod["automountServiceAccountToken"] is False
    for binding in find(objs, "ClusterRoleBinding") + find(objs, "RoleBinding"):
        assert all(s["name"] != "mlguard-analysis" for s in binding.get("subjects", []))
    webhook_pod = one(objs, "Deployment", "mlguard-webhook")["spec"]["template"]["spec"]
    assert webhook_pod["serviceAccountName"] == "mlguard-webhook"


# ---------------------------------------------------------------------------------------------
# NetworkPolicies


def policy_for(objs: list[Obj], name: str) -> Obj:
    pod_labels = one(objs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in find(objs, "NetworkPolicy") if labels_match(p["spec"]["podSelector"], pod_labels)]
    assert len(policies) == 1, f"{name}: {len(policies)} NetworkPolicies select its pods"
    assert sorted(policies[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    return policies[0]


def ports(rule: Obj) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def from_namespaces(rule: Obj, key: str = "from") -> set[str]:
    names = set()
    for peer in rule.get(key, []):
        names.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    return names


def test_webhook_network_policy(renders: Renders, overlay: str) -> None:
    spec = policy_for(render_overlay(renders, overlay), "mlguard-webhook")["spec"]
    for rule in spec["ingress"]:
        assert ports(rule) == {("TCP", 8443)}, "only the webhook port is open"
    assert any(from_namespaces(r) == {"monitoring"} for r in spec["ingress"]), "Prometheus scrape"
    egress_ports = set().union(*(ports(r) for r in spec["egress"]))
    assert egress_ports == {("TCP", 443), ("TCP", 6443), ("UDP", 53), ("TCP", 53)}
    dns = [r for r in spec["egress"] if ("UDP", 53) in ports(r)]
    assert from_namespaces(dns[0], "to") == {"kube-system"}


def test_analysis_network_policy(renders: Renders, overlay: str) -> None:
    spec = policy_for(render_overlay(renders, overlay), "mlguard-analysis")["spec"]
    assert len(spec["ingress"]) == 1
    assert ports(spec["ingress"][0]) == {("TCP", 8080)}
    assert from_namespaces(spec["ingress"][0]) == {"argo-rollouts", "flagger-system", "monitoring"}
    by_port = {p: r for r in spec["egress"] for p in ports(r)}
    assert from_namespaces(by_port[("TCP", 9090)], "to") == {"monitoring"}
    assert from_namespaces(by_port[("UDP", 53)], "to") == {"kube-system"}
    for rule in spec["egress"]:
        assert rule.get("to"), "every egress rule names its destination"


# ---------------------------------------------------------------------------------------------
# The PolicySet ConfigMap


def test_policyset_configmap_is_generated_from_the_catalog(renders: Renders, overlay: str) -> None:
    cm = one(render_overlay(renders, overlay), "ConfigMap", "mlguard-policyset")  # no hash suffix
    assert set(cm["data"]) == {"baseline.yaml", "strict.yaml"}
    for key in ("baseline.yaml", "strict.yaml"):
        assert cm["data"][key] == (CATALOG / key).read_text(encoding="utf-8"), key
        assert yaml.safe_load(cm["data"][key]), f"{key} is an empty document"


def test_catalog_kustomization_is_only_a_generator() -> None:
    doc = yaml.safe_load((CATALOG / "kustomization.yaml").read_text())
    assert doc["generatorOptions"]["disableNameSuffixHash"] is True
    assert [g["name"] for g in doc["configMapGenerator"]] == ["mlguard-policyset"]
    assert sorted(doc["configMapGenerator"][0]["files"]) == ["baseline.yaml", "strict.yaml"]
    assert "resources" not in doc


# ---------------------------------------------------------------------------------------------
# Argo CD sync waves inside an overlay


def wave(obj: Obj) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_sync_waves_put_webhook_configurations_last(renders: Renders, overlay: str) -> None:
    objs = render_overlay(renders, overlay)
    configs = [o for o in objs if o["kind"].endswith("WebhookConfiguration")]
    others = [o for o in objs if not o["kind"].endswith("WebhookConfiguration")]
    assert min(wave(c) for c in configs) > max(wave(o) for o in others)
    assert wave(one(objs, "Namespace", NAMESPACE)) == min(wave(o) for o in objs)
    for cert_manager_obj in (o for o in objs if o["apiVersion"].startswith("cert-manager.io/")):
        assert wave(cert_manager_obj) < wave(one(objs, "Deployment", "mlguard-webhook"))


def test_cert_manager_chain_comes_up_in_order(renders: Renders, overlay: str) -> None:
    """Each link after the one it needs: Argo CD waits for a wave to be healthy (argo-cd
    resource_customizations/cert-manager.io/{Issuer,Certificate}/health.lua: Ready) before the next.
    A CA Issuer in the same wave as its CA Certificate is created before the CA's Secret exists."""
    objs = render_overlay(renders, overlay)
    selfsigned, ca_issuer = one(objs, "Issuer", "mlguard-selfsigned"), one(objs, "Issuer", "mlguard-ca")
    ca_cert, serving = one(objs, "Certificate", "mlguard-ca"), one(objs, "Certificate", "mlguard-webhook-tls")
    assert ca_cert["spec"]["issuerRef"]["name"] == selfsigned["metadata"]["name"]
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"]
    assert serving["spec"]["issuerRef"]["name"] == ca_issuer["metadata"]["name"]
    assert (wave(selfsigned), wave(ca_cert), wave(ca_issuer), wave(serving)) == (-3, -3, -2, -1)
    assert wave(one(objs, "Namespace", NAMESPACE)) < -3


def test_overlays_stay_thin() -> None:
    """Overlays build on ../../base and patch; they never copy base manifests."""
    for overlay in ("dev", "staging", "prod"):
        doc = yaml.safe_load((REPO / "kustomize/overlays" / overlay / "kustomization.yaml").read_text())
        assert doc["resources"] == ["../../base"], overlay
        for path in Path(REPO / "kustomize/overlays" / overlay).glob("*.yaml"):
            text = path.read_text()
            assert "kind: ServiceAccount" not in text and "kind: Service\n" not in text, path
