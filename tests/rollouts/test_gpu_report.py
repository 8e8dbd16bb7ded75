"""`mlguard report gpu` against a real Prometheus loaded with a week of a three-team GPU fleet.

The fleet (gpu_fleet.three_teams) is written as kube-state-metrics, DCGM exporter, vLLM, TGI and
Triton would export it, backfilled with promtool, and served by Debian's Prometheus. The expected bill
is computed from the fleet's specification (gpu_fleet.expected), independently of the report's code.
Resolution is 5 minutes to keep the backfill to seconds; tests/benchmarks/bench_gpu_report.py runs
the full 7 days x 1 minute x 500 GPUs.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gpu_fleet as gf
import pytest
import yaml

import rollouts.__main__ as rollouts_main
from policies.context import EmptyFacts
from rollouts.report import assemble, collect, idle_workloads
from rollouts.report.collect import Collector
from rollouts.report.prices import load_prices
from rollouts.report.render import render_csv, render_table, to_json
from rollouts.report.settings import ReportSettings
from rollouts.sources import Deadline
from rollouts.sources.prometheus import PrometheusSource

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEP = 300
WINDOW = 7 * 86400
GRACE = 1800
TOLERANCE = 1e-3  # the 0.1%


@dataclass
class Loaded:
    url: str
    fleet: gf.Fleet
    truth: gf.Truth
    end: int
    prices: Path


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, lib) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp("gpu-report")
    # Two days ago at 02:00 UTC: the last night's idle stretch is six hours old at the end.
    end = int(math.floor(time.time() / 86400) * 86400 - 2 * 86400 + 2 * 3600)
    fleet = gf.three_teams(end, step=STEP)
    writer, truth = gf.series(fleet)
    files, _ = writer.write(tmp / "om")
    gf.backfill(files, tmp / "tsdb")
    prices = tmp / "prices.yaml"
    prices.write_text(yaml.safe_dump({"apiVersion": "mlguard.io/v1alpha1", "kind": "GpuPrices", "currency": "USD",
                                      "prices": gf.PRICES}))
    port = lib.free_port()
    # Lookback below the step: a series ends at its last sample, as a scraped series ends at its
    # staleness marker (promtool's blocks carry none).
    with gf.prometheus(tmp / "tsdb", lookback="4m", port=port, log=tmp / "prometheus.log") as proc:
        lib.wait_http(f"http://127.0.0.1:{port}/-/ready", proc=proc, timeout=60)
        yield Loaded(url=f"http://127.0.0.1:{port}", fleet=fleet, truth=truth, end=end, prices=prices)


def mlguard(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI's way in: `mlguard report gpu` execs `python -m rollouts report gpu`."""
    return subprocess.run([sys.executable, "-m", "policies.cli", "report", "gpu", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def settings(**changes: object) -> ReportSettings:
    values: dict = {"step_seconds": STEP, "grace_seconds": GRACE, **changes}
    return ReportSettings(**values)


def observe(loaded: Loaded, **changes: object):
    source = PrometheusSource(loaded.url, timeout=60)
    return collect(source, settings(**changes), deadline=Deadline(120),
                   end=dt.datetime.fromtimestamp(loaded.end, dt.UTC))


@pytest.fixture(scope="module")
def cli_report(loaded: Loaded) -> dict:
    """`mlguard report gpu --format json` over the week, with the price file."""
    proc = mlguard("--prometheus", loaded.url, "--step", "5m", "--end", str(loaded.end), "--prices",
                   str(loaded.prices), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def observations(loaded: Loaded):
    return observe(loaded)


def close(got: float | None, want: float | None, *, what: str) -> None:
    if want is None:
        assert got is None, f"{what}: expected unknown (null), got {got}"
        return
    assert got is not None, f"{what}: expected {want}, got null"
    assert abs(got - want) <= TOLERANCE * abs(want) + 1e-6, f"{what}: got {got}, expected {want}"


def row_key(row: dict) -> tuple[str, ...]:
    return row["namespace"], row["team"], row["cost_center"], row["model"], row["gpu_class"]


def test_the_bill_matches_the_fleet_to_a_tenth_of_a_percent(loaded: Loaded, cli_report: dict) -> None:
    doc = cli_report
    want = gf.expected(loaded.fleet, loaded.truth, window=WINDOW, threshold=gf.THRESHOLD, grace=GRACE,
                       prices=gf.PRICES)
    rows = {row_key(r): r for r in doc["rows"]}
    assert set(rows) == set(want), (set(rows) ^ set(want))
    for key, w in want.items():
        row, name = rows[key], "/".join(key)
        close(row["gpu_hours"], w.gpu_hours, what=f"{name} gpu_hours")
        close(row["unmeasured_gpu_hours"], w.gpu_hours - w.measured_gpu_hours, what=f"{name} unmeasured")
        measured = w.measured_gpu_hours > 0
        close(row["idle_gpu_hours"], w.idle_gpu_hours if measured else None, what=f"{name} idle_gpu_hours")
        close(row["utilisation_percent"], w.util_gpu_hours / w.measured_gpu_hours if measured else None,
              what=f"{name} utilisation")
        priced = w.unpriced_gpu_hours < w.gpu_hours
        close(row["cost"], w.cost if priced else None, what=f"{name} cost")
        close(row["idle_cost"], w.idle_cost if priced and measured else None, what=f"{name} idle_cost")
        close(row["unpriced_gpu_hours"], w.unpriced_gpu_hours, what=f"{name} unpriced")
        close(row["requests"], w.requests, what=f"{name} requests")
        close(row["generated_tokens"], w.tokens, what=f"{name} tokens")
        close(row["cost_per_1k_requests"], 1000 * w.serving_cost / w.requests if priced and w.requests else None,
              what=f"{name} cost per 1k requests")
        close(row["cost_per_1m_tokens"], 1e6 * w.token_cost / w.tokens if priced and w.tokens else None,
              what=f"{name} cost per 1M tokens")
    total = doc["total"]
    close(total["gpu_hours"], sum(w.gpu_hours for w in want.values()), what="total gpu_hours")
    close(total["idle_gpu_hours"], sum(w.idle_gpu_hours for w in want.values()), what="total idle")
    close(total["cost"], sum(w.cost for w in want.values()), what="total cost")
    # The fleet exercises what it is for: idle hours, unpriced and unmeasured hours.
    assert total["idle_gpu_hours"] > 100 and total["unpriced_gpu_hours"] > 0 and total["unmeasured_gpu_hours"] > 0
    # Unlabelled usage is a row of its own: the research notebook (no team, cost center, model) ...
    assert ("research", "unattributed", "unattributed", "unattributed", "unknown") in rows
    # ... and the GPU busy with no pod allocated.
    squatter = rows[("unattributed",) * 4 + (gf.H100,)]
    assert squatter["gpu_hours"] == pytest.approx(10.0) and squatter["utilisation_percent"] == pytest.approx(88.0)
    assert any("allocated to no pod were busy" in w for w in doc["warnings"])
    assert any("no price for unknown (on-demand)" in w for w in doc["warnings"])
    # A pod that never got a node holds nothing.
    assert not any(r["model"] == "llama-3.1-405b-instruct" for r in doc["rows"])
    # Queries grow with the window's chunks (1,440 points each, five series per chunk), never with pods.
    chunks = math.ceil((WINDOW // STEP + GRACE // STEP - 1) / 1440)
    assert doc["queries"]["range"] == 5 * chunks and doc["queries"]["instant"] <= 8
    assert doc["currency"] == "USD" and doc["no_data"] is False


def test_a_lull_shorter_than_the_grace_is_not_idle(loaded: Loaded, observations) -> None:
    llama = ("team-llm", "llm", "cc-4410", "llama-3.1-70b-instruct", gf.H100)
    rows = {row_key(r): r for r in to_json(assemble(observations, settings()))["rows"]}
    # The 15-minute dip at noon is below the threshold: idle with a 5-minute grace, not with 30.
    short = settings(grace_seconds=STEP)
    shorter = {row_key(r): r for r in to_json(assemble(observe(loaded, grace_seconds=STEP), short))["rows"]}
    want = gf.expected(loaded.fleet, loaded.truth, window=WINDOW, threshold=gf.THRESHOLD, grace=STEP)
    close(shorter[llama]["idle_gpu_hours"], want[llama].idle_gpu_hours, what="llama idle, 5m grace")
    assert shorter[llama]["idle_gpu_hours"] - rows[llama]["idle_gpu_hours"] == pytest.approx(7 * 4 * 0.25)


def test_csv_by_team_sums_the_full_rows(loaded: Loaded, cli_report: dict, observations) -> None:
    by_team: dict[str, float] = defaultdict(float)
    for row in cli_report["rows"]:
        by_team[row["team"]] += row["gpu_hours"]
    text = render_csv(assemble(observations, settings(group_by=("team",)), prices=load_prices(loaded.prices)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["team"]: pytest.approx(float(r["gpu_hours"])) for r in rows} == dict(by_team)
    assert set(rows[0]) >= {"team", "gpu_hours", "idle_gpu_hours", "cost", "cost_per_1k_requests"}
    assert "namespace" not in rows[0]
    unattributed = next(r for r in rows if r["team"] == "unattributed")  # notebook (no price) + squatter
    assert float(unattributed["cost"]) == pytest.approx(69.8) and float(unattributed["unpriced_gpu_hours"]) == 168.0


def test_the_table_regroups_without_asking_again(loaded: Loaded, observations) -> None:
    report = assemble(observations, settings(group_by=("team", "gpu_class")), prices=load_prices(loaded.prices))
    lines = render_table(report).splitlines()
    assert lines[2].split()[:3] == ["TEAM", "GPU-CLASS", "PODS"]
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert "7,572.05*" in total  # the unpriced notebook is marked, not costed at zero
    notebook = next(line for line in lines if line.startswith("unattributed") and " unknown " in line)
    assert notebook.split()[-4:] == ["-", "-", "-", "-"]  # no price: no cost, not 0.00
    assert "Notes:" in lines


def test_idle_workloads_for_the_audit(loaded: Loaded) -> None:
    """The library call part B's gpu-idle policy makes: per controller, idle now and for how long."""
    source = PrometheusSource(loaded.url, timeout=30)
    end = dt.datetime.fromtimestamp(loaded.end, dt.UTC)
    found = {(w.namespace, w.owner_kind, w.owner_name): w
             for w in idle_workloads(source, settings(), deadline=Deadline(120), end=end)}

    def idle_for(pod: str) -> int:  # the trailing run of idle points in the specification
        measured, util = loaded.truth.measured[pod], loaded.truth.util[pod]
        run = 0
        for m, u in zip(measured[::-1], util[::-1], strict=True):
            if not (m and u < gf.THRESHOLD):
                break
            run += 1
        return run * STEP if run * STEP >= GRACE else 0

    llama = found[("team-llm", "Deployment", "vllm-llama-70b")]  # ReplicaSet resolved to its Deployment
    assert llama.idle_now and llama.idle_for_seconds == idle_for("vllm-llama-70b-7d9f6c-x2k4q") > 5 * 3600
    assert llama.gpus_now == 4 and llama.pods == ("vllm-llama-70b-7d9f6c-x2k4q",)
    detector = found[("team-vision", "StatefulSet", "triton-detector")]
    assert not detector.idle_now and detector.idle_for_seconds == 0 and detector.utilisation_pct > 30
    notebook = found[("research", "Pod", "notebook-ana")]  # a bare pod is its own workload
    assert notebook.idle_now and notebook.idle_for_seconds == idle_for("notebook-ana")
    rerank = found[("team-search", "Deployment", "vllm-rerank")]  # a MIG slice: nothing measured
    assert not rerank.idle_now and rerank.idle_gpu_hours is None and rerank.utilisation_pct is None
    finished = found[("team-search", "Job", "embeddings-backfill")]
    assert finished.gpus_now == 0 and not finished.idle_now and finished.gpu_hours == pytest.approx(96.0)


def _serving(kind: str, ns: str, name: str, image: str, resource: str, gpus: int) -> dict:
    """A serving workload as the audit lists it (apps/v1; vLLM, Triton images the baseline's selector knows)."""
    template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
        {"name": "server", "image": image, "resources": {"limits": {resource: str(gpus)}}}]}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}}


def test_the_audits_gpu_idle_policy_on_this_fleet(loaded: Loaded) -> None:
    """Part B: `mlguard audit`'s gpu-idle reads idle_workloads from this Prometheus (webhook.audit's reader),
    attributes it to the judged workloads, and the policy flags the idle one, passes the busy one, and says
    it cannot tell for the MIG slice (no DCGM utilisation): an error result, not a pass."""
    from policies.context import WithUtilisation
    from policies.engine import evaluate_object
    from policies.policyset import load_policyset
    from webhook.audit import Listed, gpu_idle_params, prometheus_idle_reader, utilisation_for

    policyset = load_policyset(REPO / "policies/catalog/baseline.yaml")
    params = gpu_idle_params(policyset)
    assert params is not None
    end = dt.datetime.fromtimestamp(loaded.end, dt.UTC)
    rows, unknown = prometheus_idle_reader(loaded.url, policyset, end=end, step_seconds=STEP)(params)
    assert unknown is None and rows
    listed = Listed(objects=[
        _serving("Deployment", "team-llm", "vllm-llama-70b", "vllm/vllm-openai:v0.6.3", "nvidia.com/gpu", 4),
        _serving("StatefulSet", "team-vision", "triton-detector", "nvcr.io/nvidia/tritonserver:24.05-py3",
                 "nvidia.com/gpu", 2),
        _serving("Deployment", "team-search", "vllm-rerank", "vllm/vllm-openai:v0.6.3", "nvidia.com/mig-3g.40gb", 1)])
    facts = WithUtilisation(EmptyFacts(), utilisation_for(listed, rows, window_seconds=86400, threshold_percent=5))
    found = {}
    for obj in listed.objects:
        outcome = evaluate_object(obj, policyset, point="audit", facts=facts)
        found[obj["metadata"]["name"]] = [v for v in outcome.violations if v.policy == "gpu-idle"]
    [llama] = found["vllm-llama-70b"]
    assert not llama.error and llama.action == "warn"
    assert "Deployment `vllm-llama-70b` holds 4 GPU(s) that stayed below 5% utilisation for" in llama.message
    assert found["triton-detector"] == []
    [rerank] = found["vllm-rerank"]
    assert rerank.error and "no utilisation was measured for its pods" in rerank.message
    # no Prometheus at all: every GPU serving workload says so
    none_rows, why = prometheus_idle_reader(None, policyset)(params)
    assert none_rows is None and why and "no Prometheus" in why


def test_answers_too_large_for_the_cap_are_split_not_lost(loaded: Loaded, observations) -> None:
    end = dt.datetime.fromtimestamp(loaded.end, dt.UTC)
    collector = Collector(PrometheusSource(loaded.url, timeout=30, max_bytes=65536), settings(),
                          deadline=Deadline(120), chunk_points=2100)
    split = collector.collect(end)
    assert collector.stats.split > 0 and collector.stats.range > 5  # one chunk of five queries, split up
    # The same figures (utilisation sums only up to float rounding: other chunk boundaries, other order).
    assert split.utilisation_gpu_steps == pytest.approx(observations.utilisation_gpu_steps, rel=1e-12)
    assert dataclasses.replace(split, utilisation_gpu_steps={}) == dataclasses.replace(
        observations, utilisation_gpu_steps={})
    assert sum(r.idle_gpu_steps for r in split.idle.values()) > 0


def test_misnamed_labels_make_figures_unknown_and_say_which_flag_fixes_it(loaded: Loaded, cli_report: dict) -> None:
    obs = observe(loaded, dcgm_pod_label="exported_pod", dcgm_namespace_label="exported_namespace",
                  team_label="example.com/owner-team")
    doc = to_json(assemble(obs, settings(dcgm_pod_label="exported_pod", team_label="example.com/owner-team")))
    assert all(r["idle_gpu_hours"] is None and r["utilisation_percent"] is None for r in doc["rows"])
    advice = next(w for w in doc["warnings"] if w.startswith("no utilisation"))
    assert "--dcgm-pod-label pod" in advice and "--dcgm-namespace-label namespace" in advice
    # GPUs busy without a pod are not guessed when no pod's GPUs can be told apart from them.
    assert not any(r["namespace"] == "unattributed" for r in doc["rows"])
    assert doc["total"]["gpu_hours"] == pytest.approx(cli_report["total"]["gpu_hours"] - 10.0)
    # A team label kube-state-metrics does not export: every team unattributed, nothing dropped, and why.
    assert {r["team"] for r in doc["rows"]} == {"unattributed"}
    note = next(w for w in doc["warnings"] if "example.com/owner-team" in w)
    assert "--metric-labels-allowlist=pods=[example.com/owner-team" in note


def test_a_window_without_gpus_says_so(loaded: Loaded) -> None:
    long_before = str(loaded.end - 60 * 86400)
    proc = mlguard("--prometheus", loaded.url, "--end", long_before, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["no_data"] is True and doc["rows"] == []
    assert any("no kube_pod_container_resource_requests series" in w for w in doc["warnings"])
    end = dt.datetime.fromtimestamp(loaded.end - 60 * 86400, dt.UTC)
    table = render_table(assemble(collect(PrometheusSource(loaded.url), settings(), deadline=Deadline(60), end=end),
                                  settings()))
    assert "No GPU was held by any pod in this window." in table


def test_csv_keeps_its_notes_on_stderr(loaded: Loaded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "--prometheus", loaded.url, "--end", str(loaded.end - 60 * 86400),
                              "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("namespace,team,cost_center,model,gpu_class,pods,")
    assert "note: no data" in err and "note" not in out


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`python -m rollouts report gpu ...` in this process (the parser and exit codes mlguard execs)."""
    try:
        code = rollouts_main.main(["report", "gpu", *args])
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prometheus_down_is_an_error_not_an_empty_report(lib, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{lib.free_port()}"
    proc = mlguard("--prometheus", url)
    assert proc.returncode == 3 and proc.stdout == ""
    assert "unreachable" in proc.stderr and "no report" in proc.stderr
    code, out, _ = run_main(capsys, "--prometheus", url, "--format", "json")
    assert code == 3 and json.loads(out)["error"]["type"] == "source_unavailable"


def test_a_hanging_prometheus_times_out_within_the_limit(lib, capsys: pytest.CaptureFixture[str]) -> None:
    with lib.silent_tcp_server() as url:
        started = time.monotonic()
        code, out, err = run_main(capsys, "--prometheus", url, "--timeout", "1", "--deadline", "3")
        elapsed = time.monotonic() - started
    assert code == 3 and out == "" and "did not answer within" in err
    assert elapsed < 60  # bounded by --deadline, not the 120 s default timeout (generous: a shared CI machine)


@pytest.mark.parametrize(("content", "message"), [
    ("apiVersion: mlguard.io/v1alpha1\nkind: GpuPrices\ncurrency: USD\nprices:\n  NVIDIA-L40S: {spot: -1}\n",
     "prices/NVIDIA-L40S/spot: -1 is less than the minimum of 0"),
    ("apiVersion: mlguard.io/v1alpha1\nkind: GpuPrices\ncurrency: usd\nprices:\n  NVIDIA-L40S: {on-demand: 1}\n",
     "currency: 'usd' does not match"),
    ("apiVersion: mlguard.io/v1alpha1\nkind: GpuPrices\ncurrency: USD\nprices:\n  NVIDIA-L40S: {ondemand: 1}\n",
     "prices/NVIDIA-L40S: Additional properties are not allowed ('ondemand' was unexpected)"),
    ("apiVersion: mlguard.io/v1alpha1\nkind: GpuPrices\ncurrency: USD\nprices:\n  NVIDIA-L40S: {spot: .nan}\n",
     "prices/NVIDIA-L40S/spot: nan is not a finite price"),
    ("kind: GpuPrices\ncurrency: USD\nprices: {}\n", "(root): 'apiVersion' is a required property"),
    ("prices: [1, 2\n", "not YAML or JSON"),
])
def test_a_bad_price_file_is_refused_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   content: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(content)
    code, out, err = run_main(capsys, "--prometheus", "http://127.0.0.1:9", "--prices", str(path))
    assert code == 2 and out == "", err
    assert message in err and str(path) in err


def test_a_bad_price_file_through_mlguard_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("currency: USD\n")
    proc = mlguard("--prometheus", "http://127.0.0.1:9", "--prices", str(path))
    assert proc.returncode == 2 and "invalid price file" in proc.stderr and str(path) in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "7d", "--step", "11m"], "must be a multiple of step"),
    (["--window", "100d"], "longer than 90d"),
    (["--by", "team,owner"], "choose distinct dimensions"),
    (["--team-label", "Team Name"], "is not a Kubernetes label key"),
    (["--gpu-resource", "nvidia.com/*/gpu"], "is not an extended resource name"),
    (["--end", "yesterday"], "--end must be RFC 3339"),
    (["--idle-threshold", "0"], "idle threshold must be in (0, 100]"),
])
def test_bad_flags_are_refused_before_any_query(capsys: pytest.CaptureFixture[str], args: list[str],
                                                message: str) -> None:
    code, out, err = run_main(capsys, "--prometheus", "http://127.0.0.1:9", *args)
    assert code == 2 and out == "" and message in err, err
