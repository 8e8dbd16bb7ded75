"""Webhook TLS: cert-manager injection in the overlays, and the manual (no cert-manager) component."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from kustomize_testlib import CATALOG, KUSTOMIZE, NAMESPACE, Renders, find, one, render
from kustomize_testlib import REPO as REPO_ROOT

SERVICE_DNS = "mlguard-webhook.mlguard-system.svc"
MAKE_CERTS = KUSTOMIZE / "components/manual-tls/make-certs.sh"


def test_cert_manager_injects_the_ca_into_both_configurations(renders: Renders, overlay: str) -> None:
    objs = renders(f"kustomize/overlays/{overlay}")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(objs, kind, "mlguard")
        ref = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        namespace, _, cert_name = ref.partition("/")
        assert namespace == NAMESPACE
        cert = one(objs, "Certificate", cert_name)
        assert cert["metadata"]["namespace"] == namespace
        assert cert["spec"]["secretName"] == "mlguard-webhook-tls"
        assert SERVICE_DNS in cert["spec"]["dnsNames"]
        assert "caBundle" not in config["webhooks"][0]["clientConfig"], "cainjector owns caBundle"


def test_serving_certificate_chains_to_a_ca_issuer(renders: Renders) -> None:
    objs = renders("kustomize/overlays/prod")
    serving = one(objs, "Certificate", "mlguard-webhook-tls")
    assert "server auth" in serving["spec"]["usages"]
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always"
    issuer = one(objs, "Issuer", serving["spec"]["issuerRef"]["name"])
    ca_secret = issuer["spec"]["ca"]["secretName"]
    [ca_cert] = [c for c in find(objs, "Certificate") if c["spec"]["secretName"] == ca_secret]
    assert ca_cert["spec"]["isCA"] is True
    root = one(objs, "Issuer", ca_cert["spec"]["issuerRef"]["name"])
    assert "selfSigned" in root["spec"]
    # The CA outlives the serving certificate, so a serving-key rotation never changes caBundle.
    assert int(ca_cert["spec"]["duration"].rstrip("h")) > int(serving["spec"]["duration"].rstrip("h"))


@pytest.fixture()
def manual_tls_tree(tmp_path: Path) -> Path:
    """A copy of kustomize/ and the policy catalog, with an overlay using the manual-tls component."""
    root = tmp_path / "repo"
    shutil.copytree(KUSTOMIZE, root / "kustomize", ignore=shutil.ignore_patterns("tls"))
    shutil.copytree(CATALOG, root / "policies/catalog")
    overlay = root / "kustomize/overlays/manual"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\ncomponents: [../../components/manual-tls]\n"
    )
    return root


def make_certs(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tree / "kustomize/components/manual-tls/make-certs.sh"
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, timeout=60, check=False)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_manual_tls_component_renders_secret_and_ca_bundle(manual_tls_tree: Path) -> None:
    assert shutil.which("openssl"), "openssl is not installed (scripts/setup.sh --test installs it)"
    tls_dir = manual_tls_tree / "kustomize/components/manual-tls/tls"
    proc = make_certs(manual_tls_tree)
    assert proc.returncode == 0, proc.stderr
    objs = render(manual_tls_tree / "kustomize/overlays/manual")

    secret = one(objs, "Secret", "mlguard-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["namespace"] == NAMESPACE
    for key in ("tls.crt", "tls.key", "ca.crt"):
        assert base64.b64decode(secret["data"][key]) == (tls_dir / key).read_bytes(), key
    ca_pem = (tls_dir / "ca.crt").read_bytes()
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(objs, kind, "mlguard")
        assert "cert-manager.io/inject-ca-from" not in config["metadata"].get("annotations", {})
        assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]) == ca_pem, kind

    ca, leaf = load(tls_dir / "ca.crt"), load(tls_dir / "tls.crt")
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVICE_DNS in sans.get_values_for_type(x509.DNSName)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key((tls_dir / "tls.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert oct((tls_dir / "tls.key").stat().st_mode & 0o777) == "0o600"


def test_make_certs_rotation_keeps_the_ca(manual_tls_tree: Path) -> None:
    assert shutil.which("openssl"), "openssl is not installed (scripts/setup.sh --test installs it)"
    tls_dir = manual_tls_tree / "kustomize/components/manual-tls/tls"
    assert make_certs(manual_tls_tree).returncode == 0
    ca_before, leaf_before = (tls_dir / "ca.crt").read_bytes(), (tls_dir / "tls.crt").read_bytes()
    assert make_certs(manual_tls_tree).returncode == 0
    assert (tls_dir / "ca.crt").read_bytes() == ca_before
    assert (tls_dir / "tls.crt").read_bytes() != leaf_before
    load(tls_dir / "tls.crt").verify_directly_issued_by(load(tls_dir / "ca.crt"))


def test_make_certs_other_namespace_and_bad_arguments(manual_tls_tree: Path, tmp_path: Path) -> None:
    assert shutil.which("openssl"), "openssl is not installed (scripts/setup.sh --test installs it)"
    out = tmp_path / "other"
    proc = make_certs(manual_tls_tree, "--namespace", "guard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    sans = load(out / "tls.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mlguard-webhook.guard.svc",
                                                     "mlguard-webhook.guard.svc.cluster.local"]
    bad = make_certs(manual_tls_tree, "--bogus")
    assert bad.returncode == 2
    assert "unknown argument: --bogus" in bad.stderr


def test_manual_tls_without_certificates_fails_to_render(manual_tls_tree: Path) -> None:
    with pytest.raises(AssertionError, match=r"tls\.crt"):
        render(manual_tls_tree / "kustomize/overlays/manual")


def test_manual_tls_keys_are_git_ignored() -> None:
    ignore = (KUSTOMIZE / "components/manual-tls/.gitignore").read_text().split()
    assert "tls/" in ignore
    if shutil.which("git") and (REPO_ROOT / ".git").exists():
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "check-ignore", "-q", "kustomize/components/manual-tls/tls/tls.key"],
            capture_output=True, timeout=30, check=False)
        assert proc.returncode == 0, "tls/tls.key would be committed"
