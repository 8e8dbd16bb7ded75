"""A cluster snapshot for CI (`mlguard check --cluster-facts FILE`), written by `mlguard facts`.

The same data the admission webhook's list+watch cache holds, taken once, read-only: namespaces with their
labels, Nodes (labels and taints: is a ``nodeName`` a GPU node), ResourceQuotas (spec and status), the
non-terminated pods trimmed to what GPU counting reads, and DRA ResourceClaims/Templates. With it,
`gpu-quota`'s look-ahead in CI is what admission will compute: the pull request's workloads at full size
plus the GPUs that the cluster's other pods hold.

Pod ownership is the webhook's (webhook/cluster.py): the same walk up a pod's chain of controllers, each link
checked by uid (policies.owners.owned_by_any), through the ReplicaSets, StatefulSets, Deployments and pods the
snapshot records. A snapshot written by an earlier `mlguard facts` holds no uids and no owners: it is still read,
its pods matched by the names controllers give (`owned_by_name`: ``W``, or a controller named ``W`` or
``W-<suffix>`` with a controller's suffix, never a mere name prefix), and `notes` says so.

KEDA ScaledObjects (gpu-scale-to-zero) are those the cluster holds; None when the snapshot could not list them
(KEDA not installed, not granted, or a file from an earlier `mlguard facts`): unknown, never "none".
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
from policies.model import Resource
from policies.owners import owned_by_any
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


def owned_by_name(pod: Mapping[str, Any], workload: str) -> bool:
    """For a snapshot without owners (an earlier `mlguard facts`): the pod is ``workload`` itself, or its controller
    is named ``workload``, or ``workload-<suffix>`` with the suffix a controller gives (a ReplicaSet's
    ``workload-<pod-template-hash>``, a Job's ``workload-<minute>``, a worker StatefulSet's ``workload-<index>``).
    Never a mere name prefix: ``llm`` does not own ``llm-big-*``'s pods. An approximation: a ReplicaSet of another
    workload whose name is ``workload-<something hash-like>`` is taken for ``workload``'s."""
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


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ClusterSnapshot:
    """Cluster facts read from a snapshot file.

    ``exact_owners``: the snapshot records the owner chain (pods' uids, ReplicaSets, StatefulSets, Deployments), so
    ownership is the webhook's walk by uid; otherwise the name approximation. ``notes``: what a reader should
    know about this snapshot (`mlguard check` prints them), each one line."""

    def __init__(self, data: Mapping[str, Any], *, source: str = "<memory>") -> None:
        self.source = source
        self.cluster = str(_meta(data).get("cluster") or "")
        self.taken_at = str(_meta(data).get("takenAt") or "")
        found = data.get("unavailable")
        unavailable: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        self._labels = {str(ns["name"]): {str(k): str(v) for k, v in (ns.get("labels") or {}).items()}
                        for ns in data.get("namespaces") or []}
        self._quotas: dict[str, list[Mapping[str, Any]]] = {}
        for q in data.get("resourceQuotas") or []:
            self._quotas.setdefault(str(_meta(q).get("namespace")), []).append(q)
        self._pods: dict[str, list[Mapping[str, Any]]] = {}
        self._pod_by_name: dict[tuple[str, str], Mapping[str, Any]] = {}
        for pod in data.get("pods") or []:
            phase = (pod.get("status") or {}).get("phase")
            if phase not in TERMINATED_PHASES:
                self._pods.setdefault(str(_meta(pod).get("namespace")), []).append(pod)
                self._pod_by_name[_key(pod)] = pod
        self.exact_owners = isinstance(data.get("owners"), list)
        self._owners: dict[tuple[str, str, str], Mapping[str, Any]] = {
            (_key(o)[0], str(o.get("kind")), _key(o)[1]): o for o in data.get("owners") or [] if isinstance(o, Mapping)}
        self._nodes: dict[str, Mapping[str, Any]] = {
            str(n["name"]): {"apiVersion": "v1", "kind": "Node",
                             "metadata": {"name": str(n["name"]), "labels": dict(n.get("labels") or {})},
                             "spec": {"taints": list(n.get("taints") or [])}}
            for n in data.get("nodes") or [] if isinstance(n, Mapping) and n.get("name")}
        self._claims = {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))): c
                        for c in data.get("resourceClaims") or []}
        self._templates = {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))): c
                           for c in data.get("resourceClaimTemplates") or []}
        self._scaled: dict[str, list[Mapping[str, Any]]] | None = None
        if isinstance(data.get("scaledObjects"), list):
            self._scaled = {}
            for so in data["scaledObjects"]:
                if isinstance(so, Mapping):
                    self._scaled.setdefault(_key(so)[0], []).append(so)
        self.notes: list[str] = []
        where = f"{source}{f' (taken {self.taken_at})' if self.taken_at else ''}"
        if not self.exact_owners:
            why = unavailable.get("owners") or ("it was written by an earlier `mlguard facts`, without owners; "
                                                "run `mlguard facts` again for exact ownership")
            self.notes.append(f"cluster facts {where}: pods are matched to workloads by the names their controllers "
                              f"give, not by uid: {why}")
        if self._scaled is None:
            why = unavailable.get("scaledObjects") or "it was written by an earlier `mlguard facts`, without them"
            self.notes.append(f"cluster facts {where}: the cluster's KEDA ScaledObjects are unknown ({why}); "
                              "gpu-scale-to-zero only warns about workloads no ScaledObject of the checked set "
                              "targets")

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

    def _resolve_owner(self, namespace: str, kind: str, name: str) -> Mapping[str, Any] | None:
        """A link of a pod's owner chain (policies.owners): a recorded pod, ReplicaSet, StatefulSet or Deployment."""
        if kind == "Pod":
            return self._pod_by_name.get((namespace, name))
        return self._owners.get((namespace, kind, name))

    def scaled_objects(self, namespace: str, target: str | None = None) -> Sequence[Mapping[str, Any]] | None:
        """The namespace's ScaledObjects (with ``target``: those whose scaleTargetRef.name it is); None when the
        snapshot could not list them."""
        if self._scaled is None:
            return None
        found = self._scaled.get(namespace, [])
        if target is None:
            return list(found)
        return [so for so in found if ((so.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == target]

    def gpu_usage(self, namespace: str, *, exclude: Sequence[Resource], gpu: GpuConfig) -> dict[str, Decimal]:
        """GPUs held by the namespace's running pods, but those of the ``exclude`` workloads."""
        total: dict[str, Decimal] = {}
        names = [w.name for w in exclude]
        for pod in self._pods.get(namespace, []):
            if (owned_by_any(pod, exclude, self._resolve_owner) if self.exact_owners
                    else any(owned_by_name(pod, name) for name in names)):
                continue
            workload = extract(pod, gpu=gpu, resolve_claim=self.resolve_claim)
            for k, v in (workload.pod_gpus(0, gpu) if workload.templates else {}).items():
                total[k] = total.get(k, Decimal(0)) + v
        return total
