"""What one worker process holds: settings, the PolicySet store, cluster facts, the evaluator."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from policies.context import ClusterFacts, EmptyFacts, ManifestFacts
from policies.manifests import ManifestError, load_paths
from webhook import metrics
from webhook.admission import Admission
from webhook.cluster import ClusterCache, api_client
from webhook.config import ENV_PREFIX, ConfigError, WebhookConfig
from webhook.logging import get_logger
from webhook.policystore import PolicyStore

EXTENSION = "mlguard"
RUNTIMECLASS_RUNBOOK = "runbooks/runtimeclass-missing.md"
CACHE_ABSENT_RUNBOOK = "runbooks/admission-denied.md#gpu-tolerations"
log = get_logger("state")


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
    _warned: str | None = field(default=None, init=False, repr=False)

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
            threading.Thread(target=self._startup_checks, name="startup-checks", daemon=True).start()

    def _startup_checks(self) -> None:
        """Once the cache has synced: what the PolicySet asks of the cluster is there (logged)."""
        if self.cache is not None and self.cache.wait_synced(600):
            self.warnings()

    def warnings(self) -> list[str]:
        """What will go wrong although the webhook works (the /readyz detail; logged when it changes)."""
        current = self._runtime_class_warning()
        found = [w for w in (current, self._absent_warning()) if w]
        metrics.RUNTIMECLASS_MISSING.set(1 if current else 0)
        if current != self._warned:
            if current:
                log.warning(current, extra={"event": "runtimeclass_missing", "runbook": RUNTIMECLASS_RUNBOOK})
            elif self._warned:
                log.info("the RuntimeClass mutations.runtimeClassName names exists now",
                         extra={"event": "runtimeclass_found"})
            self._warned = current
        return found

    def _absent_warning(self) -> str | None:
        """The cache may not list Nodes or ConfigMaps (a ClusterRole older than the webhook): admission then
        only warns about a pod's nodeName and cannot read a device list from a ConfigMap. (The informer logs
        it once when the API refuses the list.)"""
        if self.cache is None:
            return None
        absent = [n for n in ("nodes", "configmaps") if (i := self.cache.by_name.get(n)) is not None and i.absent]
        if not absent:
            return None
        what = {"nodes": "a pod's spec.nodeName is only a warning (gpu-tolerations)",
                "configmaps": "NVIDIA_VISIBLE_DEVICES from a ConfigMap is unresolved (gpu-isolation's unresolvedEnv)"}
        return (f"the cluster cache may not list {' and '.join(absent)}, so {'; '.join(what[n] for n in absent)}: "
                "grant list and watch on them (kustomize/base/webhook/rbac.yaml) "
                f"({CACHE_ABSENT_RUNBOOK})")

    def _runtime_class_warning(self) -> str | None:
        """``mutations.runtimeClassName`` names a RuntimeClass the cluster lacks: the API server's
        RuntimeClass admission then refuses every GPU Pod mlguard mutates, with a message that does
        not mention mlguard (a controller's pods fail as FailedCreate events of their ReplicaSet)."""
        policyset = self.store.current
        if self.cache is None or policyset is None:
            return None
        name = policyset.mutations.get("runtimeClassName")
        if not name or self.cache.runtime_class_exists(str(name)) is not False:
            return None  # unset, present, or unknown (RuntimeClasses not listed yet, not served or not granted)
        return (f"mutations.runtimeClassName sets runtimeClassName {name} on GPU Pods, but the cluster has no "
                f'RuntimeClass {name}: the API server refuses those Pods (RuntimeClass "{name}" not found); '
                f"create it or unset mutations.runtimeClassName ({RUNTIMECLASS_RUNBOOK})")

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
        warnings = self.warnings()
        if warnings:
            detail["warnings"] = warnings
        detail["ready"] = ready
        detail["dryRun"] = self.config.dry_run or bool(self.store.current and self.store.current.dry_run)
        return ready, detail


def state(app: Flask | None = None) -> WebhookState:
    found: WebhookState = (app or current_app).extensions[EXTENSION]
    return found
