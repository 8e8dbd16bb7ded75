"""gpu-isolation: no GPU reaches a container except through a GPU request.

The NVIDIA container toolkit hands a container the GPUs listed in ``NVIDIA_VISIBLE_DEVICES`` (or,
with the volume-mounts strategy, in mounts under ``/var/run/nvidia-container-devices``), whatever
the scheduler allocated. A container without a GPU request that sets either one uses GPUs that
belong to other pods. Device nodes through hostPath and privileged containers next to GPUs break
isolation the same way.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from policies.context import OMITTED_KEYS, EvalContext, bound_node
from policies.devices import GKE_PREFIX, InjectedDevice, injected_gpu_devices
from policies.gpu import container_gpus
from policies.model import Finding
from policies.mutations import selected_node_classes, tolerates
from policies.registry import Policy, register
from policies.workload import ContainerRef, PodTemplate, Workload, join

DEVICE_LIST_DIRS = ("/var/run/nvidia-container-devices", "/run/nvidia-container-devices")
HARMLESS_VALUES = frozenset({"", "void", "none"})


def warning(path: str, message: str) -> Finding:
    """A finding that is at most a warning (what cannot be seen offline never denies)."""
    return Finding(path, message, action="warn")


def exposes_devices(value: str) -> bool:
    """True when an ``NVIDIA_VISIBLE_DEVICES`` value hands the container GPUs
    (``all``, indexes, UUIDs, MIG ids, the volume-mounts marker); ``void``, ``none`` and empty do not."""
    return value.strip().lower() not in HARMLESS_VALUES


def under(path: str, directory: str) -> bool:
    """True when ``path`` is ``directory`` or inside it (after normalising ``..``, ``//``, a trailing ``/``)."""
    norm = posixpath.normpath("/" + path.strip()) if path.strip() else ""
    norm = norm.replace("//", "/")
    return norm == directory or norm.startswith(directory.rstrip("/") + "/")


def device_host_path(path: str, patterns: list[str]) -> str | None:
    """The protected pattern a hostPath exposes: a path under it, or a directory that contains it
    (``/dev`` holds ``/dev/nvidia0``; ``/`` holds everything). None when it exposes none."""
    if not path.strip():
        return None
    norm = posixpath.normpath("/" + path.strip()).replace("//", "/")
    for pattern in patterns:
        if fnmatch.fnmatchcase(norm, pattern) or fnmatch.fnmatchcase(norm, pattern.rstrip("/") + "/*"):
            return pattern
        literal = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
        parent = literal if literal == pattern else posixpath.dirname(literal)
        if norm == "/" or parent == norm or parent.startswith(norm + "/"):
            return pattern
    return None


def _wildcard(tolerations: Any) -> bool:
    return isinstance(tolerations, list) and any(
        isinstance(t, Mapping) and t.get("operator") == "Exists" and not t.get("key") for t in tolerations)


def shown(kind: str, value: str) -> str:
    """A value as a message may show it: a Secret's value never appears in a log or a denial."""
    return "<a device list, value hidden>" if kind == "Secret" else value


def _decode_secret(obj: Mapping[str, Any], key: str) -> str | None:
    string_data = obj.get("stringData") or {}
    if isinstance(string_data, Mapping) and key in string_data:
        return str(string_data[key])
    data = obj.get("data") or {}
    if isinstance(data, Mapping) and key in data:
        try:
            return base64.b64decode(str(data[key]), validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
    return None


@dataclass(frozen=True)
class _Voice:
    """How the environment findings speak of a container with or without GPUs."""

    gpu: bool

    @property
    def why(self) -> str:
        if self.gpu:
            return ("although the device plugin sets it to the GPUs the container was allocated (a value of its own "
                    "can widen that to other pods' GPUs)")
        return "without a GPU request, which hands it GPUs other pods were allocated"

    @property
    def reaches(self) -> str:
        return "may reach GPUs beyond its allocation" if self.gpu else "reaches GPUs it did not request"

    @property
    def fix(self) -> str:
        return "remove it and let the device plugin set it" if self.gpu else "remove it or set it to void"

    @property
    def unseen_fix(self) -> str:
        return ("remove it and let the device plugin set it" if self.gpu
                else "without a GPU request the value must be void, none or empty: set value: void instead")

    def override(self, env_name: str) -> str:
        return (f"make sure nothing sets {env_name} for this container" if self.gpu
                else f"add env {env_name}=void to the container to override it")


class _Source:
    """Looks up ConfigMap / Secret values through the cluster facts.

    At admission the webhook's cache holds ConfigMaps (their ``data`` keys, each value stripped and cut short;
    one with more keys than the cache keeps says how many it left out, `OMITTED_KEYS`) and never Secrets;
    offline the checked set holds what it holds (a Secret manifest there is read, its value never shown)."""

    def __init__(self, namespace: str, ctx: EvalContext) -> None:
        self.namespace = namespace
        self.ctx = ctx

    def object(self, kind: str, name: Any) -> Mapping[str, Any] | None:
        if not isinstance(name, str) or not name:
            return None
        found = self.ctx.facts.resolve_object(self.namespace, kind, name)
        return found if isinstance(found, Mapping) else None

    @staticmethod
    def lookup(kind: str, obj: Mapping[str, Any], key: str) -> tuple[bool, str | None]:
        """(known, value): the key's value (None when the object does not have the key, which the kubelet
        then leaves unset), or known=False when the object is only partly known (keys left out of the cache).
        Only ``data`` (and a Secret's ``stringData``) reaches the environment: the kubelet never puts a
        ConfigMap's binaryData there."""
        if kind == "Secret":
            value = _decode_secret(obj, key)
            if value is None and _has_key(obj, ("data", "stringData"), key):
                return False, None   # a value that does not decode cannot be judged
            return True, value
        data = obj.get("data")
        if isinstance(data, Mapping) and key in data:
            return True, str(data[key])
        omitted = obj.get(OMITTED_KEYS)
        return (not (isinstance(omitted, int) and omitted > 0)), None


def _has_key(obj: Mapping[str, Any], sections: tuple[str, ...], key: str) -> bool:
    return any(isinstance(obj.get(s), Mapping) and key in obj[s] for s in sections)


# An env fieldRef may name metadata.name/namespace/uid, spec.nodeName/serviceAccountName, status.hostIP/podIP(s)
# (kubernetes pkg/apis/core/validation/validation.go, validEnvDownwardAPIFieldPathExpressions, as read), or a
# subscripted metadata.labels['k'] / metadata.annotations['k'] (fieldpath.SplitMaybeSubscriptedPath: the path
# ends in "']" and splits at the first "['"). `field_value` answers those the object under review decides.
FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


def field_value(tpl: PodTemplate, namespace: str, field_path: str) -> str | None:
    """The value a downward-API ``fieldRef`` gives the container, where the pod spec under review decides it:
    its own labels and annotations (a missing one gives ""), its namespace, service account and a nodeName it
    sets. None for what only the running pod knows (uid, IPs, a generated name)."""
    found = FIELD_SUBSCRIPT.match(field_path)
    if found:
        source = tpl.labels if found.group(1) == "labels" else tpl.annotations
        return str(source.get(found.group(2), ""))
    if field_path == "metadata.namespace":
        return namespace
    if field_path in ("spec.serviceAccountName", "spec.nodeName"):
        value = tpl.spec.get(field_path.split(".", 1)[1])
        if isinstance(value, str) and value:
            return value
        return "default" if field_path == "spec.serviceAccountName" else None
    return None


def _why_unseen(kind: str, obj: Mapping[str, Any] | None, source: _Source) -> str:
    admission = source.ctx.point == "admission"
    if obj is None and kind == "Secret":
        return "whose values the webhook never reads" if admission else "which is not in the checked set"
    if obj is None:
        return ("which is not in the webhook's ConfigMap cache (not created yet, or created moments ago)" if admission
                else "which is not in the checked set")
    return f"which has more keys than the webhook's cache keeps of one {kind}"


def _fix_from(kind: str, key: str, voice: _Voice, env_name: str) -> str:
    if kind == "Secret":
        return (f"take the Secret's keys one by one with env[].valueFrom.secretKeyRef instead of envFrom, or "
                f"{voice.override(env_name)}")
    return f"make sure it has no key {key}, or {voice.override(env_name)}"


@dataclass(frozen=True)
class _Unseen:
    """How a value nobody can see here is reported: `unresolvedEnv` decides for pods that can reach a GPU node
    (deny or warn); for one that seems unable to, always a warning (a GPU node without the taint, a later
    toleration or nodeName would hand it the devices)."""

    reachable: bool
    setting: str

    def finding(self, path: str, message: str) -> Finding:
        if self.reachable:
            return Finding(path, message, action=None if self.setting == "deny" else "warn")
        return warning(path, f"{message} (this pod seems unable to reach a GPU node today: no GPU, no GPU "
                       "toleration, node selection or GPU nodeName; a warning all the same)")


@register
class GpuIsolation(Policy):
    id = "gpu-isolation"
    title = "GPUs reach a container only through a GPU request"
    severity = "critical"
    version = "1.2.0"
    description = (
        "A container without a GPU request (a zero quantity is none) must not set NVIDIA_VISIBLE_DEVICES to a value "
        "that exposes devices (all, indexes, UUIDs, MIG ids; void, none and empty are harmless; gpuContainers "
        "extends this to containers that do request GPUs), nor mount anything under "
        "/var/run/nvidia-container-devices (the toolkit's volume-mount device list; a user mount there is refused "
        "for GPU containers too, as it would hand them more GPUs than they were allocated). A value from a "
        "ConfigMap (envFrom or configMapKeyRef) is read from the webhook's ConfigMap cache, or offline from the "
        "checked set; a fieldRef to the pod's own labels, annotations, namespace, service account or nodeName is "
        "read from the pod spec; a resourceFieldRef is a number, which the toolkit reads as a GPU index. Secrets are "
        "never read in the cluster. A value that still cannot be seen is governed by unresolvedEnv (deny or warn) "
        "for pods that can reach a GPU node, and warned for the others. No "
        "hostPath volume under /dev/nvidia*, /dev/dri or /dev/kfd (or a directory that holds them, such as /dev); "
        "no privileged container in a pod that uses a GPU or tolerates a GPU taint. GPU devices a pod annotation "
        "injects count as device access too: CDI device annotations (cdi.k8s.io/..., nvidia.cdi.k8s.io/...) reach "
        "every container of the pod, GKE's devices.gke.io/container.<name> the named one; a container without a "
        "GPU request must not get them (gpuContainers extends this to GPU containers); exclude the namespace "
        "in the PolicySet where a system component needs them.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "envNames": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                         "description": "Variables that select devices for the container runtime."},
            "deviceHostPaths": {"type": "array", "items": {"type": "string", "minLength": 1},
                                "description": "Host paths (globs) of GPU device nodes."},
            "gpuContainers": {"type": "boolean",
                              "description": "Also refuse device-exposing values in containers that request GPUs "
                                             "(with the toolkit's default accept-nvidia-visible-devices-envvar-"
                                             "when-unprivileged=true a container's own value can widen its "
                                             "allocation)."},
            "unresolvedEnv": {"enum": ["deny", "warn"],
                              "description": "A device variable whose value cannot be seen (a Secret, a "
                                             "ConfigMap that is not in the cache or the checked set, a field "
                                             "only the running pod knows) in a pod that can reach a GPU node "
                                             "(uses a GPU, tolerates a GPU taint, selects the GPU node label or "
                                             "names a GPU node, or one not known, in nodeName): deny (up to the "
                                             "policy's action) or warn. A pod that seems unable to reach a GPU "
                                             "node is always warned."},
        },
    }
    defaults = {
        "envNames": ["NVIDIA_VISIBLE_DEVICES"],
        "deviceHostPaths": ["/dev/nvidia*", "/dev/dri", "/dev/kfd"],
        "gpuContainers": False,
        "unresolvedEnv": "warn",
    }

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        for i, tpl in enumerate(workload.templates):
            for finding in self._template(workload, i, tpl, params, ctx):
                # a Rollout's workloadRef template belongs to the Deployment: name it
                yield dataclasses.replace(finding, resource=tpl.resource) if tpl.resource else finding

    def _template(self, workload: Workload, i: int, tpl: PodTemplate, params: Mapping[str, Any],
                  ctx: EvalContext) -> Iterator[Finding]:
        source = _Source(workload.resource.namespace, ctx)
        uses_gpu = workload.uses_gpu(i, ctx.gpu)
        tolerated = [t for t in ctx.gpu.taints if tolerates(tpl.spec.get("tolerations"), t)]
        bound = bound_node(tpl.spec, ctx.facts, ctx.gpu)   # nodeName: a GPU node, or one not known here
        reachable = (uses_gpu or bool(tolerated) or selected_node_classes(tpl.spec, ctx.gpu.node_label) is not None
                     or (bound is not None and bound[1] != []))
        unseen = _Unseen(reachable=reachable, setting=str(params["unresolvedEnv"]))
        named = tpl.resource or workload.resource   # a Rollout's workloadRef template belongs to the Deployment
        owner = f"{named.kind} `{named.name}`" + (f" ({tpl.role or tpl.name})" if len(workload.templates) > 1 else "")
        gpu_claims = workload.claim_states.get(i, {})
        yield from self._host_paths(tpl, params)
        injected = {ref.path: devices for ref, devices in self._injected(tpl, params)}
        for ref in tpl.containers():
            has_gpu = self._container_has_gpu(ref, gpu_claims, ctx)
            yield from self._mounts(ref, has_gpu)
            if ref.path in injected and (has_gpu is False or (has_gpu and params["gpuContainers"])):
                yield from self._annotation_devices(tpl, ref, injected[ref.path], has_gpu=bool(has_gpu))
            if has_gpu is False or (has_gpu and params["gpuContainers"]):
                voice = _Voice(gpu=bool(has_gpu))
                for env_name in params["envNames"]:
                    yield from self._env(ref, env_name, source, tpl, unseen=unseen, voice=voice, owner=owner)
            if uses_gpu or tolerated:
                yield from self._privileged(ref, uses_gpu=uses_gpu, tolerated=[t["key"] for t in tolerated],
                                            wildcard=_wildcard(tpl.spec.get("tolerations")))

    # -- GPU ownership ---------------------------------------------------------------------------
    @staticmethod
    def _injected(tpl: PodTemplate, params: Mapping[str, Any]) -> list[tuple[ContainerRef, list[InjectedDevice]]]:
        devices = injected_gpu_devices(tpl.annotations, device_nodes=tuple(params["deviceHostPaths"]))
        if not devices:
            return []
        out = []
        for ref in tpl.containers():
            mine = [d for d in devices if d.container is None or d.container == ref.name]
            if mine:
                out.append((ref, mine))
        return out

    @staticmethod
    def _annotation_devices(tpl: PodTemplate, ref: ContainerRef, devices: list[InjectedDevice], *,
                            has_gpu: bool) -> Iterator[Finding]:
        by_key: dict[str, list[str]] = {}
        for d in devices:
            by_key.setdefault(d.annotation, []).append(d.device)
        for key, names in by_key.items():
            why = ("beyond the GPUs it was allocated" if has_gpu else
                   "without a GPU request, which hands it GPUs other pods were allocated")
            scope = "every container of the pod" if not key.startswith(GKE_PREFIX) else f"container `{ref.name}`"
            yield Finding(tpl.meta_at(f"annotations.{key}"),
                          f"container `{ref.name}` gets GPU device(s) {', '.join(names)} from pod annotation {key} "
                          f"(it reaches {scope}) {why}; remove the annotation and request GPUs through "
                          "resources.limits (or a DRA claim). A system component that needs it (GKE's GPUDirect "
                          "RxDM sidecar, a GPU operator component) belongs in a namespace excluded from "
                          "gpu-isolation in the PolicySet")

    @staticmethod
    def _container_has_gpu(ref: ContainerRef, gpu_claims: Mapping[str, bool | None],
                           ctx: EvalContext) -> bool | None:
        """True with a GPU resource or GPU claim, False without, None when a claim cannot be resolved
        (the benefit of the doubt: no isolation finding on a container that may own GPUs)."""
        if any(n > 0 for n in container_gpus(ref.container, ctx.gpu).values()):
            return True  # `nvidia.com/gpu: 0` is no GPU request: with NVIDIA_VISIBLE_DEVICES=all it is the classic leak
        unknown = False
        for claim in ref.resources.get("claims") or []:
            name = claim.get("name") if isinstance(claim, Mapping) else None
            state = gpu_claims.get(name) if isinstance(name, str) else None
            if state:
                return True
            unknown = unknown or state is None
        return None if unknown else False

    # -- environment -----------------------------------------------------------------------------
    def _env(self, ref: ContainerRef, env_name: str, source: _Source, tpl: PodTemplate, *, unseen: _Unseen,
             voice: _Voice, owner: str) -> Iterator[Finding]:
        who = f"container `{ref.name}` of {owner}"
        env = ref.container.get("env") or []
        last: tuple[int, Mapping[str, Any]] | None = None
        for j, item in enumerate(env if isinstance(env, list) else []):
            if isinstance(item, Mapping) and item.get("name") == env_name:
                last = (j, item)  # the last definition wins
        if last is not None:
            yield from self._env_entry(ref, env_name, last[0], last[1], source, tpl, unseen=unseen, voice=voice,
                                       owner=owner)
            return  # an explicit env entry overrides whatever envFrom brings
        env_from = ref.container.get("envFrom") or []
        for j, item in reversed(list(enumerate(env_from if isinstance(env_from, list) else []))):
            if not isinstance(item, Mapping):
                continue
            prefix = str(item.get("prefix") or "")
            if not env_name.startswith(prefix):
                continue
            key = env_name[len(prefix):]
            path = join(join(ref.path, "envFrom"), j)
            for ref_key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                target = item.get(ref_key)
                if not isinstance(target, Mapping):
                    continue
                name = target.get("name")
                obj = source.object(kind, name)
                known, value = source.lookup(kind, obj, key) if obj is not None else (False, None)
                if not known:
                    yield unseen.finding(path, f"{who} takes its environment from {kind} `{name}` "
                                         f"(envFrom), {_why_unseen(kind, obj, source)}; if it holds {key} the "
                                         f"container gets {env_name} from it and {voice.reaches}: "
                                         f"{_fix_from(kind, key, voice, env_name)}")
                    return
                if value is not None:
                    if exposes_devices(value):
                        yield Finding(path, f"{who} gets {env_name}={shown(kind, value)} from "
                                      f"{kind} `{name}` (envFrom) {voice.why}; remove the key from the {kind}, or "
                                      f"{voice.override(env_name)}")
                    return  # the last source that defines the key wins

    def _env_entry(self, ref: ContainerRef, env_name: str, j: int, item: Mapping[str, Any], source: _Source,
                   tpl: PodTemplate, *, unseen: _Unseen, voice: _Voice, owner: str) -> Iterator[Finding]:
        who = f"container `{ref.name}` of {owner}"
        base = join(join(ref.path, "env"), j)
        value_from = item.get("valueFrom")
        if not isinstance(value_from, Mapping):
            value = item.get("value")
            value = "" if value is None else str(value)
            if exposes_devices(value):
                yield Finding(join(base, "value"), f"container `{ref.name}` sets {env_name}={value} {voice.why}; "
                                                   f"{voice.fix}")
            return
        path = join(base, "valueFrom")
        for ref_key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            target = value_from.get(ref_key)
            if not isinstance(target, Mapping):
                continue
            name = target.get("name")
            obj = source.object(kind, name)
            key = str(target.get("key", ""))
            known, value = source.lookup(kind, obj, key) if obj is not None else (False, None)
            if not known:
                yield unseen.finding(path, f"{who} takes {env_name} from {kind} `{name}` key "
                                     f"`{key}`, {_why_unseen(kind, obj, source)}; if it lists devices the container "
                                     f"{voice.reaches}: {voice.unseen_fix}")
            elif value is not None and exposes_devices(value):
                yield Finding(path, f"{who} sets {env_name}={shown(kind, value)} (from {kind} "
                              f"`{name}` key `{key}`) {voice.why}; {voice.fix}")
            return
        field_ref = value_from.get("fieldRef")
        if isinstance(field_ref, Mapping):
            field_path = str(field_ref.get("fieldPath", ""))
            value = field_value(tpl, source.namespace, field_path)
            if value is None:
                yield unseen.finding(path, f"{who} sets {env_name} from field {field_path}, "
                                     f"which only the running pod knows; if it lists devices the container "
                                     f"{voice.reaches}: {voice.unseen_fix}")
            elif exposes_devices(value):
                yield Finding(path, f"{who} sets {env_name}={value} (from the pod's own field "
                              f"{field_path}) {voice.why}; {voice.fix}")
            return
        resource_ref = value_from.get("resourceFieldRef")
        if isinstance(resource_ref, Mapping):
            yield Finding(path, f"{who} sets {env_name} from resourceFieldRef "
                          f"{resource_ref.get('resource')}: a number, which the NVIDIA toolkit reads as a GPU "
                          f"index, {voice.why}; {voice.fix}")
            return
        yield unseen.finding(path, f"{who} sets {env_name} from a valueFrom mlguard does not know, "
                             f"which cannot be seen here; if it lists devices the container {voice.reaches}: "
                             f"{voice.unseen_fix}")

    # -- mounts, host paths, privilege -----------------------------------------------------------
    @staticmethod
    def _mounts(ref: ContainerRef, has_gpu: bool | None) -> Iterator[Finding]:
        mounts = ref.container.get("volumeMounts") or []
        for j, mount in enumerate(mounts if isinstance(mounts, list) else []):
            if not isinstance(mount, Mapping) or not isinstance(mount.get("mountPath"), str):
                continue
            hit = next((d for d in DEVICE_LIST_DIRS if under(mount["mountPath"], d)), None)
            if hit is None:
                continue
            why = ("the device plugin mounts the list itself; a mount of your own there hands the container GPUs "
                   "beyond its allocation") if has_gpu else "it has no GPU request, and the mount hands it GPUs"
            yield Finding(join(join(join(ref.path, "volumeMounts"), j), "mountPath"),
                          f"container `{ref.name}` mounts volume `{mount.get('name')}` at {mount['mountPath']}, "
                          f"under {hit} (the NVIDIA toolkit reads the devices a container gets from there); "
                          f"{why}: remove the mount")

    @staticmethod
    def _host_paths(tpl: PodTemplate, params: Mapping[str, Any]) -> Iterator[Finding]:
        volumes = tpl.spec.get("volumes") or []
        for j, volume in enumerate(volumes if isinstance(volumes, list) else []):
            host = volume.get("hostPath") if isinstance(volume, Mapping) else None
            if not isinstance(host, Mapping) or not isinstance(host.get("path"), str):
                continue
            pattern = device_host_path(host["path"], list(params["deviceHostPaths"]))
            if pattern is None:
                continue
            yield Finding(join(join(tpl.item_at("volumes", j), "hostPath"), "path"),
                          f"volume `{volume.get('name')}` mounts host path {host['path']}, which exposes GPU device "
                          f"nodes ({pattern}) outside the scheduler's allocation; remove the hostPath volume and "
                          f"request GPUs through resources.limits (or a DRA claim)")

    @staticmethod
    def _privileged(ref: ContainerRef, *, uses_gpu: bool, tolerated: list[str], wildcard: bool) -> Iterator[Finding]:
        security = ref.container.get("securityContext")
        if not isinstance(security, Mapping) or security.get("privileged") is not True:
            return
        taints = ", ".join(sorted(set(tolerated)))
        why = "uses a GPU" if uses_gpu else (
            f"tolerates every taint (operator Exists without a key), the GPU taint {taints} included" if wildcard
            else f"tolerates the GPU taint {taints}")
        yield Finding(join(join(ref.path, "securityContext"), "privileged"),
                      f"container `{ref.name}` is privileged in a pod that {why}; a privileged container sees "
                      f"every GPU on the node: remove securityContext.privileged (or set it to false)")
