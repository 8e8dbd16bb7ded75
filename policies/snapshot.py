"""A cluster snapshot for CI (`mlguard check --cluster-facts FILE`), written by `mlguard facts`.

The same data the admission webhook's list+watch cache holds, taken once, read-only: namespaces with their
labels, Nodes (labels and taints: is a ``nodeName`` a GPU node), ResourceQuotas (spec and status), the
non-terminated pods trimmed to what GPU counting reads, and DRA ResourceClaims/Templates. With it,
`gpu-quota`'s look-ahead in CI is what admission will compute: the pull request's workloads at full size
plus the GPUs that the cluster's other pods hold.

Pod ownership follows the webhook (webhook/cluster.py): a pod belongs to workload ``W`` when it is ``W``
or its controller is named ``W`` or ``W-<suffix>`` with the suffix a controller gives (a Deployment's
ReplicaSet ``W-<pod-template-hash>``, a CronJob's Job ``W-<minute>``), never a mere name prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from policies.gpu import GpuConfig
from policies.workload import extract

API_VERSION = "mlguard.io/v1alpha1"
KIND = "ClusterFacts"
SCHEMA_PATH = Path(__file__).parent / "schema" / "clusterfacts.schema.yaml"
TERMINATED_PHASES = ("Succeeded", "Failed")


class SnapshotError(ValueError):
    """A cluster facts file that cannot be used, with every problem."""


@cache
def snapshot_schema() -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load(SCHEMA_PATH.read_text())
    return schema


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


# The suffix a controller gives the objects it names after its owner: a ReplicaSet's pod-template-hash (Kubernetes'
# rand.SafeEncodeString alphabet: no vowels, no 0, 1, 3), a CronJob's Job (the scheduled minute), a
# LeaderWorkerSet's worker StatefulSet (the group index).
_HASH = re.compile(r"[bcdfghjklmnpqrstvwxz2456789]{4,10}")
_INDEX = re.compile(r"[0-9]+")


def owned_by(pod: Mapping[str, Any], workload: str) -> bool:
    """The pod is ``workload`` itself, or its controller is named ``workload``, or ``workload-<suffix>`` with the
    suffix a controller gives (a ReplicaSet's ``workload-<pod-template-hash>``, a Job's ``workload-<minute>``, a
    worker StatefulSet's ``workload-<index>``). Never a mere name prefix: ``llm`` does not own ``llm-big-*``'s pods.
    (The snapshot keeps no uids; the webhook's cache matches by uid.)"""
    meta = _meta(pod)
    if meta.get("name") == workload:
        return True
    for ref in meta.get("ownerReferences") or []:
        if not isinstance(ref, Mapping) or not ref.get("controller"):
            continue
        owner, kind = ref.get("name"), ref.get("kind")
        if not isinstance(owner, str):
            continue
        if owner == workload:
            return True
        suffix = owner[len(workload) + 1:] if owner.startswith(workload + "-") else ""
        if (kind == "ReplicaSet" and _HASH.fullmatch(suffix)) or (kind in ("Job", "StatefulSet")
                                                                  and _INDEX.fullmatch(suffix)):
            return True
    return False


class ClusterSnapshot:
    """Cluster facts read from a snapshot file."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "<memory>") -> None:
        self.source = source
        self.cluster = str(_meta(data).get("cluster") or "")
        self.taken_at = str(_meta(data).get("takenAt") or "")
        self._labels = {str(ns["name"]): {str(k): str(v) for k, v in (ns.get("labels") or {}).items()}
                        for ns in data.get("namespaces") or []}
        self._quotas: dict[str, list[Mapping[str, Any]]] = {}
        for q in data.get("resourceQuotas") or []:
            self._quotas.setdefault(str(_meta(q).get("namespace")), []).append(q)
        self._pods: dict[str, list[Mapping[str, Any]]] = {}
        for pod in data.get("pods") or []:
            phase = (pod.get("status") or {}).get("phase")
            if phase not in TERMINATED_PHASES:
                self._pods.setdefault(str(_meta(pod).get("namespace")), []).append(pod)
        self._nodes: dict[str, Mapping[str, Any]] = {
            str(n["name"]): {"apiVersion": "v1", "kind": "Node",
                             "metadata": {"name": str(n["name"]), "labels": dict(n.get("labels") or {})},
                             "spec": {"taints": list(n.get("taints") or [])}}
            for n in data.get("nodes") or [] if isinstance(n, Mapping) and n.get("name")}
        self._claims = {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))): c
                        for c in data.get("resourceClaims") or []}
        self._templates = {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))): c
                           for c in data.get("resourceClaimTemplates") or []}

    @classmethod
    def load(cls, path: str | Path) -> ClusterSnapshot:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SnapshotError(f"{p}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from exc
        validator = jsonschema.Draft202012Validator(snapshot_schema())
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            lines = [f"  - {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:20]]
            raise SnapshotError(f"{p}: not a cluster facts file written by `mlguard facts`:\n" + "\n".join(lines))
        return cls(data, source=str(p))

    def knows(self, namespace: str) -> bool:
        return namespace in self._labels

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._labels.get(namespace)

    def node(self, name: str) -> Mapping[str, Any] | None:
        """A Node (labels and taints) when the snapshot recorded nodes (`mlguard facts` does)."""
        return self._nodes.get(name)

    def quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return list(self._quotas.get(namespace, []))

    def resolve_claim(self, namespace: str, name: str, is_template: bool) -> Mapping[str, Any] | None:
        return (self._templates if is_template else self._claims).get((namespace, name))

    def gpu_usage(self, namespace: str, *, exclude_owners: Sequence[str], gpu: GpuConfig) -> dict[str, Decimal]:
        """GPUs held by the namespace's running pods, but those of the named workloads."""
        total: dict[str, Decimal] = {}
        for pod in self._pods.get(namespace, []):
            if any(owned_by(pod, name) for name in exclude_owners):
                continue
            workload = extract(pod, gpu=gpu, resolve_claim=self.resolve_claim)
            for k, v in (workload.pod_gpus(0, gpu) if workload.templates else {}).items():
                total[k] = total.get(k, Decimal(0)) + v
        return total
