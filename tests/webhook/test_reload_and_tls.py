"""A gunicorn server of its own (2 workers): PolicySet hot reload (valid, then invalid, then fixed)
and TLS (certificate rotation without restart, TLS 1.2 minimum)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from webhook_testlib import TEST_POLICYSET, WebhookServer, metric, pod, pod_spec, review, too_many

pytestmark = pytest.mark.integration
BAD = pod("bad", spec=pod_spec(too_many("a")), namespace="team-c")


def swap(path: Path, text: str) -> None:
    """Replace a file in one step, as the kubelet swaps a ConfigMap's files (a plain write_text could be
    read half-written by a worker's reload thread)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def steadily(check: Callable[[], bool], *, times: int = 6, timeout: float = 10.0) -> bool:
    """``check`` holds ``times`` in a row (spread over both workers) before ``timeout``."""
    end = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < end and streak < times:
        streak = streak + 1 if check() else 0
        time.sleep(0.03)
    return streak >= times


@pytest.fixture(scope="module")
def own(tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebhookServer, Path, Path, Path]]:
    work = tmp_path_factory.mktemp("reload")
    policyset = work / "policyset.yaml"
    shutil.copy(TEST_POLICYSET, policyset)
    cert, key = work / "tls.crt", work / "tls.key"
    shutil.copy(tls.cert_path, cert)
    shutil.copy(tls.key_path, key)
    srv = WebhookServer(workdir=work, cert=cert, key=key, ca=tls.ca_path, policyset=policyset)
    try:
        srv.wait("/readyz")
        yield srv, policyset, cert, key
    finally:
        srv.stop()


def _denied(srv: WebhookServer) -> bool:
    return srv.admit("/validate", review(BAD))["allowed"] is False


def test_hot_reload_valid_then_invalid_then_fixed(own) -> None:
    srv, policyset, _, _ = own
    original = policyset.read_text()
    first = srv.session.get(srv.url + "/readyz").json()["policyset"]["digest"]
    assert _denied(srv)

    # 1. a valid change: gpu-limits only warns now (and gpu-quota only audits)
    relaxed = original.replace("    gpu-limits:\n      action: deny", "    gpu-limits:\n      action: warn").replace(
        "    gpu-quota:\n      action: deny", "    gpu-quota:\n      action: audit")
    assert relaxed != original
    swap(policyset, relaxed)
    assert steadily(lambda: not _denied(srv))
    ready = srv.session.get(srv.url + "/readyz").json()
    assert ready["policyset"]["digest"] != first and "refused" not in ready
    relaxed_digest = ready["policyset"]["digest"]

    # 2. an invalid change is refused: the last good set keeps serving, visibly
    swap(policyset, relaxed.replace("action: warn", "action: block"))
    assert steadily(lambda: "refused" in srv.session.get(srv.url + "/readyz").json())
    resp = srv.session.get(srv.url + "/readyz")
    assert resp.status_code == 200
    detail = resp.json()
    assert detail["policyset"]["digest"] == relaxed_digest
    assert any("spec.policies.gpu-limits.action" in e for e in detail["refused"]["errors"]), detail
    assert not _denied(srv)
    values = srv.metrics()
    assert metric(values, "mlguard_policyset_refused") == 1
    assert metric(values, "mlguard_policyset_reloads_total", result="refused") >= 1
    assert any(line.get("event") == "policyset_refused" for line in srv.log_lines())

    # 3. fixed: back to the original, deny again, refusal cleared
    swap(policyset, original)
    assert steadily(lambda: _denied(srv))
    assert steadily(lambda: "refused" not in srv.session.get(srv.url + "/readyz").json())
    assert srv.session.get(srv.url + "/readyz").json()["policyset"]["digest"] == first
    assert metric(srv.metrics(), "mlguard_policyset_refused") == 0


def _peer_serial(srv: WebhookServer, ca: Path) -> int:
    """A new TLS connection's certificate serial, verified against ``ca``."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
        return int(tls_sock.getpeercert()["serialNumber"], 16)


def test_certificate_rotation_without_restart(own, tmp_path: Path) -> None:
    srv, _, cert, key = own
    pids = srv.worker_pids()
    old_serial = _peer_serial(srv, srv.ca)
    new_ca = trustme.CA()
    new_ca_path = tmp_path / "new-ca.pem"
    new_ca.cert_pem.write_to_path(str(new_ca_path))
    issued = new_ca.issue_cert("127.0.0.1", "localhost")
    # the kubelet swaps Secret files one after the other: a moment with a mismatched pair
    issued.cert_chain_pems[0].write_to_path(str(cert))
    assert _peer_serial(srv, srv.ca) == old_serial  # mismatched pair: the last good certificate serves
    issued.private_key_pem.write_to_path(str(key))

    def rotated() -> bool:
        try:
            return _peer_serial(srv, new_ca_path) != old_serial
        except ssl.SSLError:
            return False

    assert steadily(rotated)
    with pytest.raises(ssl.SSLError):
        _peer_serial(srv, srv.ca)  # the old CA no longer verifies what is served
    assert srv.worker_pids() == pids  # no restart


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client side's TLS 1.0/1.1 on purpose
def test_tls_below_1_2_is_refused(own) -> None:
    srv = own[0]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    ok = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ok.check_hostname = False
    ok.verify_mode = ssl.CERT_NONE
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ok.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        assert conn.version() == "TLSv1.2"


def _handshake(srv: WebhookServer) -> int:
    """A new TLS connection (certificate not verified): the served certificate's serial."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        der = conn.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_half_rotated_pair_is_logged_once_per_change_not_per_handshake(own, tmp_path: Path) -> None:
    srv, _, cert, key = own
    good_cert, good_key = cert.read_bytes(), key.read_bytes()
    serving = _handshake(srv)

    def failures() -> int:
        return sum(1 for line in srv.log_lines() if line.get("event") == "tls_reload_failed")

    before = failures()
    try:
        # each change written whole, as the kubelet swaps a Secret volume's files (a write in place could be seen
        # half-written by one handshake and whole by the next: two changes)
        other = trustme.CA().issue_cert("127.0.0.1")
        _replace(cert, other.cert_chain_pems[0].bytes())  # a certificate that does not match the key
        for _ in range(20):
            assert _handshake(srv) == serving  # the last good certificate keeps serving
        time.sleep(0.3)
        first = failures() - before
        assert 1 <= first <= 2, first  # once per worker that handshook, not once per handshake (20)
        _replace(cert, trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].bytes())  # changed again
        for _ in range(20):
            assert _handshake(srv) == serving
        time.sleep(0.3)
        assert 2 <= failures() - before <= 4
    finally:
        cert.write_bytes(good_cert)
        key.write_bytes(good_key)
    assert steadily(lambda: _handshake(srv) == serving)


def test_a_worker_replaced_while_the_pair_is_wrong_boots_with_the_last_good_one(own) -> None:
    """A worker that boots while the Secret's files do not match (a rotation caught half-way, a bad Secret) serves
    the last pair the master found good; it used to fail to boot, and gunicorn then stopped the whole server."""
    srv, _, cert, key = own
    good_cert, good_key = cert.read_bytes(), key.read_bytes()
    assert steadily(lambda: len(srv.worker_pids()) == 2)
    # a rotation to a new good pair, which the master sees before its next fork
    fresh = trustme.CA().issue_cert("127.0.0.1")
    _replace(key, fresh.private_key_pem.bytes())
    _replace(cert, fresh.cert_chain_pems[0].bytes())
    from cryptography import x509

    serving = x509.load_pem_x509_certificate(fresh.cert_chain_pems[0].bytes()).serial_number
    assert steadily(lambda: _handshake(srv) == serving)
    os.kill(min(srv.worker_pids()), signal.SIGKILL)  # replaced while the files are good: the master reads them
    assert steadily(lambda: len(srv.worker_pids()) == 2 and _handshake(srv) == serving)
    try:
        _replace(cert, trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].bytes())  # now a wrong pair
        before = srv.worker_pids()
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        end = time.monotonic() + 30
        while time.monotonic() < end and (victim in srv.worker_pids() or len(srv.worker_pids()) < 2):
            time.sleep(0.1)
        assert victim not in srv.worker_pids() and len(srv.worker_pids()) == 2, srv.log_path.read_text()[-2000:]
        time.sleep(1.5)  # the replacement's boot (its app, its TLS context) is over: were it to fail, it would be
        assert srv.proc.poll() is None, srv.log_path.read_text()[-2000:]
        assert len(srv.worker_pids()) == 2
        assert all(_handshake(srv) == serving for _ in range(20))  # both workers: the last good certificate
        assert not any("Worker failed to boot" in str(line.get("msg")) for line in srv.log_lines())
    finally:
        _replace(key, good_key)
        _replace(cert, good_cert)
    restored = x509.load_pem_x509_certificate(good_cert).serial_number
    assert steadily(lambda: _handshake(srv) == restored)
