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

# kinds whose pod templates the forms find, with the resource the API server calls them by
KIND_RESOURCES: Mapping[str, tuple[str, str, str]] = {
    "Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"), "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"), "Job": ("batch", "v1", "jobs"), "CronJob": ("batch", "v1", "cronjobs"),
    "Rollout": ("argoproj.io", "v1alpha1", "rollouts"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
}
TEMPLATE_KINDS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "Rollout")


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
    return (f"{{'path': dyn({lit(path)}), 'meta': dyn({lit(meta)}), 'name': dyn({lit(name)}), 'spec': dyn({spec}), "
            f"'labels': dyn({labels})}}")


TEMPLATES = (
    "object.kind == 'Pod' ? (has(object.spec) ? ["
    + _tpl("spec", "object.spec", "metadata", "object.metadata.?labels.orValue({})", "pod") + "] : []) : "
    "object.kind == 'CronJob' ? (object.?spec.?jobTemplate.?spec.?template.?spec.hasValue() ? ["
    + _tpl("spec.jobTemplate.spec.template.spec", "object.spec.jobTemplate.spec.template.spec",
           "spec.jobTemplate.spec.template.metadata",
           "object.spec.jobTemplate.spec.template.?metadata.?labels.orValue({})", "template") + "] : []) : "
    "object.kind == 'LeaderWorkerSet' ? ("
    "(object.?spec.?leaderWorkerTemplate.?leaderTemplate.?spec.hasValue() ? ["
    + _tpl("spec.leaderWorkerTemplate.leaderTemplate.spec", "object.spec.leaderWorkerTemplate.leaderTemplate.spec",
           "spec.leaderWorkerTemplate.leaderTemplate.metadata",
           "object.spec.leaderWorkerTemplate.leaderTemplate.?metadata.?labels.orValue({})", "leader") + "] : []) + "
    "(object.?spec.?leaderWorkerTemplate.?workerTemplate.?spec.hasValue() ? ["
    + _tpl("spec.leaderWorkerTemplate.workerTemplate.spec", "object.spec.leaderWorkerTemplate.workerTemplate.spec",
           "spec.leaderWorkerTemplate.workerTemplate.metadata",
           "object.spec.leaderWorkerTemplate.workerTemplate.?metadata.?labels.orValue({})", "worker") + "] : [])) : "
    f"object.kind in {lit(list(TEMPLATE_KINDS))} && object.?spec.?template.?spec.hasValue() ? ["
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


def _uses_gpu(i: str) -> str:
    """A template (index expression ``i``) asks for a GPU in any container."""
    return f"variables.ctrs.exists(x, x.tpl == {i} && size(variables.gpuNames[variables.ctrs.indexOf(x)]) > 0)"


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
    return f"({_q(v)}.isInteger() && sign({_q(v)}) > 0)"


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
         f"{who} + 'sets ' + n + ': ' + string({lim}) + ' in limits; GPUs are whole devices: use a whole number of "
         f"at least 1'"),
        (f"n in x.requests && !{_ok(req)}", "requests",
         f"{who} + 'sets ' + n + ': ' + \"'\" + string({req}) + \"'\" + ', which is not a quantity; use a whole "
         f"number such as requests.' + n + ': 1'"),
        (f"n in x.requests && !{_whole(req)}", "requests",
         f"{who} + 'sets ' + n + ': ' + string({req}) + ' in requests; GPUs are whole devices: use a whole number "
         f"of at least 1'"),
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
        expr = f"({cond}) ? {problem(section, msg)} : {expr}"
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

