"""Configuration of the analysis provider.

Sources, later ones winning: the YAML file (``--config``; in the cluster
``/etc/mlguard/analysis/config.yaml``), environment variables with the prefix
``MLGUARD_ANALYSIS_`` (how ``python -m rollouts serve`` hands its flags to the gunicorn workers),
and a mapping passed to ``create_app(config=...)`` (tests). The file is validated with JSON Schema
at load; an invalid file is refused with every error and its path.

File format (all keys optional)::

    prometheus:
      url: http://prometheus-operated.monitoring.svc:9090
      timeoutSeconds: 3          # per query (the whole answer); always below the answer budget
      maxBytes: 8388608          # per query answer; a bigger one is refused (502), never held in memory
      scrapeIntervalSeconds: 30  # rate() windows are max(step, 4 x this)
      hashLabel: rollouts_pod_template_hash
      preset: vllm               # default preset: vllm | tgi | triton | kserve
      queries:                   # named query templates (override/extend the presets)
        my_latency: 'histogram_quantile(${quantile}, sum by (le) (rate(x_bucket{${selector}}[${interval}])))'
    allowRawQueries: false       # allow promql_<role> parameters from callers
    sampleStores:
      baselines: /var/lib/mlguard/baselines          # a directory ...
      canary-logs: https://samples.example.internal/  # ... or an HTTP(S) base URL
    sampleLimits: {maxBytes: 67108864, maxRows: 200000, timeoutSeconds: 3}
    defaults: {alpha: 0.01, mode: anytime, maxLooks: 20}
    deadlineSeconds: 7           # per answer, counted from the request's arrival
    maxConcurrentAnalyses: 1     # per worker process; more wait for a slot ...
    minStartSeconds: 1           # ... and get 503 at once if less than this is left of the budget
    runbookBaseURL: https://github.com/mlguard/mlguard/blob/main/runbooks/   # where answers link runbooks

Environment: ``MLGUARD_ANALYSIS_CONFIG`` (file), ``MLGUARD_ANALYSIS_PROMETHEUS`` (URL),
``MLGUARD_ANALYSIS_SAMPLE_STORES`` (JSON object name -> dir or URL),
``MLGUARD_ANALYSIS_ALLOW_RAW_QUERIES`` (true/false), ``MLGUARD_ANALYSIS_RUNBOOK_BASE_URL`` (URL).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ENV_PREFIX = "MLGUARD_ANALYSIS_"
DEFAULT_CONFIG_PATH = "/etc/mlguard/analysis/config.yaml"
STORE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")
QUERY_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# where the runbooks are published (the same default as a PolicySet's spec.runbookBaseURL)
DEFAULT_RUNBOOK_BASE_URL = "https://github.com/mlguard/mlguard/blob/main/runbooks/"


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem with its path."""


_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "prometheus": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "pattern": "^https?://"},
                "timeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 7},
                "maxBytes": {"type": "integer", "minimum": 65536, "maximum": 33554432},
                "scrapeIntervalSeconds": {"type": "integer", "minimum": 1, "maximum": 3600},
                "hashLabel": {"type": "string", "pattern": LABEL_NAME_RE.pattern},
                "preset": {"type": "string", "enum": ["vllm", "tgi", "triton", "kserve"]},
                "queries": {
                    "type": "object",
                    "propertyNames": {"pattern": QUERY_NAME_RE.pattern},
                    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 4096},
                },
            },
        },
        "allowRawQueries": {"type": "boolean"},
        "sampleStores": {
            "type": "object",
            "propertyNames": {"pattern": STORE_NAME_RE.pattern},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        "sampleLimits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "maxBytes": {"type": "integer", "minimum": 1024, "maximum": 1073741824},
                "maxRows": {"type": "integer", "minimum": 10, "maximum": 5000000},
                "timeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 7},
            },
        },
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
                "mode": {"type": "string", "enum": ["anytime", "fixed"]},
                "maxLooks": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        },
        "deadlineSeconds": {"type": "number", "minimum": 1, "maximum": 8},
        "maxConcurrentAnalyses": {"type": "integer", "minimum": 1, "maximum": 64},
        "minStartSeconds": {"type": "number", "minimum": 0.1, "maximum": 7},
        "maxBodyBytes": {"type": "integer", "minimum": 1024, "maximum": 16777216},
        "runbookBaseURL": {"type": "string", "pattern": "^https?://[^\\s]+$"},
    },
}


@dataclass(frozen=True)
class AnalysisConfig:
    prometheus_url: str | None = None
    prometheus_timeout: float = 3.0
    prometheus_max_bytes: int = 8 * 1024 * 1024
    scrape_interval: int = 30
    hash_label: str = "rollouts_pod_template_hash"
    default_preset: str | None = None
    queries: dict[str, str] = field(default_factory=dict)
    allow_raw_queries: bool = False
    sample_stores: dict[str, str] = field(default_factory=dict)
    sample_max_bytes: int = 64 * 1024 * 1024
    sample_max_rows: int = 200_000
    sample_timeout: float = 3.0
    alpha: float = 0.01
    mode: str = "anytime"
    max_looks: int = 20
    deadline_seconds: float = 7.0
    max_concurrent_analyses: int = 1
    min_start_seconds: float = 1.0
    max_body_bytes: int = 1024 * 1024
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL

    def summary(self) -> dict[str, Any]:
        """What /readyz shows: no secrets, only what helps an operator."""
        return {
            "prometheus": self.prometheus_url,
            "preset": self.default_preset,
            "queries": sorted(self.queries),
            "sampleStores": sorted(self.sample_stores),
            "allowRawQueries": self.allow_raw_queries,
            "mode": self.mode,
            "alpha": self.alpha,
        }


def validate_document(doc: Any) -> None:
    """Raise ConfigError listing every schema error with its path."""
    if doc is None:
        return
    validator = jsonschema.Draft7Validator(_SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
        raise ConfigError("invalid analysis config: " + "; ".join(lines))


def parse_store_spec(spec: str) -> tuple[str, str]:
    """``NAME=DIR_OR_URL`` (the ``--sample-store`` flag) -> (name, location)."""
    name, sep, location = spec.partition("=")
    if not sep or not location:
        raise ConfigError(f"--sample-store must be NAME=DIR_OR_URL, got {spec!r}")
    if not STORE_NAME_RE.match(name):
        raise ConfigError(f"sample store name {name!r} must match {STORE_NAME_RE.pattern}")
    return name, location


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read analysis config {str(path)!r}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"analysis config {str(path)!r} is not valid YAML: {exc}") from None
    doc = {} if doc is None else doc
    validate_document(doc)
    return doc


def _from_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    prom = doc.get("prometheus", {}) or {}
    limits = doc.get("sampleLimits", {}) or {}
    defaults = doc.get("defaults", {}) or {}
    out: dict[str, Any] = {}
    mapping = [
        (prom, "url", "prometheus_url"), (prom, "timeoutSeconds", "prometheus_timeout"),
        (prom, "maxBytes", "prometheus_max_bytes"), (prom, "scrapeIntervalSeconds", "scrape_interval"),
        (prom, "hashLabel", "hash_label"), (prom, "preset", "default_preset"),
        (prom, "queries", "queries"), (doc, "allowRawQueries", "allow_raw_queries"),
        (doc, "sampleStores", "sample_stores"), (limits, "maxBytes", "sample_max_bytes"),
        (limits, "maxRows", "sample_max_rows"), (limits, "timeoutSeconds", "sample_timeout"),
        (defaults, "alpha", "alpha"), (defaults, "mode", "mode"), (defaults, "maxLooks", "max_looks"),
        (doc, "deadlineSeconds", "deadline_seconds"), (doc, "maxBodyBytes", "max_body_bytes"),
        (doc, "maxConcurrentAnalyses", "max_concurrent_analyses"), (doc, "minStartSeconds", "min_start_seconds"),
        (doc, "runbookBaseURL", "runbook_base_url"),
    ]
    for section, key, attr in mapping:
        if key in section:
            out[attr] = section[key]
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if env.get(ENV_PREFIX + "PROMETHEUS"):
        out["prometheus_url"] = env[ENV_PREFIX + "PROMETHEUS"]
    stores = env.get(ENV_PREFIX + "SAMPLE_STORES")
    if stores:
        try:
            parsed = json.loads(stores)
        except json.JSONDecodeError:
            raise ConfigError(f"{ENV_PREFIX}SAMPLE_STORES must be a JSON object") from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"{ENV_PREFIX}SAMPLE_STORES must be a JSON object")
        out["sample_stores"] = parsed
    if env.get(ENV_PREFIX + "RUNBOOK_BASE_URL"):
        out["runbook_base_url"] = env[ENV_PREFIX + "RUNBOOK_BASE_URL"]
    raw = env.get(ENV_PREFIX + "ALLOW_RAW_QUERIES")
    if raw:
        out["allow_raw_queries"] = raw.lower() in ("1", "true", "yes")
    return out


def load_config(
    overrides: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
) -> AnalysisConfig:
    """Build the configuration from file, environment and ``overrides`` (AnalysisConfig field names,
    or a ``"document"`` key holding a config-file-shaped mapping)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    overrides = dict(overrides or {})
    path = overrides.pop("config_file", None) or env.get(ENV_PREFIX + "CONFIG")
    if path:
        values.update(_from_document(load_file(path)))
    stores: dict[str, Any] = dict(values.pop("sample_stores", {}) or {})
    layers = [_from_env(env)]
    document = overrides.pop("document", None)
    if document is not None:
        validate_document(document)
        layers.append(_from_document(document))
    known = set(AnalysisConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    layers.append(overrides)
    for layer in layers:  # later layers win; sample stores are merged by name
        stores.update(layer.pop("sample_stores", None) or {})
        values.update(layer)
    for name, location in stores.items():
        if not STORE_NAME_RE.match(name):
            raise ConfigError(f"sample store name {name!r} must match {STORE_NAME_RE.pattern}")
        if not isinstance(location, str) or not location:
            raise ConfigError(f"sample store {name!r} needs a directory or an http(s) URL")
    values["sample_stores"] = stores
    url = values.get("prometheus_url")
    if url is not None and not re.match(r"^https?://[^\s]+$", str(url)):
        raise ConfigError(f"prometheus url must be http(s)://..., got {url!r}")
    base = values.get("runbook_base_url")
    if base is not None and not re.match(r"^https?://[^\s]+$", str(base)):
        raise ConfigError(f"runbookBaseURL must be http(s)://..., got {base!r}")
    if values.get("mode", "anytime") not in ("anytime", "fixed"):
        raise ConfigError("defaults.mode must be anytime or fixed")
    return AnalysisConfig(**values)
