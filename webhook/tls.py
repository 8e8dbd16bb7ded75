"""TLS for gunicorn: TLS 1.2+, and certificate rotation without a restart.

The worker (webhook/worker.py, or gunicorn's gthread) asks the ``ssl_context`` hook for a context on every
new connection.
`rotating_ssl_context` keeps one context per worker and rebuilds it only when the certificate or
key file changed (inode, size, mtime — cert-manager and the kubelet swap Secret files atomically
through a symlink). A half-written rotation (a cert that does not match its key yet) keeps the last
good context until the pair is consistent again; a failed rebuild is logged (and tried) once per
change of the files, not on every handshake. Connections already open keep their session;
new handshakes get the new certificate.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_cached: dict[str, tuple[Any, ssl.SSLContext]] = {}
_failed: dict[str, Any] = {}  # the file fingerprints of the last failed rebuild: logged once per change


def _fingerprint(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _build(factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def rotating_ssl_context(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn ``ssl_context`` hook: the cached context, rebuilt when the files changed."""
    key = (_fingerprint(conf.certfile), _fingerprint(conf.keyfile))
    cached = _cached.get("entry")
    if cached is not None and cached[0] == key:
        return cached[1]
    with _lock:
        cached = _cached.get("entry")
        if cached is not None and cached[0] == key:
            return cached[1]
        if cached is None:  # nothing to fall back to (gunicorn.conf.py builds one at worker start)
            context = _first_context(default_ssl_context_factory)
        else:
            if _failed.get("key") == key:  # this very pair of files failed already: no retry, no new log line
                return cached[1]
            try:
                context = _build(default_ssl_context_factory)
            except (OSError, ssl.SSLError) as exc:
                _failed["key"] = key
                print(json.dumps({"level": "error", "logger": "mlguard.webhook.tls", "event": "tls_reload_failed",
                                  "msg": "certificate reload failed; keeping the previous certificate until the "
                                         "files change again", "error": str(exc),
                                  "certfile": conf.certfile, "keyfile": conf.keyfile}),
                      file=sys.stderr, flush=True)
                return cached[1]
            _failed.pop("key", None)
        _cached["entry"] = (key, context)
        return context


def _first_context(factory: Callable[[], ssl.SSLContext], *, attempts: int = 10) -> ssl.SSLContext:
    """The first context of a worker: retried briefly (a half-rotated pair), then the error."""
    for _ in range(attempts - 1):
        try:
            return _build(factory)
        except (OSError, ssl.SSLError):
            time.sleep(0.05)
    return _build(factory)
