"""A PolicySet written in place, non-atomically (issue 14, item 5): a truncate-then-write whose
prefix is valid YAML was served as 5 of 14 policies. A half-written file is never served.

In process: the store is handed every line-boundary prefix of both catalogs, each one stable (read
twice), and keeps serving the whole set (tests/benchmarks/bench_policyset_prefixes.py does every
byte prefix). From outside: a running webhook's PolicySet is rewritten in place in pieces, each
left long enough to be read twice, while reviews that only gpu-isolation denies keep coming."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from webhook_testlib import REPO, WebhookServer, pod, pod_spec, review

from policies.policyset import parse_policyset
from webhook.policystore import PolicyStore

CATALOGS = [REPO / "policies/catalog/baseline.yaml", REPO / "policies/catalog/strict.yaml"]


def line_prefixes(text: str) -> list[int]:
    """Prefix lengths that end at a line boundary (before and after each newline): where a
    truncated file most often still parses."""
    cuts = {0}
    for i, ch in enumerate(text):
        if ch == "\n":
            cuts.update((i, i + 1))
    return sorted(c for c in cuts if c < len(text))


def served_digests_under_prefixes(catalog: Path, work: Path, lengths: list[int]) -> tuple[set[str], int]:
    """Serve ``catalog``, then write each prefix in place and let the store read it twice. Returns
    the digests the store served meanwhile and how many prefixes were valid PolicySets."""
    text = catalog.read_text()
    path = work / catalog.name
    path.write_text(text)
    store = PolicyStore(path, interval=3600)
    store.start()
    assert store.current is not None
    served = {store.current.digest}
    valid = 0
    for length in lengths:
        with open(path, "w") as out:  # truncate, then write: in place, as an editor or `cp` does
            out.write(text[:length])
        store.check()
        store.check()  # the same content twice: stable, so it is judged
        served.add(store.current.digest)
        if store.refused and any("policyCount" in e for e in store.refused.errors):
            valid += 1
    return served, valid


@pytest.mark.parametrize("catalog", CATALOGS, ids=lambda p: p.stem)
def test_no_line_prefix_of_a_catalog_is_ever_served(catalog: Path, tmp_path: Path) -> None:
    whole = parse_policyset(catalog.read_text(), source=str(catalog))
    served, partial_but_valid = served_digests_under_prefixes(catalog, tmp_path, line_prefixes(catalog.read_text()))
    assert {d for d in served} == {parse_policyset(catalog.read_text(), source=str(tmp_path / catalog.name)).digest}
    assert whole.spec["policyCount"] == len(whole.spec["policies"])
    # the danger was real: many prefixes are valid PolicySets with fewer policies
    assert partial_but_valid >= 14, partial_but_valid


def test_a_set_without_its_count_may_not_drop_policies_but_one_declaring_it_may(tmp_path: Path) -> None:

    doc = yaml.safe_load(CATALOGS[0].read_text())
    del doc["spec"]["policyCount"]
    path = tmp_path / "ps.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = PolicyStore(path)
    store.start()
    n = len(doc["spec"]["policies"])  # the catalog's own count: adding a policy to it changes nothing here
    assert store.current is not None and len(store.current.spec["policies"]) == n
    fewer = json.loads(json.dumps(doc))
    for pid in ("gpu-isolation", "gpu-quota"):
        del fewer["spec"]["policies"][pid]
    path.write_text(yaml.safe_dump(fewer))
    store.check()
    store.check()
    assert len(store.current.spec["policies"]) == n
    assert store.refused and f"drops 2 of {n} policies (gpu-isolation, gpu-quota)" in store.refused.errors[0]
    fewer["spec"]["policyCount"] = n - 2  # says so: the removal is on purpose
    path.write_text(yaml.safe_dump(fewer))
    store.check()
    store.check()
    assert len(store.current.spec["policies"]) == n - 2 and store.refused is None
    fewer["spec"]["policyCount"] = n - 1  # a count that disagrees is invalid, wherever it is read
    path.write_text(yaml.safe_dump(fewer))
    store.check()
    store.check()
    assert f"declares {n - 1} policies but spec.policies has {n - 2}" in store.refused.errors[0]


def test_a_change_is_loaded_only_when_two_reads_agree(tmp_path: Path) -> None:
    path = tmp_path / "ps.yaml"
    text = CATALOGS[0].read_text()
    path.write_text(text)
    store = PolicyStore(path)
    store.start()
    first = store.current
    relaxed = text.replace("gpu-limits:\n      action: deny", "gpu-limits:\n      action: warn")
    assert relaxed != text
    path.write_text(relaxed)
    assert store.check() is False and store.current is first  # seen once: maybe still being written
    assert store.check() is True and store.current is not first


# ---- from outside -----------------------------------------------------------------------------
LEAK = pod("leak", namespace="team-b", spec=pod_spec({
    "name": "c", "image": "registry.example.com/app@sha256:" + "b" * 64,
    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}))


@pytest.fixture
def catalog_server(tls, tmp_path: Path) -> Iterator[tuple[WebhookServer, Path]]:
    policyset = tmp_path / "policyset.yaml"
    shutil.copy(CATALOGS[0], policyset)
    srv = WebhookServer(workdir=tmp_path, cert=tls.cert_path, key=tls.key_path, ca=tls.ca_path, policyset=policyset)
    try:
        srv.wait("/readyz")
        yield srv, policyset
    finally:
        srv.stop()


@pytest.mark.integration
def test_running_webhook_never_decides_with_a_half_written_policyset(catalog_server) -> None:
    srv, path = catalog_server
    text = path.read_text()
    before = srv.session.get(srv.url + "/readyz").json()["policyset"]
    assert srv.admit("/validate", review(LEAK))["allowed"] is False  # gpu-isolation denies it
    cuts = [text.index("    gpu-isolation:"), text.index("    gpu-quota:"), text.index("    eval-gate:"),
            text.index("  policyCount:"), len(text) - 1]
    decisions: list[bool] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            decisions.append(srv.admit("/validate", review(LEAK))["allowed"])

    worker = threading.Thread(target=client)
    worker.start()
    try:
        for cut in cuts:
            with open(path, "w") as out:  # truncate, write part, pause (> 2 reload intervals), write the rest
                out.write(text[:cut])
                out.flush()
                time.sleep(0.8)
                out.write(text[cut:])
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert decisions and not any(decisions), f"{decisions.count(True)} of {len(decisions)} leaking pods allowed"
    after = srv.session.get(srv.url + "/readyz").json()
    n = len(yaml.safe_load(text)["spec"]["policies"])
    assert after["policyset"]["digest"] == before["digest"] and after["policyset"]["policies"] == n
    refused = [x for x in srv.log_lines() if x.get("event") == "policyset_refused"]
    assert refused and all(x["serving_policies"] == n for x in refused)
    assert any("spec.policyCount is missing" in " ".join(x["errors"]) for x in refused)
