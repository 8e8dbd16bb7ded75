"""When a controller ownerReference may be believed.

Some checks are skipped for an object a controller made from a template that was itself checked: the
canary requirement, the quota look-ahead (the owner looks ahead), the deadline of a bare pod, eval-gate's
expiry. An ownerReference is written by whoever writes the object, so a tenant can forge one
(``ownerReferences: [{kind: ConfigMap, name: mine, controller: true}]``). It is trusted only when

- at admission, the request comes from that controller's own identity (the users of `CONTROLLERS`, and
  `spec.controllers` of the PolicySet for other operators), or the owner is in the cluster facts (the
  webhook's cache) with the same uid; and
- offline (`mlguard check`, no request), the owner is in the checked set (with the same uid when both
  carry one);

and, either way, the owner's kind is a workload kind mlguard checks (a ConfigMap exempts nothing) and the object
is of a kind controllers make (`CONTROLLER_MADE`: a Deployment that names its own "controller" is still judged
in full, even when the owner is real).

Which workload a running pod belongs to (`owned_by`, `owned_by_any`: the GPUs a namespace's other workloads hold)
is one walk up the pod's chain of controllers, each link resolved and checked by uid. The admission webhook
resolves links from its cache (webhook/cluster.py), `mlguard check --cluster-facts` from the snapshot `mlguard facts`
wrote (policies/snapshot.py): both hold the same kinds (`CHAIN_KINDS`), so CI counts what admission counts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from policies.kinds import TABLE, group_of
from policies.model import Resource
from policies.workload import WorkloadConfig

if TYPE_CHECKING:  # policies.context imports policies.snapshot, which walks owners with this module
    from policies.context import EvalContext

_KCM = "system:kube-controller-manager"  # without --use-service-account-credentials


def _sa(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


# Who creates the objects a kind owns, as upstream installs them. Kubernetes' controllers run as
# kube-controller-manager (pkg/controller/*, one kube-system service account each with
# --use-service-account-credentials); Argo Rollouts' controller as argo-rollouts/argo-rollouts (its
# manifests/install.yaml); LeaderWorkerSet's as lws-system/lws-controller-manager (config/default).
CONTROLLERS: dict[str, tuple[str, ...]] = {
    "apps/ReplicaSet": (_KCM, _sa("kube-system", "replicaset-controller")),
    "apps/Deployment": (_KCM, _sa("kube-system", "deployment-controller")),
    "apps/StatefulSet": (_KCM, _sa("kube-system", "statefulset-controller")),
    "apps/DaemonSet": (_KCM, _sa("kube-system", "daemon-set-controller")),
    "batch/Job": (_KCM, _sa("kube-system", "job-controller")),
    "batch/CronJob": (_KCM, _sa("kube-system", "cronjob-controller")),
    "argoproj.io/Rollout": (_sa("argo-rollouts", "argo-rollouts"),),
    "leaderworkerset.x-k8s.io/LeaderWorkerSet": (_sa("lws-system", "lws-controller-manager"),),
}


# The kinds controllers make: a Pod (of a ReplicaSet, StatefulSet, DaemonSet, Job, RayCluster, ...), a ReplicaSet
# (of a Deployment or Rollout), a StatefulSet (of a LeaderWorkerSet), a Job (of a CronJob or JobSet), a JobSet (of a
# TrainJob), a RayCluster (of a RayService or RayJob). An object of any other kind (a Deployment, a CronJob, a
# Rollout, ...) is written by people and their tools, never spared for an owner reference, whatever it names.
CONTROLLER_MADE = frozenset({("", "Pod"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("batch", "Job"),
                             ("jobset.x-k8s.io", "JobSet"), ("ray.io", "RayCluster")})


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true``, as the object claims it."""
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return ref
    return None


def _key(ref: Mapping[str, Any]) -> tuple[str, str]:
    return group_of({"apiVersion": ref.get("apiVersion", "")}), str(ref.get("kind", ""))


def is_workload_kind(ref: Mapping[str, Any], ctx: EvalContext) -> bool:
    """The owner's kind is one mlguard extracts pod templates from (the built-in table, or a kind the
    PolicySet registers in spec.workloadKinds)."""
    key = _key(ref)
    if key in TABLE:
        return True
    workloads = getattr(ctx.policyset, "workloads", None)
    return isinstance(workloads, WorkloadConfig) and key in workloads.kinds


def _controller_users(ref: Mapping[str, Any], ctx: EvalContext) -> tuple[str, ...]:
    group, kind = _key(ref)
    names = (f"{group}/{kind}" if group else kind,)
    configured = (getattr(ctx.policyset, "spec", None) or {}).get("controllers") or {}
    users: list[str] = []
    for name in names:
        users.extend(CONTROLLERS.get(name, ()))
        users.extend(configured.get(name, ()))
    return tuple(users)


def trusted_controller(obj: Mapping[str, Any], namespace: str, ctx: EvalContext) -> Mapping[str, Any] | None:
    """The object's controller reference when it may be believed (see the module's docstring), else None."""
    ref = controller_ref(obj)
    if ref is None or not is_workload_kind(ref, ctx) or _key(obj) not in CONTROLLER_MADE:
        return None
    request = ctx.request
    if request is not None and request.user and request.user in _controller_users(ref, ctx):
        return ref
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        return None
    owner = ctx.facts.resolve_object(namespace, str(ref.get("kind")), name)
    if not isinstance(owner, Mapping) or owner.get("kind", ref.get("kind")) != ref.get("kind"):
        return None
    meta = owner.get("metadata")
    uid = meta.get("uid") if isinstance(meta, Mapping) else None
    if request is not None:  # admission: the cache's object, the same uid
        return ref if uid and uid == ref.get("uid") else None
    # offline: the owner is in the checked set; a uid on both sides must agree
    return ref if not (uid and ref.get("uid")) or uid == ref.get("uid") else None


def controlled(obj: Mapping[str, Any], namespace: str, ctx: EvalContext) -> bool:
    """True when a trusted controller made the object."""
    return trusted_controller(obj, namespace, ctx) is not None


# ---- which workload a running pod belongs to ----------------------------------------------------------------------
# The kinds an owner chain is followed through: what the webhook's cache holds of them (webhook/cluster.py RESOLVABLE,
# and its pods) and what `mlguard facts` records. A Deployment's pods (pod -> ReplicaSet -> Deployment), a Rollout's
# (pod -> ReplicaSet -> Rollout), a LeaderWorkerSet's (worker pod -> worker StatefulSet -> leader pod -> leader
# StatefulSet -> LeaderWorkerSet), a KServe InferenceService's (pod -> ReplicaSet -> Deployment -> InferenceService).
CHAIN_KINDS = ("Pod", "ReplicaSet", "StatefulSet", "Deployment")
# how many controllers up a chain is followed (the LeaderWorkerSet's worker pods are the longest: five links)
OWNER_DEPTH = 5
# (namespace, kind, name) -> the object as cached or recorded (metadata.uid, metadata.ownerReferences), or None
Resolve = Callable[[str, str, str], "Mapping[str, Any] | None"]


def _uid(obj: Mapping[str, Any] | None) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    uid = meta.get("uid") if isinstance(meta, Mapping) else None
    return uid if isinstance(uid, str) and uid else None


def owner_chain(obj: Mapping[str, Any], namespace: str, resolve: Resolve, *,
                depth: int = OWNER_DEPTH) -> list[Mapping[str, Any]]:
    """The controller references above ``obj``, nearest first: each reference after the first is the controller
    of an object that ``resolve`` found with the uid the reference below names. The chain ends at an owner that
    cannot be resolved (not held, another uid: a deleted and re-created namesake), at ``depth``, or at the top."""
    chain: list[Mapping[str, Any]] = []
    for _ in range(depth):
        ref = controller_ref(obj)
        if ref is None:
            break
        chain.append(ref)
        kind, name, uid = ref.get("kind"), ref.get("name"), ref.get("uid")
        if not isinstance(kind, str) or not isinstance(name, str) or not uid:
            break
        parent = resolve(namespace, kind, name)
        if parent is None or _uid(parent) != uid:
            break
        obj = parent
    return chain


def owned_by_any(pod: Mapping[str, Any], workloads: Collection[Resource], resolve: Resolve) -> bool:
    """The pod is one of ``workloads`` (a Pod of that name), or its chain of controllers (`owner_chain`) reaches
    one: the same kind and name, and the same uid when ``resolve`` holds the workload (a reference to an earlier
    namesake is someone else's). Never a name prefix: ``llm`` does not own ``llm-big``'s pods. The one owner matched
    by name alone is a CronJob's Job, ``<cronjob>-<scheduled minute>``, which neither the cache nor the snapshot
    holds. A chain that cannot be followed makes the pod someone else's: a look-ahead is then stricter, never more
    lenient."""
    meta = pod.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    wanted: dict[tuple[str, str], list[Resource]] = {}
    for w in workloads:
        if w.kind == "Pod":
            if meta.get("name") == w.name:
                return True
            continue
        wanted.setdefault((w.kind, w.name), []).append(w)
    cronjobs = [w.name for w in workloads if w.kind == "CronJob"]
    if not wanted:
        return False
    namespace = str(meta.get("namespace") or next(iter(workloads)).namespace)
    for ref in owner_chain(pod, namespace, resolve):
        kind, name = ref.get("kind"), ref.get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            return False
        if (kind, name) in wanted:
            held = _uid(resolve(namespace, kind, name))
            if held is None or ref.get("uid") == held:
                return True
        if kind == "Job" and any(_scheduled_by(name, cronjob) for cronjob in cronjobs):
            return True
    return False


def _scheduled_by(job: str, cronjob: str) -> bool:
    """A CronJob's Job is named ``<cronjob>-<scheduled time in minutes>`` (pkg/controller/cronjob getJobName)."""
    suffix = job[len(cronjob) + 1:] if job.startswith(cronjob + "-") else ""
    return suffix.isascii() and suffix.isdigit()


def owned_by(pod: Mapping[str, Any], workload: Resource, resolve: Resolve) -> bool:
    """`owned_by_any` for one workload."""
    return owned_by_any(pod, (workload,), resolve)

