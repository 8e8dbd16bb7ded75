"""Query presets for the metrics that common serving stacks export.

A team serving with one of these stacks passes ``preset=NAME`` (or sets ``prometheus.preset`` in the
config) and configures nothing else. Each preset maps *roles* to query templates:

- ``latency``: one latency value per interval (seconds), a histogram quantile where the server
  exports a histogram, else the mean from cumulative counters;
- ``errors`` / ``requests``: request counts over the interval;
- ``output_tokens``: mean generated tokens per request over the interval (for ``output-drift``
  with ``source=prometheus``), where the server exports token counts.

Canary and stable are told apart by the selector (``${selector}``), which carries the
``rollouts_pod_template_hash`` matcher. Prometheus must attach that pod label to the scraped
series (a PodMonitor with ``podTargetLabels: [rollouts-pod-template-hash]``, or a
``kubernetes_sd_configs`` relabel of ``__meta_kubernetes_pod_label_rollouts_pod_template_hash``).

Metric names and labels, as each stack exports them:

- **vLLM** (OpenAI-compatible server): histogram ``vllm:e2e_request_latency_seconds``, histogram
  ``vllm:request_generation_tokens``, counter ``vllm:request_success_total{finished_reason}``, all
  labelled ``model_name``; HTTP status counts from prometheus-fastapi-instrumentator as
  ``http_requests_total{handler,method,status}`` with status grouped as ``2xx``/``4xx``/``5xx``.
- **Hugging Face TGI**: histogram ``tgi_request_duration`` (seconds, e2e), counters
  ``tgi_request_count``, ``tgi_request_success``, ``tgi_request_failure{err}``, histogram
  ``tgi_request_generated_tokens``.
- **NVIDIA Triton**: counters ``nv_inference_request_success``, ``nv_inference_request_failure``
  and ``nv_inference_request_duration_us`` (cumulative microseconds), labelled ``model`` and
  ``version``. Triton exports no request-latency histogram by default, so the latency role is the
  per-interval mean (duration / requests), in seconds.
- **KServe** (Python model server): histogram ``request_predict_seconds{model_name}``; errors from the
  Knative queue-proxy counter ``revision_app_request_count{response_code_class}`` (serverless mode).
"""

from __future__ import annotations

from typing import Final

PRESETS: Final[dict[str, dict[str, str]]] = {
    "vllm": {
        "latency": "histogram_quantile(${quantile}, sum by (le) "
        "(rate(vllm:e2e_request_latency_seconds_bucket{${selector}${model}}[${interval}])))",
        "errors": 'sum(increase(http_requests_total{${selector},handler=~"/v1/.*",status="5xx"}[${interval}]))',
        "requests": 'sum(increase(http_requests_total{${selector},handler=~"/v1/.*"}[${interval}]))',
        "output_tokens": "sum(rate(vllm:request_generation_tokens_sum{${selector}${model}}[${interval}])) / "
        "sum(rate(vllm:request_generation_tokens_count{${selector}${model}}[${interval}]))",
    },
    "tgi": {
        "latency": "histogram_quantile(${quantile}, sum by (le) "
        "(rate(tgi_request_duration_bucket{${selector}}[${interval}])))",
        "errors": "sum(increase(tgi_request_failure{${selector}}[${interval}]))",
        "requests": "sum(increase(tgi_request_count{${selector}}[${interval}]))",
        "output_tokens": "sum(rate(tgi_request_generated_tokens_sum{${selector}}[${interval}])) / "
        "sum(rate(tgi_request_generated_tokens_count{${selector}}[${interval}]))",
    },
    "triton": {
        "latency": "sum(rate(nv_inference_request_duration_us{${selector}${model}}[${interval}])) / "
        "(sum(rate(nv_inference_request_success{${selector}${model}}[${interval}])) + "
        "(sum(rate(nv_inference_request_failure{${selector}${model}}[${interval}])) or vector(0))) / 1e6",
        "errors": "sum(increase(nv_inference_request_failure{${selector}${model}}[${interval}]))",
        # A model that never failed may have no failure series yet: count it as zero.
        "requests": "sum(increase(nv_inference_request_success{${selector}${model}}[${interval}])) + "
        "(sum(increase(nv_inference_request_failure{${selector}${model}}[${interval}])) or vector(0))",
    },
    "kserve": {
        "latency": "histogram_quantile(${quantile}, sum by (le) "
        "(rate(request_predict_seconds_bucket{${selector}${model}}[${interval}])))",
        "errors": 'sum(increase(revision_app_request_count{${selector},response_code_class="5xx"}[${interval}]))',
        "requests": "sum(increase(revision_app_request_count{${selector}}[${interval}]))",
    },
}

# Which label carries the model name in each stack (for the ``model`` parameter; templates place it
# with ``${model}`` only on the series that carry it: vLLM's HTTP counters and Knative's queue-proxy
# counters have no model label, and TGI serves one model per server without one).
MODEL_LABEL: Final[dict[str, str]] = {
    "vllm": "model_name",
    "triton": "model",
    "kserve": "model_name",
}

ROLES: Final[tuple[str, ...]] = ("latency", "errors", "requests", "output_tokens")


def preset_query_name(preset: str, role: str) -> str:
    """The name under which a preset's template is registered: ``vllm_latency``."""
    return f"{preset}_{role}"


def all_preset_queries() -> dict[str, str]:
    return {
        preset_query_name(preset, role): template
        for preset, roles in PRESETS.items()
        for role, template in roles.items()
    }
