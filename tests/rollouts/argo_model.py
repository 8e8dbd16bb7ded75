"""A model of what Argo Rollouts does with mlguard's AnalysisTemplates, written from its source.

Read against argo-rollouts v1.9.1 (github.com/argoproj/argo-rollouts, tag v1.9.1); each function
names the file it models. Only what the examples use is modelled: web and job metrics, canary
steps (setWeight, pause, analysis), background analysis with startingStep.

- Args: ``flattenArgs`` and ``MergeArgs``/``ResolveArgs`` (utils/analysis/helpers.go),
  ``BuildArgumentsForRolloutAnalysisRun`` (utils/analysis/factory.go), reference validation on
  every reconcile (pkg/apis/rollouts/validation/validation_references.go).
- URL templating: ``ResolveArgs`` (utils/template/template.go): ``{{args.NAME}}`` replaced by the
  value as it is, no escaping.
- Metric validation: ``ValidateMetric`` (utils/analysis/factory.go), ``EffectiveCount``
  (pkg/apis/rollouts/v1alpha1/analysis_types.go).
- Measurements and the run: ``generateMetricTasks``, ``runMeasurements``, ``assessMetricStatus``,
  ``assessMetricFailureInconclusiveOrError``, ``assessRunStatus`` (analysis/analysis.go),
  ``IsTerminating`` (utils/analysis/helpers.go); a web measurement's phase: non-2xx is Error
  (metricproviders/webmetric/webmetric.go), else ``EvaluateResult`` (utils/evaluate/evaluate.go).
- The Rollout: background run from ``startingStep`` until fully promoted, step runs per analysis
  step, Inconclusive pauses and Failed/Error aborts (rollout/analysis.go).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ERROR_RETRY_SECONDS = 10  # analysis/analysis.go DefaultErrorRetryInterval
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # utils/defaults/defaults.go DefaultConsecutiveErrorLimit

SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR, RUNNING = "Successful", "Failed", "Inconclusive", "Error", "Running"
_WORSE = ["", "Pending", RUNNING, SUCCESSFUL, INCONCLUSIVE, ERROR, FAILED]  # helpers.go analysisStatusOrder


class ArgoError(Exception):
    """What Argo would refuse (the Rollout sits in InvalidSpec, or the run ends in Error)."""


# ------------------------------------------------------------------------------------------- args
def flatten_args(templates: list[dict]) -> list[dict]:
    """utils/analysis/helpers.go flattenArgs: the templates' args in order; one name with two
    different values is refused; a value replaces a missing one, never the other way."""
    combined: list[dict] = []
    for template in templates:
        for arg in template["spec"].get("args", []):
            for i, prev in enumerate(combined):
                if prev["name"] == arg["name"]:
                    if prev.get("value") is not None and arg.get("value") is not None \
                            and prev["value"] != arg["value"]:
                        raise ArgoError(
                            f"Argument `{arg['name']}` specified multiple times with different values: "
                            f"'{prev['value']}', '{arg['value']}'")
                    if prev.get("value") is None:
                        combined[i] = dict(arg)
                    break
            else:
                combined.append(dict(arg))
    return combined


def flatten_metrics(templates: list[dict]) -> list[dict]:
    """helpers.go flattenMetrics: metric names must be unique across the templates."""
    metrics = [m for t in templates for m in t["spec"]["metrics"]]
    names = [m["name"] for m in metrics]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ArgoError(f"two metrics have the same name '{duplicate}'")
    return metrics


def build_rollout_args(args: list[dict], *, stable_hash: str, canary_hash: str, rollout: dict) -> list[dict]:
    """utils/analysis/factory.go BuildArgumentsForRolloutAnalysisRun: valueFrom resolved to values."""
    out = []
    for arg in args:
        value = arg.get("value")
        source = arg.get("valueFrom")
        if source:
            if "podTemplateHashValue" in source:
                value = {"Latest": canary_hash, "Stable": stable_hash}[source["podTemplateHashValue"]]
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                node: Any = rollout
                for part in path.split("."):
                    node = node.get(part, {}) if isinstance(node, dict) else {}
                value = node if isinstance(node, str) else ""
            else:
                raise ArgoError(f"arg {arg['name']}: valueFrom not modelled: {source}")
        out.append({"name": arg["name"], "value": value})
    return out


def merge_args(incoming: list[dict], template_args: list[dict]) -> list[dict]:
    """helpers.go MergeArgs + ResolveArgs: the Rollout's args replace the template's of the same name
    (others are dropped); every arg must end with a value."""
    merged = [dict(a) for a in template_args]
    for arg in incoming:
        for target in merged:
            if target["name"] == arg["name"]:
                if arg.get("value") is not None:
                    target["value"] = arg["value"]
                elif arg.get("valueFrom") is not None:
                    target["valueFrom"] = arg["valueFrom"]
    for arg in merged:
        if arg.get("value") is None and arg.get("valueFrom") is None:
            raise ArgoError(f"args.{arg['name']} was not resolved")
    return merged


_TAG_RE = re.compile(r"\{\{(.*?)\}\}")


def resolve(text: str, args: list[dict]) -> str:
    """utils/template/template.go ResolveArgs/resolve: every ``{{tag}}`` (fasttemplate) must be
    ``args.NAME`` of an arg with a value, replaced verbatim (no escaping); anything else is an error
    ("failed to resolve"), which ends the AnalysisRun in Error."""
    values = {}
    for arg in args:
        if arg.get("value") is None:
            raise ArgoError(f'argument "{arg["name"]}" was not supplied')
        values[f"args.{arg['name']}"] = arg["value"]

    def sub(m: re.Match[str]) -> str:
        tag = m.group(1).strip()
        if tag not in values:
            raise ArgoError(f"failed to resolve {{{{{m.group(1)}}}}}")
        return values[tag]

    return _TAG_RE.sub(sub, text)


# ---------------------------------------------------------------------------------------- metrics
def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def effective_count(metric: dict) -> int | None:
    """analysis_types.go EffectiveCount: count, or 1 when neither count nor interval is set."""
    count = _int(metric.get("count"))
    if count == 0:
        return 1 if not metric.get("interval") else None
    return count


def validate_metric(metric: dict) -> None:
    """utils/analysis/factory.go ValidateMetric (the parts a web/job metric can hit)."""
    count, failure = _int(metric.get("count")), _int(metric.get("failureLimit"))
    success, inconclusive = _int(metric.get("consecutiveSuccessLimit")), _int(metric.get("inconclusiveLimit"))
    if success < 0 or failure < -1 or inconclusive < 0 or _int(metric.get("consecutiveErrorLimit")) < 0:
        raise ArgoError("negative limit")
    if success == 0 and failure == -1:
        raise ArgoError("failureLimit and consecutiveSuccessLimit cannot both be disabled")
    if count > 0:
        if success >= 0 and failure >= 0 and count < failure + success:
            raise ArgoError(f"count ({count}) must be >= failureLimit + consecutiveSuccessLimit")
        if count < inconclusive:
            raise ArgoError("count must be >= inconclusiveLimit")
    if count > 1 and not metric.get("interval"):
        raise ArgoError("interval must be specified when count > 1")
    providers = [p for p in metric.get("provider", {}) if p != "plugin"]
    if len(providers) != 1:
        raise ArgoError(f"metric {metric['name']}: exactly one provider, got {providers}")


def duration_seconds(text: str | None) -> int:
    """An Argo DurationString (Go time.ParseDuration with s/m/h) in seconds."""
    if not text:
        return 0
    total = 0
    for number, unit in re.findall(r"(\d+)([smh])", text):
        total += int(number) * {"s": 1, "m": 60, "h": 3600}[unit]
    if not total or "".join(n + u for n, u in re.findall(r"(\d+)([smh])", text)) != text:
        raise ArgoError(f"invalid duration {text!r}")
    return total


def evaluate(value: str, metric: dict) -> str:
    """utils/evaluate/evaluate.go EvaluateResult for conditions of the form ``result == "x"``."""

    def holds(condition: str | None) -> bool | None:
        if not condition:
            return None
        m = re.fullmatch(r'result == "([^"]*)"', condition.strip())
        if not m:
            raise ArgoError(f"condition not modelled: {condition!r}")
        return value == m.group(1)

    success, failure = holds(metric.get("successCondition")), holds(metric.get("failureCondition"))
    if success is None and failure is None:
        return SUCCESSFUL
    if failure is None:
        failure = not success
    if success is None:
        success = not failure
    if failure:
        return FAILED
    return SUCCESSFUL if success else INCONCLUSIVE


def web_phase(status: int, body: Any, metric: dict) -> str:
    """metricproviders/webmetric/webmetric.go: non-2xx is Error; a JSON body's ``{$.verdict}`` is
    evaluated; a body that is not JSON is Successful (Argo up to v1.9.1: mlguard always sends JSON)."""
    if not 200 <= status < 300:
        return ERROR
    if metric["provider"]["web"].get("jsonPath") != "{$.verdict}":
        raise ArgoError("jsonPath not modelled")
    if not isinstance(body, dict) or "verdict" not in body:
        return ERROR  # "Could not find JSONPath in body"
    return evaluate(str(body["verdict"]), metric)


@dataclass
class MetricState:
    """One metric of a run: status.metricResults[] of the AnalysisRun."""

    metric: dict
    phase: str = ""
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    last_finished: float | None = None
    last_phase: str | None = None
    measurements: list[tuple[float, str, Any]] = field(default_factory=list)

    def record(self, now: float, phase: str, detail: Any) -> None:
        """analysis.go runMeasurements: the counters of one completed measurement."""
        if phase == SUCCESSFUL:
            self.successful += 1
            self.count += 1
            self.consecutive_error = 0
            self.consecutive_success += 1
        elif phase == FAILED:
            self.failed += 1
            self.count += 1
            self.consecutive_error = 0
            self.consecutive_success = 0
        elif phase == INCONCLUSIVE:
            self.inconclusive += 1  # cumulative: never reset
            self.count += 1
            self.consecutive_error = 0
            self.consecutive_success = 0
        elif phase == ERROR:
            self.error += 1
            self.consecutive_error += 1
            self.consecutive_success = 0
        self.last_finished, self.last_phase = now, phase
        self.measurements.append((now, phase, detail))

    def failure_inconclusive_or_error(self) -> str:
        """analysis.go assessMetricFailureInconclusiveOrError (later checks win, as in Argo)."""
        m, phase = self.metric, ""
        failure_limit = _int(m.get("failureLimit"))
        if failure_limit >= 0 and self.failed > failure_limit:
            phase = FAILED
        if self.inconclusive > _int(m.get("inconclusiveLimit")):
            phase = INCONCLUSIVE
        if self.consecutive_error > _int(m.get("consecutiveErrorLimit"), DEFAULT_CONSECUTIVE_ERROR_LIMIT):
            phase = ERROR
        return phase

    def assess(self, terminating: bool) -> str:
        """analysis.go assessMetricStatus."""
        if self.phase in (SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR):
            return self.phase
        if not self.measurements:
            return SUCCESSFUL if terminating else "Pending"
        bad = self.failure_inconclusive_or_error()
        if bad:
            return bad
        success_limit = _int(self.metric.get("consecutiveSuccessLimit"))
        if success_limit > 0 and self.consecutive_success >= success_limit:
            return SUCCESSFUL
        count = effective_count(self.metric)
        if count is not None and self.count >= count:
            failure_limit = self.metric.get("failureLimit")
            failure_applicable = failure_limit is None or int(failure_limit) >= 0
            if failure_applicable and success_limit > 0:
                return INCONCLUSIVE
            if success_limit > 0:
                return FAILED
            return SUCCESSFUL
        return SUCCESSFUL if terminating else RUNNING

    def due(self, now: float, started: float, terminating: bool) -> bool:
        """analysis.go generateMetricTasks: is a measurement due now?"""
        if self.phase in (SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR) or terminating:
            return False
        if self.last_finished is None:
            return started + duration_seconds(self.metric.get("initialDelay")) <= now
        count = effective_count(self.metric)
        if count is not None and self.count >= count:
            return False
        interval = ERROR_RETRY_SECONDS
        if self.last_phase != ERROR and self.metric.get("interval"):
            interval = duration_seconds(self.metric["interval"])
        return now >= self.last_finished + interval


Measure = Callable[[dict, float], tuple[str, Any]]  # (metric, now) -> (phase, what the provider said)


@dataclass
class AnalysisRunModel:
    """An AnalysisRun: its metrics, measured when due, and its phase (analysis.go)."""

    name: str
    metrics: list[dict]
    started: float
    terminate: bool = False
    states: dict[str, MetricState] = field(default_factory=dict)
    phase: str = RUNNING

    def __post_init__(self) -> None:
        for metric in self.metrics:
            validate_metric(metric)
        self.states = {m["name"]: MetricState(m) for m in self.metrics}

    def terminating(self) -> bool:
        """helpers.go IsTerminating: asked to stop, or a metric already Failed/Error/Inconclusive."""
        return self.terminate or any(s.phase in (FAILED, ERROR, INCONCLUSIVE) for s in self.states.values())

    def reconcile(self, now: float, measure: Measure) -> str:
        """analysis.go reconcileAnalysisRun: take due measurements, then assess the run."""
        if self.phase != RUNNING:
            return self.phase
        terminating = self.terminating()
        for state in self.states.values():
            if state.due(now, self.started, terminating):
                phase, detail = measure(state.metric, now)
                state.record(now, phase, detail)
        terminating = self.terminating()
        worst, everything_completed = "", True
        for state in self.states.values():
            state.phase = state.assess(terminating) if state.phase not in (SUCCESSFUL, FAILED, INCONCLUSIVE,
                                                                           ERROR) else state.phase
            if state.phase not in (SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR):
                everything_completed = False
            elif not worst or _WORSE.index(state.phase) > _WORSE.index(worst):
                worst = state.phase
        if terminating:
            self.phase = worst or SUCCESSFUL
        elif everything_completed and worst:
            self.phase = worst
        return self.phase

    def stop(self, now: float, measure: Measure) -> str:
        """The Rollout is done with this run (spec.terminate): Successful unless something failed."""
        self.terminate = True
        return self.reconcile(now, measure)


# ---------------------------------------------------------------------------------------- rollout
@dataclass
class Outcome:
    result: str  # promoted | aborted | paused
    at: float
    reason: str
    runs: list[AnalysisRunModel]


def templates_for(refs: list[dict], templates: dict[str, dict]) -> list[dict]:
    return [templates[ref["templateName"]] for ref in refs]


def analysis_run(rollout: dict, analysis: dict, templates: dict[str, dict], *, name: str, started: float,
                 stable_hash: str, canary_hash: str) -> tuple[AnalysisRunModel, list[dict]]:
    """rollout/analysis.go createAnalysisRun -> helpers.go NewAnalysisRunFromTemplates."""
    chosen = templates_for(analysis["templates"], templates)
    template_args = flatten_args(chosen)
    metrics = flatten_metrics(chosen)
    incoming = build_rollout_args(analysis.get("args", []), stable_hash=stable_hash, canary_hash=canary_hash,
                                  rollout=rollout)
    args = merge_args(incoming, template_args)
    resolved = [_resolve_metric(m, args) for m in metrics]
    return AnalysisRunModel(name=name, metrics=resolved, started=started), args


def _resolve_metric(metric: dict, args: list[dict]) -> dict:
    """utils/analysis/factory.go ResolveMetricArgs: every string of the metric templated."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return resolve(node, args)
        return node

    result: dict = walk(metric)
    return result


def run_canary(rollout: dict, templates: dict[str, dict], *, stable_hash: str, canary_hash: str,
               measure: Measure, tick: float = 10.0, horizon: float = 4 * 3600) -> Outcome:
    """The canary steps of one update, from the moment the canary's pods are up (t = 0).

    setWeight steps complete at once (the model's pods are ready at t = 0); pauses last their
    duration; an analysis step waits for its run. The background run starts when the current
    step index reaches startingStep and is stopped when the last step completes.
    """
    canary = rollout["spec"]["strategy"]["canary"]
    steps = canary.get("steps", [])
    background = canary.get("analysis")
    starting = background.get("startingStep", 0) if background else 0
    runs: list[AnalysisRunModel] = []
    bg: AnalysisRunModel | None = None
    step_index, step_started, step_run = 0, 0.0, None
    now = 0.0
    while now <= horizon:
        if background and bg is None and step_index >= starting:
            bg, _ = analysis_run(rollout, background, templates, name="background", started=now,
                                 stable_hash=stable_hash, canary_hash=canary_hash)
            runs.append(bg)
        if bg is not None:
            phase = bg.reconcile(now, measure)
            if phase in (FAILED, ERROR):
                return Outcome("aborted", now, f"background analysis {phase}", runs)
            if phase == INCONCLUSIVE:
                return Outcome("paused", now, "background analysis Inconclusive", runs)
        if step_index >= len(steps):
            if bg is not None:
                phase = bg.stop(now, measure)
                if phase in (FAILED, ERROR):
                    return Outcome("aborted", now, f"background analysis {phase}", runs)
            return Outcome("promoted", now, "all steps done", runs)
        step = steps[step_index]
        done = False
        if "setWeight" in step:
            done = True
        elif "pause" in step:
            done = now >= step_started + duration_seconds(step["pause"].get("duration"))
        elif "analysis" in step:
            if step_run is None:
                step_run, _ = analysis_run(rollout, step["analysis"], templates, name=f"step-{step_index}",
                                           started=now, stable_hash=stable_hash, canary_hash=canary_hash)
                runs.append(step_run)
            phase = step_run.reconcile(now, measure)
            if phase in (FAILED, ERROR):
                return Outcome("aborted", now, f"step {step_index} analysis {phase}", runs)
            if phase == INCONCLUSIVE:
                return Outcome("paused", now, f"step {step_index} analysis Inconclusive", runs)
            done = phase == SUCCESSFUL
        else:
            raise ArgoError(f"step not modelled: {step}")
        if done:
            step_index, step_started, step_run = step_index + 1, now, None
            continue  # the next step starts in the same reconcile
        now += tick
    return Outcome("stuck", now, "horizon reached", runs)


# ------------------------------------------------------------------------------ reference checks
UNIQUE_LABEL = "rollouts-pod-template-hash"  # v1alpha1.DefaultRolloutUniqueLabelKey


def validate_references(rollout: dict, templates: dict[str, dict], services: dict[str, dict]) -> None:
    """pkg/apis/rollouts/validation/validation_references.go, as run on every reconcile: an error
    leaves the Rollout in InvalidSpec and no ReplicaSet is ever created."""
    canary = rollout["spec"]["strategy"]["canary"]
    pod_labels = rollout["spec"]["template"]["metadata"].get("labels", {})
    for field_name in ("canaryService", "stableService"):  # ValidateService
        name = canary.get(field_name)
        if name is None:
            continue
        if name not in services:
            raise ArgoError(f"{field_name} {name!r}: no such Service")
        for key, value in (services[name]["spec"].get("selector") or {}).items():
            if key != UNIQUE_LABEL and pod_labels.get(key) != value:
                raise ArgoError(f'Service "{name}" has unmatch label "{key}" in rollout')
    groups = [("background", canary["analysis"])] if canary.get("analysis") else []
    groups += [("step", step["analysis"]) for step in canary.get("steps", []) if "analysis" in step]
    for kind, analysis in groups:  # ValidateAnalysisTemplatesWithType
        for ref in analysis["templates"]:
            if ref["templateName"] not in templates:
                raise ArgoError(f"AnalysisTemplate {ref['templateName']!r} not found")
        chosen = templates_for(analysis["templates"], templates)
        template_args = flatten_args(chosen)
        flatten_metrics(chosen)
        incoming = build_rollout_args(analysis.get("args", []), stable_hash="dummy-stable-hash",
                                      canary_hash="dummy-new-hash", rollout=rollout)
        merge_args(incoming, template_args)
        for template in chosen:  # ValidateAnalysisTemplateWithType
            args = [dict(a) for a in template["spec"].get("args", [])]
            if kind == "background":
                given = {a["name"] for a in analysis.get("args", [])}
                for arg in args:
                    if arg.get("value") is None and arg.get("valueFrom") is None and arg["name"] not in given:
                        raise ArgoError(f"{template['metadata']['name']}: {arg['name']} (missing analysis argument)")
                continue
            for arg in args:  # setArgValuePlaceHolder, validateAnalysisMetrics
                if arg.get("value") is None:
                    arg["value"] = "dummy-value"
            for metric in template["spec"]["metrics"]:
                resolved = _resolve_metric(metric, args)
                if effective_count(resolved) is None:
                    raise ArgoError(f"AnalysisTemplate {template['metadata']['name']} has metric {metric['name']} "
                                    "which runs indefinitely")
