"""Webhook settings: environment variables with the ``MLGUARD_WEBHOOK_`` prefix, or a mapping (tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.policyset import default_policyset_path

ENV_PREFIX = "MLGUARD_WEBHOOK_"
DEFAULT_MAX_BODY_BYTES = 7 * 1024 * 1024  # object + oldObject of 3 MiB each, plus the review around them


class ConfigError(ValueError):
    """A setting that cannot be used."""


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name}: expected true or false, got {value!r}")


def _int(value: Any, name: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}: expected an integer, got {value!r}") from exc
    if number < minimum:
        raise ConfigError(f"{ENV_PREFIX}{name}: must be at least {minimum}, got {number}")
    return number


def _float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}: expected a number, got {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"{ENV_PREFIX}{name}: must be positive, got {number}")
    return number


@dataclass(frozen=True)
class WebhookConfig:
    """Everything the app factory needs.

    ``cluster_cache``: use the kubernetes client (in-cluster config, or ``kubeconfig`` when set) to
    keep list+watch caches of what policies read (webhook/cluster.py CACHED: namespaces, pods, quotas,
    workloads, nodes, ConfigMaps, DRA claims; never Secrets). Off: no cluster facts, or
    static ones from ``facts_file`` (Namespaces, ResourceQuotas, ResourceClaims as YAML; for a local
    run without a cluster, e.g. scripts/demo.py).
    """

    policyset: Path
    namespace: str | None = None
    dry_run: bool = False
    cluster_cache: bool = False
    kubeconfig: str | None = None
    facts_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    reload_interval: float = 2.0
    max_warnings: int = 10

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, *,
             environ: Mapping[str, str] | None = None) -> WebhookConfig:
        """Settings from ``environ`` (default: the process environment), then ``overrides``.

        Keys of ``overrides`` are the variable names without the prefix, in any case
        (``{"POLICYSET": path, "DRY_RUN": True}``).
        """
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {k[len(ENV_PREFIX):]: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        raw.update({str(k).upper(): v for k, v in (overrides or {}).items()})
        policyset = raw.get("POLICYSET") or default_policyset_path()
        return cls(
            policyset=Path(str(policyset)),
            namespace=str(raw["NAMESPACE"]) if raw.get("NAMESPACE") else None,
            dry_run=_flag(raw.get("DRY_RUN", False), "DRY_RUN"),
            cluster_cache=_flag(raw.get("CLUSTER_CACHE", False), "CLUSTER_CACHE"),
            kubeconfig=str(raw["KUBECONFIG"]) if raw.get("KUBECONFIG") else None,
            facts_file=Path(str(raw["FACTS_FILE"])) if raw.get("FACTS_FILE") else None,
            max_body_bytes=_int(raw.get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES), "MAX_BODY_BYTES", minimum=1024),
            reload_interval=_float(raw.get("RELOAD_INTERVAL", 2.0), "RELOAD_INTERVAL"),
            max_warnings=_int(raw.get("MAX_WARNINGS", 10), "MAX_WARNINGS", minimum=1),
        )
