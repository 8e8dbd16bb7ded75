"""The validators used on the rendered output reject what they must (they are not toothless)."""

from __future__ import annotations

import copy

import pytest
from kustomize_testlib import CrdSchemas, Renders, one, validate_builtin, validate_custom


def test_builtin_validation_rejects_unknown_fields_and_wrong_types(renders: Renders) -> None:
    deploy = one(renders("kustomize/overlays/prod"), "Deployment", "mlguard-webhook")
    validate_builtin(deploy)
    typo = copy.deepcopy(deploy)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(AssertionError, match="securityContex"):
        validate_builtin(typo)
    wrong = copy.deepcopy(deploy)
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(AssertionError):
        validate_builtin(wrong)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(AssertionError, match="neither"):
        validate_builtin({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}})


def test_crd_validation_rejects_bad_custom_resources(renders: Renders, crd_schemas: CrdSchemas) -> None:
    objs = renders("kustomize/overlays/prod")
    cert = one(objs, "Certificate", "mlguard-webhook-tls")
    validate_custom(cert, crd_schemas)
    bad = copy.deepcopy(cert)
    bad["spec"]["dnsName"] = bad["spec"].pop("dnsNames")
    with pytest.raises(AssertionError, match="dnsName"):
        validate_custom(bad, crd_schemas)
    rule = one(objs, "PrometheusRule", "mlguard")
    validate_custom(rule, crd_schemas)
    bad_rule = copy.deepcopy(rule)
    bad_rule["spec"]["groups"][0]["partial_response_strategy"] = "sometimes"
    with pytest.raises(AssertionError):
        validate_custom(bad_rule, crd_schemas)
    wrong_version = copy.deepcopy(cert)
    wrong_version["apiVersion"] = "cert-manager.io/v1alpha9"
    with pytest.raises(AssertionError, match="no CRD version"):
        validate_custom(wrong_version, crd_schemas)


def test_flagger_canary_is_validated_against_flaggers_crd(renders: Renders, crd_schemas: CrdSchemas) -> None:
    """The example Canary against ../shared/schemas/crds/flagger/crd.yaml (Flagger's published CRDs)."""
    canary = one(renders("kustomize/examples/canary-rollout/flagger"), "Canary", "chat")
    validate_custom(canary, crd_schemas)
    bad_type = copy.deepcopy(canary)
    bad_type["spec"]["analysis"]["webhooks"][0]["type"] = "during"
    with pytest.raises(AssertionError, match="during"):
        validate_custom(bad_type, crd_schemas)
    bad_metadata = copy.deepcopy(canary)
    bad_metadata["spec"]["analysis"]["webhooks"][0]["metadata"] = {"n": 1}  # strings only
    with pytest.raises(AssertionError, match="metadata"):
        validate_custom(bad_metadata, crd_schemas)
    typo = copy.deepcopy(canary)
    typo["spec"]["analysis"]["treshold"] = 3
    with pytest.raises(AssertionError, match="treshold"):
        validate_custom(typo, crd_schemas)
    bad_provider = copy.deepcopy(canary)
    bad_provider["spec"]["provider"] = "gateway-api"
    with pytest.raises(AssertionError, match="provider"):
        validate_custom(bad_provider, crd_schemas)
