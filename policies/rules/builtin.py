"""The built-in policies that have an exact CEL form, for `mlguard export vap`.

Each form is a list of ValidatingAdmissionPolicy variables and validations over ``object`` alone, written
from the Python policy (policies/library/<policy>) with the PolicySet's parameters, GPU resource names and
taints inlined. Its messages are the Python policy's words for the first offending field. What needs
mlguard's own knowledge is left out and said: DRA claims (a ResourceClaim is another object), values
from ConfigMaps and Secrets, the kinds beyond the core workloads, Argo Rollouts and LeaderWorkerSets.
`tests/policies/test_vap_parity.py` evaluates every form over every sample of the policy suites and
asserts the Python policy's verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.gpu import GpuConfig
from policies.library.gpu_job_deadline import human_duration
from policies.owners import CONTROLLERS

# kinds whose pod templates the forms find, with the resource the API server calls them by
KIND_RESOURCES: Mapping[str, tuple[str, str, str]] = {
    "Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"), "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"), "Job": ("batch", "v1", "jobs"), "CronJob": ("batch", "v1", "cronjobs"),
    "Rollout": ("argoproj.io", "v1alpha1", "rollouts"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
}
TEMPLATE_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "Rollout")
GROUP = "(object.apiVersion.contains('/') ? object.apiVersion.split('/')[0] : '')"


def is_kind(kind: str) -> str:
    """The object is ``kind`` of its API group (a Volcano `Job` is not a batch/v1 Job)."""
    return f"(object.kind == {lit(kind)} && {GROUP} == {lit(KIND_RESOURCES[kind][0])})"


def lit(value: Any) -> str:
    """A CEL literal of a JSON value (strings in double quotes, JSON escapes are CEL escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{lit(str(k))}: {lit(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(lit(v) for v in value) + "]"


def glob_regex(patterns: Sequence[str]) -> str:
    """An RE2 pattern for shell globs (*, ?, [...]) as fnmatch reads them, anchored."""
    parts = []
    for pattern in patterns:
        out, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if c == "*":
                out.append(".*")
            elif c == "?":
                out.append(".")
            elif c == "[" and "]" in pattern[i + 1:]:
                end = pattern.index("]", i + 1)
                body = pattern[i + 1:end].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = end
            else:
                out.append(re.escape(c))
            i += 1
        parts.append("".join(out))
    return "^(?:" + "|".join(parts) + ")$"


@dataclass
class Form:
    """The CEL form of one policy: VAP variables and validations, and what it leaves to the webhook."""

    policy: str
    variables: list[dict[str, str]]
    validations: list[dict[str, str]]
    kinds: tuple[str, ...] = tuple(KIND_RESOURCES)
    leaves_out: list[str] = field(default_factory=list)
    # Python finding paths the form covers (None: all of the policy's deny findings)
    covers: Callable[[str], bool] | None = None


# ---- shared variables: pod templates and containers of the core kinds --------------------------------------

def _tpl(path: str, spec: str, meta: str, labels: str, name: str) -> str:
    annotations = labels.replace("labels", "annotations")
    return (f"{{'path': dyn({lit(path)}), 'meta': dyn({lit(meta)}), 'name': dyn({lit(name)}), 'spec': dyn({spec}), "
            f"'labels': dyn({labels}), 'annotations': dyn({annotations})}}")


TEMPLATES = (
    f"{is_kind('Pod')} ? (has(object.spec) ? ["
    + _tpl("spec", "object.spec", "metadata", "object.metadata.?labels.orValue({})", "pod") + "] : []) : "
    f"{is_kind('CronJob')} ? (object.?spec.?jobTemplate.?spec.?template.?spec.hasValue() ? ["
    + _tpl("spec.jobTemplate.spec.template.spec", "object.spec.jobTemplate.spec.template.spec",
           "spec.jobTemplate.spec.template.metadata",
           "object.spec.jobTemplate.spec.template.?metadata.?labels.orValue({})", "template") + "] : []) : "
    f"{is_kind('LeaderWorkerSet')} ? ("
    "(object.?spec.?leaderWorkerTemplate.?leaderTemplate.?spec.hasValue() ? ["
    + _tpl("spec.leaderWorkerTemplate.leaderTemplate.spec", "object.spec.leaderWorkerTemplate.leaderTemplate.spec",
           "spec.leaderWorkerTemplate.leaderTemplate.metadata",
           "object.spec.leaderWorkerTemplate.leaderTemplate.?metadata.?labels.orValue({})", "leader") + "] : []) + "
    "(object.?spec.?leaderWorkerTemplate.?workerTemplate.?spec.hasValue() ? ["
    + _tpl("spec.leaderWorkerTemplate.workerTemplate.spec", "object.spec.leaderWorkerTemplate.workerTemplate.spec",
           "spec.leaderWorkerTemplate.workerTemplate.metadata",
           "object.spec.leaderWorkerTemplate.workerTemplate.?metadata.?labels.orValue({})", "worker") + "] : [])) : "
    "(" + " || ".join(is_kind(k) for k in TEMPLATE_KINDS) + ") && object.?spec.?template.?spec.hasValue() ? ["
    + _tpl("spec.template.spec", "object.spec.template.spec", "spec.template.metadata",
           "object.spec.template.?metadata.?labels.orValue({})", "template") + "] : []"
)


def _containers_of(t: str, index: int) -> str:
    """The containers of template expression ``t`` as records (every section, with their real paths)."""
    out = []
    for section in ("containers", "initContainers", "ephemeralContainers"):
        items = f"{t}.spec.?{section}.orValue([])"
        out.append(
            f"{items}.map(c, {{'path': dyn({t}.path + '.{section}[' + string({items}.indexOf(c)) + ']'), "
            f"'name': dyn(c.?name.orValue('<unnamed>')), 'section': dyn('{section}'), 'tpl': dyn({index}), "
            f"'sidecar': dyn('{section}' == 'initContainers' && c.?restartPolicy.orValue('') == 'Always'), "
            f"'limits': dyn(c.?resources.?limits.orValue({{}})), "
            f"'requests': dyn(c.?resources.?requests.orValue({{}})), "
            f"'c': dyn(c)}})")
    return " + ".join(out)


CONTAINERS = " + ".join(f"(size(variables.tpls) > {i} ? {_containers_of(f'variables.tpls[{i}]', i)} : [])"
                        for i in range(2))


def _shared(gpu: GpuConfig) -> list[dict[str, str]]:
    names = glob_regex(gpu.resource_names)
    return [
        {"name": "tpls", "expression": TEMPLATES},
        {"name": "ctrs", "expression": CONTAINERS},
        # GPU resources named anywhere in a container (limits or requests), as policies.gpu reads them
        {"name": "gpuNames", "expression": f"variables.ctrs.map(x, x.limits.filter(k, k.matches({lit(names)})) + "
                                           f"x.requests.filter(k, k.matches({lit(names)}) && !(k in x.limits)))"},
    ]


CDI_PREFIXES = ("cdi.k8s.io/", "nvidia.cdi.k8s.io/")
PATH_RE = r"""path\s*:\s*['"]?[^'"\s,}]+"""   # policies.devices' scan of a device list
TAIL_RE = r"""[^'"\s:]+$"""
GKE_PREFIX = "devices.gke.io/container."


def _asks(x: str) -> str:
    """Container record ``x`` names a GPU resource with a positive or unparseable quantity (policies.gpu.asks_for_gpu:
    limits over requests)."""
    v = f"(n in {x}.limits ? {x}.limits[n] : {x}.requests[n])"
    return (f"variables.gpuNames[variables.ctrs.indexOf({x})].exists(n, !isQuantity(string({v})) || "
            f"sign(quantity(string({v}))) > 0)")


def _injected(tp: str) -> str:
    """GPU devices injected by a pod annotation (policies.devices): a CDI device of a GPU kind for every container,
    or a GKE NRI device list naming a GPU device node for a container of the pod."""
    from policies.devices import CDI_GPU_KINDS, GPU_DEVICE_NODES

    kinds = lit(glob_regex(CDI_GPU_KINDS))
    nodes = lit(glob_regex(list(GPU_DEVICE_NODES) + [p.rstrip("/") + "/*" for p in GPU_DEVICE_NODES]))
    cdi = (f"{tp}.annotations.exists(k, ({' || '.join(f'k.startsWith({lit(p)})' for p in CDI_PREFIXES)}) && "
           f"string({tp}.annotations[k]).split(',').exists(d, d.contains('=') && "
           f"d.split('=')[0].trim().matches({kinds})))")
    path = f"m.find({lit(TAIL_RE)})"
    norm = f"('/' + {path}).replace('//', '/').replace('//', '/')"
    gke = (f"{tp}.annotations.exists(k, k.startsWith({lit(GKE_PREFIX)}) && size(k) > {len(GKE_PREFIX)} && "
           f"variables.ctrs.exists(x, x.tpl == variables.tpls.indexOf({tp}) && "
           f"x.name == k.substring({len(GKE_PREFIX)})) && string({tp}.annotations[k]).findAll({lit(PATH_RE)})"
           f".exists(m, {norm}.matches({nodes})))")
    return f"({cdi} || {gke})"


def _uses_gpu(i: str) -> str:
    """A template (index expression ``i``) uses a GPU: a container asks for one, or an annotation injects one."""
    return (f"(variables.ctrs.exists(x, x.tpl == {i} && {_asks('x')}) || "
            f"variables.tpls.exists(tq, variables.tpls.indexOf(tq) == {i} && {_injected('tq')}))")


def _line(policy: str, path: str, message: str, runbook: str) -> str:
    return f"{lit(policy + ': ')} + {path} + ': ' + {message} + {lit(' (' + runbook + ')')}"


def _first(problems: str, policy: str, runbook: str) -> dict[str, str]:
    """A validation over a variable holding a list of {path, msg} problems: none may exist."""
    return {"expression": f"size({problems}) == 0",
            "messageExpression": _line(policy, f"{problems}[0].path", f"{problems}[0].msg", runbook)}


# ---- gpu-limits -----------------------------------------------------------------------------------------

def _q(v: str) -> str:
    return f"quantity(string({v}))"


def _ok(v: str) -> str:
    return f"isQuantity(string({v}))"


def _whole(v: str) -> str:
    return f"({_q(v)}.isInteger() && sign({_q(v)}) >= 0)"


def gpu_limits(params: Mapping[str, Any], gpu: GpuConfig, runbook: str) -> Form:
    per_container, per_pod = int(params["maxPerContainer"]), int(params["maxPerPod"])
    lim, req = "x.limits[n]", "x.requests[n]"
    res = "x.path + '.resources.'"

    def problem(section: str, msg: str) -> str:
        return f"{{'path': {res} + '{section}', 'msg': {msg}}}"

    who = "'container `' + x.name + '` '"
    chain = [
        (f"n in x.limits && !{_ok(lim)}", "limits",
         f"{who} + 'sets ' + n + ': ' + \"'\" + string({lim}) + \"'\" + ', which is not a quantity; use a whole number "
         f"such as limits.' + n + ': 1'"),
        (f"n in x.limits && !{_whole(lim)}", "limits",
         f"{who} + 'sets ' + n + ': ' + string({lim}) + ' in limits; GPUs are whole devices: use a whole number "
         f"(0 for none)'"),
        (f"n in x.requests && !{_ok(req)}", "requests",
         f"{who} + 'sets ' + n + ': ' + \"'\" + string({req}) + \"'\" + ', which is not a quantity; use a whole "
         f"number such as requests.' + n + ': 1'"),
        (f"n in x.requests && !{_whole(req)}", "requests",
         f"{who} + 'sets ' + n + ': ' + string({req}) + ' in requests; GPUs are whole devices: use a whole number "
         f"(0 for none)'"),
        (f"!(n in x.limits) && {_q(req)} == quantity('0')", "", "''"),  # a request of zero asks for no GPU
        ("!(n in x.limits)", "limits",
         f"{who} + 'sets ' + n + ' in requests (' + string({req}) + ') but not in limits; add limits.' + n + ': ' + "
         f"string({req})"),
        (f"n in x.requests && {_q(req)} != {_q(lim)}", "requests",
         f"{who} + 'requests ' + n + ': ' + string({req}) + ' but limits it to ' + string({lim}) + '; GPUs cannot be "
         f"overcommitted: set requests equal to limits (' + string({lim}) + ') or drop the request'"),
        (f"{_q(lim)}.isGreaterThan(quantity('{per_container}'))", "limits",
         f"{who} + 'asks for ' + string({_q(lim)}.asInteger()) + ' ' + n + ', more than the {per_container} allowed "
         f"per container'"),
    ]
    expr = "{}"
    for cond, section, msg in reversed(chain):
        expr = f"({cond}) ? {problem(section, msg) if section else '{}'} : {expr}"
    idx = "variables.ctrs.indexOf({})".format
    t = "variables.tpls.indexOf(tp)"
    # a container's GPUs: limits win over requests; unparseable values count 0 (gpu-limits reports them)
    lim_z, req_z = "z.limits[n]", "z.requests[n]"
    value = (f"(n in z.limits ? ({_ok(lim_z)} ? {_q(lim_z)}.asApproximateFloat() : 0.0) : "
             f"({_ok(req_z)} ? {_q(req_z)}.asApproximateFloat() : 0.0))")
    running = (f"variables.ctrs.filter(z, z.tpl == {t} && (z.section == 'containers' || z.sidecar) && "
               f"n in variables.gpuNames[{idx('z')}]).map(z, {value}).sum()")
    init = (f"(variables.ctrs.filter(z, z.tpl == {t} && z.section == 'initContainers' && !z.sidecar && "
            f"n in variables.gpuNames[{idx('z')}]).map(z, {value}) + [0.0]).max()")
    pod = ("variables.ctrs.filter(x, x.tpl == {t} && x.section != 'ephemeralContainers').map(x, "
           "variables.gpuNames[{ix}].filter(n, !variables.ctrs.exists(y, y.tpl == {t} && "
           "y.section != 'ephemeralContainers' && {iy} < {ix} && n in variables.gpuNames[{iy}]))"
           ".map(n, [{running}, {init}].max()).sum()).sum()").format(
        t=t, ix=idx("x"), iy=idx("y"), running=running, init=init)
    variables = _shared(gpu) + [
        {"name": "limitProblems",
         "expression": f"variables.ctrs.map(x, variables.gpuNames[{idx('x')}].map(n, {expr})"
                       ".filter(p, size(p) > 0)).filter(ps, size(ps) > 0).map(ps, ps[0])"},
        # GPUs one pod of each template holds: app containers and sidecars add up, init containers run alone
        {"name": "podGpus", "expression": f"variables.tpls.map(tp, ([0.0] + [{pod}]).sum())"},
        {"name": "podProblems",
         "expression": f"variables.tpls.filter(tp, variables.podGpus[{t}] > {per_pod}.0)"
                       ".map(tp, {'path': tp.path, 'msg': 'pod asks for ' + "
                       f"string(int(variables.podGpus[{t}])) + ' GPUs in all, more than the "
                       f"{per_pod} allowed per pod; split the model across pods (e.g. a LeaderWorkerSet) or ask for "
                       "fewer GPUs'})"},
    ]
    return Form("gpu-limits", variables, [_first("variables.limitProblems", "gpu-limits", runbook),
                                          _first("variables.podProblems", "gpu-limits", runbook)],
                leaves_out=["GPUs from DRA claims count toward maxPerPod only in the webhook and in CI (a "
                            "ResourceClaim is another object)"])



# ---- gpu-tolerations ------------------------------------------------------------------------------------

def _tolerates(tols: str, taint: str) -> str:
    """Kubernetes toleration semantics (policies.mutations.tolerates) for a taint record {key, value, effect}."""
    return (f"{tols}.exists(tol, (tol.?effect.orValue('') == '' || tol.?effect.orValue('') == {taint}.effect) && "
            f"(tol.?operator.orValue('') == 'Exists' ? (tol.?key.orValue('') == '' || tol.?key.orValue('') == "
            f"{taint}.key) : (tol.?key.orValue('') == {taint}.key && tol.?value.orValue('') == {taint}.value)))")


# the API versions owner references name the built-in controllers' kinds by (policies.owners.CONTROLLERS)
CONTROLLER_VERSIONS = (("apps/v1", "apps", "ReplicaSet"), ("apps/v1", "apps", "StatefulSet"),
                       ("apps/v1", "apps", "DaemonSet"), ("apps/v1", "apps", "Deployment"),
                       ("batch/v1", "batch", "Job"), ("batch/v1", "batch", "CronJob"),
                       ("argoproj.io/v1alpha1", "argoproj.io", "Rollout"),
                       ("leaderworkerset.x-k8s.io/v1", "leaderworkerset.x-k8s.io", "LeaderWorkerSet"))


def gpu_tolerations(params: Mapping[str, Any], gpu: GpuConfig, runbook: str, *,
                    mutations: Mapping[str, Any] | None = None) -> Form:
    taints = [{"key": t["key"], "value": t.get("value", ""), "effect": t.get("effect", ""),
               "name": f"{t['key']}:{t.get('effect', '')}".rstrip(":"),
               "example": f"{{key: {t['key']}, operator: Exists, effect: {t.get('effect', 'NoSchedule')}}}"}
              for t in gpu.taints]
    tols = "tp.spec.?tolerations.orValue([])"
    t = "variables.tpls.indexOf(tp)"
    allow = []
    for entry in params["systemAllowlist"]:
        if not entry.get("namespaces"):
            continue  # a label alone never exempts (policies.policyset.label_only_exemptions)
        terms = [f"request.namespace in {lit(list(entry['namespaces']))}"]
        for k, v in (entry.get("labels") or {}).items():  # template labels over the object's own
            terms.append(f"(dyn(tp.labels[?{lit(k)}].orValue({OBJ_LABELS}[?{lit(k)}].orValue(dyn(null)))) == {lit(v)})")
        if terms:
            allow.append("(" + " && ".join(terms) + ")")
    allowlisted = "(" + " || ".join(allow or ["false"]) + ")"
    missing = f"{lit(taints)}.filter(tn, !{_tolerates(tols, 'tn')})"
    tolerated = f"{lit(taints)}.filter(tn, {_tolerates(tols, 'tn')})"
    wildcard = (f"{tols}.exists(tol, tol.?operator.orValue('') == 'Exists' && tol.?key.orValue('') == '')")
    gpu_pod = ("{}" if (mutations or {}).get("tolerations") else  # the mutating webhook adds them: a note
               f"size({missing}) > 0 ? {{'path': tp.path + '.tolerations', 'msg': 'pod uses a GPU but does not "
               f"tolerate ' + {missing}.map(tn, tn.name).join(', ') + '; it cannot schedule on GPU nodes: add a "
               f"toleration ' + {missing}[0].example}} : {{}}")
    squat = (f"size({tolerated}) > 0 && !{allowlisted} ? {{'path': tp.path + '.tolerations', 'msg': 'pod uses no "
             f"GPU but ' + ({wildcard} ? 'tolerates every taint (operator Exists without a key), including' : "
             f"'tolerates') + ' ' + {tolerated}.map(tn, tn.name).join(', ') + '; it would squat on GPU nodes: "
             f"remove the toleration, or request a GPU if it needs one'}} : {{}}")
    variables = _shared(gpu) + [{"name": "tolerationProblems",
                                 "expression": f"variables.tpls.map(tp, {_uses_gpu(t)} ? ({gpu_pod}) : ({squat}))"
                                               ".filter(p, size(p) > 0)"}]
    return Form("gpu-tolerations", variables, [_first("variables.tolerationProblems", "gpu-tolerations", runbook)],
                leaves_out=["a pod that uses no GPU bound by spec.nodeName to a GPU node is judged by the webhook "
                            "only (whether the node is a GPU node is read from its node cache)"],
                covers=lambda path: path.endswith(".tolerations"))


OBJ_LABELS = "object.metadata.?labels.orValue({})"


# ---- gpu-isolation: NVIDIA_VISIBLE_DEVICES set literally, and hostPath device nodes -------------------------

def _ancestors(path: str) -> list[str]:
    out = ["/"]
    parts = [p for p in path.split("/") if p]
    for i in range(1, len(parts) + 1):
        out.append("/" + "/".join(parts[:i]))
    return out


def _host_pattern_tests(patterns: Sequence[str]) -> list[tuple[str, str]]:
    """Per pattern, a CEL test on the normalised path `h` (policies.library.gpu_isolation.device_host_path)."""
    out = []
    for pattern in patterns:
        literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        parent = literal if literal == pattern else (literal.rsplit("/", 1)[0] or "/")
        inside = glob_regex([pattern.rstrip("/") + "/*"])
        test = (f"h.matches({lit(glob_regex([pattern]))}) || h.matches({lit(inside)}) "
                f"|| h in {lit(_ancestors(parent))}")
        out.append((pattern, test))
    return out


def gpu_isolation(params: Mapping[str, Any], gpu: GpuConfig, runbook: str) -> Form:
    tests = _host_pattern_tests(list(params["deviceHostPaths"]))
    # posixpath.normpath('/' + path.strip()): // and /./ collapse, a trailing / goes (the root stays /); a path
    # that still holds /../ is denied (only the webhook resolves it exactly)
    slashed = "('/' + v.hostPath.path.trim() + '/')" + ".replace('//', '/').replace('/./', '/')" * 4
    norm = f"(size({slashed}) > 1 ? {slashed}.substring(0, size({slashed}) - 1) : '/')"
    variables = _shared(gpu) + [
        {"name": "hostPaths", "expression":
            "variables.tpls.map(tp, tp.spec.?volumes.orValue([]).filter(v, has(v.hostPath) && "
            "type(v.hostPath.?path.orValue(null)) == string && v.hostPath.path.trim() != '').map(v, "
            "{'tp': dyn(tp.path), 'v': dyn(v), 'i': dyn(tp.spec.volumes.indexOf(v)), 'h': dyn(" + norm + ")}))"},
    ]
    env_names = lit(list(params["envNames"]))
    harmless = lit(["", "void", "none"])
    gpu_value = ("(n in x.limits && isQuantity(string(x.limits[n])) ? quantity(string(x.limits[n])) : "
                 "(n in x.requests && isQuantity(string(x.requests[n])) ? quantity(string(x.requests[n])) : "
                 "quantity('0')))")
    has_gpu = f"variables.gpuNames[variables.ctrs.indexOf(x)].exists(n, sign({gpu_value}) > 0)"
    claims = "size(x.c.?resources.?claims.orValue([])) > 0"
    voice_why = (f"({has_gpu} ? 'although the device plugin sets it to the GPUs the container was allocated "
                 "(a value of its own can widen that to other pods\\' GPUs)' : 'without a GPU request, which hands it "
                 "GPUs other pods were allocated')")
    voice_fix = f"({has_gpu} ? 'remove it and let the device plugin set it' : 'remove it or set it to void')"
    applies = f"(!{has_gpu} && !({claims}))" + (f" || {has_gpu}" if params["gpuContainers"] else "")
    last = "x.c.?env.orValue([]).filter(e, e.?name.orValue('') == en)"
    env_problem = (
        f"({applies}) && size({last}) > 0 && !has({last}[size({last}) - 1].valueFrom) && "
        f"!({last}[size({last}) - 1].?value.orValue('').trim().lowerAscii() in {harmless}) ? "
        f"{{'path': x.path + '.env[' + string(x.c.env.lastIndexOf({last}[size({last}) - 1])) + '].value', "
        f"'msg': 'container `' + x.name + '` sets ' + en + '=' + {last}[size({last}) - 1].?value.orValue('') + ' ' + "
        f"{voice_why} + '; ' + {voice_fix}}} : {{}}")
    variables += [
        {"name": "envProblems", "expression": f"variables.ctrs.map(x, {env_names}.map(en, {env_problem})"
                                              ".filter(p, size(p) > 0)).filter(ps, size(ps) > 0).map(ps, ps[0])"},
        {"name": "hostPathProblems", "expression":
            "variables.hostPaths.map(l, l.filter(r, " + _host_hit("r.h", tests) + " || (r.h + '/').contains('/../')))"
            ".filter(l, size(l) > 0)"
            ".map(l, {'path': l[0].tp + '.volumes[' + string(l[0].i) + '].hostPath.path', 'msg': 'volume `' + "
            "l[0].v.?name.orValue('None') + '` mounts host path ' + l[0].v.hostPath.path + ', which exposes GPU device "
            "nodes (' + " + _host_which("l[0].h", tests) + " + ') outside the scheduler\\'s allocation; remove the "
            "hostPath volume and request GPUs through resources.limits (or a DRA claim)'})"},
    ]
    return Form("gpu-isolation", variables, [_first("variables.hostPathProblems", "gpu-isolation", runbook),
                                             _first("variables.envProblems", "gpu-isolation", runbook)],
                leaves_out=["only NVIDIA_VISIBLE_DEVICES set literally and hostPath device nodes are exported; values "
                            "from ConfigMaps/Secrets/fieldRefs/resourceFieldRefs (and unresolvedEnv), device-list "
                            "mounts and privileged containers next to GPUs stay with the webhook"],
                covers=lambda path: path.endswith(".hostPath.path") or bool(re.search(r"\.env\[\d+\]\.value$", path)))


def _host_hit(h: str, tests: list[tuple[str, str]]) -> str:
    return "(" + " || ".join("(" + t.replace("h.", f"{h}.").replace("h in", f"{h} in") + ")" for _, t in tests) + ")"


def _host_which(h: str, tests: list[tuple[str, str]]) -> str:
    chosen = "''"
    for pattern, test in reversed(tests):
        chosen = f"(({test.replace('h.', f'{h}.').replace('h in', f'{h} in')}) ? {lit(pattern)} : {chosen})"
    return chosen


# ---- gpu-job-deadline -----------------------------------------------------------------------------------

def _human(v: str) -> str:
    """policies.library.gpu_job_deadline.human_duration in CEL (``v`` an int expression, > 0)."""
    return (f"(({v}) >= 86400 ? string(({v}) / 86400) + 'd' : '') + (({v}) % 86400 >= 3600 ? "
            f"string(({v}) % 86400 / 3600) + 'h' : '') + (({v}) % 3600 >= 60 ? string(({v}) % 3600 / 60) + 'm' : '') "
            f"+ (({v}) % 60 >= 1 ? string(({v}) % 60) + 's' : '')")


def _repr(v: str) -> str:
    """How Python's repr shows a scalar a manifest may hold (a string quoted, a bool capitalised)."""
    return (f"(type({v}) == string ? \"'\" + string({v}) + \"'\" : type({v}) == bool ? ({v} ? 'True' : 'False') : "
            f"string({v}))")


def gpu_job_deadline(params: Mapping[str, Any], gpu: GpuConfig, runbook: str) -> Form:
    limit = int(params["maxActiveDeadlineSeconds"])
    human = human_duration(limit)
    uses = f"variables.tpls.exists(tp, {_uses_gpu('variables.tpls.indexOf(tp)')})"
    name = "object.metadata.?name.orValue(object.metadata.?generateName.orValue('<unnamed>'))"

    def deadline(spec: str, base: str, label: str, what: str, hint: str) -> str:
        path = f"{base}.activeDeadlineSeconds"
        value = f"{spec}.?activeDeadlineSeconds"
        return (
            f"!{value}.hasValue() ? {{'path': {lit(path)}, 'msg': {label} + ' uses GPUs but sets no {path}; "
            f"a stuck run would hold its GPUs until someone notices: set {path} to at most {limit} "
            f"({human}){hint}'}} : "
            f"(type({value}.value()) != int || {value}.value() < 1) ? {{'path': {lit(path)}, 'msg': {label} + ' sets "
            f"{path}: ' + {_repr(value + '.value()')} + '; use a whole number of seconds between 1 and {limit} "
            f"({human})'}} : "
            f"{value}.value() > {limit} ? {{'path': {lit(path)}, 'msg': {label} + ' sets {path}: ' + "
            f"string({value}.value()) + ' (' + {_human(value + '.value()')} + '), more than the {limit} ({human}) "
            f"allowed for GPU work; lower it to at most {limit}, so {what} cannot hold GPUs idle for longer'}} : {{}}")

    def ttl(spec: str, base: str, label: str) -> str:
        path = f"{base}.ttlSecondsAfterFinished"
        value = f"{spec}.?ttlSecondsAfterFinished"
        return (f"!{value}.hasValue() ? {{'path': {lit(path)}, 'msg': {label} + ' uses GPUs but sets no {path}; set it "
                f"(e.g. 3600) so the finished job and its pods are cleaned up'}} : (type({value}.value()) != int || "
                f"{value}.value() < 0) ? {{'path': {lit(path)}, 'msg': {label} + ' sets {path}: ' + "
                f"{_repr(value + '.value()')} + '; use a whole number of seconds (e.g. 3600)'}} : {{}}")

    jobs = []
    for kind, spec, base in (("Job", "object.spec", "spec"), ("CronJob", "object.spec.jobTemplate.spec",
                                                              "spec.jobTemplate.spec")):
        label = f"'{kind} `' + {name} + '`'"
        checks = [deadline(spec, base, label, "the job", "")]
        if params["requireTtlSecondsAfterFinished"]:
            checks.append(ttl(spec, base, label))
        jobs.append(f"object.kind == '{kind}' ? [{', '.join(checks)}] : ")
    restart = "object.spec.?restartPolicy.orValue('Always')"
    # a controller reference spares a pod only in a request from that controller's identity (policies.owners; the
    # API server alone has no cache to find the owner in, so a reference is never believed on its own)
    users = {f"{api}/{kind}": list(CONTROLLERS[f"{group}/{kind}"]) for api, group, kind in CONTROLLER_VERSIONS}
    owned = ("object.metadata.?ownerReferences.orValue([]).exists(r, r.?controller.orValue(false) == true && "
             f"(r.?apiVersion.orValue('') + '/' + r.?kind.orValue('')) in {lit(users)} && request.userInfo.username "
             f"in {lit(users)}[r.?apiVersion.orValue('') + '/' + r.?kind.orValue('')])")
    pod_label = f"'Pod `' + {name} + '` (restartPolicy ' + {restart} + ', a batch pod)'"
    as_job = " (or run it as a Job with activeDeadlineSeconds and ttlSecondsAfterFinished)"
    bare = (f"object.kind == 'Pod' && {lit(bool(params['checkBarePods']))} && !{owned} && {restart} in "
            f"['Never', 'OnFailure'] ? [{deadline('object.spec', 'spec', pod_label, 'the pod', as_job)}] : []")
    variables = _shared(gpu) + [{"name": "deadlineProblems",
                                 "expression": f"({uses} ? ({''.join(jobs)}{bare}) : []).filter(p, size(p) > 0)"}]
    return Form("gpu-job-deadline", variables, [_first("variables.deadlineProblems", "gpu-job-deadline", runbook)],
                kinds=("Pod", "Job", "CronJob"))


# ---- cost-labels ----------------------------------------------------------------------------------------

def cost_labels(params: Mapping[str, Any], gpu: GpuConfig, runbook: str) -> Form:
    wanted = list(params["labels"])
    patterns = dict(params.get("valuePatterns") or {})
    t = "variables.tpls.indexOf(tp)"
    blank = "tp.labels[?k].orValue('').trim() == ''"
    where = ("(tp.name == 'pod' ? 'the pod holds' : tp.name == 'template' ? 'the pod template holds' : "
             "'the ' + tp.name + ' pods hold')")
    path = "tp.meta + '.labels'"
    missing = f"{lit(wanted)}.filter(k, {blank})"
    on_object = (f"{missing}.filter(k, {OBJ_LABELS}[?k].orValue('').trim() != '')")
    hint = (f"(tp.meta != 'metadata' && size({on_object}) > 0 ? ' (' + object.kind + ' ' + object.metadata.name + "
            f"' has ' + {on_object}.map(k, k + ': ' + {OBJ_LABELS}[k]).join(', ') + ' in its own metadata.labels, "
            "but cost tools read pod labels: copy them to the pod template)' : '')")
    missing_problem = (f"size({missing}) > 0 ? [{{'path': {path}, 'msg': {where} + ' a GPU without the cost "
                       f"label(s) ' + {missing}.map(k, '`' + k + '`').join(', ') + '; add ' + "
                       f"{missing}.map(k, k + ': <' + k + '>').join(', ') + "
                       f"' to ' + {path} + ' so the GPU hours are charged to an owner' + {hint}}}] : []")
    pattern_problems = " + ".join(
        f"(!({lit(k)} in {missing}) && {lit(k)} in tp.labels && "
        f"!string(tp.labels[{lit(k)}]).matches({lit('^(?:' + p + ')$')}) ? "
        f"[{{'path': {path}, 'msg': 'label {k}=' + string(tp.labels[{lit(k)}]) + ' at ' + {path} + "
        f"' does not match ' + {lit(repr(p))} + '; set {k} to a value that matches it'}}] : [])"
        for k, p in patterns.items()) or "[]"
    variables = _shared(gpu) + [{"name": "costProblems", "expression":
                                 f"variables.tpls.filter(tp, {_uses_gpu(t)}).map(tp, {missing_problem} + "
                                 f"{pattern_problems}).filter(l, size(l) > 0).map(l, l[0])"}]
    return Form("cost-labels", variables, [_first("variables.costProblems", "cost-labels", runbook)],
                leaves_out=["KServe InferenceServices (component labels) are checked by the webhook only"])
