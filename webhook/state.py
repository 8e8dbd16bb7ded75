"""What one worker process holds: settings, the PolicySet store, cluster facts, the evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from policies.context import ClusterFacts, EmptyFacts, ManifestFacts
from policies.manifests import ManifestError, load_paths
from webhook import metrics
from webhook.admission import Admission
from webhook.cluster import ClusterCache, api_client
from webhook.config import ENV_PREFIX, ConfigError, WebhookConfig
from webhook.policystore import PolicyStore

EXTENSION = "mlguard"


def static_facts(path: Path) -> ManifestFacts:
    """Cluster facts from a YAML file of Namespaces, ResourceQuotas, ... (no cluster at hand)."""
    try:
        documents = load_paths([str(path)])
    except ManifestError as exc:
        raise ConfigError(f"{ENV_PREFIX}FACTS_FILE: {exc}") from exc
    return ManifestFacts([d.obj for d in documents if isinstance(d.obj, dict)])


@dataclass
class WebhookState:
    config: WebhookConfig
    store: PolicyStore
    cache: ClusterCache | None
    admission: Admission

    @classmethod
    def build(cls, config: WebhookConfig, *, facts: ClusterFacts | None = None) -> WebhookState:
        store = PolicyStore(config.policyset, interval=config.reload_interval)
        cache: ClusterCache | None = None
        if facts is None and config.cluster_cache:
            cache = ClusterCache(api_client(kubeconfig=config.kubeconfig))
            facts = cache
        if facts is None and config.facts_file is not None:
            facts = static_facts(config.facts_file)
        if cache is None:
            metrics.CACHE_SYNCED.set(1)  # nothing to sync
        admission = Admission(facts=facts or EmptyFacts(), own_namespace=config.namespace,
                              dry_run=config.dry_run, max_warnings=config.max_warnings)
        return cls(config=config, store=store, cache=cache, admission=admission)

    def start(self) -> None:
        self.store.start()
        if self.cache is not None:
            self.cache.start()

    def stop(self) -> None:
        self.store.stop()
        if self.cache is not None:
            self.cache.stop()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = self.store.status()
        ready = self.store.current is not None
        if self.cache is not None:
            synced = self.cache.synced
            detail["cache"] = {"synced": synced, "resources": self.cache.status()}
            ready = ready and synced
        else:
            detail["cache"] = {"synced": True, "enabled": False}
        detail["ready"] = ready
        detail["dryRun"] = self.config.dry_run or bool(self.store.current and self.store.current.dry_run)
        return ready, detail


def state(app: Flask | None = None) -> WebhookState:
    found: WebhookState = (app or current_app).extensions[EXTENSION]
    return found
