"""One analysis, start to end: sources, check, verdict, metrics and a log line.

Shared by the HTTP endpoints (Argo, Flagger) and the job mode, so every caller gets the same
answer for the same parameters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from rollouts.checks import CheckContext, check_names, run_check
from rollouts.config import AnalysisConfig
from rollouts.errors import AnalysisError, SampleFormatError, SourceError
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
    def __init__(self, config: AnalysisConfig, *, metrics: AnalysisMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or AnalysisMetrics()
        self.prometheus = (
            PrometheusSource(config.prometheus_url, timeout=config.prometheus_timeout)
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

    def analyze(self, check: str, values: Mapping[str, Any], *, caller: str) -> Verdict:
        """Run ``check``; raise an AnalysisError (with its HTTP status) instead of a verdict on failure."""
        started = time.monotonic()
        label = check if check in check_names() else "unknown"
        try:
            ctx = CheckContext(
                config=self.config, prometheus=self.prometheus, stores=self.stores,
                deadline=Deadline(self.config.deadline_seconds),
            )
            try:
                verdict = run_check(check, Params(values), ctx)
            except AnalysisError:
                raise
            except ValueError as exc:
                # The statistics refuse data they cannot test (NaN, empty, wrong shape).
                raise SampleFormatError(f"the data cannot be tested: {exc}") from None
            except Exception:
                log.exception("analysis crashed", extra={"check": check})
                raise InternalError(
                    "internal error while running the check; the provider logged the details"
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
