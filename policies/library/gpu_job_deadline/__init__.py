"""gpu-job-deadline: GPU batch jobs end, and are cleaned up, on their own.

A GPU Job (or a CronJob's job template) sets ``activeDeadlineSeconds`` (at most a configured
maximum) and ``ttlSecondsAfterFinished``, so a stuck batch job cannot hold GPUs idle for days.
The other batch kinds are held to their own fields (``policies.kinds`` says which): Kubeflow jobs'
``runPolicy``, a JobSet's Jobs and its TTL, a TrainJob's deadline, a RayJob's deadline and
``shutdownAfterJobFinishes``, a Volcano Job's task pods and TTL, an Argo Workflow's deadline and
``ttlStrategy``. A bare GPU pod that runs to completion (restartPolicy Never / OnFailure) is a batch
job too: it sets the pod's ``activeDeadlineSeconds``. Pods owned by a controller are left to the
controller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.owners import controlled
from policies.registry import Policy, register
from policies.workload import Workload

BATCH_RESTART_POLICIES = ("Never", "OnFailure")


def human_duration(seconds: int) -> str:
    """``90000`` -> ``1d1h``: how a person reads a number of seconds."""
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"


def _is_count(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _seconds(value: Any) -> Any:
    """Argo Workflows writes durations as IntOrString: ``"3600"`` is 3600."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


@register
class GpuJobDeadline(Policy):
    id = "gpu-job-deadline"
    # the batch kinds (everything else restarts forever: no deadline applies)
    denies_kinds = frozenset({"Pod", "Job", "CronJob", "PyTorchJob", "TFJob", "MPIJob", "PaddleJob", "XGBoostJob",
                              "JAXJob", "JobSet", "TrainJob", "RayJob", "Workflow", "CronWorkflow"})
    title = "GPU jobs have a deadline and a TTL"
    severity = "medium"
    version = "1.2.0"
    description = (
        "A GPU Job (or a CronJob's job template) sets activeDeadlineSeconds, at most maxActiveDeadlineSeconds, "
        "and ttlSecondsAfterFinished, so a stuck batch job cannot hold GPUs idle for days. A bare GPU pod with "
        "restartPolicy Never or OnFailure (a batch pod not owned by a controller) sets spec.activeDeadlineSeconds "
        "within the same maximum (checkBarePods). The other batch kinds set their own equivalents: Kubeflow jobs "
        "spec.runPolicy.activeDeadlineSeconds and ttlSecondsAfterFinished; JobSet each GPU Job's "
        "activeDeadlineSeconds and spec.ttlSecondsAfterFinished; TrainJob spec.activeDeadlineSeconds; RayJob "
        "spec.activeDeadlineSeconds and shutdownAfterJobFinishes: true; Volcano Job each GPU task pod's "
        "activeDeadlineSeconds and spec.ttlSecondsAfterFinished; Argo Workflow spec.activeDeadlineSeconds (or "
        "the GPU template's) and spec.ttlStrategy.secondsAfterCompletion.")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "maxActiveDeadlineSeconds": {"type": "integer", "minimum": 1},
            "requireTtlSecondsAfterFinished": {"type": "boolean"},
            "checkBarePods": {"type": "boolean"},
        },
    }
    defaults = {"maxActiveDeadlineSeconds": 86400, "requireTtlSecondsAfterFinished": True, "checkBarePods": True}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        kind = workload.resource.kind
        gpu_templates = {i for i in range(len(workload.templates)) if workload.uses_gpu(i, ctx.gpu)}
        if not gpu_templates:
            return
        label = f"{kind} `{workload.resource.name}`"
        batch = workload.batch
        if batch is not None:
            seconds = _seconds if batch.int_or_string else (lambda v: v)
            seen: set[str] = set()
            for setting in batch.deadlines:
                if setting.template is not None and setting.template not in gpu_templates:
                    continue
                if setting.path in seen:
                    continue
                seen.add(setting.path)
                yield from self._deadline(label, seconds(setting.value), setting.path, params, what=batch.what)
            if batch.ttl is not None and params["requireTtlSecondsAfterFinished"]:
                yield from self._ttl(label, seconds(batch.ttl.value), batch.ttl.path)
            for flag in batch.flags:
                if flag.value is not True:
                    yield Finding(flag.path, f"{label} uses GPUs but does not set {flag.path}: true; {flag.why}: "
                                             "set it")
        elif (kind == "Pod" and params["checkBarePods"] and workload.templates
              and not controlled(workload.obj, workload.resource.namespace, ctx)):
            spec = workload.templates[0].spec
            restart = spec.get("restartPolicy", "Always")
            if restart in BATCH_RESTART_POLICIES:
                yield from self._deadline(f"{label} (restartPolicy {restart}, a batch pod)",
                                          spec.get("activeDeadlineSeconds"), "spec.activeDeadlineSeconds", params,
                                          what="the pod", hint=" (or run it as a Job with activeDeadlineSeconds "
                                                               "and ttlSecondsAfterFinished)")

    @staticmethod
    def _deadline(label: str, value: Any, path: str, params: Mapping[str, Any], *, what: str,
                  hint: str = "") -> Iterator[Finding]:
        limit = int(params["maxActiveDeadlineSeconds"])
        if value is None:
            yield Finding(path, f"{label} uses GPUs but sets no {path}; a stuck run would hold its GPUs until "
                                f"someone notices: set {path} to at most {limit} ({human_duration(limit)}){hint}")
        elif not _is_count(value, minimum=1):
            yield Finding(path, f"{label} sets {path}: {value!r}; use a whole number of seconds between 1 and "
                                f"{limit} ({human_duration(limit)})")
        elif value > limit:
            yield Finding(path, f"{label} sets {path}: {value} ({human_duration(value)}), more than the {limit} "
                                f"({human_duration(limit)}) allowed for GPU work; lower it to at most {limit}, so "
                                f"{what} cannot hold GPUs idle for longer")

    @staticmethod
    def _ttl(label: str, value: Any, path: str) -> Iterator[Finding]:
        if value is None:
            yield Finding(path, f"{label} uses GPUs but sets no {path}; set it (e.g. 3600) so the finished job "
                                f"and its pods are cleaned up")
        elif not _is_count(value, minimum=0):
            yield Finding(path, f"{label} sets {path}: {value!r}; use a whole number of seconds (e.g. 3600)")
