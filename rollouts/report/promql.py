"""The PromQL of the GPU report, built from :class:`~rollouts.report.settings.ReportSettings` alone.

Every value that reaches a query is validated there (label keys, resource names, metric names) or is
a number, so no caller-controlled text is ever spliced into PromQL.

The time grid: the report ends at ``T`` (a multiple of the step) and covers ``N = window / step``
points ``T - (N-1)*step ... T``; each point stands for the step interval ending there. Subqueries use
the range ``window - 1s`` so that, aligned to the step as Prometheus aligns subquery steps, they hold
exactly those ``N`` points under both the closed range boundaries of Prometheus 2 and the left-open
ones of Prometheus 3. Range queries use the same points.

Allocation is what the scheduler holds for a pod: the GPUs its containers request (or, when larger,
one init container's), counted while the pod is scheduled (``node`` set) and ``Pending`` or
``Running``; a finished pod holds nothing.
"""

from __future__ import annotations

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


class Queries:
    """Query texts for one report."""

    def __init__(self, settings: ReportSettings) -> None:
        self.s = settings

    @property
    def subquery_range(self) -> str:
        return f"[{self.s.window_seconds - 1}s:{self.s.step_seconds}s]"

    @property
    def window(self) -> str:
        return f"[{self.s.window_seconds}s]"

    def _requests(self, metric: str, aggregate: str) -> str:
        return (f'{aggregate} by (namespace, pod, node, resource) '
                f'({metric}{{resource=~"{self.s.resource_regex}",node!=""}})')

    @property
    def requested(self) -> str:
        """GPUs a scheduled pod requests, by (namespace, pod, node, resource): the containers' sum or
        the largest init container's, whichever is more (the scheduler's effective request)."""
        app = self._requests("kube_pod_container_resource_requests", "sum")
        init = self._requests("kube_pod_init_container_resource_requests", "max")
        return (f'max by (namespace, pod, node, resource) (label_replace({app}, "part", "app", "", "") '
                f'or label_replace({init}, "part", "init", "", ""))')

    @property
    def allocated(self) -> str:
        """GPUs held, by (namespace, pod, node, resource); absent when none."""
        active = 'max by (namespace, pod) (kube_pod_status_phase{phase=~"Pending|Running"})'
        return f"(({self.requested}) * on (namespace, pod) group_left () {active}) > 0"

    @property
    def allocated_by_pod(self) -> str:
        return f"sum by (namespace, pod) ({self.allocated})"

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

    # ---- instant queries at T (one number per group for the whole window)

    @property
    def gpu_steps(self) -> str:
        """GPU x grid points held, by (namespace, pod, node, resource)."""
        return f"sum_over_time(({self.allocated}){self.subquery_range})"

    @property
    def gpus_now(self) -> str:
        return self.allocated

    @property
    def measured_gpu_steps(self) -> str:
        """GPU x grid points held while the pod's GPUs reported utilisation, by pod."""
        return (f"sum_over_time(({self.allocated_by_pod} and on (namespace, pod) "
                f"{self.utilisation_by_pod}){self.subquery_range})")

    @property
    def utilisation_gpu_steps(self) -> str:
        """Sum over grid points of utilisation x GPUs held, by pod (divide by the measured steps)."""
        return (f"sum_over_time(({self.utilisation_by_pod} * on (namespace, pod) "
                f"{self.allocated_by_pod}){self.subquery_range})")

    def _gpu_pods(self) -> str:
        """The pods that requested a GPU at some time in the window (to bound the label queries)."""
        return (f'max by (namespace, pod) (max_over_time(kube_pod_container_resource_requests'
                f'{{resource=~"{self.s.resource_regex}"}}{self.window}))')

    @property
    def pod_labels(self) -> str:
        keys = sorted(set(self.pod_label_names))
        return (f"max by (namespace, pod, {', '.join(keys)}) (last_over_time(kube_pod_labels{self.window})) "
                f"and on (namespace, pod) {self._gpu_pods()}")

    @property
    def pod_label_names(self) -> list[str]:
        return [ksm_label(key) for key in self.s.pod_label_keys.values()]

    @property
    def pod_owners(self) -> str:
        return (f"max by (namespace, pod, owner_kind, owner_name) (last_over_time(kube_pod_owner{self.window})) "
                f"and on (namespace, pod) {self._gpu_pods()}")

    @property
    def replicaset_owners(self) -> str:
        """The controllers (Deployment, Argo Rollout) of the ReplicaSets that own GPU pods."""
        gpu_replicasets = (f'label_replace(max by (namespace, owner_name) (last_over_time(kube_pod_owner'
                           f'{{owner_kind="ReplicaSet"}}{self.window}) and on (namespace, pod) {self._gpu_pods()}), '
                           f'"replicaset", "$1", "owner_name", "(.*)")')
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

    def _unallocated_busy(self, aggregate: str) -> str:
        pod = self.s.dcgm_pod_label
        return (f'sum_over_time(({aggregate} by (modelName) ({self.s.utilisation_metric}{{{pod}=""}} >= '
                f"{self.s.idle_threshold:g})){self.subquery_range})")

    @property
    def unallocated_busy_gpu_steps(self) -> str:
        """Grid points at which a GPU allocated to no pod was busy (at or above the threshold), by
        DCGM's ``modelName``: GPU use Kubernetes does not account for."""
        return self._unallocated_busy("count")

    @property
    def unallocated_busy_utilisation_steps(self) -> str:
        """Their utilisation summed over those points (divide by the steps for the mean)."""
        return self._unallocated_busy("sum")

    # ---- range query over the grid (the only per-point data: idle stretches need their order)

    @property
    def idle_candidates(self) -> str:
        """At each grid point, the GPUs of every pod that holds GPUs whose utilisation is below the
        threshold (absent otherwise: busy, or no utilisation reported)."""
        return (f"{self.allocated_by_pod} and on (namespace, pod) "
                f"({self.utilisation_by_pod} < {self.s.idle_threshold:g})")

    # ---- diagnosis when something is missing

    @property
    def requests_series(self) -> str:
        return f"count(last_over_time(kube_pod_container_resource_requests{self.window}))"

    def utilisation_series_with(self, label: str) -> str:
        return f'count(last_over_time({self.s.utilisation_metric}{{{label}!=""}}{self.window}))'
