"""What a GPU report reads and how it judges: label keys, resources, thresholds, the time grid.

Names as the exporters spell them (read from their sources):

- kube-state-metrics (``internal/store/pod.go``, ``utils.go``): ``kube_pod_container_resource_requests``
  and ``kube_pod_init_container_resource_requests`` carry ``namespace, pod, uid, container, node,
  resource, unit``, ``resource`` being the Kubernetes resource name with every character outside
  ``[a-zA-Z0-9_]`` replaced by ``_`` (``nvidia.com/gpu`` -> ``nvidia_com_gpu``,
  ``nvidia.com/mig-1g.10gb`` -> ``nvidia_com_mig_1g_10gb``, ``amd.com/gpu`` -> ``amd_com_gpu``) and
  ``node`` the pod's ``spec.nodeName`` (empty until scheduled). ``kube_pod_labels`` and
  ``kube_node_labels`` carry each allowed Kubernetes label as ``label_<key>``, the key sanitised the
  same way and then snake-cased (``cost-center`` -> ``label_cost_center``, ``mlguard.io/model`` ->
  ``label_mlguard_io_model``). Only labels named in kube-state-metrics'
  ``--metric-labels-allowlist`` are exported (none by default).
- DCGM exporter (``internal/pkg/transformation/const.go``): ``DCGM_FI_DEV_GPU_UTIL`` (percent) with
  ``pod``, ``namespace``, ``container`` of the pod the GPU is allocated to (empty when it is
  allocated to none); ``pod_name``/``pod_namespace`` with ``--use-old-namespace``; and
  ``exported_pod``/``exported_namespace`` when Prometheus scrapes it without ``honor_labels``
  (the target's own ``pod``/``namespace`` win). Hence the configurable label names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from rollouts import params
from rollouts.errors import ParamError

MAX_WINDOW_SECONDS = 90 * 86400
MAX_STEPS = 50_000  # grid points per report: 31 days at 1 minute; Prometheus holds one subquery of it in memory
MIN_STEP_SECONDS = 10
UNATTRIBUTED = "unattributed"  # the value of a dimension a pod does not carry (never dropped)
UNKNOWN_CLASS = "unknown"  # a GPU on a node without a GPU-class label
PRICING_COLUMNS = ("on-demand", "spot", "reserved")
DIMENSIONS = ("namespace", "team", "cost_center", "model", "gpu_class")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_ALL_CAPS = re.compile(r"([a-z0-9])([A-Z])")
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
PROM_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$")
RESOURCE_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
RESOURCE_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9][-A-Za-z0-9_.]*$")
MIG_RE = re.compile(r"^nvidia_com_mig_(?P<slices>[0-9]+)g_(?P<memory>[0-9]+)gb(?P<me>_me)?$")


def parse_duration(value: str, *, name: str, maximum: int = MAX_WINDOW_SECONDS) -> int:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"7d"`` -> seconds, at most 90 days unless ``maximum`` says less; errors
    name the option (``--window``)."""
    return params.parse_duration(value, name=name, maximum=maximum, label=name)


def ksm_label(key: str) -> str:
    """The label kube-state-metrics gives Kubernetes label ``key`` on ``kube_*_labels``."""
    sanitized = _INVALID_LABEL_CHARS.sub("_", key)
    return "label_" + _ALL_CAPS.sub(r"\1_\2", sanitized).lower()


def ksm_resource_pattern(resource: str) -> str:
    """A Kubernetes resource name (``*`` allowed at the end) as a regex over kube-state-metrics'
    sanitised ``resource`` label."""
    stem = resource.rstrip("*")
    pattern = _INVALID_LABEL_CHARS.sub("_", stem)
    return pattern + ".+" if resource.endswith("*") else pattern


def resource_variant(ksm_resource: str) -> str:
    """How a GPU resource divides a device, for the GPU class: "" for whole GPUs (``nvidia.com/gpu``,
    ``amd.com/gpu``), ``mig-1g.10gb`` (or ``mig-1g.10gb+me``) for a MIG slice, ``shared`` for a
    time-sliced GPU renamed ``nvidia.com/gpu.shared``, else the sanitised resource name."""
    if ksm_resource in ("nvidia_com_gpu", "amd_com_gpu"):
        return ""
    m = MIG_RE.match(ksm_resource)
    if m:
        return f"mig-{m['slices']}g.{m['memory']}gb" + ("+me" if m["me"] else "")
    if ksm_resource == "nvidia_com_gpu_shared":
        return "shared"
    return ksm_resource


@dataclass(frozen=True)
class ReportSettings:
    """Everything that decides what the report counts. Defaults match the project's conventions:
    the cost-labels policy's ``team`` and ``cost-center``, the model label ``mlguard.io/model``, the
    GPU class label that NVIDIA GPU feature discovery (and AMD's node labeller) put on nodes, and
    Karpenter's capacity-type label (``on-demand``, ``spot``, ``reserved``) for the price column."""

    window_seconds: int = 7 * 86400
    step_seconds: int = 60
    idle_threshold: float = 5.0  # percent (DCGM_FI_DEV_GPU_UTIL); below it a GPU is idle
    grace_seconds: int = 1800  # an idle stretch counts once it lasts at least this long
    team_label: str = "team"
    cost_center_label: str = "cost-center"
    model_label: str = "mlguard.io/model"
    gpu_class_labels: tuple[str, ...] = ("nvidia.com/gpu.product", "amd.com/gpu.product-name")
    capacity_type_label: str = "karpenter.sh/capacity-type"
    default_pricing: str = "on-demand"
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/gpu.shared", "nvidia.com/mig-*", "amd.com/gpu")
    utilisation_metric: str = "DCGM_FI_DEV_GPU_UTIL"
    dcgm_pod_label: str = "pod"
    dcgm_namespace_label: str = "namespace"
    group_by: tuple[str, ...] = field(default=DIMENSIONS)

    def __post_init__(self) -> None:
        problems = []
        if self.step_seconds < MIN_STEP_SECONDS:
            problems.append(f"step must be at least {MIN_STEP_SECONDS}s")
        elif self.window_seconds % self.step_seconds:
            problems.append(f"window ({self.window_seconds}s) must be a multiple of step ({self.step_seconds}s)")
        elif self.steps > MAX_STEPS:
            problems.append(f"window/step is {self.steps} points; at most {MAX_STEPS} (use a coarser --step)")
        if not (0 < self.idle_threshold <= 100) or not math.isfinite(self.idle_threshold):
            problems.append(f"idle threshold must be in (0, 100] percent, got {self.idle_threshold}")
        if self.grace_seconds < 0 or self.grace_seconds > 7 * 86400:
            problems.append("grace must be between 0 and 7d")
        for name in ("team_label", "cost_center_label", "model_label", "capacity_type_label",
                     *(f"gpu_class_labels[{i}]" for i in range(len(self.gpu_class_labels)))):
            value = self._attr(name)
            if not LABEL_KEY_RE.match(value):
                problems.append(f"{name.replace('_', '-')}: {value!r} is not a Kubernetes label key")
        if not self.gpu_class_labels:
            problems.append("at least one GPU class label is needed")
        if self.default_pricing not in PRICING_COLUMNS:
            problems.append(f"default pricing must be one of {', '.join(PRICING_COLUMNS)}")
        if not self.gpu_resources:
            problems.append("at least one GPU resource is needed")
        for resource in self.gpu_resources:
            stem = resource[:-1] if resource.endswith("*") else resource
            if "*" in stem or not (RESOURCE_PREFIX_RE if resource.endswith("*") else RESOURCE_RE).match(stem):
                problems.append(f"GPU resource {resource!r} is not an extended resource name "
                                "(vendor/name, optionally ending in *)")
        if not METRIC_NAME_RE.match(self.utilisation_metric):
            problems.append(f"utilisation metric {self.utilisation_metric!r} is not a metric name")
        for name in ("dcgm_pod_label", "dcgm_namespace_label"):
            if not PROM_LABEL_RE.match(self._attr(name)):
                problems.append(f"{name.replace('_', '-')}: {self._attr(name)!r} is not a Prometheus label name")
        unknown = [d for d in self.group_by if d not in DIMENSIONS]
        if unknown or not self.group_by or len(set(self.group_by)) != len(self.group_by):
            problems.append(f"group by {', '.join(self.group_by) or '(nothing)'}: choose distinct dimensions "
                            f"among {', '.join(DIMENSIONS)}")
        if problems:
            raise ParamError("; ".join(problems))

    def _attr(self, name: str) -> str:
        if name.startswith("gpu_class_labels["):
            return self.gpu_class_labels[int(name[len("gpu_class_labels["):-1])]
        return str(getattr(self, name))

    @property
    def steps(self) -> int:
        """Grid points in the window: the step intervals (t - step, t] that tile it."""
        return self.window_seconds // self.step_seconds

    @property
    def grace_steps(self) -> int:
        """Consecutive idle points an idle stretch needs to count (at least one)."""
        return max(1, math.ceil(self.grace_seconds / self.step_seconds))

    @property
    def resource_regex(self) -> str:
        return "|".join(ksm_resource_pattern(r) for r in self.gpu_resources)

    @property
    def pod_label_keys(self) -> dict[str, str]:
        """Report dimension -> Kubernetes pod label key."""
        return {"team": self.team_label, "cost_center": self.cost_center_label, "model": self.model_label}
