"""`mlguard facts --kubeconfig FILE [--context NAME] [-o FILE]`: a cluster snapshot for CI.

Lists, once and read-only (list only: no watch, no write), what the webhook's cache watches: namespaces,
ResourceQuotas, pods, nodes (labels and taints only), the owner chain's ReplicaSets, StatefulSets and Deployments
(name, namespace, uid and ownerReferences only: policies.owners walks a pod's controllers by uid, as the webhook
does), KEDA's ScaledObjects (trimmed by the webhook's own `trim_scaledobject`), and the DRA
ResourceClaims/Templates where the API serves them. ConfigMaps are not recorded: `mlguard check` resolves those in
the checked set. Pods that finished (Succeeded, Failed) are left out, as the quota does; the others are trimmed to
what GPU counting and ownership read (uid, owner references, containers' resources, resource claims, annotations).

Optional parts: nodes and the owner chain (an identity that may not list them: 403), ScaledObjects (KEDA not
installed: 404; or 403). What could not be listed is left out and named, with the reason, under ``unavailable``,
so `mlguard check` can tell "none" from "unknown" (and says so).

The file is what `mlguard check --cluster-facts FILE` reads (`policies.snapshot`, schema
policies/schema/clusterfacts.schema.yaml). Runs here because this package owns the cluster client; `policies`
only reads the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from policies.snapshot import API_VERSION, KIND, TERMINATED_PHASES
from webhook.cluster import DRA_VERSIONS, OWNER_FIELDS, trim_scaledobject

Obj = dict[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")


class FactsError(Exception):
    """The cluster could not be read: said in one line."""


def _list(list_fn: Callable[..., Any], *args: Any, trim: Callable[[Obj], Obj] | None = None) -> list[Obj]:
    """Every item, page by page; ``trim`` each as its page arrives (a ReplicaSet's pod template is never kept)."""
    items: list[Obj] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 500, "_preload_content": False, "_request_timeout": (5, 60)}
        if token:
            kwargs["_continue"] = token
        body = json.loads(list_fn(*args, **kwargs).data)
        items.extend(trim(i) if trim is not None else i for i in body.get("items") or [] if isinstance(i, dict))
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return items


def _meta(obj: Mapping[str, Any], *keys: str) -> Obj:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in keys if k in meta}


def _container(c: Mapping[str, Any]) -> Obj:
    return {k: c[k] for k in ("name", "resources", "restartPolicy") if k in c}


def trim_pod(pod: Mapping[str, Any]) -> Obj:
    """The fields of a pod that GPU counting and ownership read, nothing else."""
    meta = _meta(pod, "name", "namespace", "uid", "ownerReferences", "annotations")
    _trim_refs(meta)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    spec = pod.get("spec") or {}
    out_spec: Obj = {"containers": [_container(c) for c in spec.get("containers") or [] if isinstance(c, Mapping)]}
    if spec.get("initContainers"):
        out_spec["initContainers"] = [_container(c) for c in spec["initContainers"] if isinstance(c, Mapping)]
    for key in ("resourceClaims", "overhead"):
        if spec.get(key):
            out_spec[key] = spec[key]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": out_spec,
            "status": {"phase": (pod.get("status") or {}).get("phase")}}


def _trim_refs(meta: Obj) -> None:
    refs = meta.get("ownerReferences")
    if isinstance(refs, list):
        meta["ownerReferences"] = [{k: r[k] for k in OWNER_FIELDS if k in r} for r in refs if isinstance(r, Mapping)]


def trim_owner(obj: Mapping[str, Any], *, kind: str) -> Obj:
    """A link of a pod's owner chain (a ReplicaSet, StatefulSet or Deployment): its identity, uid and owners."""
    meta = _meta(obj, "name", "namespace", "uid", "ownerReferences")
    _trim_refs(meta)
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta}


def _keda_trim(obj: Obj) -> Obj:
    """A ScaledObject as the webhook's cache keeps it (its own trim: no triggers), with its kind."""
    return {"apiVersion": "/".join(KEDA[:2]), "kind": "ScaledObject", **trim_scaledobject(obj)}


def trim_node(node: Mapping[str, Any]) -> Obj:
    """A node's name, labels and taints (is it a GPU node), nothing else."""
    taints = (node.get("spec") or {}).get("taints") or []
    kept = [{k: t[k] for k in ("key", "value", "effect") if k in t} for t in taints if isinstance(t, Mapping)]
    return {"name": str(_meta(node, "name").get("name")), "labels": dict(_meta(node, "labels").get("labels") or {}),
            "taints": kept}


def _dra_version(api: client.ApiClient) -> str | None:
    try:
        groups = client.ApisApi(api).get_api_versions(_request_timeout=5)
    except (ApiException, HTTPError):
        return None
    for group in groups.groups or []:
        if group.name == "resource.k8s.io":
            served = [v.version for v in group.versions or []]
            return next((v for v in DRA_VERSIONS if v in served), None)
    return None


def _optional(read: Callable[[], list[Obj]], field: str, forbidden: str, unavailable: dict[str, str], *,
              absent: str | None = None) -> list[Obj] | None:
    """A part the snapshot can do without: None, and why in ``unavailable``, when the API answers 403 (or 404
    for an API that may not be served, ``absent``); any other failure is the snapshot's."""
    try:
        return read()
    except ApiException as exc:
        if exc.status == 403:
            unavailable[field] = f"this identity {forbidden} (403 Forbidden)"
        elif exc.status == 404 and absent is not None:
            unavailable[field] = absent
        else:
            raise
    return None


def snapshot(api: client.ApiClient, *, cluster: str = "") -> Obj:
    """Read the cluster once; every list is complete or this raises."""
    core = client.CoreV1Api(api)
    namespaces = _list(core.list_namespace)
    quotas = _list(core.list_resource_quota_for_all_namespaces)
    pods = [p for p in _list(core.list_pod_for_all_namespaces)
            if (p.get("status") or {}).get("phase") not in TERMINATED_PHASES]
    unavailable: dict[str, str] = {}
    nodes = _optional(lambda: _list(core.list_node), "nodes", "may not list nodes", unavailable)
    apps = client.AppsV1Api(api)
    chain = (("ReplicaSet", apps.list_replica_set_for_all_namespaces),
             ("StatefulSet", apps.list_stateful_set_for_all_namespaces),
             ("Deployment", apps.list_deployment_for_all_namespaces))
    owners = _optional(lambda: [o for kind, fn in chain for o in _list(fn, trim=partial(trim_owner, kind=kind))],
        "owners", "may not list replicasets, statefulsets or deployments (apps/v1)", unavailable)
    custom = client.CustomObjectsApi(api)
    scaled = _optional(lambda: _list(custom.list_cluster_custom_object, *KEDA, trim=_keda_trim), "scaledObjects",
                       "may not list scaledobjects.keda.sh", unavailable,
                       absent="the cluster does not serve keda.sh/v1alpha1 scaledobjects (KEDA not installed)")
    out: Obj = {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"cluster": cluster,
                     "takenAt": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")},
        "namespaces": [{"name": str(_meta(n, "name").get("name")), "labels": dict(_meta(n, "labels").get("labels")
                                                                                 or {})} for n in namespaces],
        "resourceQuotas": [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta(q, "name", "namespace"),
                            "spec": q.get("spec") or {}, "status": q.get("status") or {}} for q in quotas],
        "pods": [trim_pod(p) for p in pods],
    }
    if nodes is not None:
        out["nodes"] = [trim_node(n) for n in nodes]
    if owners is not None:
        out["owners"] = owners
    if scaled is not None:
        out["scaledObjects"] = scaled
    if unavailable:
        out["unavailable"] = unavailable
    # DRA: the version discovery names, else the first one the server lists (a 404 is "not served")
    discovered = _dra_version(api)
    for version in [discovered] if discovered else DRA_VERSIONS:
        try:
            claims = _list(custom.list_cluster_custom_object, "resource.k8s.io", version, "resourceclaims")
            templates = _list(custom.list_cluster_custom_object, "resource.k8s.io", version,
                              "resourceclaimtemplates")
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        for key, kind, items in (("resourceClaims", "ResourceClaim", claims),
                                 ("resourceClaimTemplates", "ResourceClaimTemplate", templates)):
            out[key] = [{"apiVersion": f"resource.k8s.io/{version}", "kind": kind,
                         "metadata": _meta(i, "name", "namespace"), "spec": i.get("spec") or {}} for i in items]
        break
    return out


def api_client(kubeconfig: str, context: str | None) -> tuple[client.ApiClient, str]:
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise FactsError(f"--kubeconfig {kubeconfig}: {exc}") from exc
    return client.ApiClient(configuration), str(configuration.host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlguard facts",
        description="Snapshot a cluster's namespaces (labels), nodes (labels, taints), ResourceQuotas, running "
                    "pods' GPUs and their owners, KEDA ScaledObjects and DRA claims for `mlguard check "
                    "--cluster-facts FILE`. Read-only: list permission on namespaces, pods, resourcequotas, nodes, "
                    "replicasets, statefulsets and deployments (and scaledobjects.keda.sh and resource.k8s.io "
                    "claims) is all it needs; without nodes, the apps kinds or ScaledObjects it still writes the "
                    "rest and says what is missing.")
    parser.add_argument("--kubeconfig", required=True, metavar="FILE", help="kubeconfig to read the cluster with")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current context)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the snapshot to FILE instead of stdout")
    args = parser.parse_args(argv)
    try:
        api, host = api_client(args.kubeconfig, args.context)
        with api:
            data = snapshot(api, cluster=host)
    except FactsError as exc:
        print(f"mlguard facts: {exc}", file=sys.stderr)
        return 2
    except ApiException as exc:
        print(f"mlguard facts: the API server answered {exc.status} {exc.reason}", file=sys.stderr)
        return 2
    except (HTTPError, OSError) as exc:
        print(f"mlguard facts: cannot reach the API server: {exc}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(data, sort_keys=False)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            print(f"mlguard facts: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        nodes = f"{len(data['nodes'])} nodes" if "nodes" in data else "no nodes"
        scaled = f"{len(data['scaledObjects'])} ScaledObjects" if "scaledObjects" in data else "no ScaledObjects"
        print(f"mlguard facts: {len(data['namespaces'])} namespaces, {nodes}, {len(data['resourceQuotas'])} quotas, "
              f"{len(data['pods'])} running pods, {scaled} from {host} -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for field, why in (data.get("unavailable") or {}).items():
        print(f"mlguard facts: {field} not recorded: {why}", file=sys.stderr)
    return 0
