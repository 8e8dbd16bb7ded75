"""gunicorn settings for the analysis provider (``python -m rollouts serve`` uses this file).

Plain HTTP on ``MLGUARD_ANALYSIS_BIND`` (default ``0.0.0.0:8080``).

Slow clients: ``rollouts.worker.DeadlineThreadWorker`` (gunicorn's gthread, stamping each request's
arrival, with a deadline of ``MLGUARD_ANALYSIS_READ_TIMEOUT`` seconds, default 5, on reading a
request's headers and body), 16 HTTP threads per worker (they mostly wait: for Prometheus, the
sample stores or a slot of the analysis pool; a trickling client holds one for a few seconds at
most), and at most 256 open connections per worker (``worker_connections``; idle ones wait on
gunicorn's poller, not in a thread).

Works on a read-only root filesystem: the worker heartbeat files and the prometheus_client
multiprocess directory live in ``/dev/shm`` when it is writable, else in ``$TMPDIR``.
"""

import os
import shutil
import tempfile
from typing import Any

# prometheus_client is imported only inside the hooks: it picks its multiprocess value class at
# import time, so PROMETHEUS_MULTIPROC_DIR must be set (below) before any worker imports it.


def _writable_tmp() -> str:
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


bind = os.environ.get("MLGUARD_ANALYSIS_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("MLGUARD_ANALYSIS_WORKERS", "2"))
# gthread, stamping each request's arrival (the analysis budget counts from there) and ending a
# request's reads at a deadline (slow clients): rollouts/worker.py.
worker_class = "rollouts.worker.DeadlineThreadWorker"
threads = int(os.environ.get("MLGUARD_ANALYSIS_THREADS", "16"))
worker_connections = int(os.environ.get("MLGUARD_ANALYSIS_MAX_CONNECTIONS", "256"))
# Each analysis has a 7 s budget from its arrival (Argo gives up at 10 s); a worker stuck beyond
# this is replaced.
timeout = 20
graceful_timeout = 10
keepalive = 5
worker_tmp_dir = _writable_tmp()
limit_request_line = 8190
forwarded_allow_ips = ""  # Argo and Flagger call the provider directly: no forwarding header is trusted
limit_request_fields = 100
accesslog = "-"
access_log_format = 'remote=%(h)s method=%(m)s path=%(U)s status=%(s)s bytes=%(B)s duration_us=%(D)s agent="%(a)s"'

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "rollouts.logs.JsonFormatter"}},
    "handlers": {
        "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}

_created_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _created_metrics_dir = tempfile.mkdtemp(prefix="mlguard-analysis-metrics-", dir=worker_tmp_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream


def on_exit(server: Any) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
