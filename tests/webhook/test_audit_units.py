"""The audit's parts on their own: paging (limit/continue, an expired continue token), discovery (served
kinds at the right version, the rest skipped quietly), judging owned objects through their controllers
(uid-checked), GPU idleness attributed to the judged object, reports split past their result limit and
valid against the OpenReports CRD, and the mlguard_audit_results metric.

The API here is `PagedApi`: webhook.audit.Api with its transport replaced by an in-memory server that pages
as kube-apiserver does (an opaque continue token; 410 Gone for an expired one). The real API server runs
the same code in tests/e2e/test_audit.py.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from webhook_testlib import REPO

from policies.policyset import load_policyset
from rollouts.report import WorkloadIdle
from webhook import metrics
from webhook.audit import Api, ServedKind, discover, list_all, read_cluster, run_audit, utilisation_for
from webhook.openreports import MAX_RESULTS, build_reports, counts, outcomes

sys.path.insert(0, str(REPO / "tests" / "kustomize"))
from kustomize_testlib import CRD_DIR, CrdSchemas, validate_custom

BASELINE = load_policyset(REPO / "policies" / "catalog" / "baseline.yaml")
DEPLOYMENTS = ServedKind("apps", "v1", "Deployment", "deployments", True)


class PagedApi(Api):
    """In-memory API server: discovery documents and lists by path, paged by ``limit``/``continue``."""

    def __init__(self, lists: dict[str, list[dict[str, Any]]], discovery: dict[str, Any]) -> None:
        super().__init__(None)
        self.lists = lists
        self.discovery = discovery
        self.expire: set[str] = set()      # continue tokens answered with 410 Gone (once each)
        self.paths: list[tuple[str, dict[str, str]]] = []

    def call(self, method: str, path: str, *, query: Any = (), body: str | None = None,
             content_type: str | None = None) -> Any:
        self.requests[method] = self.requests.get(method, 0) + 1
        q = dict(query)
        self.paths.append((path, q))
        if path in self.discovery:
            found = self.discovery[path]
            if found == 404:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(found)
        if path not in self.lists:
            raise ApiException(status=404, reason="Not Found")
        items = self.lists[path]
        token = q.get("continue")
        if token in self.expire:
            self.expire.discard(token)
            raise ApiException(status=410, reason="Gone")
        start = int(token.split(":")[1]) if token else 0
        limit = int(q.get("limit", len(items) or 1))
        page = items[start:start + limit]
        more = start + limit < len(items)
        return {"kind": "List", "metadata": {"continue": f"opaque:{start + limit}" if more else ""},
                "items": copy.deepcopy(page)}


def deployment(name: str, ns: str, *, uid: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "registry.example.com/app@sha256:" + "1" * 64}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}


def owned(obj: dict[str, Any], kind: str, name: str, uid: str) -> dict[str, Any]:
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid,
                                           "controller": True}]
    return obj


CORE = {"/api/v1": {"resources": [{"name": "pods", "kind": "Pod", "namespaced": True, "verbs": ["list", "get"]},
                                  {"name": "pods/log", "kind": "Pod", "namespaced": True, "verbs": ["get"]}]}}
APPS = {"/apis/apps/v1": {"resources": [
    {"name": "deployments", "kind": "Deployment", "namespaced": True, "verbs": ["list"]},
    {"name": "deployments/scale", "kind": "Scale", "namespaced": True, "verbs": ["get"]},
    {"name": "replicasets", "kind": "ReplicaSet", "namespaced": True, "verbs": ["list"]}]}}


def apis(*groups: tuple[str, list[str], str]) -> dict[str, Any]:
    return {"/apis": {"groups": [{"name": g, "versions": [{"version": v} for v in versions],
                                  "preferredVersion": {"version": preferred}} for g, versions, preferred in groups]}}


def cluster(deployments: list[dict[str, Any]], *, pods: list[dict[str, Any]] | None = None,
            replicasets: list[dict[str, Any]] | None = None) -> PagedApi:
    discovery = {**apis(("apps", ["v1"], "v1")), **CORE, **APPS}
    return PagedApi({"/apis/apps/v1/deployments": deployments, "/apis/apps/v1/replicasets": replicasets or [],
                     "/api/v1/pods": pods or [], "/api/v1/namespaces": [{"metadata": {"name": "team-a"}}],
                     "/api/v1/resourcequotas": []}, discovery)


# ---- paging --------------------------------------------------------------------------------------------
def test_lists_page_by_page_and_every_item_gets_its_kind() -> None:
    api = cluster([deployment(f"d{i}", "team-a") for i in range(7)])
    found = list(list_all(api, DEPLOYMENTS, page=3))
    assert [o["metadata"]["name"] for o in found] == [f"d{i}" for i in range(7)]
    assert {(o["kind"], o["apiVersion"]) for o in found} == {("Deployment", "apps/v1")}
    lists = [q for p, q in api.paths if p == "/apis/apps/v1/deployments"]
    assert [q.get("continue") for q in lists] == [None, "opaque:3", "opaque:6"]
    assert {q["limit"] for q in lists} == {"3"}


def test_an_expired_continue_token_lists_the_kind_again_without_duplicates() -> None:
    api = cluster([deployment(f"d{i}", "team-a") for i in range(5)])
    api.expire.add("opaque:2")
    found = list(list_all(api, DEPLOYMENTS, page=2))
    assert sorted(o["metadata"]["name"] for o in found) == [f"d{i}" for i in range(5)]
    starts = [q.get("continue") for p, q in api.paths if p == "/apis/apps/v1/deployments"]
    assert starts == [None, "opaque:2", None, "opaque:2", "opaque:4"]


def test_a_continue_token_that_keeps_expiring_is_an_error_not_a_partial_list() -> None:
    from webhook.audit import AuditError

    class Expiring(PagedApi):
        def call(self, method: str, path: str, **kw: Any) -> Any:
            if dict(kw.get("query") or ()).get("continue"):
                raise ApiException(status=410, reason="Gone")
            return super().call(method, path, **kw)
    api = Expiring({"/apis/apps/v1/deployments": [deployment(f"d{i}", "team-a") for i in range(3)]}, {})
    with pytest.raises(AuditError, match="continue token expired"):
        list(list_all(api, DEPLOYMENTS, page=1))


# ---- discovery -----------------------------------------------------------------------------------------
def test_discovery_finds_each_kind_at_the_version_that_serves_it_and_skips_the_rest_quietly() -> None:
    discovery = {
        **apis(("apps", ["v1"], "v1"), ("serving.kserve.io", ["v1beta1", "v1alpha1"], "v1beta1"),
               ("ray.io", ["v1"], "v1"), ("example.com", ["v1"], "v1")),
        **CORE, **APPS,
        "/apis/serving.kserve.io/v1beta1": {"resources": [
            {"name": "inferenceservices", "kind": "InferenceService", "namespaced": True, "verbs": ["list"]},
            {"name": "inferenceservices/status", "kind": "InferenceService", "namespaced": True, "verbs": ["get"]}]},
        "/apis/serving.kserve.io/v1alpha1": {"resources": [
            {"name": "llminferenceservices", "kind": "LLMInferenceService", "namespaced": True, "verbs": ["list"]},
            {"name": "clusterservingruntimes", "kind": "ClusterServingRuntime", "namespaced": False,
             "verbs": ["list"]}]},
        "/apis/ray.io/v1": 404,  # listed by the aggregator but not served (an APIService that is down)
    }
    api = PagedApi({}, discovery)
    found = {(k.group, k.kind): k for k in discover(api, {("", "Pod"), ("apps", "Deployment"), ("apps", "ReplicaSet"),
                                                          ("serving.kserve.io", "InferenceService"),
                                                          ("serving.kserve.io", "LLMInferenceService"),
                                                          ("serving.kserve.io", "ClusterServingRuntime"),
                                                          ("ray.io", "RayCluster"), ("kubeflow.org", "PyTorchJob")})}
    assert set(found) == {("", "Pod"), ("apps", "Deployment"), ("apps", "ReplicaSet"),
                          ("serving.kserve.io", "InferenceService"), ("serving.kserve.io", "LLMInferenceService"),
                          ("serving.kserve.io", "ClusterServingRuntime")}
    assert found[("serving.kserve.io", "InferenceService")].version == "v1beta1"
    assert found[("serving.kserve.io", "LLMInferenceService")].path(None) == \
        "/apis/serving.kserve.io/v1alpha1/llminferenceservices"
    assert found[("serving.kserve.io", "ClusterServingRuntime")].path("team-a") == \
        "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes"   # cluster-scoped: no namespace
    assert found[("", "Pod")].plural == "pods"                      # not pods/log
    assert not any(p.startswith("/apis/example.com") for p, _ in api.paths)  # a group nobody asked for


# ---- owned objects -------------------------------------------------------------------------------------
def test_owned_objects_are_judged_through_their_controller_only_when_it_exists_with_that_uid() -> None:
    rs = owned({"metadata": {"name": "web-5c8d", "namespace": "team-a", "uid": "uid-rs"}, "spec": {}},
               "Deployment", "web", "uid-web")
    pods = [owned({"metadata": {"name": "web-5c8d-a", "namespace": "team-a", "uid": "p1"},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}, "ReplicaSet", "web-5c8d", "uid-rs"),
            # a pod that names a real controller with another uid, and one naming a controller that does not exist
            owned({"metadata": {"name": "forged", "namespace": "team-a", "uid": "p2"},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}, "ReplicaSet", "web-5c8d", "uid-other"),
            owned({"metadata": {"name": "orphan", "namespace": "team-a", "uid": "p3"},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}, "ReplicaSet", "gone", "uid-gone")]
    api = cluster([deployment("web", "team-a")], pods=pods, replicasets=[rs])
    listed = read_cluster(api, BASELINE)
    judged = sorted((o["kind"], o["metadata"]["name"]) for o in listed.objects)
    assert judged == [("Deployment", "web"), ("Pod", "forged"), ("Pod", "orphan")]
    assert listed.top(("team-a", "Pod", "web-5c8d-a")) == ("team-a", "Deployment", "web")


def test_gpu_idleness_of_replicasets_is_attributed_to_their_deployment() -> None:
    rs_old = owned({"metadata": {"name": "llm-1", "namespace": "team-a", "uid": "uid-rs1"}, "spec": {}},
                   "Deployment", "llm", "uid-llm")
    rs_new = owned({"metadata": {"name": "llm-2", "namespace": "team-a", "uid": "uid-rs2"}, "spec": {}},
                   "Deployment", "llm", "uid-llm")
    listed = read_cluster(cluster([deployment("llm", "team-a")], replicasets=[rs_old, rs_new]), BASELINE)

    def row(owner: str, gpus: float, idle_for: int, util: float, hours: float) -> WorkloadIdle:
        return WorkloadIdle(namespace="team-a", owner_kind="ReplicaSet", owner_name=owner, pods=(f"{owner}-x",),
                            gpus_now=gpus, gpu_hours=hours, idle_gpu_hours=hours, utilisation_pct=util,
                            idle_for_seconds=idle_for, idle_now=idle_for > 0)
    both_idle = utilisation_for(listed, [row("llm-1", 1, 3600, 1.0, 10), row("llm-2", 2, 1800, 4.0, 30)],
                                window_seconds=86400, threshold_percent=5)
    [(resource, idle)] = both_idle.by_resource.items()
    assert (resource.kind, resource.name) == ("Deployment", "llm")
    assert idle.gpus == 3 and idle.idle_for_seconds == 1800      # idle as long as all of it is
    assert idle.utilisation_percent == pytest.approx((1.0 * 10 + 4.0 * 30) / 40)
    one_busy = utilisation_for(listed, [row("llm-1", 1, 3600, 1.0, 10), row("llm-2", 2, 0, 60.0, 30)],
                               window_seconds=86400, threshold_percent=5)
    assert next(iter(one_busy.by_resource.values())).idle_for_seconds == 0


# ---- reports -------------------------------------------------------------------------------------------
def sneaky_cluster(n: int, *, clean: int = 0) -> PagedApi:
    bad = [deployment(f"tool-{i}", "team-a", env={"NVIDIA_VISIBLE_DEVICES": "all"}) for i in range(n)]
    good = [deployment(f"web-{i}", "team-b") for i in range(clean)]
    api = cluster(bad + good)
    api.lists["/api/v1/namespaces"] = [{"metadata": {"name": "team-a"}}, {"metadata": {"name": "team-b"}}]
    return api


def test_reports_split_past_their_limit_and_count_each_result_once() -> None:
    run = run_audit(sneaky_cluster(7, clean=2), BASELINE)
    items = outcomes(run)
    reports = build_reports(run, items, max_results=3)
    assert set(reports) == {"team-a"}                       # team-b: every result a pass, no report
    parts = reports["team-a"]
    assert [r["metadata"]["name"] for r in parts] == ["mlguard-audit", "mlguard-audit-2", "mlguard-audit-3"]
    assert [len(r["results"]) for r in parts] == [3, 3, 1]
    listed = [(r["policy"], r["resources"][0]["name"]) for part in parts for r in part["results"]]
    assert len(listed) == len(set(listed)) == 7              # one per (policy, resource), none twice
    assert {p for p, _ in listed} == {"gpu-isolation"}
    for part in parts:
        s = part["summary"]
        assert s["fail"] == sum(1 for r in part["results"] if r["result"] == "fail")
    team_a_passes = sum(1 for o in items if o.namespace == "team-a" and o.result == "pass")
    assert [p["summary"]["pass"] for p in parts] == [team_a_passes, 0, 0]
    assert MAX_RESULTS == 1000
    assert build_reports(run, items)["team-a"][0]["configuration"]["limits"]["maxResults"] == 1000


def test_reports_validate_against_the_openreports_crd() -> None:
    schemas = CrdSchemas(CRD_DIR / "openreports")
    run = run_audit(sneaky_cluster(2), BASELINE)
    [report] = build_reports(run)["team-a"]
    validate_custom(report, schemas)
    result = report["results"][0]
    assert result["result"] == "fail" and result["severity"] == "critical"
    assert result["properties"]["fieldPath"] == "spec.template.spec.containers[0].env[0].value"
    assert result["properties"]["runbook"].startswith("https://") and "gpu-isolation" in result["properties"]["runbook"]
    assert result["resources"][0]["uid"] == "uid-tool-0"
    # a result the policy could not judge (gpu-idle without Prometheus) is an error, and still valid
    serving = deployment("vllm", "team-a")
    serving["spec"]["template"]["spec"]["containers"][0].update(
        image="vllm/vllm-openai:v0.6.3", resources={"limits": {"nvidia.com/gpu": "1"}})
    run = run_audit(cluster([serving]), BASELINE)
    [report] = build_reports(run)["team-a"]
    validate_custom(report, schemas)
    errors = [r for r in report["results"] if r["result"] == "error"]
    assert [r["policy"] for r in errors] == ["gpu-idle"]
    assert "no Prometheus was given to the audit" in errors[0]["message"]
    assert report["summary"]["error"] == 1


def test_the_metric_has_help_and_each_run_replaces_the_last() -> None:
    run = run_audit(sneaky_cluster(2, clean=1), BASELINE)
    metrics.set_audit_results(counts(outcomes(run)))
    text = generate_latest(metrics.REGISTRY).decode()
    assert "# HELP mlguard_audit_results Results of the last audit" in text
    samples = {(s.labels["policy"], s.labels["namespace"], s.labels["result"]): s.value
               for f in text_string_to_metric_families(text) if f.name == "mlguard_audit_results" for s in f.samples}
    assert samples[("gpu-isolation", "team-a", "fail")] == 2
    assert samples[("gpu-isolation", "team-b", "pass")] == 1
    metrics.set_audit_results({("gpu-limits", "team-c", "pass"): 4})
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'namespace="team-a"' not in text.split("# HELP mlguard_audit_results")[1].split("# HELP")[0]


def test_writing_reports_without_the_openreports_crds_says_what_to_install() -> None:
    from webhook.audit import AuditError
    from webhook.openreports import ReportWriter

    api = sneaky_cluster(1)  # serves no openreports.io at all
    run = run_audit(api, BASELINE)
    with pytest.raises(AuditError, match="install the OpenReports CRDs"):
        ReportWriter(api).sync(build_reports(run))


def test_cluster_scoped_objects_go_to_one_cluster_report() -> None:
    """A KServe ClusterServingRuntime (serving.kserve.io/v1alpha1, cluster-scoped) that hands its container every
    GPU: a ClusterReport, valid against its CRD, and the metric's namespace label is empty."""
    runtime = {"metadata": {"name": "vllm-runtime", "uid": "uid-rt"},
               "spec": {"supportedModelFormats": [{"name": "huggingface"}],
                        "containers": [{"name": "kserve-container", "image": "vllm/vllm-openai:v0.6.3",
                                        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]}}
    api = sneaky_cluster(1)
    api.discovery["/apis"]["groups"].append({"name": "serving.kserve.io", "versions": [{"version": "v1alpha1"}],
                                             "preferredVersion": {"version": "v1alpha1"}})
    api.discovery["/apis/serving.kserve.io/v1alpha1"] = {"resources": [
        {"name": "clusterservingruntimes", "kind": "ClusterServingRuntime", "namespaced": False, "verbs": ["list"]}]}
    api.lists["/apis/serving.kserve.io/v1alpha1/clusterservingruntimes"] = [runtime]
    run = run_audit(api, BASELINE)
    reports = build_reports(run)
    [cluster] = reports[""]
    assert cluster["kind"] == "ClusterReport" and "namespace" not in cluster["metadata"]
    validate_custom(cluster, CrdSchemas(CRD_DIR / "openreports"))
    [result] = cluster["results"]
    assert (result["policy"], result["result"]) == ("gpu-isolation", "fail")
    assert "namespace" not in result["resources"][0]
    assert counts(outcomes(run))[("gpu-isolation", "", "fail")] == 1
    assert [r["kind"] for r in reports["team-a"]] == ["Report"]


def test_the_text_report_marks_what_could_not_be_judged() -> None:
    """gpu-idle without Prometheus: an ERROR line and a summary that counts it apart, never a silent pass."""
    from webhook.audit_cli import render

    serving = deployment("vllm", "team-a")
    serving["spec"]["template"]["spec"]["containers"][0].update(
        image="vllm/vllm-openai:v0.6.3", resources={"limits": {"nvidia.com/gpu": "1"}})
    text = render(run_audit(cluster([serving]), BASELINE), "text", "deny")
    assert "ERROR gpu-idle  Deployment/team-a/vllm  (<cluster>)" in text
    assert "1 not judged (ERROR: the data a policy needs is missing)" in text.splitlines()[-1]
    assert text.splitlines()[-1].startswith("mlguard audit: 1 resources")
