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

Slow clients (issue 14): gthread parks a connection that sends nothing on its poller, but once a
request's first bytes arrive a thread read the rest blocking and without a deadline: a client
trickling headers or a body held a thread for as long as it liked. `DeadlineThreadWorker` (the
shipped worker class) ends every read of a request (headers and body, from the moment a thread
takes the connection) at ``MLGUARD_ANALYSIS_READ_TIMEOUT`` seconds (default 5) and closes the
connection. So a slow client holds an HTTP thread for a few seconds at most; with 16 threads per
worker (they mostly wait: for Prometheus, the sample stores, or a slot of the analysis pool) a few
dozen of them cannot starve Argo's calls. Standalone: it does not import the webhook's worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from gunicorn.workers.gthread import _DEFER, DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

WRITE_TIMEOUT = 10.0  # an answer still unsent after this much time is given up

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


def _read_timeout() -> float:
    try:
        value = float(os.environ.get("MLGUARD_ANALYSIS_READ_TIMEOUT", "5"))
    except ValueError:
        return 5.0
    return value if value > 0 else 5.0


class _DeadlineSocket:
    """The connection's socket, with every recv bounded by what is left of the request's deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None
        self.slow = False

    def _arm(self) -> bool:
        if self.deadline is None:
            return True
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        self._sock.settimeout(left)
        return True

    def _expired(self) -> None:
        self.deadline = None
        self.slow = True

    def recv(self, size: int, *flags: int) -> bytes:
        # past the deadline the request ends as if the client had hung up: gunicorn closes it quietly
        try:
            if self._arm():
                return self._sock.recv(size, *flags)
        except TimeoutError:
            pass
        self._expired()
        return b""

    def recv_into(self, buffer: Any, *args: Any) -> int:
        try:
            if self._arm():
                return self._sock.recv_into(buffer, *args)
        except TimeoutError:
            pass
        self._expired()
        return 0

    def sendall(self, data: Any, *flags: int) -> None:
        self._sock.settimeout(WRITE_TIMEOUT)
        self._sock.sendall(data, *flags)

    def send(self, data: Any, *flags: int) -> int:
        self._sock.settimeout(WRITE_TIMEOUT)
        return self._sock.send(data, *flags)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class DeadlineThreadWorker(ArrivalStampingWorker):
    """gunicorn worker class ``rollouts.worker.DeadlineThreadWorker``: arrival stamps and read deadlines."""

    read_timeout = _read_timeout()

    def handle(self, conn: Any) -> Any:
        if not isinstance(conn.sock, _DeadlineSocket):
            conn.sock = _DeadlineSocket(conn.sock)
        sock: _DeadlineSocket = conn.sock
        sock.deadline = None  # waiting for a first byte is the poller's business (keep-alive)
        if not conn.initialized and not conn.data_ready:
            if not conn.wait_for_data(DEFAULT_WORKER_DATA_TIMEOUT):
                return _DEFER  # gunicorn parks it on its poller, as it would have
            conn.data_ready = True
        sock.deadline = time.monotonic() + self.read_timeout
        try:
            result = super().handle(conn)
        finally:
            sock.deadline = None
        if sock.slow:
            self.log.info("closed a slow connection from %s (read_timeout)", conn.client)
            return False
        return result
