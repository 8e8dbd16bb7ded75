"""The order of precedence of a policy's action, one test per level (policies/policyset.py `resolve`,
documented in the PolicySet schema and the README):

1. spec.defaultAction, for a policy that sets no action;
2. the policy's own action;
3. spec.environments.defaults[<environment>] (a policy that is off stays off);
4. the policy's overrides, in order, the last matching one winning;
5. the policy's match/exclude (an object left out is not checked).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from policies.model import Resource
from policies.policyset import parse_policyset
from policies.selectors import Subject

ROOT = Path(__file__).resolve().parents[2]
HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"
POLICYSET = parse_policyset(HEAD + """spec:
  defaultAction: audit
  environments:
    defaults: {dev: warn, prod: deny}
  policies:
    gpu-limits: {}                      # no action: defaultAction, then the environment
    gpu-tolerations: {action: deny}     # its own action, then the environment
    gpu-node-selection: {action: "off"}
    gpu-companion-resources:
      action: deny
      overrides:
        - {match: {namespaces: [team-*]}, action: audit}
        - {match: {groups: [platform-oncall]}, action: warn}
    serving-probes:
      action: deny
      exclude: {namespaces: [legacy]}
    gpu-idle:
      action: {ci: "off", admission: "off", audit: warn}
    image-digest:
      action: {ci: warn, admission: deny}
""")


def action(policy: str, *, env: str | None = None, ns: str = "apps", groups: tuple[str, ...] = (),
           point: str = "admission") -> str:
    from policies.context import RequestInfo

    subject = Subject(resource=Resource("apps/v1", "Deployment", ns, "d"), object_labels={}, namespace_labels={},
                      environment=env, request=RequestInfo(user="u", groups=groups))
    return POLICYSET.resolve(policy, subject=subject, point=point).action  # type: ignore[arg-type]


def test_level_1_default_action_for_a_policy_without_one() -> None:
    assert action("gpu-limits") == "audit"


def test_level_2_the_policys_own_action_over_the_default() -> None:
    assert action("gpu-tolerations") == "deny"


def test_level_3_the_environment_default_over_the_policys_action() -> None:
    assert action("gpu-tolerations", env="dev") == "warn"
    assert action("gpu-limits", env="prod") == "deny"
    assert action("gpu-tolerations", env="staging") == "deny"    # no default for staging: the policy's own
    assert action("gpu-node-selection", env="prod") == "off"     # off stays off
    # per enforcement point: a point that is off stays off, the others take the environment's default
    for env, at_audit in ((None, "warn"), ("prod", "deny"), ("dev", "warn")):
        assert [action("gpu-idle", env=env, point=p) for p in ("ci", "admission", "audit")] == ["off", "off", at_audit]
    assert [action("image-digest", env="dev", point=p) for p in ("ci", "admission", "audit")] == ["warn"] * 3
    assert [action("image-digest", env="prod", point=p) for p in ("ci", "admission", "audit")] == ["deny"] * 3
    assert [action("image-digest", point=p) for p in ("ci", "admission", "audit")] == ["warn", "deny", "deny"]


def test_level_4_overrides_over_the_environment_default_the_last_one_winning() -> None:
    assert action("gpu-companion-resources", env="prod") == "deny"
    assert action("gpu-companion-resources", env="prod", ns="team-a") == "audit"
    assert action("gpu-companion-resources", env="dev", ns="team-a", groups=("platform-oncall",)) == "warn"


def test_level_5_match_and_exclude_over_everything() -> None:
    assert action("serving-probes", env="prod", ns="legacy") == "off"
    assert action("serving-probes", env="prod") == "deny"


def test_strict_catalog_only_warns_in_a_dev_namespace(tmp_path: Path) -> None:
    """The catalog's `dev: warn` takes effect: a dev namespace gets warnings, not denials."""
    bad = ROOT / "policies/library/gpu_limits/tests/denied.yaml"
    for env, code, word in (("dev", 0, "WARN"), ("prod", 1, "DENY")):
        labels = tmp_path / f"{env}.yaml"
        labels.write_text(f"team-a: {{mlguard.io/environment: {env}}}\n")
        proc = subprocess.run([sys.executable, "-m", "policies.cli", "check", "--policyset",
                               str(ROOT / "policies/catalog/strict.yaml"), "--namespace-labels", str(labels),
                               str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert f"{word}  gpu-limits  Pod/team-a/requests-only" in proc.stdout
        if env == "dev":
            assert "DENY" not in proc.stdout
