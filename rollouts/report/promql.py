"""The PromQL of the GPU report, built from :class:`~rollouts.report.settings.ReportSettings` alone.

Every value that reaches a query is validated first (label keys, resource names, metric names, and
the namespace names that come back from Prometheus itself), so no text is ever spliced into PromQL
unchecked.

The time grid: the report ends at ``T`` (a multiple of the step) and covers ``N = window / step``
points ``T - (N-1)*step ... T``; each point stands for the step interval ending there.

Why per-pod series and not one subquery per figure: Prometheus evaluates a subquery or range query
point by point, and a join (``* on (namespace, pod)``) hashes every series' labels at every point.
Measured on a week at one minute for 500 GPUs (Debian's Prometheus 2.42, shared 2 cores): the
allocation subquery with its phase join took 77 s alone, a plain ``sum by`` of the same series 7 s.
So Prometheus only selects and aggregates (per pod, per step) and the report joins the series in
numpy (:mod:`rollouts.report.compute`). The phase series are filtered to the namespaces that hold
GPUs, so the CPU-only pods of a large cluster are never fetched.

Allocation is what the scheduler holds for a pod: the GPUs its containers request (or, when larger,
one init container's), counted while the pod is scheduled (``node`` set) and ``Pending`` or
``Running``; a finished pod holds nothing.
"""

from __future__ import annotations

import re

from rollouts.errors import ParamError
from rollouts.report.settings import ReportSettings, ksm_label

# Request and generated-token counters of the serving stacks, by stack: the names rollouts/presets.py
# uses (tests/rollouts/test_gpu_report_units.py keeps the two in step). vLLM's requests are its
# OpenAI completion routes as the preset counts them; Triton's core metrics count no tokens.
REQUEST_COUNTERS: dict[str, str] = {
    "vllm": 'http_requests_total{handler=~"/v1/(chat/)?completions"}',
    "tgi": "tgi_request_count",
    "triton": '{__name__=~"nv_inference_request_success|nv_inference_request_failure"}',
}
TOKEN_COUNTERS: dict[str, str] = {
    "vllm": "vllm:request_generation_tokens_sum",
    "tgi": "tgi_request_generated_tokens_sum",
}
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Queries:
    """Query texts for one report."""

    def __init__(self, settings: ReportSettings) -> None:
        self.s = settings

    @property
    def window(self) -> str:
        return f"[{self.s.window_seconds}s]"

    def _gpu_selector(self, metric: str) -> str:
        return f'{metric}{{resource=~"{self.s.resource_regex}",node!=""}}'

    # ---- range queries over the grid, chunk by chunk

    @property
    def app_requests(self) -> str:
        """GPUs the containers of each scheduled pod request, by (namespace, pod, node, resource)."""
        return f"sum by (namespace, pod, node, resource) ({self._gpu_selector('kube_pod_container_resource_requests')})"

    @property
    def init_requests(self) -> str:
        """The largest init container's GPU request (the scheduler holds the larger of the two)."""
        return (f"max by (namespace, pod, node, resource) "
                f"({self._gpu_selector('kube_pod_init_container_resource_requests')})")

    def active_pods(self, namespaces: list[str]) -> str:
        """Phase Pending or Running (value 1) of the pods in ``namespaces`` (those holding GPUs)."""
        bad = [n for n in namespaces if not NAMESPACE_RE.match(n)]
        if bad or not namespaces:
            raise ParamError(f"not namespace names: {bad!r}" if bad else "no namespaces to ask about")
        return f'kube_pod_status_phase{{phase=~"Pending|Running",namespace=~"{"|".join(sorted(namespaces))}"}} == 1'

    @property
    def utilisation_by_pod(self) -> str:
        """Mean utilisation (percent) of each pod's GPUs, with DCGM's pod labels renamed to
        ``namespace``/``pod`` when they are spelled otherwise."""
        pod, ns = self.s.dcgm_pod_label, self.s.dcgm_namespace_label
        expr = f'{self.s.utilisation_metric}{{{pod}!=""}}'
        if ns != "namespace":
            expr = f'label_replace({expr}, "namespace", "$1", "{ns}", "(.*)")'
        if pod != "pod":
            expr = f'label_replace({expr}, "pod", "$1", "{pod}", "(.*)")'
        return f"avg by (namespace, pod) ({expr})"

    @property
    def unallocated_busy(self) -> str:
        """GPUs allocated to no pod that are busy (at or above the threshold): their utilisation, per
        GPU, present only at the points where they are busy."""
        return f'{self.s.utilisation_metric}{{{self.s.dcgm_pod_label}=""}} >= {self.s.idle_threshold:g}'

    # ---- instant queries at T (one answer per pod for the whole window)

    @property
    def gpu_pods(self) -> str:
        """The pods that requested a GPU on a node at some time in the window."""
        return (f"max by (namespace, pod) (max_over_time({self._gpu_selector('kube_pod_container_resource_requests')}"
                f"{self.window}))")

    def _of_gpu_pods(self, expr: str) -> str:
        return f"{expr} and on (namespace, pod) {self.gpu_pods}"

    @property
    def pod_labels(self) -> str:
        keys = sorted(set(self.pod_label_names))
        return self._of_gpu_pods(f"max by (namespace, pod, {', '.join(keys)}) "
                                 f"(last_over_time(kube_pod_labels{self.window}))")

    @property
    def pod_label_names(self) -> list[str]:
        return [ksm_label(key) for key in self.s.pod_label_keys.values()]

    @property
    def pod_owners(self) -> str:
        return self._of_gpu_pods(f"max by (namespace, pod, owner_kind, owner_name) "
                                 f"(last_over_time(kube_pod_owner{self.window}))")

    @property
    def replicaset_owners(self) -> str:
        """The controllers (Deployment, Argo Rollout) of the ReplicaSets that own GPU pods."""
        owned = self._of_gpu_pods(f'last_over_time(kube_pod_owner{{owner_kind="ReplicaSet"}}{self.window})')
        gpu_replicasets = (f'label_replace(max by (namespace, owner_name) ({owned}), '
                           '"replicaset", "$1", "owner_name", "(.*)")')
        owners = ("max by (namespace, replicaset, owner_kind, owner_name) "
                  f"(last_over_time(kube_replicaset_owner{self.window}))")
        return f"{owners} and on (namespace, replicaset) {gpu_replicasets}"

    @property
    def node_label_names(self) -> list[str]:
        return [ksm_label(k) for k in (*self.s.gpu_class_labels, self.s.capacity_type_label)]

    @property
    def node_labels(self) -> str:
        return (f"max by (node, {', '.join(dict.fromkeys(self.node_label_names))}) "
                f"(last_over_time(kube_node_labels{self.window}))")

    def _counters(self, table: dict[str, str]) -> str:
        """Increase over the window by (namespace, pod, stack); each stack's series are told apart by a
        ``stack`` label so that ``or`` keeps them all."""
        return " or ".join(
            f'label_replace(sum by (namespace, pod) (increase({selector}{self.window})), "stack", "{stack}", "", "")'
            for stack, selector in table.items())

    @property
    def requests(self) -> str:
        """Requests answered over the window, by (namespace, pod, stack)."""
        return self._counters(REQUEST_COUNTERS)

    @property
    def tokens(self) -> str:
        """Generated tokens over the window, by (namespace, pod, stack)."""
        return self._counters(TOKEN_COUNTERS)

    # ---- diagnosis when something is missing

    @property
    def requests_series(self) -> str:
        return f"count(last_over_time(kube_pod_container_resource_requests{self.window}))"

    def utilisation_series_with(self, label: str) -> str:
        return f'count(last_over_time({self.s.utilisation_metric}{{{label}!=""}}{self.window}))'
