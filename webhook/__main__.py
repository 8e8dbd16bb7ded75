"""``python -m webhook serve --host H --port P --cert F --key F [--policyset FILE] [--workers N]``, and
``python -m webhook facts --kubeconfig F`` (`mlguard facts`, see webhook/facts.py), and
``python -m webhook audit --kubeconfig F`` (`mlguard audit`, see webhook/audit_cli.py).

Runs gunicorn with webhook/gunicorn.conf.py; the flags become ``MLGUARD_WEBHOOK_*`` variables for the
workers. An invalid PolicySet does not stop the server: it starts not ready (/readyz 503) and logs
every error, as in the cluster, where a fixed ConfigMap is then picked up without a restart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from webhook.config import ENV_PREFIX


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["facts"]:  # `mlguard facts`: the cluster snapshot for CI (this package owns the client)
        from webhook.facts import main as facts_main

        return facts_main(args_in[1:])
    if args_in[:1] == ["audit"]:  # `mlguard audit`: what already runs, judged (webhook/audit_cli.py)
        from webhook.audit_cli import main as audit_main

        return audit_main(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m webhook", description="mlguard admission webhook")
    sub = parser.add_subparsers(dest="command", required=True)
    # `mlguard serve webhook` hands over here and names itself in MLGUARD_PROG, so the usage says what was typed
    serve = sub.add_parser("serve", help="serve /validate and /mutate over TLS under gunicorn",
                           prog=os.environ.get("MLGUARD_PROG") or None)
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8443, help="TLS port (default: 8443)")
    serve.add_argument("--cert", required=True, help="PEM certificate (chain) file")
    serve.add_argument("--key", required=True, help="PEM private key file")
    serve.add_argument("--policyset", help="PolicySet file (default: the baseline catalog set)")
    serve.add_argument("--workers", type=int, default=0, help="gunicorn workers (default: 2)")
    serve.add_argument("--threads", type=int, default=0,
                       help="app threads per worker (default: 4; 1 runs the app in the event loop)")
    args = parser.parse_args(argv)
    for flag, path in (("--cert", args.cert), ("--key", args.key)):
        if not Path(path).is_file():
            print(f"python -m webhook serve: {flag} {path}: no such file", file=sys.stderr)
            return 2
    if not 0 < args.port < 65536:
        print(f"python -m webhook serve: --port {args.port}: not a TCP port", file=sys.stderr)
        return 2
    env = dict(os.environ)
    host = f"[{args.host}]" if ":" in args.host else args.host
    env[ENV_PREFIX + "BIND"] = f"{host}:{args.port}"
    env[ENV_PREFIX + "CERT"] = os.path.abspath(args.cert)
    env[ENV_PREFIX + "KEY"] = os.path.abspath(args.key)
    if args.policyset:
        env[ENV_PREFIX + "POLICYSET"] = os.path.abspath(args.policyset)
    if args.workers:
        env[ENV_PREFIX + "WORKERS"] = str(args.workers)
    if args.threads:
        env[ENV_PREFIX + "THREADS"] = str(args.threads)
    conf = str(Path(__file__).with_name("gunicorn.conf.py"))
    argv_ = [sys.executable, "-m", "gunicorn", "-c", conf, "webhook.app:create_app()"]
    os.execvpe(sys.executable, argv_, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
