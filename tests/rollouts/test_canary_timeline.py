"""Canary timelines replayed through the controllers' state machines on a real Prometheus.

The example Rollout (argo_model.run_canary: analysis/analysis.go, rollout/analysis.go of
argo-rollouts v1.9.1) and the example Flagger Canary (flagger_model.run: pkg/controller/scheduler.go,
scheduler_hooks.go, webhook.go of flagger v1.44.0) are run from the moment their canary pods come up,
against the Prometheus of conftest.py (each scenario's canary starts TIMELINE seconds before the end
of its data, beside stable pods that run all along) and the example sample stores. Each measurement
goes to the provider built from the shipped config (kustomize/base/analysis/config.yaml), with its
clock set to the simulated time: what the provider answers at minute 12 of the canary is what it
would have answered then.

Scenarios: healthy (promoted, never an inconclusive), warm-up (first requests 4 minutes late and
few: some looks inconclusive, never paused), latency regression and error regression (aborted by
the background analysis / rolled back by Flagger), eval regression (aborted by the step analysis).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import argo_model
import flagger_model
import pytest
import yaml

from rollouts.app import create_app
from rollouts.config import load_config
from rollouts.errors import AnalysisError
from rollouts.service import AnalysisService

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "kustomize/examples/canary-rollout"


def render(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def config(prometheus, example_stores, lib):
    return load_config({"config_file": str(lib.SHIPPED_CONFIG), "prometheus_url": prometheus.url,
                        "sample_stores": {k: str(v) for k, v in example_stores.items()}}, env={})


class Clock:
    def __init__(self, start: float) -> None:
        self.start, self.offset = start, 0.0

    def __call__(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.start + self.offset, dt.UTC)


# --------------------------------------------------------------------------------- Argo Rollouts
@pytest.fixture(scope="module")
def argo(config, prometheus, lib):
    objs = render(EXAMPLE)
    (rollout,) = [o for o in objs if o["kind"] == "Rollout"]
    templates = {o["metadata"]["name"]: o for o in objs if o["kind"] == "AnalysisTemplate"}
    clock = Clock(prometheus.data_end - lib.TIMELINE)
    return rollout, templates, AnalysisService(config, clock=clock), clock


def replay_argo(argo, lib, scenario: str) -> argo_model.Outcome:
    rollout, templates, service, clock = argo

    def measure(metric: dict, now: float) -> tuple[str, object]:
        clock.offset = now
        url = urlsplit(metric["provider"]["web"]["url"])
        check = url.path.rsplit("/", 1)[-1]
        try:
            verdict = service.analyze(check, dict(parse_qsl(url.query)), caller="argo").to_json()
        except AnalysisError as exc:
            return argo_model.web_phase(exc.status, exc.to_json(), metric), exc.to_json()
        return argo_model.web_phase(200, verdict, metric), verdict

    rollout = copy.deepcopy(rollout)
    rollout["metadata"]["namespace"] = lib.NAMESPACE  # fieldRef metadata.namespace
    return argo_model.run_canary(rollout, templates, stable_hash=lib.ARGO_STABLE,
                                 canary_hash=lib.ARGO_CANARIES[scenario], measure=measure)


def measurements(outcome: argo_model.Outcome, phase: str | None = None) -> list[tuple[str, str, float, object]]:
    return [(run.name, name, t, detail) for run in outcome.runs for name, state in run.states.items()
            for t, p, detail in state.measurements if phase is None or p == phase]


def test_argo_healthy_canary_is_promoted_without_an_inconclusive(argo, lib):
    out = replay_argo(argo, lib, "healthy")
    assert out.result == "promoted", (out.reason, measurements(out, "Inconclusive"), measurements(out, "Error"))
    assert measurements(out, "Inconclusive") == [] and measurements(out, "Error") == []
    background = out.runs[0]
    assert background.phase == "Successful"
    # latency first looks after 12 minutes of traffic and then every 2 minutes until promotion
    times = [t for t, _, _ in background.states["latency"].measurements]
    assert times[0] == 12 * 60 and all(b - a == 120 for a, b in itertools.pairwise(times))
    assert out.at >= 45 * 60  # pause 15m, step analysis, pause 30m


def test_argo_warm_up_spends_inconclusives_but_never_pauses(argo, lib):
    out = replay_argo(argo, lib, "warm-up")
    assert out.result == "promoted", (out.reason, measurements(out, "Inconclusive"))
    spent = {name: state.inconclusive for name, state in out.runs[0].states.items()}
    assert spent["latency"] >= 1, "the late, thin traffic leaves the first look short of intervals"
    for name, state in out.runs[0].states.items():
        assert state.inconclusive <= int(state.metric["inconclusiveLimit"]), name


@pytest.mark.parametrize(("scenario", "metric"), [("latency-regression", "latency"),
                                                  ("error-regression", "error-rate")])
def test_argo_regression_is_aborted_by_background_analysis(argo, lib, scenario, metric):
    out = replay_argo(argo, lib, scenario)
    assert out.result == "aborted" and out.reason == "background analysis Failed", out.reason
    state = out.runs[0].states[metric]
    assert state.failed == 1 and state.phase == "Failed"
    assert out.at < 20 * 60, "caught at one of its first looks, long before promotion"


def test_argo_eval_regression_is_aborted_by_step_analysis(argo, lib):
    out = replay_argo(argo, lib, "eval-regression")
    assert out.result == "aborted" and out.reason == "step 2 analysis Failed", out.reason
    step = out.runs[1]
    assert step.states["eval-score"].phase == "Failed"
    assert step.states["input-drift"].phase == "Successful"


# --------------------------------------------------------------------------------------- Flagger
@pytest.fixture(scope="module")
def flagger(config, prometheus, lib):
    (canary,) = [o for o in render(EXAMPLE / "flagger") if o["kind"] == "Canary"]
    clock = Clock(prometheus.data_end - lib.TIMELINE)
    return canary, config, clock


def replay_flagger(flagger, lib, scenario: str) -> flagger_model.FlaggerOutcome:
    canary, config, clock = flagger
    canary = copy.deepcopy(canary)
    for hook in canary["spec"]["analysis"]["webhooks"]:  # each scenario's pods carry their own app label
        if "label_value" in hook["metadata"]:
            hook["metadata"]["label_value"] = lib.FLAGGER_APPS[scenario]
    app = create_app(config)
    app.extensions["mlguard_analysis"].clock = clock
    client = app.test_client()
    calls: list[tuple[float, str, int, dict]] = []

    def call(hook: dict, now: float) -> int:
        clock.offset = now
        body = {"name": canary["metadata"]["name"], "namespace": lib.NAMESPACE, "phase": "Progressing",
                "checksum": f"rev-{scenario}", "metadata": hook.get("metadata", {})}
        resp = client.post(urlsplit(hook["url"]).path, json=body)
        calls.append((now, hook["name"], resp.status_code, resp.get_json()))
        return resp.status_code

    out = flagger_model.run(canary, call)
    out.events.extend((t, f"{name} -> {status}") for t, name, status, _ in calls)
    return out


def test_flagger_healthy_canary_is_promoted_without_a_failed_check(flagger, lib):
    out = replay_flagger(flagger, lib, "healthy")
    assert out.result == "promoted" and out.failed_checks == 0, out.events
    assert out.weight == 50


def test_flagger_warm_up_never_counts_and_holds_promotion_until_a_pass(flagger, lib):
    out = replay_flagger(flagger, lib, "warm-up")
    assert out.result == "promoted" and out.failed_checks == 0, out.events
    held = [e for e in out.events if "holds promotion" in e[1]]
    assert held, "at maxWeight the window was still filling: confirm-promotion held instead of promoting"


def test_flagger_latency_regression_is_rolled_back_never_promoted(flagger, lib):
    out = replay_flagger(flagger, lib, "latency-regression")
    assert out.result == "rolled-back", out.events
    assert out.failed_checks == 3  # the Canary's threshold
    assert not any(e[1] == "promoted" for e in out.events)


def test_flagger_rollback_hook_is_refused_and_signals_nothing(flagger, lib):
    canary, config, _clock = flagger
    canary = copy.deepcopy(canary)
    hook = copy.deepcopy(canary["spec"]["analysis"]["webhooks"][1])
    hook.update(name="mlguard-wrongly-wired", type="rollback")
    hook["metadata"] = {**hook["metadata"], "hook": "rollback", "label_value": lib.FLAGGER_APPS["healthy"]}
    client = create_app(config).test_client()
    resp = client.post(urlsplit(hook["url"]).path, json={
        "name": "chat", "namespace": lib.NAMESPACE, "phase": "Progressing", "checksum": "x1", "metadata":
        hook["metadata"]})
    assert resp.status_code == 400 and "never wire mlguard" in resp.get_json()["error"]["message"]
    assert flagger_model.is_error(resp.status_code)  # runRollbackHooks: "not signaling a rollback"

