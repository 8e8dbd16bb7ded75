"""The checks, their shared wiring and the registry.

Each check is a module with ``PARAMS`` (the parameters it accepts besides the common ones) and
``run(params, ctx) -> Verdict``. Sources are injected through :class:`CheckContext`; the
statistics come from :mod:`rollouts.stats` (pure functions of arrays); the verdict is built by
:mod:`rollouts.verdict`.

Modes (issues 6 and 17): ``mode=anytime`` (default) keeps the false-alarm rate at or below ``alpha``
however often Argo looks: Prometheus-fed checks run sequential tests on the cumulative window since
the canary started (stable's window cut to the canary's lifetime, see :meth:`CheckContext.aligned_window`);
sample-store checks, whose objects are snapshots, spend ``alpha`` by information fraction over a
halving grid of canary sizes (:mod:`rollouts.checks.looks`; ``look_correction=bonferroni`` splits it
over ``max_looks`` looks instead). ``mode=fixed`` runs the classical fixed-sample test at ``alpha`` on
each look.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from rollouts.checks.looks import LOOK_CORRECTIONS, LookPlan, plan_look
from rollouts.config import AnalysisConfig
from rollouts.errors import AnalysisError, ParamError, SourceQueryError, UnknownCheckError
from rollouts.params import Params
from rollouts.presets import MODEL_LABEL, PRESETS, ROLES, all_preset_queries, preset_query_name
from rollouts.sources import Deadline
from rollouts.sources.prometheus import LABEL_NAME_RE, LABEL_VALUE_RE, PrometheusSource, build_selector, render
from rollouts.sources.samples import Samples, SampleStore
from rollouts.verdict import Mode, Verdict

COMMON_PARAMS = frozenset({"mode", "alpha", "max_looks", "caller"})
PROMETHEUS_PARAMS = frozenset(
    {"stable", "canary", "hash_label", "namespace", "model", "selector", "preset", "window", "step",
     "rate_window"}
    | {f"{role}_query" for role in ROLES}
    | {f"promql_{role}" for role in ROLES}
)
SAMPLE_PARAMS = frozenset({"store", "baseline", "canary", "look_correction", "planned_samples"})
HASH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
STORE_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_INTERVALS = 1000


@dataclass(frozen=True)
class LookParams:
    """The caller's choices for repeated looks at snapshots (see :mod:`rollouts.checks.looks`)."""

    mode: Mode
    alpha: float
    correction: str
    max_looks: int
    planned: int | None  # None: the baseline's rows


@dataclass(frozen=True)
class Selectors:
    stable: str
    canary: str
    model: str  # ",<label>=\"<model>\"" or "": rendered into ${model}


@dataclass
class CheckContext:
    """What a check may use: configuration, sources and the time budget of this answer."""

    config: AnalysisConfig
    prometheus: PrometheusSource | None
    stores: dict[str, SampleStore]
    deadline: Deadline
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    notes: list[str] = field(default_factory=list)  # said in the answer's details (see run_check)
    rate_seconds: int | None = None  # the rate() range of per-step values, set by step()

    # ---- common parameters -------------------------------------------------------------------
    def mode(self, params: Params) -> Mode:
        return params.choice("mode", ("anytime", "fixed"), self.config.mode)  # type: ignore[return-value]

    def alpha(self, params: Params) -> float:
        return params.number("alpha", self.config.alpha, low=0.0, high=0.5, low_inclusive=False)

    def max_looks(self, params: Params) -> int:
        return params.integer("max_looks", self.config.max_looks, low=1, high=1000)

    def look_params(self, params: Params, mode: Mode) -> LookParams:
        """Read ``alpha``, ``look_correction``, ``max_looks`` and ``planned_samples`` (validated up front)."""
        planned = (params.integer("planned_samples", 0, low=2, high=10_000_000)
                   if params.has("planned_samples") else None)
        return LookParams(mode=mode, alpha=self.alpha(params),
                          correction=params.choice("look_correction", LOOK_CORRECTIONS, "spending"),
                          max_looks=self.max_looks(params), planned=planned)

    def look_plan(self, look: LookParams, *, canary_rows: int, baseline_rows: int, min_rows: int) -> LookPlan:
        """Alpha for one look of a snapshot test and the canary rows (a prefix) it judges."""
        planned = look.planned if look.planned is not None else max(baseline_rows, min_rows)
        if planned < min_rows:
            raise ParamError(f"parameter 'planned_samples' ({planned}) is below the minimum sample size {min_rows}")
        return plan_look(mode=look.mode, alpha=look.alpha, correction=look.correction, max_looks=look.max_looks,
                         planned=planned, canary_rows=canary_rows, min_rows=min_rows)

    # ---- sample stores -----------------------------------------------------------------------
    def store(self, params: Params) -> SampleStore:
        name = params.text("store", pattern=STORE_RE)
        if name not in self.stores:
            known = ", ".join(sorted(self.stores)) or "none configured"
            raise ParamError(f"unknown sample store {name!r} (known: {known})")
        return self.stores[name]

    def load_pair(self, params: Params) -> tuple[Samples, Samples]:
        store = self.store(params)
        baseline = store.load(params.text("baseline"), param="baseline", deadline=self.deadline)
        canary = store.load(params.text("canary"), param="canary", deadline=self.deadline)
        return baseline, canary

    # ---- Prometheus --------------------------------------------------------------------------
    def require_prometheus(self) -> PrometheusSource:
        if self.prometheus is None:
            raise AnalysisError("no Prometheus configured (set --prometheus or prometheus.url)")
        return self.prometheus

    def preset(self, params: Params) -> str | None:
        if params.has("preset"):
            return params.choice("preset", sorted(PRESETS))
        return self.config.default_preset

    def selectors(self, params: Params) -> Selectors:
        """Label matchers (without braces) for the stable and the canary series."""
        hash_label = params.text("hash_label", self.config.hash_label, pattern=LABEL_NAME_RE)
        stable = params.text("stable", pattern=HASH_RE)
        canary = params.text("canary", pattern=HASH_RE)
        if stable == canary:
            raise ParamError("parameters 'stable' and 'canary' name the same pod template hash")
        extra: dict[str, str] = {}
        model = ""
        if params.has("namespace"):
            extra["namespace"] = params.text("namespace", pattern=LABEL_VALUE_RE)
        if params.has("model"):
            value = params.text("model", pattern=LABEL_VALUE_RE)
            preset = self.preset(params)
            label = MODEL_LABEL.get(preset or "")
            if preset in PRESETS and label is None:
                # TGI serves one model per server and labels no series with it: the pods (stable,
                # canary) already select the model, so the parameter has nothing to narrow.
                self.notes.append(f"model {value!r} not used: preset {preset!r} labels no series with the model")
            elif label is None:
                raise ParamError(
                    "parameter 'model' needs a preset that labels series with the model "
                    f"({', '.join(sorted(MODEL_LABEL))}); use selector=LABEL=VALUE instead"
                )
            else:
                model = "," + build_selector({label: value})
        if params.has("selector"):
            for item in params.text("selector").split(","):
                name, sep, value = item.strip().partition("=")
                if not sep:
                    raise ParamError(f"parameter 'selector': {item!r} is not LABEL=VALUE")
                if name == hash_label:
                    raise ParamError(f"parameter 'selector' must not set {hash_label!r}; use stable/canary")
                if not LABEL_NAME_RE.fullmatch(name) or not LABEL_VALUE_RE.fullmatch(value):
                    raise ParamError(
                        f"parameter 'selector': {item!r} must be LABEL=VALUE with a label name matching "
                        f"{LABEL_NAME_RE.pattern} and a value matching {LABEL_VALUE_RE.pattern}"
                    )
                extra[name] = value
        return Selectors(
            stable=build_selector({hash_label: stable, **extra}),
            canary=build_selector({hash_label: canary, **extra}),
            model=model,
        )

    def query_template(self, params: Params, role: str) -> tuple[str, str]:
        """(name, template) for a role: raw PromQL if allowed, a named query, or the preset's."""
        raw_param = f"promql_{role}"
        if params.has(raw_param):
            if not self.config.allow_raw_queries:
                raise ParamError(
                    f"parameter {raw_param!r}: raw PromQL is disabled; name a query template "
                    f"with {role}_query or set allowRawQueries: true in the config"
                )
            return raw_param, params.text(raw_param)
        available = {**all_preset_queries(), **self.config.queries}
        if params.has(f"{role}_query"):
            name = params.text(f"{role}_query", pattern=re.compile(r"[a-z][a-z0-9_]{0,62}"))
            if name not in available:
                raise ParamError(f"unknown query template {name!r} (known: {', '.join(sorted(available))})")
            return name, available[name]
        preset = self.preset(params)
        if preset is None:
            raise ParamError(f"no query for {role!r}: pass preset=..., {role}_query=NAME or set a default preset")
        name = preset_query_name(preset, role)
        if name not in available:
            raise ParamError(f"preset {preset!r} has no {role!r} query (its server does not export one)")
        return name, available[name]

    def window(self, params: Params, *, mode: Mode) -> int:
        # Anytime mode tests the cumulative window since the canary started: a long default
        # window covers the whole canary (its pods only exist since it started).
        return params.duration("window", "6h" if mode == "anytime" else "30m")

    def step(self, params: Params, *, window: int) -> tuple[int, dict[str, Any]]:
        step = params.duration("step", "1m")
        if step > window:
            raise ParamError("parameter 'step' is longer than 'window'")
        info: dict[str, Any] = {}
        if window // step > MAX_INTERVALS:
            new_step = -(-window // MAX_INTERVALS)
            info["step_capped"] = f"step raised from {step}s to {new_step}s to cap intervals at {MAX_INTERVALS}"
            step = new_step
        self.rate_seconds = self.rate_window(params, step=step)
        info["rate_window_seconds"] = self.rate_seconds
        return step, info

    def rate_window(self, params: Params, *, step: int) -> int:
        """The range of ``rate()``/``increase()`` for per-step values: ``max(step, 4 x scrape interval)``.

        A rate needs two samples inside its range: with the range equal to a 60 s step and 60 s
        scrapes most intervals hold one sample and come back empty. Four scrape intervals survive a
        missed scrape. ``rate_window=DURATION`` overrides it (never shorter than ``step``, or samples
        between two steps would be skipped).
        """
        if params.has("rate_window"):
            value = params.duration("rate_window", "1m")
            if value < step:
                raise ParamError(f"parameter 'rate_window' ({value}s) is shorter than 'step' ({step}s)")
            return value
        return max(step, 4 * self.config.scrape_interval)

    def _step_range(self, step: int) -> int:
        """The ``rate()``/``increase()`` range of a per-step value (see :meth:`rate_window`)."""
        return self.rate_seconds if self.rate_seconds is not None else max(step, 4 * self.config.scrape_interval)

    def range_values(
        self, template: tuple[str, str], selector: str, *, model: str, window: int, step: int,
        quantile: float = 0.95,
    ) -> list[float]:
        prom = self.require_prometheus()
        interval = self.rate_seconds if self.rate_seconds is not None else max(step, 4 * self.config.scrape_interval)
        query = render(template[1], name=template[0], selector=selector, interval=f"{interval}s",
                       quantile=quantile, model=model)
        end = self.now()
        start = end - dt.timedelta(seconds=window)
        return prom.series(query, start=start, end=end, step_seconds=step, deadline=self.deadline)

    def instant_value(
        self, template: tuple[str, str], selector: str, *, model: str, window: int, quantile: float = 0.95,
    ) -> float | None:
        """One value over the window; None when the result is empty or not a number (no traffic)."""
        value = self._instant(template, selector, model=model, window=window, quantile=quantile)
        return value if value is not None and math.isfinite(value) else None

    def count_value(
        self, template: tuple[str, str], selector: str, *, model: str, window: int, what: str,
    ) -> int | None:
        """A count over the window (requests, errors), rounded to whole events; None when the query
        returned nothing. NaN, infinite or negative is a broken source, never zero: 502."""
        value = self._instant(template, selector, model=model, window=window)
        if value is None:
            return None
        if not math.isfinite(value) or value < 0:
            raise SourceQueryError(
                f"{what} count is {value} (query {template[0]!r}); a count must be a finite number >= 0: "
                "check the query template and the scraped series",
                source="prometheus",
            )
        # increase() extrapolates to the window edges: round to whole events.
        return round(value)

    def _instant(
        self, template: tuple[str, str], selector: str, *, model: str, window: int, quantile: float = 0.95,
    ) -> float | None:
        prom = self.require_prometheus()
        query = render(template[1], name=template[0], selector=selector, interval=f"{window}s", quantile=quantile,
                       model=model)
        return prom.instant(query, deadline=self.deadline, at=self.now())

    def canary_age(self, template: tuple[str, str], selector: str, *, model: str, window: int,
                   step: int) -> float | None:
        """Seconds since the canary started serving (within ``window``), or None when it never did.

        The template, rendered for one step, is evaluated as a subquery over the window; the earliest
        evaluation with a value above 0 is when the canary's traffic began:
        ``time() - min(min_over_time(timestamp((<query>) > 0)[window:step]))``. Pods that are up but
        get no requests yet export zeros: that time is not part of the canary's lifetime.
        """
        prom = self.require_prometheus()
        inner = render(template[1], name=template[0], selector=selector, interval=f"{self._step_range(step)}s",
                       model=model)
        age = prom.instant(f"time() - min(min_over_time(timestamp(({inner}) > 0)[{window}s:{step}s]))",
                           deadline=self.deadline, at=self.now())
        return age if age is not None and math.isfinite(age) else None

    def aligned_window(self, template: tuple[str, str], sel: Selectors, *, window: int,
                       step: int) -> tuple[int, dict[str, Any]]:
        """The window both sides are judged on: ``window``, cut to the canary's lifetime.

        Stable has served for hours or days; its traffic from before the canary started (another
        time of day, another load) is not what the canary is compared against. With the canary's age
        from :meth:`canary_age`, both sides use ``min(window, age + step)`` (rounded up to whole
        steps), so the comparison covers the same period on both.
        """
        age = self.canary_age(template, sel.canary, model=sel.model, window=window, step=step)
        if age is None or age < 0:
            return window, {"window_seconds": window, "aligned": f"no canary series in the last {window}s"}
        aligned = min(window, max(step, (int(age) // step + 2) * step))
        return aligned, {
            "window_seconds": aligned, "window_requested_seconds": window, "canary_age_seconds": round(age, 3),
            "aligned": "both sides judged over the canary's lifetime (stable's older traffic left out)"
            if aligned < window else "the canary is older than the window",
        }

    def bucket_counts(self, template: tuple[str, str], selector: str, *, model: str,
                      window: int) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of every histogram bucket over ``window``, by ``le``, sorted."""
        prom = self.require_prometheus()
        query = render(template[1], name=template[0], selector=selector, interval=f"{window}s", model=model)
        raw = prom.instant_by(query, label="le", deadline=self.deadline, at=self.now())
        buckets: list[tuple[float, float]] = []
        for le, value in raw.items():
            try:
                bound = float(le)
            except ValueError:
                raise SourceQueryError(f"bucket label le={le!r} is not a number", source="prometheus") from None
            buckets.append((bound, value))
        return sorted(buckets)

    def paired_differences(self, template: tuple[str, str], sel: Selectors, *, window: int, step: int,
                           quantile: float = 0.95) -> list[float]:
        """Per-interval ``canary - stable`` over ``window``, only at the steps where both have a value.

        One range query, ``(<canary>) - on() (<stable>)``: PromQL pairs the two one-series results
        by timestamp, so the differences are paired by time without any client-side alignment.
        """
        prom = self.require_prometheus()
        parts = [render(template[1], name=template[0], selector=s, interval=f"{self._step_range(step)}s",
                        quantile=quantile, model=sel.model) for s in (sel.canary, sel.stable)]
        end = self.now()
        start = end - dt.timedelta(seconds=window)
        return prom.series(f"({parts[0]}) - on() ({parts[1]})", start=start, end=end, step_seconds=step,
                           deadline=self.deadline)


def _registry() -> dict[str, ModuleType]:
    from rollouts.checks import error_rate, eval_score, input_drift, latency, output_drift

    return {
        "input-drift": input_drift,
        "output-drift": output_drift,
        "latency": latency,
        "error-rate": error_rate,
        "eval-score": eval_score,
    }


def check_names() -> list[str]:
    return sorted(_registry())


def run_check(name: str, params: Params, ctx: CheckContext) -> Verdict:
    """Validate the parameters for ``name`` and run it."""
    registry = _registry()
    if name not in registry:
        raise UnknownCheckError(f"unknown check {name!r} (known: {', '.join(sorted(registry))})")
    module = registry[name]
    module_params = module.allowed_params(params) if hasattr(module, "allowed_params") else module.PARAMS
    params.check_known(COMMON_PARAMS | module_params, check=name)
    verdict: Verdict = module.run(params, ctx)
    if ctx.notes:
        verdict = dataclasses.replace(verdict, details={**verdict.details, "notes": list(ctx.notes)})
    return verdict
