#!/usr/bin/env python3
"""The webhook fuzz suite at scale (issue 14): at least 10,000 generated and mutated AdmissionReview
bodies against a running webhook (gunicorn over TLS, 2 workers, the cluster cache on a local
list/watch API), plus bodies built to hurt (deep nesting, huge numbers, odd Unicode, mismatched
namespaces and kinds). Every answer must be JSON below 500, and no worker may restart.

    python tests/benchmarks/bench_fuzz.py [--examples 10000]

Uses the strategies of tests/webhook/test_fuzz.py (the default run does 2,100 of them). Prints the
bodies sent, the answers by status, the 5xx count, the worker restarts and the time; exits 1 on any
5xx, non-JSON answer or restart.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "webhook"))

import trustme  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz import SEEDS, mutated_reviews, raw_bodies  # noqa: E402
from webhook_fakeapi import FakeApi  # noqa: E402
from webhook_testlib import TEST_POLICYSET, WebhookServer, gpu_pod  # noqa: E402


def crafted() -> list[bytes]:
    """Bodies aimed at the edges the issue named."""
    base = json.dumps(SEEDS[0])
    out = []
    for depth in (100, 128, 129, 500, 989, 990, 1000, 1023, 1024, 1025, 5000, 20000):
        out.append(base.replace('"spec": {', '"spec": {"deep": ' + "[" * depth + "]" * depth + ", ", 1).encode())
        out.append(base.replace('"spec": {', '"spec": {"deep": ' + '{"a":' * depth + "1" + "}" * depth + ", ", 1)
                   .encode())
    for number in ("1" + "0" * 400, "1e400", "-1e400", "NaN", "Infinity", "1" * 5000):
        out.append(base.replace('"nvidia.com/gpu": "1"', f'"nvidia.com/gpu": {number}', 1).encode())
    for text in ("\\ud800", "\\udfff", "\\u0000", "\u0662", "\uff11", " 1", "1 "):
        out.append(base.replace('"nvidia.com/gpu": "1"', f'"nvidia.com/gpu": "{text}"', 1).encode())
    for ns in ("kube-system", "", "mlguard-system", "team-a\u0000"):
        body = json.loads(base)
        body["request"]["object"]["metadata"]["namespace"] = ns
        out.append(json.dumps(body).encode())
    for kind in ("ConfigMap", "", None, 7):
        body = json.loads(base)
        body["request"]["object"]["kind"] = kind
        out.append(json.dumps(body).encode())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="generated bodies (plus the crafted ones)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    api = FakeApi()
    api.start()
    srv = None
    try:
        for ns, labels in (("team-a", {"mlguard.io/environment": "prod"}), ("team-b", {}), ("kube-system", {})):
            api.add("namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns, **labels}}})
        api.add("resourcequotas", {"metadata": {"name": "gpus", "namespace": "team-a"},
                                   "spec": {"hard": {"requests.nvidia.com/gpu": "16"}}})
        api.add("pods", gpu_pod("llm-7d9f-aaaaa", "team-a", gpus=1, owner=("ReplicaSet", "llm-7d9f")))
        assert api.server is not None
        kubeconfig = work / "kubeconfig"
        api.write_kubeconfig(kubeconfig)
        ca = trustme.CA()
        ca_path, cert, key = work / "ca.pem", work / "tls.crt", work / "tls.key"
        ca.cert_pem.write_to_path(str(ca_path))
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        policyset = work / "policyset.yaml"
        shutil.copy(TEST_POLICYSET, policyset)
        cache = {"MLGUARD_WEBHOOK_CLUSTER_CACHE": "true", "MLGUARD_WEBHOOK_KUBECONFIG": str(kubeconfig)}
        srv = WebhookServer(workdir=work, cert=cert, key=key, ca=ca_path, policyset=policyset, env=cache)
        srv.wait("/readyz")
        pids = srv.worker_pids()
        statuses: collections.Counter[int] = collections.Counter()
        bad: list[str] = []

        def send(path: str, body: bytes) -> None:
            resp = srv.session.post(srv.url + path, data=body, headers={"Content-Type": "application/json"},
                                    timeout=30)
            statuses[resp.status_code] += 1
            try:
                payload = resp.json()
            except ValueError:
                bad.append(f"non-JSON {resp.status_code}: {resp.text[:200]!r}")
                return
            if resp.status_code >= 500:
                bad.append(f"{resp.status_code}: {payload} for {body[:300]!r}")
            elif resp.status_code == 200 and not isinstance(payload.get("response", {}).get("allowed"), bool):
                bad.append(f"200 without a verdict: {payload}")

        started = time.monotonic()
        for body in crafted():
            for path in ("/validate", "/mutate"):
                send(path, body)
        quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
        mutated_n = args.examples * 7 // 10

        @settings(max_examples=mutated_n, deadline=None, database=None, suppress_health_check=quiet)
        @given(body=st.one_of(mutated_reviews(objects_only=True), mutated_reviews(objects_only=False)),
               path=st.sampled_from(["/validate", "/mutate"]))
        def mutated(body: bytes, path: str) -> None:
            send(path, body)

        @settings(max_examples=args.examples - mutated_n, deadline=None, database=None, suppress_health_check=quiet)
        @given(body=raw_bodies, path=st.sampled_from(["/validate", "/mutate"]))
        def generated(body: bytes, path: str) -> None:
            send(path, body)

        mutated()
        generated()
        elapsed = time.monotonic() - started
        restarts = len(pids - srv.worker_pids())
        unexpected = [x for x in srv.log_lines() if x.get("event") == "unexpected_error"]
        total = sum(statuses.values())
        fivexx = sum(n for code, n in statuses.items() if code >= 500)
        print(f"fuzz at scale: {total} bodies ({len(crafted()) * 2} crafted, the rest generated by hypothesis) in "
              f"{elapsed:.0f} s ({total / elapsed:.0f}/s) against gunicorn over TLS, 2 workers")
        print("  answers by status: " + ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items())))
        print(f"  5xx: {fivexx}; non-JSON or verdict-less answers: {len(bad) - fivexx}; worker restarts: {restarts}; "
              f"unexpected_error log lines: {len(unexpected)}")
        for line in bad[:10]:
            print("  BAD", line)
        return 1 if bad or restarts or unexpected or total < args.examples else 0
    finally:
        if srv is not None:
            srv.stop()
        api.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
