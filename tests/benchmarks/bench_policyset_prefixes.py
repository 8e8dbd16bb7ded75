#!/usr/bin/env python3
"""Every byte prefix of both catalogs, written in place and read twice by the webhook's PolicyStore:
none may be served (issue 14, item 5; the default test run does every line-boundary prefix).

    python tests/benchmarks/bench_policyset_prefixes.py [--step 1]

Prints, per catalog: prefixes tried, how many were valid YAML PolicySets (partial ones, refused
for their missing or wrong spec.policyCount), how many were served (must be 0), and the time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from policies.policyset import PolicySetError, parse_policyset  # noqa: E402
from webhook.logging import setup_logging  # noqa: E402
from webhook.policystore import PolicyStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=1, help="try every STEP-th prefix length")
    args = parser.parse_args()
    import logging

    setup_logging(logging.CRITICAL)  # thousands of refusals: counted here, not logged
    failures = 0
    for name in ("baseline", "strict"):
        catalog = REPO / "policies/catalog" / f"{name}.yaml"
        text = catalog.read_text()
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / f"{name}.yaml"
            path.write_text(text)
            store = PolicyStore(path, interval=3600)
            store.start()
            assert store.current is not None
            whole = store.current.digest
            started = time.monotonic()
            tried = valid = served = 0
            for length in range(0, len(text), args.step):
                with open(path, "w") as out:
                    out.write(text[:length])
                store.check()
                store.check()
                tried += 1
                try:
                    parse_policyset(text[:length], source=str(path))
                    valid += 1
                except PolicySetError:
                    pass
                if store.current is None or store.current.digest != whole:
                    served += 1
            failures += served
            print(f"{name}.yaml: {tried} prefixes written in place, {valid} of them valid PolicySets on their "
                  f"own (as spec.policyCount is optional offline), {served} served by the webhook's store, "
                  f"{time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
