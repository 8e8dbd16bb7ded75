"""Bounded HTTP GETs for the data sources: an absolute wall-clock deadline and a byte cap.

Every read of a remote source (Prometheus, an HTTP sample store) goes through :func:`bounded_get`:

- the whole exchange (connect, headers, body) ends at an absolute deadline: a watchdog timer shuts
  the socket down when it passes, so a server that trickles its headers or body a byte at a time
  cannot hold the answer (a per-read socket timeout alone resets with every byte);
- the body is streamed (``read1``: whatever one receive returns) into a buffer that stops at
  ``max_bytes``, so an oversized answer costs at most ``max_bytes`` of memory and is refused;
- no ``Accept-Encoding`` is sent: what arrives is what is counted (no decompression bombs);
- redirects are not followed and no proxy variables are read: sources are in-cluster services.

``requests``/``urllib3`` (and prometheus-api-client on top of them) give a connect and a per-read
timeout but no total one, and read the whole body before returning; measured: a Prometheus that
trickled its answer held a request for 30 s, a 150 MB answer took a worker to 535 MB.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from rollouts.errors import AnalysisError, SourceQueryError, SourceTimeoutError, SourceUnavailableError
from rollouts.sources import Deadline

CHUNK = 1 << 16
CONNECT_TIMEOUT = 2.0
USER_AGENT = "mlguard-analysis"


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    content_type: str
    body: bytes


def _too_large_default(limit: int, *, source: str, what: str) -> AnalysisError:
    return SourceQueryError(f"{what} answered more than {limit} bytes; refused", source=source, limit=limit)


def bounded_get(
    url: str, *, params: Mapping[str, str] | None = None, deadline: Deadline, timeout: float,
    max_bytes: int, source: str, what: str,
    too_large: Callable[[int], AnalysisError] | None = None,
) -> HttpAnswer:
    """GET ``url`` (plus ``params``) within ``min(timeout, what is left of deadline)`` seconds, total.

    Raises SourceTimeoutError (504) when the time runs out, SourceUnavailableError (503) when the
    server cannot be reached or drops the connection, and ``too_large(max_bytes)`` (default: a
    SourceQueryError, 502) when the body exceeds ``max_bytes``.
    """
    limit = deadline.timeout(timeout, source=source)
    ends = time.monotonic() + limit
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AnalysisError(f"{what}: unsupported URL {url!r}")
    target = parts.path or "/"
    query = "&".join(q for q in (parts.query, urlencode(dict(params or {}))) if q)
    if query:
        target = f"{target}?{query}"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=min(CONNECT_TIMEOUT, limit),
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=min(CONNECT_TIMEOUT, limit))
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv() at once

    watchdog = threading.Timer(limit, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if expired.is_set():
            raise TimeoutError
        if conn.sock is not None:
            conn.sock.settimeout(max(ends - time.monotonic(), 0.01))
        conn.request("GET", target, headers={"Accept": "application/json, */*", "User-Agent": USER_AGENT,
                                             "Accept-Encoding": "identity"})
        resp = conn.getresponse()
        declared = resp.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise (too_large or (lambda n: _too_large_default(n, source=source, what=what)))(max_bytes)
        body = bytearray()
        while chunk := resp.read1(CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise (too_large or (lambda n: _too_large_default(n, source=source, what=what)))(max_bytes)
        if expired.is_set():  # the watchdog fired between the last read and here
            raise TimeoutError
        return HttpAnswer(resp.status, resp.getheader("Content-Type") or "", bytes(body))
    except AnalysisError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or time.monotonic() >= ends or isinstance(exc, TimeoutError):
            raise SourceTimeoutError(
                f"{what} did not answer within {limit:.1f}s (the whole answer, not per read)", source=source
            ) from None
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise SourceUnavailableError(f"{what}: TLS certificate not trusted ({exc.verify_message})",
                                         source=source) from None
        if isinstance(exc, http.client.HTTPException) and not isinstance(exc, http.client.RemoteDisconnected):
            raise SourceQueryError(f"{what} answered something that is not HTTP ({type(exc).__name__})",
                                   source=source) from None
        raise SourceUnavailableError(f"{what} is unreachable: {type(exc).__name__}", source=source) from None
    finally:
        watchdog.cancel()
        conn.close()
