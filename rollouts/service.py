"""One analysis, start to end: admission, sources, check, verdict, metrics and a log line.

Shared by the HTTP endpoints (Argo, Flagger) and the job mode, so every caller gets the same
answer for the same parameters.

Time: each analysis has ``deadlineSeconds`` (7 s; Argo's web provider gives up at its
``timeoutSeconds``, 10 s by default) counted from the request's *arrival* (stamped by the gunicorn
worker, :mod:`rollouts.worker`). At most ``maxConcurrentAnalyses`` (1) analyses run at once in a
worker process (statistics are CPU-bound: more threads would only share one interpreter lock and
all miss the budget together); the others wait for a slot while at least ``minStartSeconds`` of
their budget is left, and otherwise get 503 (``busy``) at once. A check runs on the worker's
analysis pool and the answer waits for it only until the budget ends: then 504
(``budget_exceeded``) while the check stops at its next look at the deadline (source reads,
every 20,000 parsed lines) and keeps its slot until it has. Never an answer after the caller has
given up.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rollouts.checks import CheckContext, check_names, run_check
from rollouts.config import AnalysisConfig
from rollouts.errors import AnalysisError, BudgetExceededError, BusyError, SampleFormatError, SourceError
from rollouts.metrics import AnalysisMetrics
from rollouts.params import Params
from rollouts.sources import Deadline, Source
from rollouts.sources.prometheus import PrometheusSource
from rollouts.sources.samples import build_stores
from rollouts.verdict import Verdict

log = logging.getLogger("rollouts.analysis")


class InternalError(AnalysisError):
    status = 500
    kind = "internal_error"


class AnalysisService:
    def __init__(
        self, config: AnalysisConfig, *, metrics: AnalysisMetrics | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or AnalysisMetrics()
        # The wall clock the checks see (tests replay a canary's timeline with their own).
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._slots = threading.BoundedSemaphore(config.max_concurrent_analyses)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_concurrent_analyses, thread_name_prefix="analysis")
        self.prometheus = (
            PrometheusSource(config.prometheus_url, timeout=config.prometheus_timeout,
                             max_bytes=config.prometheus_max_bytes)
            if config.prometheus_url else None
        )
        self.stores = build_stores(
            config.sample_stores, max_bytes=config.sample_max_bytes, max_rows=config.sample_max_rows,
            timeout=config.sample_timeout,
        )

    def sources(self) -> list[Source]:
        """Every configured data source (for /readyz)."""
        found: list[Source] = [self.prometheus] if self.prometheus is not None else []
        return found + list(self.stores.values())

    def analyze(
        self, check: str, values: Mapping[str, Any], *, caller: str, arrived: float | None = None,
    ) -> Verdict:
        """Run ``check``; raise an AnalysisError (with its HTTP status) instead of a verdict on failure.

        ``arrived``: when the request arrived (``time.monotonic()``); the budget runs from there.
        """
        # the checks' modules load (on first use) before the budget starts: in job mode the process has
        # just started, and a loaded node's imports must not be charged to the analysis
        label = check if check in check_names() else "unknown"
        deadline = Deadline(self.config.deadline_seconds, started=arrived)
        started = deadline.started
        try:
            params = Params(values)  # a malformed request never takes a slot
            self._acquire_slot(deadline)
            try:
                ctx = CheckContext(
                    config=self.config, prometheus=self.prometheus, stores=self.stores,
                    deadline=deadline, now=self.clock,
                )
                # The check runs on the worker's analysis pool and holds its slot until it ends;
                # the answer waits for it only until the budget ends (computation between two
                # looks at the deadline cannot be interrupted, and a loaded machine stretches it).
                future = self._pool.submit(self._run, check, params, ctx)
            except BaseException:
                self._slots.release()
                raise
            future.add_done_callback(lambda _: self._slots.release())
            try:
                verdict = future.result(timeout=max(deadline.remaining(), 0.0))
            except concurrent.futures.TimeoutError:
                raise BudgetExceededError(
                    f"{check} did not finish within the analysis budget of {deadline.seconds:g}s "
                    f"({deadline.elapsed():.1f}s since the request arrived); answered now, before the caller "
                    "gives up, while the check stops at its next look at the deadline",
                    budget_seconds=deadline.seconds,
                ) from None
        except AnalysisError as exc:
            seconds = time.monotonic() - started
            if isinstance(exc, SourceError):
                self.metrics.source_errors.labels(source=exc.source).inc()
            self.metrics.observe(check=label, verdict="error", caller=caller, seconds=seconds)
            log.warning(
                "analysis error",
                extra={"check": check, "caller": caller, "status": exc.status, "error": exc.kind,
                       "detail": exc.message, "seconds": round(seconds, 4)},
            )
            raise
        seconds = time.monotonic() - started
        self.metrics.observe(check=label, verdict=verdict.verdict, caller=caller, seconds=seconds)
        log.info(
            "analysis",
            extra={"check": check, "caller": caller, "verdict": verdict.verdict, "method": verdict.method,
                   "p_value": verdict.p_value, "samples": verdict.samples, "mode": verdict.mode,
                   "seconds": round(seconds, 4)},
        )
        return verdict

    @staticmethod
    def _run(check: str, params: Params, ctx: CheckContext) -> Verdict:
        try:
            return run_check(check, params, ctx)
        except AnalysisError:
            raise
        except ValueError as exc:
            # The statistics refuse data they cannot test (NaN, empty, wrong shape).
            raise SampleFormatError(f"the data cannot be tested: {exc}") from None
        except Exception:
            log.exception("analysis crashed", extra={"check": check})
            raise InternalError("internal error while running the check; the provider logged the details") from None

    def _acquire_slot(self, deadline: Deadline) -> bool:
        """Wait for an analysis slot while at least ``minStartSeconds`` of the budget would be left."""
        margin = self.config.min_start_seconds
        wait = deadline.remaining() - margin
        if wait < 0 or not self._slots.acquire(timeout=wait):
            self.metrics.rejected.inc()
            raise BusyError(
                f"the provider could not start this analysis within its {deadline.seconds:g}s budget "
                f"({deadline.elapsed():.1f}s spent queued behind {self.config.max_concurrent_analyses} running "
                f"analyses per worker, less than {margin:g}s left); Argo counts this as a measurement Error "
                "and measures again; add analysis replicas or workers if it persists",
                waited_seconds=round(deadline.elapsed(), 3),
            )
        return True
