"""An event-loop gunicorn worker: every connection's bytes are read by one selector loop with a
deadline, and the WSGI app (Flask) is called only with a complete request in memory.

Why (issue 14): the gthread worker hands each connection to a thread that reads it blocking and
without a deadline, so 16 clients trickling headers or a body took all 2 x 4 threads, and with
``failurePolicy: Fail`` every covered create and update in the cluster failed.

Here one loop thread per worker process does all reading, non-blocking:

- TLS handshake within ``handshake_timeout`` of the accept;
- a request's headers and body, from its first byte, within ``read_timeout`` (both a few seconds:
  the API server gives up on the webhook after its ``timeoutSeconds``, 4 s for /validate);
- an idle kept-alive connection lives ``keepalive`` seconds;
- at most ``worker_connections`` open connections per worker: at the cap the oldest idle one is
  closed, and when none is idle the worker stops accepting (the kernel backlog holds new
  connections for the other worker) until a connection ends — each is bounded by the deadlines.

A complete request is parsed by gunicorn's own HTTP/1.1 parser and handed to one of ``threads``
app threads (4), which runs Flask and writes the answer (blocking, within ``read_timeout``) while
the loop keeps reading other connections; the connection then comes back to the loop. Policy
evaluation runs in these threads of the gunicorn worker processes: one process pool. A slow
client costs a file descriptor and a buffer, never a thread.

Measured (tests/benchmarks/bench_webhook.py, this shared 2-core machine): running the app in the
loop thread itself (``threads = 1``) cost the least CPU per request but lost to gthread on latency
whenever the cores were contended — a process stalled in a TLS write stalls all its connections —
while the app threads match gthread's latency and keep the slow-client protection. Connection
counts, refusals and deadline closures are metrics (webhook/metrics.py) with an alert on
saturation (kustomize/components/prometheus/prometheusrule.yaml).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import io
import json
import os
import queue
import re
import selectors
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any

from gunicorn import sock as gsock
from gunicorn.http import wsgi
from gunicorn.http.message import Request
from gunicorn.http.unreader import Unreader
from gunicorn.workers import base

HEADER_END = b"\r\n\r\n"
MAX_HEADER_BYTES = 64 * 1024
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]{1,12})[ \t]*\r\n", re.IGNORECASE)
TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)
EXPECT_CONTINUE = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue[ \t]*\r\n", re.IGNORECASE)
RECV_SIZE = 256 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024   # bytes of a refused body read (and dropped) so the client sees the answer
EXPIRY_SCAN = 0.1                # seconds between deadline scans
EVICT_AFTER = 1.0                # an idle connection may be closed at the cap once idle this long

# connection phases
HANDSHAKE, IDLE, READING, WRITING, DRAINING = "handshake", "idle", "reading", "writing", "draining"
SERVING = "serving"              # a complete request is with a pool thread: the loop leaves the socket alone


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


class _Sink:
    """What gunicorn's Response writes to: the answer is collected, then sent by the loop."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    send = sendall

    def getpeername(self) -> Any:  # pragma: no cover - gunicorn asks only for unix sockets
        return None


class _BufferUnreader(Unreader):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's parser over a complete request already in memory."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data: bytes | None = data

    def chunk(self, size_hint: int | None = None) -> bytes:
        data, self._data = self._data, None
        return data or b""


class Conn:
    __slots__ = ("addr", "body_end", "buf", "close_after", "deadline", "drain_left", "idle_since", "out", "phase",
                 "requests", "sock", "want")

    def __init__(self, sock: socket.socket, addr: Any, phase: str, deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.phase = phase
        self.deadline = deadline
        self.buf = bytearray()
        self.body_end = -1          # index in buf where the current request ends, once the headers are in
        self.out = b""
        self.close_after = False
        self.drain_left = 0
        self.requests = 0
        self.idle_since = deadline
        self.want = 0               # selector events registered


class EventLoopWorker(base.Worker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn worker class ``webhook.worker.EventLoopWorker`` (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conns: dict[int, Conn] = {}
        self.max_conns = max(2, int(self.cfg.worker_connections))
        self.handshake_timeout = _env_float("MLGUARD_WEBHOOK_HANDSHAKE_TIMEOUT", 3.0)
        self.read_timeout = _env_float("MLGUARD_WEBHOOK_READ_TIMEOUT", 4.0)
        self.max_body = int(_env_float("MLGUARD_WEBHOOK_MAX_BODY_BYTES", 7 * 1024 * 1024))
        self.sel: selectors.BaseSelector | None = None
        self.accepting = False
        self.metrics: Any = None
        self.recv_view = memoryview(bytearray(RECV_SIZE))
        self.app_threads = max(0, int(self.cfg.threads)) if self.cfg.threads > 1 else 0
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.done: queue.SimpleQueue[tuple[Conn, bool]] = queue.SimpleQueue()
        self.wake: tuple[int, int] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def init_process(self) -> None:
        self.sel = selectors.DefaultSelector()
        from webhook import metrics  # after fork: prometheus_client's multiprocess files are per pid

        self.metrics = metrics
        metrics.CONNECTION_LIMIT.set(self.max_conns)
        metrics.CONNECTIONS.set(0)
        super().init_process()

    def run(self) -> None:
        assert self.sel is not None
        for listener in self.sockets:
            listener.setblocking(False)
        self.sel.register(self.PIPE[0], selectors.EVENT_READ, self._wakeup)
        if self.app_threads:
            self.pool = concurrent.futures.ThreadPoolExecutor(self.app_threads, thread_name_prefix="app")
            self.wake = os.pipe()
            os.set_blocking(self.wake[0], False)
            os.set_blocking(self.wake[1], False)
            self.sel.register(self.wake[0], selectors.EVENT_READ, self._served)
        self._accept_enabled(True)
        last_notify = last_scan = 0.0
        while self.alive:
            now = time.monotonic()
            if now - last_notify >= 1.0:
                self.notify()
                last_notify = now
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
            self._poll(EXPIRY_SCAN if self.conns else 1.0)
            now = time.monotonic()
            if now - last_scan >= EXPIRY_SCAN:
                self._expire(now)
                last_scan = now
        self._shutdown()

    def _shutdown(self) -> None:
        """Stop accepting; close idle connections; let in-flight ones finish within graceful_timeout."""
        self._accept_enabled(False)
        end = time.monotonic() + self.cfg.graceful_timeout
        while True:
            for conn in list(self.conns.values()):
                if conn.phase in (IDLE, HANDSHAKE):
                    self._close(conn, None)
            if not self.conns or time.monotonic() > end:
                break
            self.notify()
            self._poll(0.1)
            self._expire(time.monotonic())
        for conn in list(self.conns.values()):
            if conn.phase != SERVING:
                self._close(conn, "shutdown")
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        for listener in self.sockets:
            listener.close()

    def _poll(self, timeout: float) -> None:
        assert self.sel is not None
        try:
            events = self.sel.select(timeout)
        except OSError as exc:  # pragma: no cover - EINTR is retried by Python (PEP 475)
            if exc.errno != errno.EINTR:
                raise
            return
        for key, mask in events:
            key.data(key.fileobj, mask)

    def _wakeup(self, fileobj: Any, mask: int) -> None:
        try:
            while os.read(self.PIPE[0], 4096):
                pass
        except OSError:
            pass

    # ---- accepting ----------------------------------------------------------------------------
    def _accept_enabled(self, enabled: bool) -> None:
        assert self.sel is not None
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                self.sel.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self.sel.unregister(listener)
        self.accepting = enabled

    def _accept(self, listener: Any, mask: int) -> None:
        # One connection per wake-up, as gunicorn's own workers do: every idle worker is woken and
        # the first to accept wins, so connections spread over the workers that are free. (Taking
        # all that wait made one worker own every kept-alive connection of a burst: a quarter of
        # the throughput and seconds of queueing with 4 workers.)
        for _ in range(1):
            if len(self.conns) >= self.max_conns and not self._evict_idle():
                self.metrics.CONNECTIONS_SATURATED.inc()
                self._accept_enabled(False)
                return
            try:
                client, addr = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EPROTO):
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error("cannot accept: %s", exc)
                    self.metrics.CONNECTIONS_SATURATED.inc()
                    self._accept_enabled(False)
                    return
                raise
            client.setblocking(False)
            if client.family != socket.AF_UNIX:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            now = time.monotonic()
            if self.cfg.is_ssl:
                try:
                    sock = self._ssl_context().wrap_socket(client, server_side=True, do_handshake_on_connect=False,
                                                           suppress_ragged_eofs=True)
                except (OSError, ssl.SSLError) as exc:
                    self.log.debug("TLS wrap failed: %s", exc)
                    client.close()
                    continue
                conn = Conn(sock, addr, HANDSHAKE, now + self.handshake_timeout)
            else:
                conn = Conn(client, addr, IDLE, now + self.cfg.keepalive)
                conn.idle_since = now
            self.conns[conn.sock.fileno()] = conn
            self.metrics.CONNECTIONS.inc()
            if conn.phase == HANDSHAKE:
                self._handshake(conn)
            else:
                self._want(conn, selectors.EVENT_READ)

    def _ssl_context(self) -> ssl.SSLContext:
        # gunicorn's ssl_context (our webhook/tls.py hook): cached, rebuilt when the files change
        return gsock.ssl_context(self.cfg)  # type: ignore[no-any-return]

    def _evict_idle(self) -> bool:
        """At the cap: close the connection idle the longest (for EVICT_AFTER at least: one that has
        just finished its handshake is about to send its request). False if there is none."""
        victim = self._evictable()
        if victim is None:
            return False
        self._close(victim, "evicted")
        return True

    # ---- per-connection I/O -------------------------------------------------------------------
    def _want(self, conn: Conn, events: int) -> None:
        assert self.sel is not None
        if conn.want == events:
            return
        if conn.want:
            self.sel.modify(conn.sock, events, self._ready)
        else:
            self.sel.register(conn.sock, events, self._ready)
        conn.want = events

    def _ready(self, sock: Any, mask: int) -> None:
        conn = self.conns.get(sock.fileno())
        if conn is None:
            return
        if conn.phase == HANDSHAKE:
            self._handshake(conn)
        elif conn.phase == WRITING:
            self._flush(conn)
        else:
            self._read(conn)

    def _handshake(self, conn: Conn) -> None:
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.log.debug("TLS handshake failed: %s", exc)
            self._close(conn, "tls_error")
            return
        conn.phase = IDLE
        conn.idle_since = time.monotonic()
        conn.deadline = conn.idle_since + self.cfg.keepalive
        self._want(conn, selectors.EVENT_READ)
        self._read(conn)  # a client may have sent its request with the last handshake flight

    def _read(self, conn: Conn) -> None:
        eof = False
        view = self.recv_view  # one buffer per worker: recv(n) would allocate (and mmap) n bytes per call
        while True:
            try:
                n = conn.sock.recv_into(view)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self._want(conn, selectors.EVENT_WRITE)
                return
            except (OSError, ssl.SSLError):
                self._close(conn, None)
                return
            if not n:
                eof = True
                break
            if conn.phase == DRAINING:
                conn.drain_left -= n
                if conn.drain_left <= 0:
                    self._close(conn, None)
                    return
                continue
            if conn.phase == IDLE:  # the first byte of a request starts its deadline
                conn.phase = READING
                conn.deadline = time.monotonic() + self.read_timeout
            conn.buf += view[:n]
            if len(conn.buf) > MAX_HEADER_BYTES + self.max_body:
                break
        if conn.phase == DRAINING:
            if eof:
                self._close(conn, None)
            return
        if conn.buf:
            self._advance(conn)
        if eof and conn.sock.fileno() in self.conns and conn.phase in (IDLE, READING):
            self._close(conn, "client_closed" if conn.buf else None)

    def _advance(self, conn: Conn) -> None:
        """Serve every complete request in the buffer (pipelining), then wait for more."""
        while conn.buf and conn.phase in (IDLE, READING):
            if conn.body_end < 0:
                head_end = conn.buf.find(HEADER_END)
                if head_end < 0:
                    if len(conn.buf) > MAX_HEADER_BYTES:
                        self._reply_error(conn, 431, "request headers too large")
                    return
                head = bytes(conn.buf[: head_end + 2])
                if TRANSFER_ENCODING.search(head):
                    self._reply_error(conn, 411, "chunked bodies are not accepted: send Content-Length")
                    return
                match = CONTENT_LENGTH.search(head)
                length = int(match.group(1)) if match else 0
                if length > self.max_body:
                    self._refuse_body(conn, length, head_end + 4)
                    return
                conn.body_end = head_end + 4 + length
                if EXPECT_CONTINUE.search(head) and len(conn.buf) < conn.body_end:
                    conn.out += b"HTTP/1.1 100 Continue\r\n\r\n"
                    self._flush_nowait(conn)
            if len(conn.buf) < conn.body_end:
                return
            data = bytes(conn.buf[: conn.body_end])
            body_start = conn.buf.find(HEADER_END) + 4
            del conn.buf[: conn.body_end]
            conn.body_end = -1
            if self.pool is not None:
                self._dispatch(conn, data, body_start)
                return
            self._serve(conn, data, body_start)
            if conn.phase == WRITING or conn.sock.fileno() not in self.conns:
                return
            self._between_requests(conn)

    def _between_requests(self, conn: Conn) -> None:
        now = time.monotonic()
        if conn.buf:
            conn.phase, conn.deadline = READING, now + self.read_timeout
        else:
            conn.phase, conn.deadline, conn.idle_since = IDLE, now + self.cfg.keepalive, now

    def _respond(self, conn: Conn, data: bytes, body_start: int) -> tuple[bytes, bool]:
        """Parse with gunicorn's parser and run the app: the answer's bytes, and keep-alive or not."""
        sink = _Sink()
        req = None
        try:
            req = Request(self.cfg, _BufferUnreader(data), conn.addr, conn.requests)
            req._expected_100_continue = False  # answered by the loop when the body was still to come
            resp, environ = wsgi.create(req, sink, conn.addr, self.listener_name, self.cfg)
            environ["wsgi.multithread"] = self.pool is not None
            # the body is in memory already: a plain stream instead of gunicorn's reader over the parser
            environ["wsgi.input"] = io.BytesIO(data[body_start:])
            environ["wsgi.input_terminated"] = True
            if not self.alive:
                resp.force_close()
            respiter: Iterable[bytes] = self.wsgi(environ, resp.start_response)
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                close = getattr(respiter, "close", None)
                if close is not None:
                    close()
            keep = not resp.should_close()
        except Exception as exc:  # a malformed request (gunicorn's parser) or an app failure
            sink.parts.clear()
            self.handle_error(req, sink, conn.addr, exc)
            keep = False
        return b"".join(sink.parts), keep

    def _serve(self, conn: Conn, data: bytes, body_start: int) -> None:
        """Inline (no app threads): answer in the loop thread."""
        conn.requests += 1
        out, keep = self._respond(conn, data, body_start)
        conn.out += out
        conn.close_after = not keep
        self._flush(conn)

    # ---- app threads --------------------------------------------------------------------------
    def _dispatch(self, conn: Conn, data: bytes, body_start: int) -> None:
        """Hand a complete request to a pool thread; the loop stops watching the socket meanwhile."""
        assert self.pool is not None and self.sel is not None
        conn.requests += 1
        conn.phase = SERVING
        conn.deadline = float("inf")  # the app's time is bounded by gunicorn's worker timeout, not here
        if conn.want:
            self.sel.unregister(conn.sock)
            conn.want = 0
        self.pool.submit(self._serve_in_thread, conn, data, body_start)

    def _serve_in_thread(self, conn: Conn, data: bytes, body_start: int) -> None:
        out, keep = self._respond(conn, data, body_start)
        try:  # a blocking write with a deadline: the app's answer is small, the client is waiting for it
            conn.sock.settimeout(self.read_timeout)
            conn.sock.sendall(out)
        except (OSError, ssl.SSLError, ValueError):
            keep = False
        finally:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.setblocking(False)
        self.done.put((conn, keep))
        assert self.wake is not None
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the loop
            os.write(self.wake[1], b"x")

    def _served(self, fileobj: Any, mask: int) -> None:
        assert self.wake is not None
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake[0], 4096)
        while True:
            try:
                conn, keep = self.done.get_nowait()
            except queue.Empty:
                return
            if conn.sock.fileno() not in self.conns:
                continue
            if not keep:
                self._close(conn, None)
                continue
            self._between_requests(conn)
            self._want(conn, selectors.EVENT_READ)
            if conn.buf:
                self._advance(conn)

    @functools.cached_property
    def listener_name(self) -> Any:
        return self.sockets[0].getsockname() if self.sockets else ("", 0)

    def _reply_error(self, conn: Conn, status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        reason = {400: "Bad Request", 411: "Length Required", 413: "Content Too Large",
                  431: "Request Header Fields Too Large"}.get(status, "Error")
        conn.out += (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                     "\r\nConnection: close\r\n\r\n").encode() + body
        conn.close_after = True
        conn.buf.clear()
        self.log.warning("refused request: %s", message)
        self._flush(conn)

    def _refuse_body(self, conn: Conn, length: int, head_len: int) -> None:
        """A body over the limit is answered 413 at once; what the client still sends is read and
        dropped (up to DRAIN_LIMIT, within the read deadline) so that it sees the answer, not a reset."""
        conn.drain_left = min(length, DRAIN_LIMIT) - (len(conn.buf) - head_len)
        self._reply_error(conn, 413, f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")

    def _flush_nowait(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
            conn.out = conn.out[sent:]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            pass
        except (OSError, ssl.SSLError):
            self._close(conn, None)

    def _flush(self, conn: Conn) -> None:
        if conn.phase != WRITING:
            conn.phase = WRITING
            conn.deadline = time.monotonic() + self.read_timeout
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                self._want(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._want(conn, selectors.EVENT_READ)
                return
            except (OSError, ssl.SSLError):
                self._close(conn, None)
                return
            conn.out = conn.out[sent:] if sent < len(conn.out) else b""
        if conn.close_after:
            if conn.drain_left > 0:
                conn.phase = DRAINING
                self._want(conn, selectors.EVENT_READ)
                return
            self._close(conn, None, graceful=True)
            return
        self._between_requests(conn)
        self._want(conn, selectors.EVENT_READ)
        if conn.buf:
            self._advance(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            reason = {HANDSHAKE: "handshake_timeout", READING: "read_timeout", WRITING: "write_timeout",
                      DRAINING: None, IDLE: None, SERVING: None}[conn.phase]
            self._close(conn, reason)
        if not self.accepting and self.alive and (len(self.conns) < self.max_conns or self._evictable()):
            self._accept_enabled(True)

    def _evictable(self) -> Conn | None:
        limit = time.monotonic() - EVICT_AFTER
        idle = [c for c in self.conns.values() if c.phase == IDLE and not c.buf and c.idle_since <= limit]
        return min(idle, key=lambda c: c.idle_since) if idle else None

    def _close(self, conn: Conn, reason: str | None, *, graceful: bool = False) -> None:
        fd = conn.sock.fileno()
        if self.conns.pop(fd, None) is None:
            return
        if conn.want and self.sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(conn.sock)
        self.metrics.CONNECTIONS.dec()
        if reason:
            self.metrics.CONNECTIONS_CLOSED.labels(reason).inc()
            if reason.endswith("timeout"):
                self.log.info("closed a slow connection from %s (%s)", _peer(conn.addr), reason)
        try:
            if graceful and not isinstance(conn.sock, ssl.SSLSocket):
                conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.close()
        except OSError:
            pass
        if not self.accepting and self.alive and len(self.conns) < self.max_conns:
            self._accept_enabled(True)


def _peer(addr: Any) -> str:
    if isinstance(addr, tuple) and addr:
        return f"{addr[0]}:{addr[1]}" if len(addr) > 1 else str(addr[0])
    return str(addr)

