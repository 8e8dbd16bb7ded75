"""Query presets for the metrics that common serving stacks export.

A team serving with one of these stacks passes ``preset=NAME`` (or sets ``prometheus.preset`` in the
config) and configures nothing else. Each preset maps *roles* to query templates:

- ``latency``: one latency value per interval (seconds), a histogram quantile where the server
  exports a histogram, else the mean from cumulative counters;
- ``latency_buckets``: the request-latency histogram's buckets summed by ``le`` over the interval
  (where the server exports a histogram): the ``latency`` check pools the requests of the whole
  window from them instead of comparing per-interval quantiles (issue 17);
- ``errors`` / ``requests``: request counts over the interval;
- ``output_tokens``: mean generated tokens per request over the interval (for ``output-drift``
  with ``source=prometheus``), where the server exports token counts.

Canary and stable are told apart by the selector (``${selector}``), which carries the
``rollouts_pod_template_hash`` matcher. Prometheus must attach that pod label to the scraped
series (a PodMonitor with ``podTargetLabels: [rollouts-pod-template-hash]``, or a
``kubernetes_sd_configs`` relabel of ``__meta_kubernetes_pod_label_rollouts_pod_template_hash``).

Metric names and labels, as each stack exports them:

Errors are counted explicitly as zero when there are requests but no error series yet (the
servers create a status label's series on its first use): ``<errors> or 0 * <requests>``. An
*empty* answer then means that there were no requests either, or that a template names a series
that does not exist: the check says inconclusive, never "no errors".

Metric names and labels, as each stack exports them (read from their sources, named below):

- **vLLM** (OpenAI-compatible server): histogram ``vllm:e2e_request_latency_seconds``, histogram
  ``vllm:request_generation_tokens``, counter ``vllm:request_success_total{finished_reason}``, all
  labelled ``model_name``; HTTP status counts from prometheus-fastapi-instrumentator as
  ``http_requests_total{handler,method,status}`` with status grouped as ``2xx``/``4xx``/``5xx``
  (vllm ``vllm/entrypoints/serve/instrumentator/metrics.py``: every route but /metrics, /health,
  /health/decode, /load, /ping, /version and /server_info is counted, /v1/models and /tokenize
  included). Errors and requests count the completion routes only:
  ``handler=~"/v1/(chat/)?completions"``.
- **Hugging Face TGI**: histogram ``tgi_request_duration`` (seconds, e2e), counters
  ``tgi_request_count``, ``tgi_request_success``, ``tgi_request_failure{err}``, histogram
  ``tgi_request_generated_tokens``. One model per server and no model label: ``model=`` is accepted
  and not used (the pods already select the model; the answer's details say so).
- **NVIDIA Triton**: counters ``nv_inference_request_success``, ``nv_inference_request_failure``
  and ``nv_inference_request_duration_us`` (cumulative microseconds), labelled ``model`` and
  ``version``. Triton exports no request-latency histogram by default, so the latency role is the
  per-interval mean (duration / requests), in seconds.
- **KServe** (Python model server): histogram ``request_predict_seconds{model_name}``. Errors and
  requests from the Knative queue-proxy sidecar (serverless mode). Knative Serving 1.19 replaced
  OpenCensus with OpenTelemetry and no longer exports ``revision_app_request_count``: the
  histogram ``kn.queueproxy.app.duration`` (1.19, 1.20; renamed ``kn.serving.invocation.duration``
  in 1.21, knative/serving#16290) with the attribute ``http.response.status_code``, which the
  OpenTelemetry Prometheus exporter names ``kn_queueproxy_app_duration_seconds_count`` /
  ``kn_serving_invocation_duration_seconds_count{http_response_status_code}``. The preset counts
  those (either name) and falls back to ``revision_app_request_count{response_code_class}`` on
  Knative before 1.19. The queue-proxy must be scraped on its user-metrics port (9091) with
  ``request-metrics-protocol: prometheus`` in ``config-observability``.
"""

from __future__ import annotations

from typing import Final

_VLLM_HTTP = 'http_requests_total{${selector},handler=~"/v1/(chat/)?completions"'
_VLLM_REQUESTS = f"sum(increase({_VLLM_HTTP}}}[${{interval}}]))"
_TGI_REQUESTS = "sum(increase(tgi_request_count{${selector}}[${interval}]))"
_TRITON_REQUESTS = (
    "sum(increase(nv_inference_request_success{${selector}${model}}[${interval}])) + "
    "(sum(increase(nv_inference_request_failure{${selector}${model}}[${interval}])) or vector(0))"
)
_KNATIVE_OTEL = '__name__=~"kn_serving_invocation_duration_seconds_count|kn_queueproxy_app_duration_seconds_count"'
_KSERVE_REQUESTS = (
    f"(sum(increase({{{_KNATIVE_OTEL},${{selector}}}}[${{interval}}])) or "
    "sum(increase(revision_app_request_count{${selector}}[${interval}])))"
)
_KSERVE_ERRORS = (
    f'(sum(increase({{{_KNATIVE_OTEL},${{selector}},http_response_status_code=~"5.."}}[${{interval}}])) or '
    'sum(increase(revision_app_request_count{${selector},response_code_class="5xx"}[${interval}])))'
)


def _errors_or_zero(errors: str, requests: str) -> str:
    """Errors, or an explicit zero where there are requests but no error series yet."""
    return f"({errors}) or 0 * ({requests})"


PRESETS: Final[dict[str, dict[str, str]]] = {
    "vllm": {
        "latency": "histogram_quantile(${quantile}, sum by (le) "
        "(rate(vllm:e2e_request_latency_seconds_bucket{${selector}${model}}[${interval}])))",
        "latency_buckets": "sum by (le) "
        "(increase(vllm:e2e_request_latency_seconds_bucket{${selector}${model}}[${interval}]))",
        "errors": _errors_or_zero(f'sum(increase({_VLLM_HTTP},status="5xx"}}[${{interval}}]))', _VLLM_REQUESTS),
        "requests": _VLLM_REQUESTS,
        "output_tokens": "sum(rate(vllm:request_generation_tokens_sum{${selector}${model}}[${interval}])) / "
        "sum(rate(vllm:request_generation_tokens_count{${selector}${model}}[${interval}]))",
    },
    "tgi": {
        "latency": "histogram_quantile(${quantile}, sum by (le) "
        "(rate(tgi_request_duration_bucket{${selector}}[${interval}])))",
        "latency_buckets": "sum by (le) (increase(tgi_request_duration_bucket{${selector}}[${interval}]))",
        "errors": _errors_or_zero("sum(increase(tgi_request_failure{${selector}}[${interval}]))", _TGI_REQUESTS),
        "requests": _TGI_REQUESTS,
        "output_tokens": "sum(rate(tgi_request_generated_tokens_sum{${selector}}[${interval}])) / "
        "sum(rate(tgi_request_generated_tokens_count{${selector}}[${interval}]))",
    },
    "triton": {
        "latency": "sum(rate(nv_inference_request_duration_us{${selector}${model}}[${interval}])) / "
        "(sum(rate(nv_inference_request_success{${selector}${model}}[${interval}])) + "
        "(sum(rate(nv_inference_request_failure{${selector}${model}}[${interval}])) or vector(0))) / 1e6",
        # A model that never failed has no failure series yet (Triton adds the reason label lazily).
        "errors": _errors_or_zero(
            "sum(increase(nv_inference_request_failure{${selector}${model}}[${interval}]))", _TRITON_REQUESTS),
        "requests": _TRITON_REQUESTS,
    },
    "kserve": {
        "latency": "histogram_quantile(${quantile}, sum by (le) "
        "(rate(request_predict_seconds_bucket{${selector}${model}}[${interval}])))",
        "latency_buckets": "sum by (le) "
        "(increase(request_predict_seconds_bucket{${selector}${model}}[${interval}]))",
        "errors": _errors_or_zero(_KSERVE_ERRORS, _KSERVE_REQUESTS),
        "requests": _KSERVE_REQUESTS,
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

ROLES: Final[tuple[str, ...]] = ("latency", "latency_buckets", "errors", "requests", "output_tokens")


def preset_query_name(preset: str, role: str) -> str:
    """The name under which a preset's template is registered: ``vllm_latency``."""
    return f"{preset}_{role}"


def all_preset_queries() -> dict[str, str]:
    return {
        preset_query_name(preset, role): template
        for preset, roles in PRESETS.items()
        for role, template in roles.items()
    }
