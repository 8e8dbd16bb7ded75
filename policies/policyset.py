"""The PolicySet: load, validate (every error with its path and line), resolve per object."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from policies.gpu import GpuConfig
from policies.model import Action, EnforcementPoint
from policies.registry import all_policies
from policies.rules.ruleset import Rule, RuleLimits, compile_rules
from policies.selectors import Subject, matches
from policies.workload import WorkloadConfig

SCHEMA_PATH = Path(__file__).parent / "schema" / "policyset.schema.yaml"
CATALOG = Path(__file__).parent / "catalog"
ALWAYS_EXEMPT_NAMESPACES = ("kube-system",)
# Where the runbooks are published; `spec.runbookBaseURL` points elsewhere (an internal mirror).
DEFAULT_RUNBOOK_BASE_URL = "https://github.com/mlguard/mlguard/blob/main/runbooks/"
RUNBOOK_PREFIX = "runbooks/"
DEFAULT_ENVIRONMENT_LABEL = "mlguard.io/environment"
# The namespace opt-out label of mlguard before issue 14. It exempts nothing any more (whoever may label a
# namespace could set it): the PolicySet's spec.exemptions.namespaces is the one list of exempt namespaces.
RETIRED_IGNORE_LABEL = "mlguard.io/ignore"
EXEMPTIONS_RUNBOOK = "runbooks/admission-denied.md#namespace-exemptions"


class PolicySetError(ValueError):
    """An invalid PolicySet: every error, each with its path (and line where known)."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = list(errors)
        super().__init__(f"invalid PolicySet {source}:\n" + "\n".join(f"  - {e}" for e in self.errors))


@cache
def policyset_schema() -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load(SCHEMA_PATH.read_text())
    return schema


@dataclass(frozen=True)
class Resolved:
    """A policy's effective configuration for one object at one enforcement point."""

    action: Action
    params: Mapping[str, Any]
    only_new: bool


def _fmt_path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _line_of(node: yaml.Node | None, parts: Sequence[Any]) -> int | None:
    """The 1-based line of a path in a composed YAML document."""
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1 if node is not None else None


@dataclass
class PolicySet:
    """A validated PolicySet."""

    raw: Mapping[str, Any]
    source: str = "<memory>"
    digest: str = ""
    gpu: GpuConfig = field(default_factory=GpuConfig)
    workloads: WorkloadConfig = field(default_factory=WorkloadConfig)  # spec.workloadKinds and spec.serving
    rules: tuple[Rule, ...] = ()   # spec.rules, compiled

    @property
    def rule_limits(self) -> RuleLimits:
        return RuleLimits.from_spec(self.spec.get("ruleLimits"))

    @cached_property
    def selector_label_keys(self) -> tuple[frozenset[str], frozenset[str]] | None:
        """The label keys any objectSelector and any namespaceSelector of the set names (its match and exclude,
        every policy's and rule's match, exclude and overrides): a resolution depends on an object's and its
        namespace's labels through these keys alone. None when a selector is not of the usual shape (then every
        label counts)."""
        keys: tuple[set[str], set[str]] = (set(), set())

        def walk(node: Any) -> bool:
            if isinstance(node, list):
                return all(walk(item) for item in node)
            if not isinstance(node, Mapping):
                return True
            for field_name, into in (("objectSelector", keys[0]), ("namespaceSelector", keys[1])):
                if field_name in node and not _selector_keys(node[field_name], into):
                    return False
            return all(walk(v) for k, v in node.items() if k not in ("objectSelector", "namespaceSelector"))

        return (frozenset(keys[0]), frozenset(keys[1])) if walk(self.raw.get("spec")) else None

    @property
    def spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self.raw["spec"]
        return spec

    @property
    def name(self) -> str:
        return str((self.raw.get("metadata") or {}).get("name", Path(self.source).stem))

    @property
    def dry_run(self) -> bool:
        return bool(self.spec.get("dryRun", False))

    @property
    def mutations(self) -> Mapping[str, Any]:
        return self.spec.get("mutations") or {}

    @property
    def runbook_base_url(self) -> str:
        base = str(self.spec.get("runbookBaseURL") or DEFAULT_RUNBOOK_BASE_URL)
        return base if base.endswith("/") else base + "/"

    def runbook_url(self, reference: str) -> str:
        """A runbook reference (``runbooks/<file>.md#<section>``) as a full URL under `spec.runbookBaseURL`;
        anything else unchanged."""
        if reference.startswith(RUNBOOK_PREFIX):
            return self.runbook_base_url + reference[len(RUNBOOK_PREFIX):]
        return reference

    def rule_runbook_url(self, reference: str) -> str:
        """A rule's runbook: an http(s) URL as it is, any other path under `spec.runbookBaseURL`."""
        if reference.startswith(("http://", "https://")):
            return reference
        return self.runbook_base_url + reference.removeprefix(RUNBOOK_PREFIX).lstrip("/")

    @property
    def break_glass(self) -> Mapping[str, Any]:
        return self.spec.get("breakGlass") or {}

    def policy_config(self, policy_id: str) -> Mapping[str, Any] | None:
        return (self.spec.get("policies") or {}).get(policy_id)

    def enabled_policies(self) -> list[str]:
        return list((self.spec.get("policies") or {}).keys())

    def exempt_namespace(self, namespace: str, *, own_namespace: str | None = None) -> str | None:
        """Why a namespace is exempt from every policy, or None."""
        if namespace in ALWAYS_EXEMPT_NAMESPACES or (own_namespace and namespace == own_namespace):
            return f"namespace {namespace} is always exempt"
        exempt = (self.spec.get("exemptions") or {}).get("namespaces") or []
        if any(fnmatch.fnmatchcase(namespace, p) for p in exempt):
            return f"namespace {namespace} is exempt by the PolicySet"
        return None

    def retired_opt_out(self, namespace: str, namespace_labels: Mapping[str, str] | None) -> str | None:
        """A warning for a namespace that still carries the retired opt-out label mlguard.io/ignore=true (and is
        not exempt by the PolicySet): it is checked like any other, and the warning says where an exemption
        lives now."""
        if not namespace_labels or str(namespace_labels.get(RETIRED_IGNORE_LABEL, "")).lower() != "true":
            return None
        # short: the API server forwards a warning of at most 256 characters
        return (f"namespace {namespace} carries {RETIRED_IGNORE_LABEL}=true, which no longer exempts it; list it "
                f"in the PolicySet's spec.exemptions.namespaces ({self.runbook_url(EXEMPTIONS_RUNBOOK)})")

    def selects(self, subject: Subject) -> bool:
        return matches(self.spec.get("match"), self.spec.get("exclude"), subject)

    def environment(self, namespace: str, namespace_labels: Mapping[str, str] | None) -> str | None:
        envs = self.spec.get("environments") or {}
        label = envs.get("label", DEFAULT_ENVIRONMENT_LABEL)
        if namespace_labels and label in namespace_labels:
            return namespace_labels[label]
        for env, patterns in (envs.get("namespaces") or {}).items():
            if any(fnmatch.fnmatchcase(namespace, p) for p in patterns):
                return str(env)
        return None

    def resolve(self, policy_id: str, *, subject: Subject, point: EnforcementPoint) -> Resolved:
        """Action and params of a policy for this subject. Precedence, each level over the one before:

        1. `spec.defaultAction` (deny), for a policy that sets no action;
        2. the policy's own `action`;
        3. `spec.environments.defaults[<environment>]` for objects in a namespace of that environment
           (a policy that is `off` stays off);
        4. the policy's `overrides`, in order: every matching one applies, the last wins;
        5. the policy's `match`/`exclude`: an object they leave out is not checked (`off`).

        An action given per enforcement point (`{ci: ..., admission: ..., audit: ...}`) without the
        point asked for is `deny`; at `audit` it is the `admission` action when that is given (the audit
        reports what admission would deny or warn about).
        """
        config = self.policy_config(policy_id)
        if config is None:
            return Resolved("off", {}, False)
        return self._resolve(config, all_policies()[policy_id].defaults, subject=subject, point=point)

    def resolve_rule(self, rule: Rule, *, subject: Subject, point: EnforcementPoint) -> Resolved:
        """A rule's action and params, in the same precedence as a policy's (see `resolve`)."""
        return self._resolve(rule.config, {}, subject=subject, point=point)

    def _resolve(self, config: Mapping[str, Any], defaults: Mapping[str, Any], *, subject: Subject,
                 point: EnforcementPoint) -> Resolved:
        envs = self.spec.get("environments") or {}
        # each level's action is read at this enforcement point first, so a policy off at a point (gpu-idle at
        # ci and admission) stays off there whatever its environment's default
        action = _at_point(config.get("action", self.spec.get("defaultAction", "deny")), point)
        if subject.environment is not None and action != "off":
            action = _at_point((envs.get("defaults") or {}).get(subject.environment, action), point)
        params = {**defaults, **(config.get("params") or {})}  # read-only: policies never mutate params
        for override in config.get("overrides") or []:
            if matches(override["match"], None, subject):
                if "action" in override:
                    action = _at_point(override["action"], point)
                params.update(override.get("params") or {})
        if not matches(config.get("match"), config.get("exclude"), subject):
            action = "off"
        return Resolved(action, params, bool(config.get("onlyNewViolations", False)))


def _selector_keys(selector: Any, into: set[str]) -> bool:
    """Add the keys a label selector reads to ``into``; False when it is not a selector of the usual shape."""
    if not isinstance(selector, Mapping):
        return False
    labels, expressions = selector.get("matchLabels") or {}, selector.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(expressions, list):
        return False
    into.update(str(k) for k in labels)
    for expression in expressions:
        if not isinstance(expression, Mapping) or not isinstance(expression.get("key"), str):
            return False
        into.add(expression["key"])
    return True


def _at_point(action: Any, point: EnforcementPoint) -> Any:
    """An action given per enforcement point, at ``point``: a point not named denies, except the audit, which
    reports what admission would do unless the set says otherwise for the audit."""
    if isinstance(action, Mapping):
        return action.get(point, action.get("admission", "deny") if point == "audit" else "deny")
    return action


def _yaml11_off(data: Any) -> None:
    """`action: off` unquoted is the boolean False in YAML 1.1 (PyYAML): read it as the action "off"."""
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return

    def fix(holder: Any, key: str) -> None:
        if not isinstance(holder, dict):
            return
        if holder.get(key) is False:
            holder[key] = "off"
        elif isinstance(holder.get(key), dict):  # per enforcement point, or per environment
            for point, value in holder[key].items():
                if value is False:
                    holder[key][point] = "off"

    fix(spec, "defaultAction")
    fix(spec.get("environments"), "defaults")
    policies = spec.get("policies")
    rules = spec.get("rules")
    configs = list(policies.values()) if isinstance(policies, dict) else []
    for config in configs + (rules if isinstance(rules, list) else []):
        fix(config, "action")
        overrides = config.get("overrides") if isinstance(config, dict) else None
        for override in overrides if isinstance(overrides, list) else []:
            fix(override, "action")


# Criteria an object or a namespace owner controls: the object's own labels, the namespace's labels (and the
# environment, read from a namespace label). An exemption resting on them alone is one a tenant grants itself.
LABEL_CRITERIA = ("objectSelector", "namespaceSelector", "environments")
LABEL_ONLY_WHY = ("a label alone never exempts: a tenant can label its own pod (and whoever may label a namespace "
                  "its namespace) the same way")


def _label_only(block: Any, criteria: Sequence[str]) -> list[str]:
    """The label criteria a match block rests on without naming namespaces."""
    if not isinstance(block, Mapping) or block.get("namespaces"):
        return []
    return [c for c in criteria if c in block]


def label_only_exemptions(spec: Mapping[str, Any]) -> list[tuple[list[Any], str]]:
    """Every exemption in a (schema-valid) PolicySet spec that rests on labels alone, with its path.

    Exemptions are the `exclude` blocks (of the spec, each policy and each rule), overrides selected by object labels
    (they may turn a policy off or loosen it), and the allowlists policies declare (`Policy.allowlist_params`).
    Each must name the namespaces it applies in; selectors, service accounts and labels narrow it within them.
    """
    found: list[tuple[list[Any], str]] = []

    def blocks(path: list[Any], value: Any, criteria: Sequence[str], what: str) -> None:
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, block in items:
            used = _label_only(block, criteria)
            if used:
                where = path if i is None else path + [i]
                found.append((where, f"{what} rests on {' and '.join(used)} alone: {LABEL_ONLY_WHY}; add namespaces: "
                                     "[...] naming the namespaces the exempted workloads run in"))

    blocks(["spec", "exclude"], spec.get("exclude"), LABEL_CRITERIA, "an exclude entry")
    rules = spec.get("rules")
    for r, rule in enumerate(rules if isinstance(rules, list) else []):  # a team's CEL rules exempt the same way
        if isinstance(rule, Mapping):
            blocks(["spec", "rules", r, "exclude"], rule.get("exclude"), LABEL_CRITERIA, "an exclude entry")
            for i, override in enumerate(rule.get("overrides") or []):
                if isinstance(override, Mapping):
                    blocks(["spec", "rules", r, "overrides", i, "match"], override.get("match"), ("objectSelector",),
                           "an override selected by object labels")
    known = all_policies()
    for pid, config in (spec.get("policies") or {}).items():
        if not isinstance(config, Mapping):
            continue
        base = ["spec", "policies", pid]
        blocks(base + ["exclude"], config.get("exclude"), LABEL_CRITERIA, "an exclude entry")
        for i, override in enumerate(config.get("overrides") or []):
            blocks(base + ["overrides", i, "match"], override.get("match"), ("objectSelector",),
                   "an override selected by object labels")
        policy = known.get(pid)
        if policy is None:
            continue
        param_blocks = [(base + ["params"], config.get("params") or {})]
        param_blocks += [(base + ["overrides", i, "params"], o.get("params") or {})
                         for i, o in enumerate(config.get("overrides") or [])]
        for path, params in param_blocks:
            for name in policy.allowlist_params:
                entries = params.get(name)
                for j, entry in enumerate(entries if isinstance(entries, list) else []):
                    if isinstance(entry, Mapping) and not entry.get("namespaces"):
                        found.append((path + [name, j],
                                      f"an allowlist entry names no namespaces: {LABEL_ONLY_WHY}; add namespaces: "
                                      "[...] naming the namespaces the allowlisted workloads run in"))
    return found


def _validate(data: Any, source: str, root: yaml.Node | None) -> tuple[list[str], list[Rule]]:
    def where(parts: Sequence[Any]) -> str:
        line = _line_of(root, parts)
        return f"{_fmt_path(parts)} (line {line})" if line else _fmt_path(parts)

    if not isinstance(data, Mapping):
        return ["<root>: a PolicySet is a mapping with apiVersion, kind and spec"], []
    errors = []
    validator = jsonschema.Draft202012Validator(policyset_schema())
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        detail = err.message
        if err.context:  # oneOf: say what each branch wanted, briefly
            detail = "; ".join(sorted({c.message for c in err.context}))
        errors.append(f"{where(list(err.absolute_path))}: {detail}")
    if errors:
        return errors, []
    inline_keys = (data["spec"].get("evalKeys") or {}).get("keys")
    if inline_keys:  # key files are read where they are mounted; inline keys must be right at load
        from policies.attestation import keyring_from_spec

        errors.extend(keyring_from_spec({"keys": inline_keys}).problems)
    errors.extend(f"{where(path)}: {message}" for path, message in label_only_exemptions(data["spec"]))
    declared = data["spec"].get("policyCount")
    if declared is not None and declared != len(data["spec"].get("policies") or {}):
        errors.append(f"{where(['spec', 'policyCount'])}: declares {declared} policies but spec.policies has "
                      f"{len(data['spec'].get('policies') or {})} (a partly written or edited file?)")
    rules_spec = data["spec"].get("rules") or []
    declared_rules = data["spec"].get("ruleCount")
    if declared_rules is not None and declared_rules != len(rules_spec):
        errors.append(f"{where(['spec', 'ruleCount'])}: declares {declared_rules} rules but spec.rules has "
                      f"{len(rules_spec)} (a partly written or edited file?)")
    known = all_policies()
    rules, rule_errors = compile_rules(rules_spec, where=where, builtin_ids=list(known),
                                       limits=RuleLimits.from_spec(data["spec"].get("ruleLimits")))
    errors.extend(rule_errors)
    for pid, config in (data["spec"].get("policies") or {}).items():
        base = ["spec", "policies", pid]
        if pid not in known:
            errors.append(f"{where(base)}: unknown policy {pid!r} (known: {', '.join(sorted(known))})")
            continue
        schema = known[pid].params_schema
        blocks = [(base + ["params"], config.get("params") or {})]
        blocks += [(base + ["overrides", i, "params"], o.get("params") or {})
                   for i, o in enumerate(config.get("overrides") or [])]
        for path, params in blocks:
            # overrides hold partial params: required keys are checked on the merged result only
            partial = {k: v for k, v in schema.items() if k != "required"}
            checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
            for err in jsonschema.Draft202012Validator(partial, format_checker=checker).iter_errors(params):
                errors.append(f"{where(path + list(err.absolute_path))}: {err.message}")
    return errors, rules


def parse_policyset(text: str, *, source: str = "<memory>") -> PolicySet:
    """Parse and validate a PolicySet document; raise PolicySetError with every problem."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise PolicySetError(source, [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from exc
    except yaml.composer.ComposerError as exc:  # pragma: no cover - several documents
        raise PolicySetError(source, [f"a PolicySet is one YAML document: {exc}"]) from exc
    _yaml11_off(data)
    errors, rules = _validate(data, source, root)
    if errors:
        raise PolicySetError(source, errors)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return PolicySet(raw=data, source=source, digest=digest, gpu=GpuConfig.from_spec(data["spec"].get("gpu")),
                     workloads=WorkloadConfig.from_spec(data["spec"]), rules=tuple(rules))


def load_policyset(path: str | Path) -> PolicySet:
    """Read a PolicySet file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicySetError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_policyset(text, source=str(p))


def default_policyset_path() -> Path:
    return CATALOG / "baseline.yaml"
