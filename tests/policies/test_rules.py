"""spec.rules: compiled at load (errors with rule id, path, line and position), evaluated by the engine in
every scope with the extractor's facts, resolved like policies, failing closed."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.context import ManifestFacts, RequestInfo
from policies.engine import evaluate, evaluate_object
from policies.policyset import PolicySetError, parse_policyset
from policies.rules.evaluate import Budget, RuleInput, evaluate_rule
from policies.workload import extract

HEAD = "apiVersion: mlguard.io/v1alpha1\nkind: PolicySet\nmetadata: {name: t}\n"
EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "catalog" / "examples"


def policyset(rules: list[dict[str, Any]], **spec: Any) -> Any:
    doc = {"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": "t"},
           "spec": {"policies": {}, "defaultAction": "deny", "rules": rules, **spec}}
    return parse_policyset(yaml.safe_dump(doc, sort_keys=False), source="t.yaml")


def rule(rule_id: str = "r", **fields: Any) -> dict[str, Any]:
    return {"id": rule_id, "description": "d", "runbook": "https://runbooks.example.com/r.md",
            "validations": [{"expression": "true"}], **fields}


def deployment(containers: list[dict[str, Any]], *, ns: str = "team-a", init: list[dict[str, Any]] | None = None,
               replicas: int = 2, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": ns},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": labels or {}}, "spec": spec}}}


def gpu(name: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/x:1", "resources": {"limits": {"nvidia.com/gpu": n}}, **extra}


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicySetError) as err:
        parse_policyset(HEAD + textwrap.dedent(text), source="team.yaml")
    return err.value.errors


# ---- compile --------------------------------------------------------------------------------------------

def test_a_broken_rule_refuses_the_policyset_with_rule_id_path_line_and_position() -> None:
    errors = errors_of("""\
        spec:
          policies: {}
          rules:
            - id: max-gpus
              description: d
              runbook: runbooks/team-rules.md#team-max-gpus
              scope: container
              validations:
                - expression: |
                    container.name != "" &&
                      contaner.image.startsWith("vllm/")
                - expression: "gpus + 1"
                - expression: "object.spec.replicas >"
        """)
    assert len(errors) == 3, errors
    unknown, not_bool, syntax = errors
    assert unknown.startswith("spec.rules[0].validations[0].expression (line 12): rule max-gpus: "
                              "undeclared reference to 'contaner.image' at line 2, column")
    assert "near `  contaner.image.startsWith(\"vllm/\")`" in unknown
    assert not_bool.startswith("spec.rules[0].validations[1].expression (line 15): rule max-gpus: "
                               "the expression evaluates to int, not bool")
    assert syntax.startswith("spec.rules[0].validations[2].expression (line 16): rule max-gpus: Syntax error")
    assert "column 23 of the expression" in syntax


@pytest.mark.parametrize(("fields", "expected"), [
    ({"validations": [{"expression": "template.hostNetwork != true"}]},
     "rule r: undeclared reference to 'template.hostNetwork' at line 1"),  # object scope: no template
    ({"scope": "podTemplate", "validations": [{"expression": "container.name != ''"}]},
     "undeclared reference to 'container"),
    ({"validations": [{"expression": "true", "messageExpression": "1 + 2"}]}, "evaluates to int, not string"),
    ({"variables": [{"name": "a", "expression": "variables.b > 1"}, {"name": "b", "expression": "2"}]},
     "undeclared reference to 'variables.b' at line 1, column 1 of the expression (variables defined before it: "
     "none)"),
    ({"validations": [{"expression": "variables.typo"}]}, "undeclared reference to 'variables.typo'"),
    ({"validations": [{"expression": "[[[1]]].all(a, a.all(b, b.all(c, c.all(d, d > 0))))"}]},
     "comprehensions (all, exists, map, filter ...) nest 4 deep, over the budget of 3"),
    ({"validations": [{"expression": "true && " * 700 + "true"}]}, "characters long, over the budget of 5000"),
    ({"id": "gpu-limits"}, "rule gpu-limits: the id is a built-in policy's"),
])
def test_compile_errors(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(PolicySetError) as err:
        policyset([rule(**fields)])
    assert any(expected in e for e in err.value.errors), err.value.errors


def test_duplicate_ids_and_a_wrong_rule_count_are_refused() -> None:
    with pytest.raises(PolicySetError) as err:
        policyset([rule("a"), rule("a")], ruleCount=3)
    joined = "\n".join(err.value.errors)
    assert "spec.rules[1].id (line" in joined and "the id is used twice (also spec.rules[0])" in joined
    assert "spec.ruleCount (line" in joined and "declares 3 rules but spec.rules has 2" in joined


def test_schema_errors_in_a_rule_have_paths() -> None:
    errors = errors_of("""\
        spec:
          policies: {}
          rules:
            - {id: x, description: d, runbook: r.md, scope: pod, validations: []}
        """)
    joined = "\n".join(errors)
    assert "spec.rules[0].scope (line 7)" in joined and "spec.rules[0].validations (line 7)" in joined


# ---- evaluate -------------------------------------------------------------------------------------------

def test_scopes_findings_paths_and_the_gpu_facts() -> None:
    ps = policyset([
        rule("obj", validations=[{"expression": "gpus <= 4", "messageExpression": "'workload needs ' + string(gpus)"}]),
        rule("tpl", scope="podTemplate", validations=[{"expression": "gpus <= 2", "path": "containers",
                                                       "messageExpression": "'pod holds ' + string(gpus)"}]),
        rule("ctr", scope="container", validations=[{"expression": "gpus < 1 || container.name == 'big'",
                                                     "path": "resources.limits",
                                                     "messageExpression": "container.name + ' ' + string(gpus) + "
                                                                          "' ' + gpuResources.join(',')"}]),
    ])
    obj = deployment([gpu("a", 1), gpu("big", 2)], init=[gpu("side", 1, restartPolicy="Always")], replicas=2)
    got = {(v.policy, v.path, v.message) for v in evaluate([obj], ps, point="ci").violations}
    assert got == {
        ("obj", "", "workload needs 8"),  # 2 replicas x (1 + 2 + 1 sidecar)
        ("tpl", "spec.template.spec.containers", "pod holds 4"),
        ("ctr", "spec.template.spec.containers[0].resources.limits", "a 1 nvidia.com/gpu"),
        ("ctr", "spec.template.spec.initContainers[0].resources.limits", "side 1 nvidia.com/gpu"),
    }


def test_container_scope_visits_init_sidecar_and_ephemeral_containers() -> None:
    ps = policyset([rule("names", scope="container", validations=[
        {"expression": "false", "messageExpression": "container.name"}])])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
           "spec": {"initContainers": [{"name": "init"}, {"name": "side", "restartPolicy": "Always"}],
                    "containers": [{"name": "app"}], "ephemeralContainers": [{"name": "debug"}]}}
    report = evaluate([pod], ps, point="ci")
    assert sorted((v.path, v.message) for v in report.violations) == [
        ("spec.containers[0]", "app"), ("spec.ephemeralContainers[0]", "debug"),
        ("spec.initContainers[0]", "init"), ("spec.initContainers[1]", "side")]


def test_request_namespace_object_environment_and_model_variables() -> None:
    ps = policyset([rule("ctx", validations=[{
        "expression": "false",
        "messageExpression": "request.operation + '/' + request.userInfo.username + '/' + "
                             "request.userInfo.groups.join(',') + '/' + request.namespace + '/' + "
                             "namespaceObject.metadata.labels.team + '/' + environment + '/' + model.name + ':' + "
                             "model.version + '/' + string(request.dryRun)"}])],
        environments={"label": "mlguard.io/environment"})
    obj = deployment([gpu("a", 1)], ns="team-a",
                     labels={"mlguard.io/model": "llama", "mlguard.io/model-version": "3.1"})
    facts = ManifestFacts([], extra_labels={"team-a": {"team": "blue", "mlguard.io/environment": "prod"}})
    info = RequestInfo(operation="UPDATE", user="alice", groups=("ml", "dev"), dry_run=True)
    [v] = evaluate_object(obj, ps, point="admission", facts=facts, request=info).violations
    assert v.message == "UPDATE/alice/ml,dev/team-a/blue/prod/llama:3.1/true"


def test_actions_follow_the_same_precedence_as_policies() -> None:
    ps = policyset([rule("r", action="warn", validations=[{"expression": "false", "message": "m"}],
                         overrides=[{"match": {"namespaces": ["team-b"]}, "action": "audit", "params": {"x": 1}}]),
                    rule("off", action={"ci": "off", "admission": "deny"},
                         validations=[{"expression": "false", "message": "m"}])],
                   environments={"label": "env", "defaults": {"prod": "deny"}})
    def actions(ns: str, labels: dict[str, str], point: str = "ci") -> dict[str, str]:
        facts = ManifestFacts([], extra_labels={ns: labels})
        return {v.policy: v.action for v in evaluate_object(deployment([gpu("a", 1)], ns=ns), ps, point=point,
                                                              facts=facts).violations}
    assert actions("team-a", {}) == {"r": "warn"}
    assert actions("team-a", {"env": "prod"})["r"] == "deny"
    assert actions("team-b", {"env": "prod"})["r"] == "audit"  # the override wins over the environment
    assert actions("team-c", {}, point="admission") == {"r": "warn", "off": "deny"}
    assert actions("team-c", {}, point="ci") == {"r": "warn"}


def test_params_and_overrides_reach_the_expression() -> None:
    ps = policyset([rule("max", scope="podTemplate", params={"max": 1},
                         overrides=[{"match": {"namespaces": ["big-*"]}, "params": {"max": 8}}],
                         validations=[{"expression": "gpus <= params.max", "message": "too many"}])])
    assert [v.policy for v in evaluate([deployment([gpu("a", 4)], ns="team-a")], ps, point="ci").violations] == ["max"]
    assert evaluate([deployment([gpu("a", 4)], ns="big-1")], ps, point="ci").violations == []


def test_failures_deny_whatever_the_action_and_name_the_rule() -> None:
    ps = policyset([
        rule("missing-field", action="audit", validations=[{"expression": "object.spec.nope > 1"}]),
        rule("not-bool", action="warn", validations=[{"expression": "object.spec.replicas == 2 ? "
                                                                    "object.kind : true"}]),
        rule("bad-var", action="warn", variables=[{"name": "x", "expression": "object.spec.nope"},
                                                   {"name": "y", "expression": "1"}],
             validations=[{"expression": "variables.y == 1"}, {"expression": "variables.x == 1"}]),
    ])
    report = evaluate([deployment([gpu("a", 1)])], ps, point="ci")
    by = {v.policy: v for v in report.violations}
    assert {v.action for v in report.violations} == {"deny"} and len(report.violations) == 3
    missing = by["missing-field"].message
    assert missing.startswith("rule missing-field failed: ") and "nope" in missing
    assert "`object.spec.replicas == 2 ? object.kind : true` gave 'Deployment', not a bool" in by["not-bool"].message
    # a failed variable fails only the validations that use it (as the API server evaluates them lazily)
    assert by["bad-var"].message.startswith("rule bad-var failed: ") and "nope" in by["bad-var"].message
    assert by["bad-var"].message.endswith("in `variables.x == 1`; denied (fail closed)")
    assert sorted(report.policy_errors) == ["bad-var", "missing-field", "not-bool"]


def test_message_expression_falls_back_to_message_then_to_the_expression() -> None:
    ps = policyset([rule("a", validations=[{"expression": "false", "message": "static",
                                            "messageExpression": "object.nope"}]),
                    rule("b", validations=[{"expression": "1 > 2"}])])
    got = {v.policy: v.message for v in evaluate([deployment([gpu("x", 1)])], ps, point="ci").violations}
    assert got == {"a": "static", "b": "failed expression: 1 > 2"}


def test_object_rules_skip_objects_without_pod_templates_unless_they_name_kinds() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {}}
    ps = policyset([rule("any", validations=[{"expression": "false", "message": "m"}]),
                    rule("cms", match={"kinds": ["ConfigMap"]}, validations=[{"expression": "false", "message": "m"}])])
    assert [v.policy for v in evaluate([cm], ps, point="ci").violations] == ["cms"]


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_per_request_budget_denies_naming_the_rule_that_used_it_up() -> None:
    ps = policyset([rule("first", scope="container"), rule("second")], ruleLimits={"perRequestMilliseconds": 5})
    workload = extract(deployment([gpu("a", 1), gpu("b", 1)]), gpu=ps.gpu)
    given = RuleInput(workload=workload, gpu=ps.gpu, environment=None, namespace_labels={}, request=None)
    budget = Budget(ps.rule_limits.per_request_seconds, clock=FakeClock(0.003))  # each evaluation "takes" 3 ms
    first = list(evaluate_rule(ps.rules[0], given, {}, budget))  # 3 ms on the first container, 6 on the second
    second = list(evaluate_rule(ps.rules[1], given, {}, budget))
    assert [(f.failure, f.finding.path) for f in first] == [(True, "spec.template.spec.containers[1]")]
    assert first[0].finding.message == ("rule first exceeded the per-request evaluation budget of 5 ms "
                                        "(spec.ruleLimits.perRequestMilliseconds); denied (fail closed)")
    assert [f.finding.message for f in second] == [
        "rule second was not evaluated: the per-request rule budget of 5 ms was used up by rule first; "
        "denied (fail closed)"]


def test_within_budget_nothing_is_reported() -> None:
    ps = policyset([rule("first", scope="container")], ruleLimits={"perRequestMilliseconds": 5})
    workload = extract(deployment([gpu("a", 1), gpu("b", 1)]), gpu=ps.gpu)
    given = RuleInput(workload=workload, gpu=ps.gpu, environment=None, namespace_labels={}, request=None)
    assert list(evaluate_rule(ps.rules[0], given, {}, Budget(0.005, clock=FakeClock(0.001)))) == []


def test_the_example_rules_compile_and_only_h100_uses_nothing_mlguard_only() -> None:
    from policies.policyset import load_policyset

    ps = load_policyset(EXAMPLES / "gpu-rules.yaml")
    assert {r.id: sorted(r.facts) for r in ps.rules} == {
        "team-max-gpus": ["gpus", "template"] and sorted(ps.rules[0].facts),
        "vllm-tensor-parallel": sorted(ps.rules[1].facts), "h100-prod-only": []}
    assert "gpus" in ps.rules[0].facts and {"container", "gpus"} <= ps.rules[1].facts


def test_the_example_suites_pass_and_each_rule_denies_and_allows() -> None:
    from policies.testing import run_all

    results = run_all(EXAMPLES)
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    for rule_id in ("team-max-gpus", "vllm-tensor-parallel", "h100-prod-only"):
        expects = {r.expect for r in results if r.policy == rule_id}
        assert {"pass", "deny"} <= expects, (rule_id, expects)


def test_a_wrong_expectation_in_a_rule_suite_is_reported(tmp_path: Path) -> None:
    from policies.testing import run_suite

    (tmp_path / "rules.yaml").write_text((EXAMPLES / "gpu-rules.yaml").read_text())
    (tmp_path / "denied.yaml").write_text((EXAMPLES / "vllm-tensor-parallel" / "denied.yaml").read_text())
    (tmp_path / "x.mlguard-test.yaml").write_text(
        "policyset: rules.yaml\npolicy: vllm-tensor-parallel\ncases:\n"
        "  - {name: wrong, file: denied.yaml, resource: Pod/inference/mixtral, expect: pass}\n")
    [result] = list(run_suite(tmp_path / "x.mlguard-test.yaml"))
    assert not result.ok and "runs vLLM on 2 GPU(s) with --tensor-parallel-size 8" in result.detail


def test_the_store_refuses_a_reload_that_drops_rules_unless_it_declares_rule_count(tmp_path: Path) -> None:
    from webhook.policystore import PolicyStore

    doc = yaml.safe_load((EXAMPLES / "gpu-rules.yaml").read_text())
    del doc["spec"]["ruleCount"]
    path = tmp_path / "ps.yaml"
    path.write_text(yaml.safe_dump(doc))
    store = PolicyStore(path, interval=3600)
    store.start()
    assert store.current is not None and len(store.current.rules) == 3

    def reload(new: dict[str, Any]) -> None:
        path.write_text(yaml.safe_dump(new))
        store.check()
        store.check()

    fewer = json_copy(doc)
    fewer["spec"]["rules"] = fewer["spec"]["rules"][:1]
    reload(fewer)
    assert len(store.current.rules) == 3 and store.refused is not None
    assert "drops 2 of 3 rules (h100-prod-only, vllm-tensor-parallel)" in store.refused.errors[0]
    fewer["spec"]["ruleCount"] = 1
    reload(fewer)
    assert [r.id for r in store.current.rules] == ["team-max-gpus"] and store.refused is None
    without = json_copy(fewer)
    del without["spec"]["ruleCount"]
    reload(without)  # once a set with ruleCount served, a set without it may be a partial file
    assert store.refused is not None and "spec.ruleCount is missing" in store.refused.errors[0]
    broken = json_copy(fewer)
    broken["spec"]["rules"][0]["validations"][0]["expression"] = "gpus <= variables.ceilin"
    reload(broken)
    assert [r.id for r in store.current.rules] == ["team-max-gpus"]
    assert "rule team-max-gpus: undeclared reference to 'variables.ceilin'" in store.refused.errors[0]


def json_copy(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def test_mlguard_export_vap_writes_the_exportable_and_lists_the_rest(tmp_path: Path, capsys) -> None:
    from policies.cli import main

    out = tmp_path / "vap.yaml"
    assert main(["export", "vap", "--policyset", str(EXAMPLES / "gpu-rules.yaml"), "-o", str(out)]) == 0
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("ValidatingAdmissionPolicy", "mlguard-h100-prod-only"),
        ("ValidatingAdmissionPolicyBinding", "mlguard-h100-prod-only")]
    assert docs[1]["spec"] == {"policyName": "mlguard-h100-prod-only", "validationActions": ["Deny"]}
    err = capsys.readouterr().err
    assert "not exported: team-max-gpus: uses mlguard's own facts (gpus)" in err
    assert "not exported: vllm-tensor-parallel: uses mlguard's own facts (container, gpus)" in err
    assert "# Not exported: team-max-gpus:" in out.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "gpu-rules.yaml").read_text().replace("gpus <= variables.ceiling", "gpus <="))
    assert main(["export", "vap", "--policyset", str(bad)]) == 2
    assert "rule team-max-gpus: Syntax error" in capsys.readouterr().err


def test_export_of_a_strict_policyset_makes_one_policy_per_action(tmp_path: Path) -> None:
    from policies.rules.vap import export_vap

    ps = policyset([rule("r", action="warn", validations=[{"expression": "object.metadata.name != 'x'",
                                                           "message": "not x"}])],
                   environments={"label": "env", "defaults": {"prod": "deny"}}, dryRun=False)
    docs = export_vap(ps).documents
    bindings = {d["metadata"]["name"]: d["spec"]["validationActions"] for d in docs
                if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert bindings == {"mlguard-r-warn": ["Warn"], "mlguard-r-deny": ["Deny"]}
    from policies.rules.vap import evaluate_policy

    obj = deployment([gpu("a", 1)], ns="team-a")
    obj["metadata"]["name"] = "x"
    request = {"operation": "CREATE", "namespace": "team-a", "name": "x", "dryRun": False,
               "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
               "userInfo": {"username": "u", "groups": []}}
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}

    def fired(env: str) -> set[str]:
        ns = {"metadata": {"name": "team-a", "labels": {"env": env}}}
        return {n for n, d in by_name.items() if evaluate_policy(d, obj=obj, request=request, namespace=ns).denied}

    assert fired("prod") == {"mlguard-r-deny"} and fired("dev") == {"mlguard-r-warn"}
    [message] = evaluate_policy(by_name["mlguard-r-deny"], obj=obj, request=request,
                                namespace={"metadata": {"name": "team-a", "labels": {"env": "prod"}}}).messages
    assert message == "r: : not x (https://runbooks.example.com/r.md)"


def test_the_model_comes_from_the_extractors_serving_detection_without_the_label() -> None:
    ps = policyset([rule("m", validations=[{"expression": "false", "messageExpression":
                                           "model == null ? 'none' : model.name + '/' + model.quantization"}])])
    server = {"name": "vllm", "image": "vllm/vllm-openai:v0.9.0",
              "args": ["--model", "Qwen/Qwen2.5-7B-Instruct-AWQ", "--quantization", "awq"],
              "resources": {"limits": {"nvidia.com/gpu": 1}}}
    served = deployment([server], labels={"mlguard.io/quantization": "awq-int4"})
    plain = deployment([gpu("train", 1)])
    got = {v.resource.name: v.message for v in evaluate([served], ps, point="ci").violations}
    assert got == {"d": "Qwen/Qwen2.5-7B-Instruct-AWQ/awq-int4"}
    assert [v.message for v in evaluate([plain], ps, point="ci").violations] == ["none"]


def test_rules_at_the_audit_take_their_audit_action_else_admissions_and_are_reported_as_checked() -> None:
    """A team's rule judges what already runs (`mlguard audit`) like a policy: its own audit action, else the
    admission one; it counts among the checked (a pass result in the reports when it finds nothing)."""
    from policies.engine import evaluate_object

    never = [{"expression": "false", "message": "never"}]
    ps = policyset([rule("warn-at-admission", action={"ci": "off", "admission": "warn"}, validations=never),
                    rule("off-at-audit", action={"admission": "deny", "audit": "off"}, validations=never),
                    rule("passes", action={"admission": "deny"})])
    out = evaluate_object(deployment([gpu("s", 1)]), ps, point="audit")
    assert [(v.policy, v.action, v.error) for v in out.violations] == [("warn-at-admission", "warn", False)]
    assert "passes" in out.checked and "off-at-audit" not in out.checked
