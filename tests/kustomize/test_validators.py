"""The validators used on the rendered output reject what they must (they are not toothless)."""

from __future__ import annotations

import copy

import pytest
from kustomize_testlib import CrdSchemas, Renders, check_flagger_canary, one, validate_builtin, validate_custom


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


def test_flagger_canary_structural_check() -> None:
    good = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "llm"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
            "service": {"port": 80},
            "analysis": {"interval": "1m", "threshold": 3, "stepWeight": 10, "maxWeight": 50,
                         "webhooks": [{"name": "drift", "type": "rollout", "timeout": "8s",
                                       "url": "http://mlguard-analysis.mlguard-system.svc/v1/flagger/input-drift",
                                       "metadata": {"store": "inference-samples"}}]},
        },
    }
    assert check_flagger_canary(good) == []
    bad = copy.deepcopy(good)
    bad["spec"]["analysis"]["webhooks"][0]["type"] = "during"
    bad["spec"]["analysis"]["iterations"] = 5
    bad["spec"]["targetRef"]["kind"] = "StatefulSet"
    bad["spec"]["analysis"]["webhooks"][0]["metadata"] = {"n": 1}
    errors = check_flagger_canary(bad)
    assert len(errors) == 4, errors
