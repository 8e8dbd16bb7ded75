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
    for i in range(23):  # every pod has its own labels: a new kind of subject each time
        assert _decide(admission, _pod("team-a", 12, {"n": str(i)}), policyset) == (False, ["deny"])
        sizes.append(len(admission._resolved[1]))
    assert max(sizes) == 5
    assert sizes[:6] == [1, 2, 3, 4, 5, 1]  # full: it starts over
