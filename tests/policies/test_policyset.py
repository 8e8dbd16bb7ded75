"""PolicySet loading: every error with its path and line; resolution of actions and params."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.model import Resource
from policies.policyset import CATALOG, PolicySetError, load_policyset, parse_policyset
from policies.selectors import Subject

HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"


def subject(ns: str = "team-a", env: str | None = None, labels: dict | None = None) -> Subject:
    return Subject(resource=Resource("apps/v1", "Deployment", ns, "d"), object_labels={},
                   namespace_labels=labels or {}, environment=env, request=None)


@pytest.mark.parametrize("name", sorted(p.name for p in CATALOG.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_catalog_policysets_are_valid(name: str) -> None:
    ps = load_policyset(CATALOG / name)
    assert ps.enabled_policies() and len(ps.digest) == 64


def test_every_error_is_reported_with_path_and_line() -> None:
    text = HEAD + """spec:
  defaultAction: deny
  policies:
    gpu-limits:
      action: deni
      params:
        maxPerContainer: many
    no-such-policy: {}
"""
    with pytest.raises(PolicySetError) as err:
        parse_policyset(text, source="bad.yaml")
    errors = err.value.errors
    assert any(e.startswith("spec.policies.gpu-limits.action (line 8):") for e in errors), errors
    text2 = HEAD + "spec:\n  policies:\n    gpu-limits:\n      params: {maxPerContainer: many, extra: 1}\n" \
        "    no-such-policy: {}\n"
    with pytest.raises(PolicySetError) as err2:
        parse_policyset(text2, source="bad2.yaml")
    joined = "\n".join(err2.value.errors)
    assert "spec.policies.gpu-limits.params.maxPerContainer (line 7): 'many' is not of type 'integer'" in joined
    assert "Additional properties are not allowed ('extra' was unexpected)" in joined
    assert "spec.policies.no-such-policy (line 8): unknown policy 'no-such-policy'" in joined
    assert "bad2.yaml" in str(err2.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("a: [b\n", "not valid YAML (line 2"),
    ("- 1\n- 2\n", "<root>: a PolicySet is a mapping"),
    (HEAD, "<root> (line 1): 'spec' is a required property"),
])
def test_unparseable_and_wrong_shapes(text: str, expected: str) -> None:
    with pytest.raises(PolicySetError, match=None) as err:
        parse_policyset(text)
    assert any(expected in e for e in err.value.errors), err.value.errors


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicySetError, match="cannot read"):
        load_policyset(tmp_path / "nope.yaml")


def test_action_resolution_environment_point_and_overrides() -> None:
    ps = parse_policyset(HEAD + """spec:
  defaultAction: audit
  environments:
    defaults: {prod: deny, dev: warn}
    namespaces: {prod: ["prod-*"]}
  policies:
    gpu-limits:
      params: {maxPerPod: 4}
      overrides:
        - match: {namespaces: [big-*]}
          params: {maxPerPod: 16}
    gpu-companion-resources:
      action: {ci: deny, admission: warn}
      exclude: {namespaces: [legacy]}
""")
    limits = ps.resolve("gpu-limits", subject=subject(env="prod"), point="ci")
    assert limits.action == "deny" and limits.params == {"maxPerContainer": 8, "maxPerPod": 4}
    assert ps.resolve("gpu-limits", subject=subject(env="dev"), point="ci").action == "warn"
    assert ps.resolve("gpu-limits", subject=subject(), point="ci").action == "audit"
    assert ps.resolve("gpu-limits", subject=subject(ns="big-x"), point="ci").params["maxPerPod"] == 16
    assert ps.resolve("gpu-companion-resources", subject=subject(), point="ci").action == "deny"
    assert ps.resolve("gpu-companion-resources", subject=subject(), point="admission").action == "warn"
    assert ps.resolve("gpu-companion-resources", subject=subject(ns="legacy"), point="ci").action == "off"
    assert ps.resolve("gpu-tolerations", subject=subject(), point="ci").action == "off"  # not listed
    assert ps.environment("prod-eu", None) == "prod"
    assert ps.environment("x", {"mlguard.io/environment": "staging"}) == "staging"


def test_kube_system_and_own_namespace_are_always_exempt() -> None:
    ps = parse_policyset(HEAD + "spec:\n  exemptions: {namespaces: []}\n  policies: {gpu-limits: {}}\n")
    assert ps.exempt_namespace("kube-system")
    assert ps.exempt_namespace("mlguard-system", own_namespace="mlguard-system")
    assert ps.exempt_namespace("team-a") is None


def test_inline_eval_keys_that_do_not_load_are_refused() -> None:
    text = HEAD + """spec:
  evalKeys:
    keys:
      - {keyId: abc, publicKey: "-----BEGIN PUBLIC KEY-----\\nnot a key\\n-----END PUBLIC KEY-----\\n"}
  policies: {gpu-limits: {}}
"""
    with pytest.raises(PolicySetError) as err:
        parse_policyset(text)
    assert any(e.startswith("spec.evalKeys.keys[0].publicKey") for e in err.value.errors), err.value.errors


def test_unquoted_off_is_the_action_off_not_a_boolean() -> None:
    ps = parse_policyset(HEAD + "spec:\n  environments: {defaults: {dev: off}}\n  policies:\n"
                         "    gpu-limits: {action: off}\n    gpu-tolerations: {action: {ci: deny, admission: off}}\n"
                         "    gpu-isolation: {}\n")
    assert ps.resolve("gpu-limits", subject=subject(), point="ci").action == "off"
    assert ps.resolve("gpu-tolerations", subject=subject(), point="admission").action == "off"
    assert ps.resolve("gpu-isolation", subject=subject(env="dev"), point="ci").action == "off"


def test_an_exemption_resting_on_labels_alone_is_refused_with_the_reason() -> None:
    """Issue 14: a label alone never exempts (a tenant can label its own pod). Every exclude entry, every override
    selected by object labels and every policy allowlist entry names its namespaces."""
    text = HEAD + """spec:
  exclude:
    - namespaceSelector: {matchLabels: {mlguard.io/ignore: "true"}}
  policies:
    gpu-isolation:
      exclude:
        - objectSelector: {matchLabels: {app.kubernetes.io/name: dcgm-exporter}}
        - {namespaces: [monitoring], objectSelector: {matchLabels: {app.kubernetes.io/name: dcgm-exporter}}}
        - {environments: [dev]}
    gpu-limits:
      overrides:
        - {match: {objectSelector: {matchLabels: {big: "yes"}}}, action: "off"}
        - {match: {namespaceSelector: {matchLabels: {tier: batch}}}, params: {maxPerPod: 4}}
    gpu-tolerations:
      params:
        systemAllowlist:
          - {labels: {app.kubernetes.io/name: prometheus-node-exporter}}
          - {namespaces: [monitoring], labels: {app.kubernetes.io/name: node-exporter}}
"""
    with pytest.raises(PolicySetError) as err:
        parse_policyset(text, source="labels.yaml")
    errors = err.value.errors
    why = "a label alone never exempts: a tenant can label its own pod"
    expected = ["spec.exclude[0] (line 6): an exclude entry rests on namespaceSelector alone",
                "spec.policies.gpu-isolation.exclude[0] (line 10): an exclude entry rests on objectSelector alone",
                "spec.policies.gpu-isolation.exclude[2] (line 12): an exclude entry rests on environments alone",
                "spec.policies.gpu-limits.overrides[0].match (line 15): an override selected by object labels rests "
                "on objectSelector alone",
                "spec.policies.gpu-tolerations.params.systemAllowlist[0] (line 20): an allowlist entry names no "
                "namespaces"]
    for start in expected:
        assert any(e.startswith(start) and why in e and "add namespaces:" in e for e in errors), (start, errors)
    assert len(errors) == len(expected), errors  # the namespaced entries and the namespace-label override pass


def test_a_label_only_allowlist_entry_exempts_nothing_even_unvalidated() -> None:
    """Defence in depth: gpu-tolerations itself ignores an allowlist entry that names no namespaces."""
    from policies.gpu import GpuConfig
    from policies.registry import all_policies
    from policies.workload import extract

    policy = all_policies()["gpu-tolerations"]
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "namespace": "team-a"},
          "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/name": "node-exporter"}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    workload = extract(ds, gpu=GpuConfig())
    labels = {"app.kubernetes.io/name": "node-exporter"}
    assert not policy._allowlisted(workload, labels, {"systemAllowlist": [{"labels": labels}]})
    assert policy._allowlisted(workload, labels, {"systemAllowlist": [{"namespaces": ["team-a"], "labels": labels}]})
