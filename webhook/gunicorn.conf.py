"""gunicorn settings for the admission webhook (``python -m webhook serve`` uses this file).

Worker model: ``webhook.worker.EventLoopWorker``: one selector loop per process reads every
connection with deadlines (TLS handshake 3 s, a request's headers and body 4 s from its first byte)
and hands complete requests to 4 app threads, so slow clients cost a file descriptor, not a thread;
at most ``worker_connections`` (512) open connections per worker. Chosen by measuring against
gunicorn's gthread worker and an app-in-the-loop variant (tests/benchmarks/bench_webhook.py,
bench_webhook_cpu.py, bench_slow_clients.py; see webhook/worker.py).
``MLGUARD_WEBHOOK_WORKER_CLASS=gthread`` brings the thread worker back for comparison (it has no
read deadlines); ``MLGUARD_WEBHOOK_THREADS=1`` runs the app in the loop thread.

Processes. With the cluster cache on (``MLGUARD_WEBHOOK_CLUSTER_CACHE=true``, as deployed): ONE
worker process, so a pod holds one cache. Every worker process would run its own list+watch of
every cached kind (N x the watches on the API server, N x the memory, see
tests/benchmarks/bench_cache.py) and its own PolicySet reload, and two requests in a row could be
judged on different views of quota usage or on different PolicySets. Policy evaluation is
CPU-bound Python, so one process uses about one core: the base Deployment's CPU limit is 1 core
anyway, and more throughput comes from more replicas (each with its own cache), not more workers.
Without the cache (static or no cluster facts): 2 processes, one per core.
``MLGUARD_WEBHOOK_WORKERS`` overrides both; README "Benchmarks" has the measured price.
prometheus_client runs in multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set here, before any
worker imports prometheus_client, and cleaned at start.

TLS: ``MLGUARD_WEBHOOK_CERT`` / ``MLGUARD_WEBHOOK_KEY``; TLS 1.2 minimum; a rotated certificate is
picked up by new connections without a restart (see webhook/tls.py). Keep-alive 75 s: the API
server reuses its connections to webhooks (its idle timeout is 90 s).
"""

import os
import shutil
import tempfile
from typing import Any

bind = os.environ.get("MLGUARD_WEBHOOK_BIND", "0.0.0.0:8443")
_cache_on = os.environ.get("MLGUARD_WEBHOOK_CLUSTER_CACHE", "").strip().lower() in ("true", "1", "yes", "on")
workers = int(os.environ.get("MLGUARD_WEBHOOK_WORKERS", "1" if _cache_on else "2"))
worker_class = os.environ.get("MLGUARD_WEBHOOK_WORKER_CLASS", "webhook.worker.EventLoopWorker")
threads = int(os.environ.get("MLGUARD_WEBHOOK_THREADS", "4"))  # app threads per worker
worker_connections = int(os.environ.get("MLGUARD_WEBHOOK_MAX_CONNECTIONS", "512"))
keepalive = 75
timeout = 30               # a worker silent this long is replaced (validate's own budget is 4 s)
graceful_timeout = 20      # in-flight reviews finish on SIGTERM (terminationGracePeriodSeconds is 30)
wsgi_app = "webhook.app:create_app()"
certfile = os.environ.get("MLGUARD_WEBHOOK_CERT")
keyfile = os.environ.get("MLGUARD_WEBHOOK_KEY")
limit_request_line = 8190
# No proxy stands between the API server and the webhook: X-Forwarded-* and scheme headers are
# never trusted (gunicorn's default trusts them from 127.0.0.1), and the per-request check of the
# peer against the list goes (bench_review_breakdown.py: gunicorn's share 94 -> 59 us per request).
# gunicorn_h1c, gunicorn's optional C parser, was measured too: 59 -> 50 us, not worth a compiled
# dependency.
forwarded_allow_ips = ""
limit_request_fields = 100
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
accesslog = None           # one structured decision line per review is logged by the app
# (the event-loop worker never builds access-log data; with gthread, logconfig_dict below makes
# gunicorn build it per request even though the access logger is silenced)

_created_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlguard-webhook-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "webhook.logging.JsonFormatter"}},
    "handlers": {  # "console" and "error_console" are the names gunicorn's defaults refer to
        "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        # off: the app logs one structured line per decision (and probes would flood an access log)
        "gunicorn.access": {"level": "CRITICAL", "handlers": ["error_console"], "propagate": False},
    },
}


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> Any:
    from webhook.tls import rotating_ssl_context

    return rotating_ssl_context(conf, default_ssl_context_factory)


def when_ready(server: Any) -> None:
    # the master builds the TLS context before it forks a worker, and again (if the files changed) before each
    # fork: every worker, a replacement too, starts with the last pair the master found good, so one that boots
    # while the Secret's files are half-rotated (or wrong) serves that pair instead of failing to boot, which
    # would make gunicorn stop the whole server
    from gunicorn.sock import ssl_context as build

    if server.cfg.is_ssl:
        build(server.cfg)


def pre_fork(server: Any, worker: Any) -> None:
    when_ready(server)


def post_worker_init(worker: Any) -> None:
    # build the TLS context now, while the files are known good: a rotation caught half-way later
    # then falls back to it instead of failing a handshake
    from gunicorn.sock import ssl_context as build

    if worker.cfg.is_ssl:
        build(worker.cfg)


def on_starting(server: Any) -> None:
    # stale samples from a previous run would be merged into /metrics
    os.makedirs(_metrics_dir, exist_ok=True)
    for entry in os.listdir(_metrics_dir):
        path = os.path.join(_metrics_dir, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)  # type: ignore[no-untyped-call]  # untyped upstream


def on_exit(server: Any) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
