"""Manifests for the e2e cases, in the shapes the upstream projects document.

- Deployment, Pod, Job: Kubernetes API reference (apps/v1, v1, batch/v1), as in the GPU examples of
  https://kubernetes.io/docs/tasks/manage-gpus/scheduling-gpus/ (``limits: nvidia.com/gpu: 1``).
- Rollout: Argo Rollouts ``argoproj.io/v1alpha1`` (docs/features/specification.md), and the
  ``workloadRef`` form of docs/migrating.md ("Reference Deployment From Rollout").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

IMAGE = "registry.example.com/vllm/vllm-openai@sha256:" + "4f" * 32
COST = {"team": "search", "cost-center": "cc-1234"}


def container(name: str = "server", *, gpus: int | None = 1, requests_only: bool = False,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    if gpus is not None:
        resources["requests" if requests_only else "limits"]["nvidia.com/gpu"] = str(gpus)
    out: dict[str, Any] = {"name": name, "image": IMAGE, "resources": resources}
    if env:
        out["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return out


def pod_template(app: str, *containers: dict[str, Any], labels: Mapping[str, str] | None = COST,
                 tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [container()]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": {"app": app, **(labels or {})}}, "spec": spec}


def deployment(name: str, namespace: str, *, replicas: int = 1, template: dict[str, Any] | None = None,
               annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app": name, **COST}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": copy.deepcopy(template) if template else pod_template(name)}}


def pod(name: str, namespace: str, *containers: dict[str, Any], labels: Mapping[str, str] | None = COST,
        runtime_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [container()]}
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})}, "spec": spec}


def job(name: str, namespace: str, *, template: dict[str, Any]) -> dict[str, Any]:
    tpl = copy.deepcopy(template)
    tpl["spec"]["restartPolicy"] = "Never"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace,
                                                                  "labels": dict(COST)},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 600,
                     "template": tpl}}


CANARY = {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "5m"}}]}}


def rollout(name: str, namespace: str, *, replicas: int = 1, template: dict[str, Any] | None = None,
            workload_ref: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                            "strategy": copy.deepcopy(CANARY)}
    if workload_ref:
        # docs/migrating.md: the Rollout takes the pod template of an existing Deployment
        spec["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload_ref}
    else:
        spec["template"] = copy.deepcopy(template) if template else pod_template(name)
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, **COST}}, "spec": spec}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
