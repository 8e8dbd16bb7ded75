"""The GPU report's pure parts: idle stretches, names as the exporters spell them, prices, grouping."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rollouts.errors import ParamError
from rollouts.presets import PRESETS
from rollouts.report import workloads_from
from rollouts.report.compute import (
    Accumulator,
    Allocation,
    Chunk,
    IdleRuns,
    Observations,
    PodUsage,
    gpu_class,
    group,
    pod_usages,
    pricing_column,
)
from rollouts.report.prices import PriceFileError, PriceTable, parse_prices
from rollouts.report.promql import REQUEST_COUNTERS, TOKEN_COUNTERS, Queries
from rollouts.report.settings import ReportSettings, ksm_label, ksm_resource_pattern, resource_variant

# ------------------------------------------------------------------------------------------ idle stretches

def reference_idle(points: list[tuple[int, float]], *, grace: int, first: int) -> tuple[float, int, int]:
    """Brute force: split into runs of consecutive indices; a run of >= grace points counts its points
    from ``first`` on. Returns (idle GPU-steps, longest run, run still going at index 0)."""
    runs: list[list[tuple[int, float]]] = []
    for k, gpus in points:
        if runs and runs[-1][-1][0] == k - 1:
            runs[-1].append((k, gpus))
        else:
            runs.append([(k, gpus)])
    idle = sum(g for run in runs if len(run) >= grace for k, g in run if k >= first)
    longest = max((len(r) for r in runs), default=0)
    current = len(runs[-1]) if runs and runs[-1][-1][0] == 0 else 0
    return idle, longest, current


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=80), st.integers(1, 12), st.integers(0, 30),
       st.sampled_from([1.0, 2.0, 8.0]))
def test_idle_runs_match_the_brute_force(candidate: list[bool], grace: int, before: int, gpus: float) -> None:
    n = len(candidate)
    indices = list(range(-(n - 1), 1))  # the last point is the report's end (index 0)
    first = min(0, -(n - 1) + before)  # the window starts `before` points into the data
    points = [(k, gpus) for k, c in zip(indices, candidate, strict=True) if c]
    runs = IdleRuns(grace_steps=grace, first_index=first)
    for k, g in points:
        runs.add(("ns", "pod"), k, g)
    result = runs.finish().get(("ns", "pod"))
    idle, longest, current = reference_idle(points, grace=grace, first=first)
    if not points:
        assert result is None
        return
    assert result is not None
    assert (result.idle_gpu_steps, result.longest_run_steps, result.current_run_steps) == (idle, longest, current)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=120), st.lists(st.integers(1, 40), min_size=1, max_size=10),
       st.integers(1, 10), st.integers(0, 40))
def test_idle_runs_fed_in_chunks_equal_point_by_point(candidate: list[bool], sizes: list[int], grace: int,
                                                      before: int) -> None:
    n = len(candidate)
    first_k, window_first = -(n - 1), min(0, -(n - 1) + before)
    gpus = np.array([1.0 + (i % 3) for i in range(n)])
    by_point = IdleRuns(grace_steps=grace, first_index=window_first)
    for i, c in enumerate(candidate):
        if c:
            by_point.add(("ns", "p"), first_k + i, float(gpus[i]))
    by_chunk = IdleRuns(grace_steps=grace, first_index=window_first)
    i, j = 0, 0
    while i < n:
        size = sizes[j % len(sizes)]
        by_chunk.add_chunk(("ns", "p"), first_k + i, np.array(candidate[i:i + size]), gpus[i:i + size])
        i, j = i + size, j + 1
    assert by_chunk.finish() == by_point.finish()


def test_idle_runs_refuse_points_out_of_order() -> None:
    runs = IdleRuns(grace_steps=2, first_index=-10)
    runs.add(("ns", "p"), -3, 1.0)
    with pytest.raises(ValueError, match="out of order"):
        runs.add(("ns", "p"), -3, 1.0)


def test_a_run_begun_before_the_window_counts_only_inside_it() -> None:
    runs = IdleRuns(grace_steps=4, first_index=-2)
    for k in range(-5, 1):  # six points, three of them before the window
        runs.add(("ns", "p"), k, 2.0)
    result = runs.finish()[("ns", "p")]
    assert result.idle_gpu_steps == 6.0 and result.current_run_steps == 6


def test_the_accumulator_joins_requests_phase_and_utilisation() -> None:
    s = ReportSettings(window_seconds=600, step_seconds=60, grace_seconds=120)  # 10 points, grace 2
    acc = Accumulator(s)
    nan = np.nan
    chunk = Chunk(first=-10, length=11)  # one point before the window (k=-10), then k=-9 .. 0
    key = ("ns", "p", "node-a", "nvidia_com_gpu")
    chunk.app[key] = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, nan])  # the series ends before the last point
    chunk.init[key] = np.array([2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)  # an init container asks for 2
    chunk.active[("ns", "p")] = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1], dtype=bool)  # finished at k=-2
    chunk.utilisation[("ns", "p")] = np.array([0, 1, 50, 2, 3, 4, nan, 1, 1, 1, 1], dtype=float)
    acc.add(chunk)
    obs = Observations(end=0.0)
    acc.into(obs)
    (alloc,) = obs.allocations
    # held at k=-9 (2 GPUs: init) and k=-8 .. -3 (1 GPU); inactive at -2, -1; no request at 0
    assert alloc.gpu_steps == 2 + 6 and alloc.gpus_now == 0.0
    # measured: all held points but k=-4 (no utilisation)
    assert obs.measured_gpu_steps[("ns", "p")] == 2 + 5
    assert obs.utilisation_gpu_steps[("ns", "p")] == 2 * 1 + 50 + 2 + 3 + 4 + 1
    # idle (< 5%): k=-10 (before the window, 2 GPUs), -9 (2) = run of 2 >= grace -> counts 2 in the window;
    # k=-7 .. -5 (1 GPU each) = run of 3 -> counts 3; k=-3 alone -> too short
    assert obs.idle[("ns", "p")].idle_gpu_steps == 2 + 3 and obs.idle[("ns", "p")].current_run_steps == 0


# ------------------------------------------------------------------------------------------ names

@pytest.mark.parametrize(("key", "label"), [
    ("team", "label_team"), ("cost-center", "label_cost_center"), ("mlguard.io/model", "label_mlguard_io_model"),
    ("nvidia.com/gpu.product", "label_nvidia_com_gpu_product"), ("costCenter", "label_cost_center"),
    ("karpenter.sh/capacity-type", "label_karpenter_sh_capacity_type"),
])
def test_label_names_as_kube_state_metrics_writes_them(key: str, label: str) -> None:
    # kube-state-metrics internal/store/utils.go: "label_" + toSnakeCase(SanitizeLabelName(key))
    assert ksm_label(key) == label


@pytest.mark.parametrize(("resource", "pattern"), [
    ("nvidia.com/gpu", "nvidia_com_gpu"), ("amd.com/gpu", "amd_com_gpu"), ("nvidia.com/mig-*", "nvidia_com_mig_.+"),
    ("nvidia.com/gpu.shared", "nvidia_com_gpu_shared"),
])
def test_resource_names_as_kube_state_metrics_writes_them(resource: str, pattern: str) -> None:
    assert ksm_resource_pattern(resource) == pattern


@pytest.mark.parametrize(("resource", "variant"), [
    ("nvidia_com_gpu", ""), ("amd_com_gpu", ""), ("nvidia_com_mig_1g_10gb", "mig-1g.10gb"),
    ("nvidia_com_mig_1g_10gb_me", "mig-1g.10gb+me"), ("nvidia_com_mig_7g_80gb", "mig-7g.80gb"),
    ("nvidia_com_gpu_shared", "shared"), ("example_com_npu", "example_com_npu"),
])
def test_gpu_class_variants(resource: str, variant: str) -> None:
    assert resource_variant(resource) == variant


def test_gpu_class_takes_the_first_label_present_and_the_slice() -> None:
    s = ReportSettings()
    amd = {"label_amd_com_gpu_product_name": "AMD-Instinct-MI300X"}
    assert gpu_class(amd, "amd_com_gpu", s) == "AMD-Instinct-MI300X"
    both = {**amd, "label_nvidia_com_gpu_product": "NVIDIA-A100-SXM4-80GB"}
    assert gpu_class(both, "nvidia_com_mig_3g_40gb", s) == "NVIDIA-A100-SXM4-80GB/mig-3g.40gb"
    assert gpu_class({}, "nvidia_com_gpu", s) == "unknown"


@pytest.mark.parametrize(("value", "column"), [
    ("spot", "spot"), ("on-demand", "on-demand"), ("reserved", "reserved"), ("SPOT", "spot"),
    ("ON_DEMAND", "on-demand"), ("", "on-demand"), ("preemptible", "on-demand"),
])
def test_pricing_column_from_the_capacity_type_label(value: str, column: str) -> None:
    assert pricing_column({"label_karpenter_sh_capacity_type": value}, ReportSettings()) == column


def test_the_serving_counters_are_the_presets_metrics() -> None:
    """Cost per request and per token count what the analysis presets count (rollouts/presets.py)."""
    templates = " ".join(t for roles in PRESETS.values() for t in roles.values())
    for selector in [*REQUEST_COUNTERS.values(), *TOKEN_COUNTERS.values()]:
        names = selector.split("{")[0] or selector.split('"')[1]
        for name in names.split("|"):
            assert name in templates, name
    assert 'handler=~"/v1/(chat/)?completions"' in PRESETS["vllm"]["requests"]
    assert set(REQUEST_COUNTERS) == {"vllm", "tgi", "triton"}


@pytest.mark.parametrize("changes", [
    {},
    {"dcgm_pod_label": "exported_pod", "dcgm_namespace_label": "exported_namespace",
     "gpu_class_labels": ("example.com/accelerator",), "gpu_resources": ("nvidia.com/gpu", "example.com/npu-*")},
])
def test_every_query_parses(tmp_path: Path, changes: dict) -> None:
    q = Queries(ReportSettings(**changes))
    names = [n for n in dir(Queries) if isinstance(getattr(Queries, n), property)
             and n not in ("window", "pod_label_names", "node_label_names")]
    rules = [{"record": f"report:{n}", "expr": getattr(q, n)} for n in names]
    rules.append({"record": "report:utilisation_series", "expr": q.utilisation_series_with("pod")})
    rules.append({"record": "report:active", "expr": q.active_pods(["team-llm", "research"])})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "report", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(rules) >= 14


@pytest.mark.parametrize("namespaces", [[], ['team"} or vector(1) #'], ["a|.*"], ["Team"]])
def test_namespace_names_from_prometheus_are_checked_before_they_reach_a_query(namespaces: list[str]) -> None:
    with pytest.raises(ParamError):
        Queries(ReportSettings()).active_pods(namespaces)


@pytest.mark.parametrize("changes", [
    {"team_label": 'team"}) or vector(1'}, {"dcgm_pod_label": "pod) or (x"},
    {"utilisation_metric": "DCGM_FI_DEV_GPU_UTIL{}"}, {"gpu_resources": ('nvidia.com/gpu"|.*',)},
    {"gpu_class_labels": ()}, {"group_by": ("team", "team")}, {"default_pricing": "free"},
    {"window_seconds": 86400, "step_seconds": 5},
])
def test_nothing_reaches_promql_unvalidated(changes: dict) -> None:
    with pytest.raises(ParamError):
        ReportSettings(**changes)


# ------------------------------------------------------------------------------------------ prices

def test_price_file_parses_and_looks_up() -> None:
    table = parse_prices({"apiVersion": "mlguard.io/v1alpha1", "kind": "GpuPrices", "currency": "EUR",
                          "prices": {"NVIDIA-L4": {"on-demand": 0.8, "spot": 0.3}}})
    assert table.price("NVIDIA-L4", "spot") == 0.3
    assert table.price("NVIDIA-L4", "reserved") is None and table.price("NVIDIA-H100", "on-demand") is None


def test_price_file_reports_every_error_with_its_path() -> None:
    with pytest.raises(PriceFileError) as err:
        parse_prices({"apiVersion": "mlguard.io/v1alpha1", "kind": "Prices", "currency": "EUR",
                      "prices": {"NVIDIA-L4": {"spot": "cheap"}, "bad class": {"on-demand": 1}}, "extra": 1})
    message = str(err.value)
    for part in ("kind: 'GpuPrices' was expected", "prices/NVIDIA-L4/spot: 'cheap' is not of type 'number'",
                 "'bad class' does not match", "(root): Additional properties are not allowed ('extra'"):
        assert part in message, message


# ------------------------------------------------------------------------------------------ rows

def observations() -> Observations:
    obs = Observations(end=0.0)
    obs.allocations = [
        Allocation("a", "serve-1", "n1", "nvidia_com_gpu", gpu_steps=120, gpus_now=2),
        Allocation("a", "train-1", "n1", "nvidia_com_gpu", gpu_steps=60, gpus_now=0),
        Allocation("b", "lonely", "n2", "nvidia_com_gpu", gpu_steps=60, gpus_now=1),
    ]
    obs.measured_gpu_steps = {("a", "serve-1"): 120, ("a", "train-1"): 60}
    obs.utilisation_gpu_steps = {("a", "serve-1"): 120 * 50.0, ("a", "train-1"): 60 * 90.0}
    obs.pod_labels = {("a", "serve-1"): {"label_team": "t", "label_cost_center": "c", "label_mlguard_io_model": "m"},
                      ("a", "train-1"): {"label_team": "t", "label_cost_center": "c", "label_mlguard_io_model": "m"}}
    obs.node_labels = {"n1": {"label_nvidia_com_gpu_product": "G"}, "n2": {"label_nvidia_com_gpu_product": "G"}}
    obs.requests = {("a", "serve-1"): 3000.0}
    return obs


def test_unlabelled_pods_are_their_own_row_and_per_request_cost_counts_serving_pods_only() -> None:
    s = ReportSettings(step_seconds=60)
    prices = PriceTable(currency="USD", prices={"G": {"on-demand": 6.0}})
    rows, total = group(pod_usages(observations(), s, prices), ("team",))
    by_team = {r.key["team"]: r for r in rows}
    assert set(by_team) == {"t", "unattributed"}
    t = by_team["t"]
    assert t.gpu_hours == 3.0 and t.cost == 18.0 and t.utilisation_pct == pytest.approx(190 / 3)
    # 2 GPU-hours of the serving pod at 6.00 = 12.00 for 3,000 requests; the training pod is not a request cost
    assert t.cost_per_1k_requests() == pytest.approx(4.0)
    lonely = by_team["unattributed"]
    assert lonely.gpu_hours == 1.0 and lonely.idle_pct is None and lonely.unmeasured_gpu_hours == 1.0
    assert total.gpu_hours == 4.0 and total.requests == 3000.0


def test_a_workload_is_idle_now_only_when_every_pod_holding_gpus_is() -> None:
    def usage(pod: str, idle_for: int, gpus_now: float) -> PodUsage:
        return PodUsage(namespace="a", pod=pod, node="n", resource="nvidia_com_gpu", team="t", cost_center="c",
                        model="m", gpu_class="G", pricing="on-demand", owner_kind="Deployment", owner_name="web",
                        gpus_now=gpus_now, gpu_hours=10, measured_gpu_hours=10, utilisation_gpu_hours=10,
                        idle_gpu_hours=5, idle_for_seconds=idle_for, longest_idle_seconds=idle_for, requests=None,
                        tokens=None, stack=None, price_per_gpu_hour=None)

    (busy,) = workloads_from([usage("web-1", 7200, 1), usage("web-2", 0, 1)])
    assert not busy.idle_now and busy.idle_for_seconds == 0
    (idle,) = workloads_from([usage("web-1", 7200, 1), usage("web-2", 3600, 1), usage("web-old", 0, 0)])
    assert idle.idle_now and idle.idle_for_seconds == 3600 and idle.pods == ("web-1", "web-2", "web-old")
