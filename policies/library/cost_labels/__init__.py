"""cost-labels: GPU workloads carry the configured cost labels (default team, cost-center) on their pods."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from policies.context import EvalContext
from policies.model import Finding
from policies.registry import Policy, register
from policies.templates import pod_field_finding
from policies.workload import PodTemplate, Workload


def _compile(patterns: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    out = {}
    for key, pattern in patterns.items():
        try:
            out[key] = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"params.valuePatterns.{key}: {pattern!r} is not a regular expression: "
                             f"{exc}") from exc
    return out


def _subject(tpl: PodTemplate) -> str:
    """The subject of a message, with its verb: "the pod holds", "the worker pods hold"."""
    if tpl.name == "pod":
        return "the pod holds"
    if tpl.name in ("template", "workloadRef"):
        return "the pod template holds"
    if tpl.role:
        return f"{tpl.role} holds"
    return f"the {tpl.name} pods hold"


def _labels_path(tpl: PodTemplate) -> str:
    return tpl.meta_at("labels")


@register
class CostLabels(Policy):
    id = "cost-labels"
    title = "GPU workloads carry cost labels on their pods"
    severity = "low"
    version = "1.1.0"
    description = ("A workload whose pods hold a GPU (any configured GPU resource or a DRA GPU claim) "
                   "carries the configured labels (default team and cost-center) with a non-empty value on"
                   " its pod template, where cost tools (OpenCost, Kubecost, DCGM exporter's pod labels) "
                   "read them. Labels on the controller object alone do not count. valuePatterns "
                   "optionally constrains values by regular expression (e.g. cost-center: "
                   "'^CC-[0-9]{4}$').")
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "labels": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "valuePatterns": {"type": "object",
                              "additionalProperties": {"type": "string", "format": "regex"}},
        },
    }
    defaults = {"labels": ["team", "cost-center"], "valuePatterns": {}}

    def check(self, workload: Workload, params: Mapping[str, Any], ctx: EvalContext) -> Iterator[Finding]:
        wanted = list(params["labels"])
        patterns = _compile(params["valuePatterns"] or {})
        for i, tpl in enumerate(workload.templates):
            if not workload.uses_gpu(i, ctx.gpu):
                continue
            path = _labels_path(tpl)
            where = _subject(tpl)
            missing = [k for k in wanted if not str(tpl.labels.get(k) or "").strip()]
            if missing:
                message = self._missing_message(workload, tpl, where=where, missing=missing, path=path)
                yield pod_field_finding(tpl, path, message)
            for key, pattern in patterns.items():
                value = tpl.labels.get(key)
                if key in missing or value is None:
                    continue
                if not pattern.fullmatch(str(value)):
                    yield Finding(path, f"label {key}={value} at {path} does not match "
                                  f"{pattern.pattern!r}; set {key} to a value that matches it",
                                  resource=tpl.resource)

    @staticmethod
    def _missing_message(workload: Workload, tpl: PodTemplate, *, where: str, missing: list[str],
                         path: str) -> str:
        names = ", ".join(f"`{k}`" for k in missing)
        example = ", ".join(f"{k}: <{k}>" for k in missing)
        msg = (f"{where} a GPU without the cost label(s) {names}; add {example} to {path} "
               "so the GPU hours are charged to an owner")
        on_object = {k: workload.labels[k] for k in missing
                     if tpl.resource is None and str(workload.labels.get(k) or "").strip()}
        if on_object and tpl.metadata_path != "metadata":
            copied = ", ".join(f"{k}: {v}" for k, v in on_object.items())
            msg += (f" ({workload.resource.kind} {workload.resource.name} has {copied} in its own "
                    "metadata.labels, but cost tools read pod labels: copy them to the pod template)")
        return msg
