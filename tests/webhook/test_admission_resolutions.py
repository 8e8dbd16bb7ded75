"""The webhook keeps each policy's resolution (action, params) per kind of subject across requests: what it
keeps must never decide a request of another subject, another requester or another PolicySet, and it is bounded."""

from __future__ import annotations

from webhook_testlib import container, pod, pod_spec, review

from policies.context import ManifestFacts
from policies.policyset import parse_policyset
from webhook import admission as admission_module
from webhook.admission import Admission

POLICYSET = """\
apiVersion: mlguard.io/v1alpha1
kind: PolicySet
metadata: {name: resolutions}
spec:
  policies:
    gpu-limits:
      action: deny
      params: {maxPerContainer: 8}
      overrides:
        - match: {namespaces: [lab-*]}
          action: warn
          params: {maxPerContainer: 16}
        - match: {users: [ci-bot]}
          action: warn
        - match: {namespaces: [team-a, lab-*], objectSelector: {matchLabels: {tier: critical}}}
          action: deny
          params: {maxPerContainer: 2}
"""


def _decide(admission: Admission, obj: dict, policyset, *, user: str = "alice") -> tuple[bool, list[str]]:
    req = review(obj, user=user)["request"]
    outcome = admission.validate(req, policyset)
    return outcome.decision.allowed, sorted({v.action for v in outcome.violations if v.policy == "gpu-limits"})


def _pod(namespace: str, gpus: int, labels: dict[str, str] | None = None) -> dict:
    return pod(namespace=namespace, spec=pod_spec(container(gpus=gpus)),
               labels={"team": "search", "cost-center": "cc-1", **(labels or {})})


def test_each_subject_gets_its_own_resolution_in_any_order() -> None:
    policyset = parse_policyset(POLICYSET)
    admission = Admission(facts=ManifestFacts([]))
    cases = [  # (namespace, gpus, labels, user) -> (allowed, gpu-limits actions)
        (("team-a", 12, None, "alice"), (False, ["deny"])),
        (("lab-1", 12, None, "alice"), (True, ["warn"])),        # the namespace override: warn, 16 allowed
        (("lab-1", 4, None, "alice"), (True, [])),
        (("team-a", 12, None, "ci-bot"), (True, ["warn"])),       # the requester override
        (("team-a", 4, {"tier": "critical"}, "alice"), (False, ["deny"])),  # the label override: at most 2
        (("lab-1", 4, {"tier": "critical"}, "alice"), (False, ["deny"])),
        (("team-a", 4, None, "alice"), (True, [])),
    ]
    for order in (cases, list(reversed(cases)), cases + cases):
        for (namespace, gpus, labels, user), expected in order:
            assert _decide(admission, _pod(namespace, gpus, labels), policyset, user=user) == expected, (
                namespace, gpus, labels, user)


def test_a_new_policyset_is_resolved_afresh() -> None:
    admission = Admission(facts=ManifestFacts([]))
    strict = parse_policyset(POLICYSET)
    assert _decide(admission, _pod("team-a", 12), strict) == (False, ["deny"])
    lenient = parse_policyset(POLICYSET.replace("action: deny\n      params: {maxPerContainer: 8}",
                                                "action: warn\n      params: {maxPerContainer: 8}"))
    assert _decide(admission, _pod("team-a", 12), lenient) == (True, ["warn"])
    assert _decide(admission, _pod("team-a", 12), strict) == (False, ["deny"])


def test_the_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(admission_module, "RESOLVED_SUBJECTS", 5)
    policyset = parse_policyset(POLICYSET)
    admission = Admission(facts=ManifestFacts([]))
    sizes = []
    for i in range(23):  # every pod has its own value of a label an override selects on: a new kind of subject
        assert _decide(admission, _pod("team-a", 12, {"tier": str(i)}), policyset) == (False, ["deny"])
        sizes.append(len(admission._resolved[1]))
    assert max(sizes) == 5
    assert sizes[:6] == [1, 2, 3, 4, 5, 1]  # full: it starts over


def test_labels_no_selector_names_do_not_split_subjects() -> None:
    policyset = parse_policyset(POLICYSET)
    assert policyset.selector_label_keys == (frozenset({"tier"}), frozenset())
    admission = Admission(facts=ManifestFacts([]))
    for i in range(50):  # every workload has its own app label: one kind of subject all the same
        assert _decide(admission, _pod("team-a", 12, {"app": f"w{i}"}), policyset) == (False, ["deny"])
        assert _decide(admission, _pod("team-a", 4, {"app": f"w{i}", "tier": "critical"}), policyset) == (
            False, ["deny"])
    assert len(admission._resolved[1]) == 2


def test_selector_label_keys_come_from_every_selector_of_the_set() -> None:
    policyset = parse_policyset(POLICYSET.replace("  policies:\n", """\
  match:
    - {namespaceSelector: {matchExpressions: [{key: tenant, operator: Exists}]}}
  policies:
    cost-labels:
      action: warn
      match: {objectSelector: {matchExpressions: [{key: billing, operator: In, values: [a]}]}}
      overrides:
        - {match: {namespaceSelector: {matchLabels: {tier: gold}}}, action: deny}
""", 1))
    assert policyset.selector_label_keys == (frozenset({"tier", "billing"}), frozenset({"tenant", "tier"}))


def test_namespace_labels_a_selector_names_split_subjects() -> None:
    """The namespace's labels change (the cache sees a relabel): the next request resolves under the new ones."""
    policyset = parse_policyset(POLICYSET.replace("      overrides:\n", """\
      overrides:
        - match: {namespaces: [team-*], namespaceSelector: {matchLabels: {tier: gold}}}
          action: warn
""", 1))
    labels: dict[str, dict[str, str]] = {"team-a": {"owner": "x"}}

    class Relabelled(ManifestFacts):
        def namespace_labels(self, namespace: str) -> dict[str, str] | None:
            return labels.get(namespace)

    admission = Admission(facts=Relabelled([]))
    for _ in range(2):
        labels["team-a"] = {"owner": "x"}
        assert _decide(admission, _pod("team-a", 12), policyset) == (False, ["deny"])
        labels["team-a"] = {"owner": "y", "tier": "gold"}
        assert _decide(admission, _pod("team-a", 12), policyset) == (True, ["warn"])
        labels["team-a"] = {"owner": "z", "tier": "gold"}  # a label no selector names: the same resolution
        assert _decide(admission, _pod("team-a", 12), policyset) == (True, ["warn"])
    assert len(admission._resolved[1]) == 2
