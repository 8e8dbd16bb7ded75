#!/usr/bin/env python3
"""Where one review's CPU goes, stage by stage, in process (no sockets): the 8 KB Deployment review
of bench_webhook.py through gunicorn's parser, Flask, the review parser, policy evaluation, the
answer and the log line. Each stage is timed alone (process CPU time, best of 7 rounds of 500), so
the figures hold on a busy machine better than a load test's; TLS and the socket writes are not
in them (bench_webhook_cpu.py measures the whole server against nginx).

    python tests/benchmarks/bench_review_breakdown.py
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[2]))

from bench_webhook import FACTS, deployment_review  # noqa: E402


def best(fn: Callable[[], object], *, rounds: int = 7, n: int = 500) -> float:
    for _ in range(50):
        fn()
    out = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            fn()
        out = min(out, (time.process_time() - start) / n)
    return out * 1e6


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-breakdown-"))
    (work / "facts.yaml").write_text(FACTS)
    os.environ["MLGUARD_WEBHOOK_FACTS_FILE"] = str(work / "facts.yaml")
    from gunicorn.config import Config
    from gunicorn.http import wsgi
    from gunicorn.http.message import Request

    from webhook.app import create_app
    from webhook.logging import JsonFormatter
    from webhook.review import build_response, parse_review
    from webhook.state import state
    from webhook.worker import _BufferUnreader, _Sink

    app = create_app()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for handler in logging.getLogger("mlguard.webhook").handlers:
        handler.stream = devnull  # type: ignore[attr-defined]
    body = deployment_review()
    raw = (b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    cfg = Config()
    cfg.set("forwarded_allow_ips", "")  # as webhook/gunicorn.conf.py sets it

    def environ() -> dict:
        return {"REQUEST_METHOD": "POST", "PATH_INFO": "/validate", "SCRIPT_NAME": "", "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8443", "SERVER_PROTOCOL": "HTTP/1.1",
                "wsgi.url_scheme": "https", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0), "REMOTE_ADDR": "127.0.0.1"}

    def whole_app() -> None:
        for _ in app(environ(), lambda *a: None):
            pass

    def http_layer() -> None:
        req = Request(cfg, _BufferUnreader(raw), ("127.0.0.1", 5000), 1)
        resp, _env = wsgi.create(req, _Sink(), ("127.0.0.1", 5000), ("127.0.0.1", 8443), cfg)
        resp.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "400")])
        resp.write(b"x" * 400)
        resp.close()

    with app.app_context():
        st = state()
        policyset = st.store.current
        assert policyset is not None
        req = parse_review(body)
        outcome = st.admission.validate(req, policyset)
        answer = build_response(req["uid"], outcome.decision)
        import orjson

        formatter = JsonFormatter()
        record = logging.LogRecord("mlguard.webhook.admission", logging.INFO, __file__, 1, "admission decision",
                                   None, None)
        record.fields = {"event": "decision", "uid": req["uid"], "kind": "Deployment", "namespace": "ml-serving",
                         "decision": outcome.label, "violations": [{"policy": v.policy, "action": v.action,
                                                                     "path": v.path} for v in outcome.violations]}
        stages = [
            ("gunicorn: parse the HTTP request, WSGI environ, response head", best(http_layer)),
            ("review: orjson + shape and identity checks + nesting", best(lambda: parse_review(body))),
            ("policy evaluation (Admission.validate)", best(lambda: st.admission.validate(req, policyset))),
            ("answer: build_response + orjson", best(lambda: orjson.dumps(build_response(req["uid"],
                                                                                          outcome.decision)))),
            ("decision log line (JSON formatter)", best(lambda: formatter.format(record))),
        ]
        total_app = best(whole_app)
    assert answer["response"]["uid"] == req["uid"]
    named = sum(t for name, t in stages if not name.startswith("gunicorn"))
    print(f"one 8 KB Deployment review, CPU per stage (µs, best of 7 x 500, in process; {os.cpu_count()} CPUs, "
          "shared):")
    for name, t in stages:
        print(f"  {t:8.1f}  {name}")
    print(f"  {total_app:8.1f}  the Flask app as the worker calls it (all but gunicorn's row), of which "
          f"{total_app - named:.1f} is Flask, metrics and the log write")
    print(f"  {total_app + stages[0][1]:8.1f}  total before TLS and socket I/O")
    return 0


if __name__ == "__main__":
    sys.exit(main())
