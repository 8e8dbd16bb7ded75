"""The examples: Argo CD app of apps, GPU platform pieces, and (when present) the canary Rollout."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import yaml
from kustomize_testlib import KUSTOMIZE, OVERLAYS, REPO, Obj, Renders, find, one

ENVIRONMENTS = {"dev", "staging", "prod"}
CANARY_DIR = KUSTOMIZE / "examples/canary-rollout"


def wave(obj: Obj) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


# ---------------------------------------------------------------------------------------------
# Argo CD


def test_applicationset_has_one_application_per_overlay(renders: Renders) -> None:
    appset = one(renders("kustomize/examples/argocd"), "ApplicationSet", "mlguard")
    elements = appset["spec"]["generators"][0]["list"]["elements"]
    assert {e["env"] for e in elements} == set(OVERLAYS)
    template = appset["spec"]["template"]
    path_template = template["spec"]["source"]["path"]
    for element in elements:
        path = path_template.replace("{{ .env }}", element["env"])
        assert (REPO / path / "kustomization.yaml").is_file(), path
    assert template["spec"]["destination"]["namespace"] == "mlguard-system"
    prod = next(e for e in elements if e["env"] == "prod")
    assert re.fullmatch(r"v[0-9]+\.[0-9]+\.[0-9]+", prod["revision"]), "prod follows a release tag"


def test_applicationset_ignores_the_injected_ca_bundle(renders: Renders) -> None:
    spec = one(renders("kustomize/examples/argocd"), "ApplicationSet", "mlguard")["spec"]["template"]["spec"]
    ignored = {(d["kind"], tuple(d["jqPathExpressions"])) for d in spec["ignoreDifferences"]}
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert (kind, (".webhooks[]?.clientConfig.caBundle",)) in ignored
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]


def test_app_of_apps_waves(renders: Renders) -> None:
    objs = renders("kustomize/examples/argocd")
    project = one(objs, "AppProject", "mlguard")
    cert_manager = one(objs, "ApplicationSet", "cert-manager")
    platform = one(objs, "ApplicationSet", "gpu-platform")
    appset = one(objs, "ApplicationSet", "mlguard")
    assert wave(project) < wave(cert_manager) < wave(platform) < wave(appset)
    for obj in objs:
        assert obj["metadata"]["namespace"] == "argocd"
    root = one(renders("kustomize/examples/argocd/bootstrap"), "Application", "mlguard-root")
    assert root["spec"]["source"]["path"] == "kustomize/examples/argocd"
    assert platform["spec"]["template"]["spec"]["source"]["path"] == "kustomize/examples/gpu-platform"


def _clusters(appset: Obj) -> set[str]:
    (generator,) = appset["spec"]["generators"]
    destination = appset["spec"]["template"]["spec"]["destination"]
    assert destination == {**destination, "name": "{{ .cluster }}"} and "server" not in destination
    return {e["cluster"] for e in generator["list"]["elements"]}


def test_cert_manager_and_the_gpu_platform_reach_every_cluster_mlguard_does(renders: Renders) -> None:
    """The overlays' Issuers/Certificates need cert-manager on the cluster they land on, not only on
    the one running Argo CD: the three ApplicationSets target the same clusters."""
    objs = renders("kustomize/examples/argocd")
    mlguard = _clusters(one(objs, "ApplicationSet", "mlguard"))
    assert mlguard == {"dev", "staging", "prod"}
    for name in ("cert-manager", "gpu-platform"):
        appset = one(objs, "ApplicationSet", name)
        assert _clusters(appset) == mlguard, name
        assert appset["spec"]["syncPolicy"]["preserveResourcesOnDeletion"] is True, name
    # Nothing but the bootstrap Application is pinned to the cluster running Argo CD.
    assert not find(objs, "Application")


def test_mlguard_retries_long_enough_for_cert_manager_to_come_up(renders: Renders) -> None:
    # ApplicationSet health (argo-cd resource_customizations/argoproj.io/ApplicationSet/health.lua)
    # is Healthy once its Applications exist, so waves between ApplicationSets do not wait for a
    # cluster's cert-manager: the retry must cover its install (CRDs, webhook), minutes.
    retry = one(renders("kustomize/examples/argocd"), "ApplicationSet", "mlguard")["spec"]["template"]["spec"][
        "syncPolicy"]["retry"]
    backoff = retry["backoff"]
    first = int(backoff["duration"].rstrip("s"))
    cap = int(backoff["maxDuration"].rstrip("m")) * 60
    total = sum(min(first * backoff["factor"] ** i, cap) for i in range(retry["limit"]))
    assert total >= 20 * 60, total


def test_project_allows_exactly_the_cluster_kinds_the_overlays_create(renders: Renders) -> None:
    project = one(renders("kustomize/examples/argocd"), "AppProject", "mlguard")
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    needed = set()
    for source in [f"kustomize/overlays/{o}" for o in OVERLAYS] + ["kustomize/examples/gpu-platform"]:
        for obj in renders(source):
            if "namespace" not in obj["metadata"]:
                needed.add((obj["apiVersion"].rpartition("/")[0], obj["kind"]))
    assert needed <= allowed, needed - allowed
    destinations = {d["namespace"] for d in project["spec"]["destinations"]}
    for source in [f"kustomize/overlays/{o}" for o in OVERLAYS] + ["kustomize/examples/gpu-platform"]:
        namespaces = {o["metadata"]["namespace"] for o in renders(source) if "namespace" in o["metadata"]}
        assert namespaces <= destinations, namespaces - destinations


# ---------------------------------------------------------------------------------------------
# GPU platform


def test_priority_classes(renders: Renders) -> None:
    objs = renders("kustomize/examples/gpu-platform")
    high, low = one(objs, "PriorityClass", "inference-high"), one(objs, "PriorityClass", "batch-low")
    assert high["value"] > low["value"]
    assert low["preemptionPolicy"] == "Never"
    assert not high.get("globalDefault") and not low.get("globalDefault")


def test_team_namespaces_carry_an_environment_and_a_gpu_quota(renders: Renders) -> None:
    objs = renders("kustomize/examples/gpu-platform")
    namespaces = find(objs, "Namespace")
    assert len(namespaces) >= 3
    assert {ns["metadata"]["labels"]["mlguard.io/environment"] for ns in namespaces} == ENVIRONMENTS
    for ns in namespaces:
        name = ns["metadata"]["name"]
        quotas = [q for q in find(objs, "ResourceQuota") if q["metadata"]["namespace"] == name]
        assert len(quotas) == 1, name
        hard = quotas[0]["spec"]["hard"]
        assert int(hard["requests.nvidia.com/gpu"]) > 0
        assert "gpu.nvidia.com.deviceclass.resource.k8s.io/devices" in hard, "DRA GPUs are limited too"
        assert not any(k.startswith("limits.nvidia.com") for k in hard), "extended resources: requests.* only"


def test_time_slicing_config_is_a_valid_device_plugin_config(renders: Renders) -> None:
    cm = one(renders("kustomize/examples/gpu-platform"), "ConfigMap", "time-slicing-config")
    assert cm["metadata"]["namespace"] == "gpu-operator"
    assert "any" in cm["data"]
    for key, text in cm["data"].items():
        config = yaml.safe_load(text)
        assert config["version"] == "v1", key
        slicing = config["sharing"]["timeSlicing"]
        assert slicing["failRequestsGreaterThanOne"] is True, key
        for resource in slicing["resources"]:
            assert resource["name"] == "nvidia.com/gpu"
            assert isinstance(resource["replicas"], int) and resource["replicas"] >= 2


# ---------------------------------------------------------------------------------------------
# Canary Rollout example (written by the analysis-provider engineer; checked here once it exists)



def test_canary_analysis_calls_go_to_the_analysis_service(renders: Renders) -> None:
    objs = renders("kustomize/examples/canary-rollout")
    templates = find(objs, "AnalysisTemplate") + find(objs, "ClusterAnalysisTemplate")
    assert templates, "AnalysisTemplates for the checks"
    urls = []
    for template in templates:
        for metric in template["spec"]["metrics"]:
            web = metric.get("provider", {}).get("web")
            if web:
                urls.append(web["url"])
    for canary in find(objs, "Canary"):
        urls += [h["url"] for h in canary["spec"]["analysis"].get("webhooks", [])]
    assert urls
    for url in urls:
        parsed = urlparse(url)
        assert parsed.hostname and parsed.hostname.startswith("mlguard-analysis.mlguard-system"), url
        assert parsed.port in (None, 80), url
        assert re.match(r"^/v1/(analyses|flagger)/[a-z-]+", parsed.path), url


def test_canary_rollout_references_existing_templates(renders: Renders) -> None:
    objs = renders("kustomize/examples/canary-rollout")
    names = {t["metadata"]["name"] for t in find(objs, "AnalysisTemplate")}
    referenced = set()
    for rollout in find(objs, "Rollout"):
        canary = rollout["spec"]["strategy"]["canary"]
        for ref in (canary.get("analysis") or {}).get("templates", []):
            referenced.add(ref["templateName"])
        for step in canary.get("steps", []):
            for ref in (step.get("analysis") or {}).get("templates", []):
                referenced.add(ref["templateName"])
    assert referenced, "the Rollout uses AnalysisTemplates"
    assert referenced <= names, referenced - names


def test_canary_runs_in_an_example_team_namespace(renders: Renders) -> None:
    teams = {ns["metadata"]["name"] for ns in find(renders("kustomize/examples/gpu-platform"), "Namespace")}
    for rollout in find(renders("kustomize/examples/canary-rollout"), "Rollout"):
        assert rollout["metadata"].get("namespace") in teams, "a namespace with mlguard.io/environment and a quota"
