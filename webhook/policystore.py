"""The PolicySet the webhook serves, hot-reloaded from its mounted file (a ConfigMap).

A background thread re-reads the file every ``interval`` seconds (the kubelet swaps ConfigMap
files through a symlink, so content — not mtime — decides). A valid new set replaces the old one;
an invalid one is refused: the last good set keeps serving, and the refusal shows in
``mlguard_policyset_refused``, ``mlguard_policyset_reloads_total{result="refused"}``, a log line and
/readyz. An invalid set at start means no set at all: not ready.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.policyset import PolicySet, PolicySetError, parse_policyset
from webhook import metrics
from webhook.logging import get_logger

log = get_logger("policystore")


@dataclass(frozen=True)
class Refusal:
    """The newest file content that could not be used."""

    file_sha256: str
    errors: list[str] = field(default_factory=list)


class PolicyStore:
    """Holds the last good PolicySet of one file; thread-safe reads (one attribute swap)."""

    def __init__(self, path: Path, *, interval: float = 2.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self._current: PolicySet | None = None
        self._refused: Refusal | None = None
        self._last_bytes_hash: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> PolicySet | None:
        return self._current

    @property
    def refused(self) -> Refusal | None:
        return self._refused

    def check(self) -> bool:
        """Re-read the file; returns True when the served set changed."""
        with self._lock:
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                digest = f"unreadable:{exc.errno}"
                if digest != self._last_bytes_hash:
                    self._last_bytes_hash = digest
                    self._refuse(Refusal(digest, [f"cannot read {self.path}: {exc.strerror or exc}"]))
                return False
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._last_bytes_hash:
                return False
            self._last_bytes_hash = digest
            try:
                policyset = parse_policyset(data.decode("utf-8", errors="replace"), source=str(self.path))
            except PolicySetError as exc:
                self._refuse(Refusal(digest, exc.errors))
                return False
            previous = self._current
            self._current = policyset
            self._refused = None
            metrics.RELOADS.labels("success").inc()
            metrics.REFUSED.set(0)
            log.info("policyset loaded", extra={"event": "policyset_loaded", "policyset": policyset.name,
                                                "digest": policyset.digest, "source": str(self.path),
                                                "previous_digest": previous.digest if previous else None})
            return True

    def _refuse(self, refusal: Refusal) -> None:
        self._refused = refusal
        metrics.RELOADS.labels("refused").inc()
        metrics.REFUSED.set(1)
        log.error("policyset refused: the last good set keeps serving" if self._current else
                  "policyset refused: no valid PolicySet loaded, not ready",
                  extra={"event": "policyset_refused", "source": str(self.path), "file_sha256": refusal.file_sha256,
                         "errors": refusal.errors,
                         "serving_digest": self._current.digest if self._current else None})

    def start(self) -> None:
        """Load now, then watch the file in a daemon thread."""
        self.check()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="policyset-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the reload thread die
                log.exception("policyset reload check failed", extra={"event": "policyset_reload_error"})

    def status(self) -> dict[str, Any]:
        """The /readyz detail."""
        current = self._current
        out: dict[str, Any] = {"source": str(self.path),
                               "policyset": {"name": current.name, "digest": current.digest} if current else None}
        if self._refused:
            out["refused"] = {"file_sha256": self._refused.file_sha256, "errors": self._refused.errors}
        return out
