"""The PolicySet the webhook serves, hot-reloaded from its mounted file (a ConfigMap).

A background thread re-reads the file every ``interval`` seconds (the kubelet swaps ConfigMap
files through a symlink, so content — not mtime — decides). A file written in place (an operator's
editor, a sidecar, ``kubectl cp``) may be read half-written, and a prefix of a PolicySet is often
valid YAML with fewer policies: so a changed file is loaded only when

1. its content is the same on two reads one interval apart (stable), and
2. it parses as a whole PolicySet: valid, and its ``spec.policyCount`` (the catalogs write it as
   the last line) matches ``spec.policies``; once a set that declares its count has been served, a
   set that does not is refused; and
3. it drops no policy of the serving set, unless it declares ``spec.policyCount`` (saying "these
   are all of them"); and the same for ``spec.rules`` and ``spec.ruleCount``. A rule that does not
   compile refuses the whole set (the last good set keeps serving).

A valid new set replaces the old one; anything else is refused: the last good set keeps serving,
and the refusal shows in ``mlguard_policyset_refused``, ``mlguard_policyset_reloads_total{result=
"refused"}``, a log line and /readyz. Every load and refusal logs the policy count and digest. An
invalid set at start means no set at all: not ready.
"""

from __future__ import annotations

import hashlib
import threading
import time
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
        self._candidate: str | None = None   # content seen once, waiting for a second identical read
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
            if digest != self._candidate:  # changed since the last read: maybe still being written
                self._candidate = digest
                return False
            self._last_bytes_hash = digest
            try:
                policyset = parse_policyset(data.decode("utf-8", errors="replace"), source=str(self.path))
            except PolicySetError as exc:
                self._refuse(Refusal(digest, exc.errors))
                return False
            previous = self._current
            problems = self._partial(policyset, previous)
            if problems:
                self._refuse(Refusal(digest, problems), candidate=policyset)
                return False
            self._current = policyset
            self._refused = None
            metrics.RELOADS.labels("success").inc()
            metrics.REFUSED.set(0)
            log.info("policyset loaded", extra={"fields": {
                "event": "policyset_loaded", "policyset": policyset.name, "digest": policyset.digest,
                "policies": len(_policies(policyset)), "rules": len(policyset.rules), "source": str(self.path),
                "file_sha256": digest,
                "previous_digest": previous.digest if previous else None,
                "previous_policies": len(_policies(previous)) if previous else None}})
            return True

    @staticmethod
    def _partial(new: PolicySet, serving: PolicySet | None) -> list[str]:
        """Why ``new`` may be a partly written file, judged against the set being served."""
        if serving is None:
            return []
        declared = new.spec.get("policyCount")
        if declared is None and serving.spec.get("policyCount") is not None:
            return ["spec.policyCount is missing, but the serving set declares it: the file may be partly written "
                    "(write spec.policyCount as the last line)"]
        dropped = sorted(set(_policies(serving)) - set(_policies(new)))
        if dropped and declared is None:
            return [f"the new set drops {len(dropped)} of {len(_policies(serving))} policies ({', '.join(dropped)}) "
                    "and does not declare spec.policyCount: refused as a possibly partial file; declare "
                    f"spec.policyCount: {len(_policies(new))} to remove them on purpose"]
        declared_rules = new.spec.get("ruleCount")
        if declared_rules is None and serving.spec.get("ruleCount") is not None:
            return ["spec.ruleCount is missing, but the serving set declares it: the file may be partly written "
                    "(write spec.ruleCount as the last line, with spec.policyCount)"]
        dropped_rules = sorted({r.id for r in serving.rules} - {r.id for r in new.rules})
        if dropped_rules and declared_rules is None:
            return [f"the new set drops {len(dropped_rules)} of {len(serving.rules)} rules "
                    f"({', '.join(dropped_rules)}) and does not declare spec.ruleCount: refused as a possibly "
                    "partial file; declare "
                    f"spec.ruleCount: {len(new.rules)} to remove them on purpose"]
        return []

    def _refuse(self, refusal: Refusal, *, candidate: PolicySet | None = None) -> None:
        self._refused = refusal
        metrics.RELOADS.labels("refused").inc()
        metrics.REFUSED.set(1)
        current = self._current
        log.error("policyset refused: the last good set keeps serving" if current else
                  "policyset refused: no valid PolicySet loaded, not ready",
                  extra={"fields": {
                      "event": "policyset_refused", "source": str(self.path), "file_sha256": refusal.file_sha256,
                      "errors": refusal.errors,
                      "refused_policies": len(_policies(candidate)) if candidate else None,
                      "refused_digest": candidate.digest if candidate else None,
                      "serving_digest": current.digest if current else None,
                      "serving_policies": len(_policies(current)) if current else None}})

    def start(self) -> None:
        """Load now (two reads a moment apart: the stability rule), then watch the file in a daemon thread."""
        for _ in range(20):
            self.check()
            if self._current is not None or self._refused is not None:  # decided: loaded or refused
                break
            time.sleep(0.05)
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
                               "policyset": {"name": current.name, "digest": current.digest,
                                             "policies": len(_policies(current)),
                                             "rules": len(current.rules)} if current else None}
        if self._refused:
            out["refused"] = {"file_sha256": self._refused.file_sha256, "errors": self._refused.errors}
        return out


def _policies(policyset: PolicySet | None) -> dict[str, Any]:
    policies = policyset.spec.get("policies") if policyset is not None else None
    return policies if isinstance(policies, dict) else {}

