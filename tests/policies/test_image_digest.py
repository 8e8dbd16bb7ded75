"""image-digest: the image reference parser and registry matching, beyond the sample suite."""

from __future__ import annotations

import pytest

from policies.engine import evaluate
from policies.library.image_digest import ImageRef, parse_image, registry_allowed
from policies.policyset import PolicySetError, parse_policyset

D = "sha256:" + "ab" * 32
HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"


@pytest.mark.parametrize(("ref", "expected"), [
    ("nginx", ImageRef("docker.io", "library/nginx", None, None)),
    ("nginx:1.27", ImageRef("docker.io", "library/nginx", "1.27", None)),
    ("vllm/vllm-openai:v0.6.0", ImageRef("docker.io", "vllm/vllm-openai", "v0.6.0", None)),
    ("index.docker.io/vllm/vllm-openai", ImageRef("docker.io", "vllm/vllm-openai", None, None)),
    (f"ghcr.io/acme/vllm:v1@{D}", ImageRef("ghcr.io", "acme/vllm", "v1", D)),
    (f"localhost:5000/model@{D}", ImageRef("localhost:5000", "model", None, D)),
    ("localhost/model:dev", ImageRef("localhost", "model", "dev", None)),
    ("Registry.Example.com:443/team/server:2",
     ImageRef("registry.example.com:443", "team/server", "2", None)),
    # "acme" has no dot or port: a Docker Hub organisation, not a registry
    ("acme/server:1", ImageRef("docker.io", "acme/server", "1", None)),
])
def test_parse_image(ref: str, expected: ImageRef) -> None:
    assert parse_image(ref) == expected


@pytest.mark.parametrize(("image", "allowed", "ok"), [
    ("registry.example.com/a/b@x", ["registry.example.com"], True),
    ("ghcr.io/acme/vllm", ["ghcr.io/acme"], True),
    ("ghcr.io/acme/team/vllm", ["ghcr.io/acme/"], True),
    ("ghcr.io/acme-labs/vllm", ["ghcr.io/acme"], False),       # a prefix ends at a path boundary
    ("ghcr.io/acme", ["ghcr.io/acme"], True),
    ("1234.dkr.ecr.eu-west-1.amazonaws.com/tgi", ["*.dkr.ecr.*.amazonaws.com"], True),
    ("evil.com/1234.dkr.ecr.eu-west-1.amazonaws.com/tgi", ["*.dkr.ecr.*.amazonaws.com"], False),
    ("nginx", ["docker.io/library"], True),
    ("nginx", ["index.docker.io"], True),                      # Docker Hub's aliases are one registry
    ("vllm/vllm-openai", ["docker.io/library"], False),
    ("registry.example.com.evil.io/x", ["registry.example.com"], False),
])
def test_registry_allowed(image: str, allowed: list[str], ok: bool) -> None:
    assert registry_allowed(parse_image(image), allowed) is ok


def _pod(image: str, *, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "serving", "labels": labels or {"mlguard.io/model": "m"}},
            "spec": {"containers": [{"name": "server", "image": image}]}}


def _policyset(params: str = "{}"):
    return parse_policyset(HEAD + "spec:\n  policies:\n"
                           f"    image-digest: {{action: deny, params: {params}}}\n")


def test_default_params_accept_any_registry_but_want_a_digest() -> None:
    ps = _policyset()
    assert not evaluate([_pod(f"quay.io/x/y@{D}")], ps, point="ci").violations
    [v] = evaluate([_pod("quay.io/x/y:1")], ps, point="ci").violations
    assert v.path == "spec.containers[0].image"
    assert "pin it by digest: quay.io/x/y@sha256:<digest>" in v.message
    assert v.runbook == "https://github.com/mlguard/mlguard/blob/main/runbooks/admission-denied.md#image-digest"


def test_uppercase_or_short_digests_are_refused() -> None:
    ps = _policyset()
    for bad in ("sha256:" + "AB" * 32, "sha256:abc", "sha512:" + "ab" * 64):
        [v] = evaluate([_pod(f"quay.io/x/y@{bad}")], ps, point="ci").violations
        assert "not a sha256 digest of 64 lowercase hex digits" in v.message


def test_exempt_images_match_as_written_or_normalised() -> None:
    ps = _policyset('{exemptImages: ["docker.io/istio/proxyv2:*"], '
                    'allowedRegistries: [registry.example.com]}')
    assert not evaluate([_pod("istio/proxyv2:1.23.0")], ps, point="ci").violations
    assert evaluate([_pod("istio/pilot:1.23.0")], ps, point="ci").violations


def test_a_pod_without_the_model_label_is_out_of_scope_by_default() -> None:
    assert not evaluate([_pod("nginx", labels={"app": "web"})], _policyset(), point="ci").violations
    web = _pod("nginx", labels={"app": "web"})
    assert evaluate([web], _policyset("{appliesTo: all}"), point="ci").violations


def test_bad_params_are_refused_by_the_policyset() -> None:
    with pytest.raises(PolicySetError) as err:
        _policyset("{appliesTo: everything, allowedRegistry: [x]}")
    text = "\n".join(err.value.errors)
    assert "spec.policies.image-digest.params.appliesTo" in text
    assert "'allowedRegistry' was unexpected" in text
