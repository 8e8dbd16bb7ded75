"""The gunicorn worker of the analysis provider: gthread, with each request's arrival time stamped.

An analysis has a time budget (``deadlineSeconds``) because its caller gives up: Argo Rollouts'
web provider after ``timeoutSeconds`` (10 s by default), Flagger after the hook's ``timeout``.
The budget must count from when the request *arrived*, not from when a worker thread got round
to it: under load, requests wait in the worker's queue, and an answer computed with a fresh budget
after that wait comes after the caller has gone.

gunicorn's gthread worker hands each connection that is ready to be read to its thread pool
(``enqueue_req``: a new connection, a kept-alive one that became readable, a deferred one whose
data arrived). That moment is stamped on the connection (``time.monotonic()``); the pool thread that
handles it publishes the stamp in a thread-local before the request reaches Flask, where
:func:`arrived_at` reads it (see :mod:`rollouts.service`). Outside gunicorn (tests, job mode)
there is no stamp and the budget starts when the analysis does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

_local = threading.local()


def arrived_at() -> float | None:
    """When the request handled by this thread was handed to the thread pool (monotonic clock)."""
    value: float | None = getattr(_local, "arrived", None)
    return value


class ArrivalStampingWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gthread worker that stamps each request's arrival for the analysis budget."""

    def enqueue_req(self, conn: Any) -> None:
        conn.mlguard_arrived = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        _local.arrived = getattr(conn, "mlguard_arrived", None)
        try:
            return super().handle(conn)
        finally:
            _local.arrived = None
