#!/usr/bin/env python3
"""Slow clients against the webhook (issue 14): 64 connections that never finish a request — 16
plain TCP that never start TLS, 24 TLS trickling headers, 24 TLS trickling a body, one byte every
0.25 s each, reopened whenever the server closes them — while a normal client sends reviews one
after another (keep-alive, a new connection every 10). Prints the normal client's latency
(p50, p99, max), its failures, and the slow connections the server closed.

    python tests/benchmarks/bench_slow_clients.py [--seconds 20] [--worker-class gthread]

Done-when of issue 14: p99 under 100 ms and no failed request, on 2 cores shared with the attacker
and the client. ``--worker-class gthread`` runs the same against gunicorn's thread worker.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "webhook"))

import trustme  # noqa: E402
from webhook_testlib import (  # noqa: E402
    TEST_POLICYSET,
    SlowClients,
    WebhookServer,
    container,
    metric,
    percentile,
    pod,
    pod_spec,
    review,
    timed_reviews,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--worker-class", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    srv = None
    try:
        ca = trustme.CA()
        ca_path, cert, key = work / "ca.pem", work / "tls.crt", work / "tls.key"
        ca.cert_pem.write_to_path(str(ca_path))
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        policyset = work / "policyset.yaml"
        shutil.copy(TEST_POLICYSET, policyset)
        env = {"MLGUARD_WEBHOOK_WORKER_CLASS": args.worker_class} if args.worker_class else {}
        srv = WebhookServer(workdir=work, cert=cert, key=key, ca=ca_path, policyset=policyset, env=env)
        srv.wait("/readyz")
        body = review(pod("ok", spec=pod_spec(container("a", gpus=1))))
        baseline, _ = timed_reviews(srv, body, seconds=3)
        with SlowClients(srv.port, idle=16, headers=24, body=24) as attack:
            latencies, failures = timed_reviews(srv, body, seconds=args.seconds)
        values = srv.metrics()
        ms = [x * 1000 for x in latencies]
        print(f"slow clients: 64 connections (16 idle TCP, 24 trickling headers, 24 trickling a body) for "
              f"{args.seconds:.0f} s; worker {args.worker_class or 'webhook.worker.EventLoopWorker'}, 2 processes")
        print(f"  normal client without the attack: {len(baseline)} reviews, p50 "
              f"{percentile(baseline, 0.5) * 1000:.1f} ms, p99 {percentile(baseline, 0.99) * 1000:.1f} ms")
        print(f"  normal client under the attack:    {len(ms)} reviews, p50 {percentile(ms, 0.5):.1f} ms, "
              f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms, default=float('nan')):.1f} ms, "
              f"failures {len(failures)}")
        closed = {r: metric(values, "mlguard_webhook_connections_closed_total", reason=r)
                  for r in ("handshake_timeout", "read_timeout", "evicted")}
        print(f"  slow connections closed by the server: {attack.closed_by_server} (opened {attack.opened}); "
              f"metrics: {closed}")
        for f in failures[:5]:
            print("  FAILED", f)
        return 1 if failures or percentile(ms, 0.99) >= 100 else 0
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
