"""The fast path of spec.rules (`policies.rules.evaluate.Frame`): every active rule's validations in one program
over one binding of the object, pod templates and containers read from the object where they sit in it, only
what the rules read built. It must give exactly what each rule evaluated alone, per instance, gives."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.context import ManifestFacts
from policies.manifests import load_file
from policies.policyset import PolicySet, parse_policyset
from policies.rules.celenv import combined_program, compile_frame, frame_activation, inline_params, param_literal
from policies.rules.evaluate import Budget, Frame, RuleFinding, RuleInput, cut, evaluate_rule, field_tree, locate, steps
from policies.rules.lexer import alias_of, field_reads
from policies.rules.ruleset import Rule
from policies.testing import LIBRARY
from policies.workload import extract

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "catalog" / "examples"
SAMPLES = [o.obj for f in sorted(p for p in LIBRARY.rglob("*.yaml") if "tests" in p.parts
                                 and p.name != "suite.yaml" and not p.name.endswith(".mlguard-test.yaml"))
           for o in load_file(f, str(f)).objects]

# what teams write, and the shapes the frame rewrites differently: a fact read only inside a macro or only in a
# variables entry, template and container in one expression, a variable used many times, a comprehension
# variable named like a variable the API server binds, a rule that fails on some objects
RULES: list[dict[str, Any]] = [
    {"scope": "object", "validations": [{"expression": "object.metadata.?labels.?team.orValue('') != ''",
                                         "message": "every workload names its team"}]},
    {"scope": "podTemplate", "params": {"max": 2},
     "validations": [{"expression": "gpus <= params.max", "messageExpression": "'too many GPUs: ' + string(gpus)"}]},
    {"scope": "container", "params": {"registries": ["registry.example.com/", "nvcr.io/"]},
     "validations": [{"expression": "params.registries.exists(r, container.?image.orValue('').startsWith(r))",
                      "message": "images come from the approved registries"}]},
    {"scope": "container", "variables": [{"name": "sel", "expression": "template.?nodeSelector.orValue({})"}],
     "validations": [{"expression": "gpus == 0 || 'nvidia.com/gpu.product' in variables.sel",
                      "message": "GPU containers' pods select a GPU class"}]},
    {"scope": "container", "validations": [{
        "expression": "!has(container.args) || template.?hostNetwork.orValue(false) || "
                      "container.args.all(a, !a.startsWith('--host'))", "path": "args", "message": "no --host"}]},
    {"scope": "podTemplate", "variables": [
        {"name": "names", "expression": "template.containers.map(c, c.?name.orValue(''))"},
        {"name": "n", "expression": "variables.names.size()"}],
     "validations": [{"expression": "variables.n <= 3 && variables.names.all(x, variables.n > 0 && x != 'debug')",
                      "messageExpression": "'containers: ' + variables.names.join(', ')"}]},
    {"scope": "object", "validations": [{"expression": "[1, 2].all(object, object > 0) && gpus < 64"}]},
    {"scope": "object", "validations": [{"expression": "object.spec.replicas < 100",
                                         "message": "fails to evaluate where there are no replicas"}]},
    {"scope": "container", "variables": [
        {"name": "pinned", "expression": "container.?image.orValue('').contains('@sha256:')"},
        {"name": "ports", "expression": "container.?ports.orValue([]).exists(p, p.containerPort == 8000)"}],
     "validations": [{"expression": "variables.pinned || !variables.ports || gpuResources.size() == 0",
                      "message": "a served GPU image is pinned by digest"}]},
]


def policyset(rules: list[dict[str, Any]]) -> PolicySet:
    examples = yaml.safe_load((EXAMPLES / "gpu-rules.yaml").read_text())["spec"]["rules"]
    out = []
    for i, rule in enumerate(examples + rules):
        rule = {**copy.deepcopy(rule), "id": f"r{i}", "description": "d", "runbook": "https://example.com/r.md"}
        rule.pop("match", None)
        out.append(rule)
    doc = {"apiVersion": "mlguard.io/v1alpha1", "kind": "PolicySet", "metadata": {"name": "t"},
           "spec": {"policies": {}, "defaultAction": "deny", "rules": out}}
    return parse_policyset(yaml.safe_dump(doc, sort_keys=False), source="t.yaml")


def findings(rules: list[Rule], given: RuleInput, *, fast: bool) -> list[tuple[str, RuleFinding]]:
    frame = Frame(given, {r.id: r.params for r in rules}, rules) if fast else None
    budget = Budget(60.0)
    return [(r.id, f) for r in rules for f in evaluate_rule(r, given, r.params, budget, frame)]


def test_the_frame_gives_what_each_rule_alone_gives_on_every_sample() -> None:
    ps = policyset(RULES)
    # without the two rules that fail on many kinds (h100-prod-only's `object.spec.template`, replicas)
    usual = [r for r in ps.rules if r.id not in ("r2", "r10")]
    facts = ManifestFacts(SAMPLES)  # a Rollout's workloadRef Deployment: a template that is not in the object
    compared = together = 0
    for obj in SAMPLES:
        workload = extract(obj, gpu=ps.gpu, resolve_object=facts.resolve_object)
        if not workload.templates:
            continue
        given = RuleInput(workload=workload, gpu=ps.gpu, environment=None,
                          namespace_labels={"team": "research"}, request=None)
        for rules in (list(ps.rules), usual):
            assert findings(rules, given, fast=True) == findings(rules, given, fast=False), obj["metadata"]
        compared += 1
        together += bool(Frame(given, {r.id: r.params for r in usual}, usual).verdicts(Budget(60.0)))
    assert compared > 400
    assert together > 350  # most objects are decided by the one program


def test_every_rule_of_the_examples_and_of_teams_joins_the_one_program_and_reads_templates_from_the_object() -> None:
    ps = policyset(RULES)
    assert all(v.frame_body is not None for r in ps.rules for v in r.validations)
    obj = next(iter(yaml.safe_load_all((EXAMPLES / "vllm-tensor-parallel" / "denied.yaml").read_text())))
    workload = extract(obj, gpu=ps.gpu)
    given = RuleInput(workload=workload, gpu=ps.gpu, environment=None, namespace_labels={}, request=None)
    frame = Frame(given, {r.id: r.params for r in ps.rules}, ps.rules)
    tpl = workload.templates[0]
    assert locate(obj, tpl.spec_path, tpl.spec) is not None
    verdicts = frame.verdicts(Budget(60.0))
    assert set(verdicts) == {id(v.frame_runner) for r in ps.rules for v in r.validations}


def test_a_fact_only_one_rule_reads_is_still_bound_for_it() -> None:
    # only r6 reads `template` (inside a variables entry), only r5 `container` (inside a macro), only r4 `gpus`
    ps = policyset([RULES[1], RULES[2], RULES[3]])
    rules = ps.rules[3:]
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
           "spec": {"template": {"spec": {"nodeSelector": {"nvidia.com/gpu.product": "A100"}, "containers": [
               {"name": "a", "image": "registry.example.com/a:1", "resources": {"limits": {"nvidia.com/gpu": 4}}},
               {"name": "b", "image": "docker.io/b:1"}]}}}}
    given = RuleInput(workload=extract(obj, gpu=ps.gpu), gpu=ps.gpu, environment=None, namespace_labels={},
                      request=None)
    for subset in (rules, rules[1:], rules[2:], [rules[0], rules[2]]):
        frame = Frame(given, {r.id: r.params for r in subset}, subset)
        budget = Budget(60.0)
        got = [(r.id, f.finding.path, f.finding.message) for r in subset
               for f in evaluate_rule(r, given, r.params, budget, frame)]
        want = {("r3", "spec.template.spec", "too many GPUs: 4"),
                ("r4", "spec.template.spec.containers[1]", "images come from the approved registries")}
        assert got == [w for w in sorted(want) if w[0] in {r.id for r in subset}]


def test_a_rule_that_fails_on_an_object_is_named_and_the_others_still_decide() -> None:
    ps = policyset([RULES[0], RULES[7]])
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    given = RuleInput(workload=extract(obj, gpu=ps.gpu), gpu=ps.gpu, environment=None, namespace_labels={},
                      request=None)
    frame = Frame(given, {r.id: r.params for r in ps.rules}, ps.rules)
    assert frame.verdicts(Budget(60.0)) == {}  # the one program fails: each rule runs on its own
    got = findings(list(ps.rules), given, fast=True)
    assert [(rid, f.failure, f.finding.message) for rid, f in got] == [
        ("r3", False, "every workload names its team"),
        ("r4", True, 'rule r4 failed: NOT_FOUND: Key not found in map : "replicas" in `object.spec.replicas < 100`; '
                     "denied (fail closed)")]


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_one_program_over_the_budget_is_dropped_and_each_rule_is_charged_its_own_time() -> None:
    ps = policyset([RULES[0], RULES[2]])
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    given = RuleInput(workload=extract(obj, gpu=ps.gpu), gpu=ps.gpu, environment=None, namespace_labels={},
                      request=None)
    active = ps.rules[3:]
    budget = Budget(0.005, clock=FakeClock(0.003))  # every evaluation "takes" 3 ms: all of them together 3 ms
    frame = Frame(given, {r.id: r.params for r in active}, active)
    assert frame.verdicts(budget) != {} and budget.spent == pytest.approx(0.003)
    budget = Budget(0.0065, clock=FakeClock(0.003))  # 3 ms for all, then 3 ms per rule: the second crosses it
    frame = Frame(given, {r.id: r.params for r in active}, active)
    got = [f.finding.message for r in active for f in evaluate_rule(r, given, r.params, budget, frame)]
    assert got[-1] == ("rule r4 exceeded the per-request evaluation budget of 6.5 ms "
                       "(spec.ruleLimits.perRequestMilliseconds); denied (fail closed)")
    budget = Budget(0.002, clock=FakeClock(0.003))  # ... which a 2 ms budget does not hold: dropped, uncharged
    frame = Frame(given, {r.id: r.params for r in active}, active)
    assert frame.verdicts(budget) == {} and budget.spent == 0
    got = [f.finding.message for r in active for f in evaluate_rule(r, given, r.params, budget, frame)]
    assert got == ["every workload names its team",  # decided, but past the budget: denied as well
                   "rule r3 exceeded the per-request evaluation budget of 2 ms "
                   "(spec.ruleLimits.perRequestMilliseconds); denied (fail closed)",
                   "rule r4 was not evaluated: the per-request rule budget of 2 ms was used up by rule r3; "
                   "denied (fail closed)"]


def test_a_lazy_bind_next_to_a_comprehension_is_not_read_stale() -> None:
    # cel-expr-python 0.1.3 gives s = 'b' for `[cel.bind(v, l.exists(i, true), v), cel.bind(p, 1, cel.bind(s,
    # false, s))]`: rules with variables like these must not meet in the one program as cel.bind
    rules = [
        {"scope": "object", "params": {"l": ["a", "b"]},
         "variables": [{"name": "v", "expression": "params.l.exists(i, true)"}],
         "validations": [{"expression": "variables.v", "message": "v"}]},
        {"scope": "object", "variables": [{"name": "p", "expression": "1"}, {"name": "s", "expression": "false"}],
         "validations": [{"expression": "variables.p == 1 && !variables.s", "message": "s"}]},
    ]
    ps = policyset(rules)
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
    given = RuleInput(workload=extract(obj, gpu=ps.gpu), gpu=ps.gpu, environment=None, namespace_labels={},
                      request=None)
    active = ps.rules[3:]
    frame = Frame(given, {r.id: r.params for r in active}, active)
    budget = Budget(60.0)
    assert [f for r in active for f in evaluate_rule(r, given, r.params, budget, frame)] == []
    assert len(frame.verdicts(budget)) == 2


@pytest.mark.parametrize(("path", "want"), [
    ("spec", ("spec",)),
    ("spec.template.spec.containers[0]", ("spec", "template", "spec", "containers", 0)),
    ("spec.pytorchReplicaSpecs.Worker.template.spec", ("spec", "pytorchReplicaSpecs", "Worker", "template", "spec")),
    ("spec.a[1][2].b", ("spec", "a", 1, 2, "b")),
    ("", ()),
    ("spec..x", None),
    ("spec.a[x]", None),
    (".".join(["a"] * 13), None),  # deeper than the frame walks: bound on its own instead
])
def test_steps_of_a_field_path(path: str, want: Any) -> None:
    assert steps(path) == want


def test_locate_finds_the_value_itself_not_an_equal_one() -> None:
    container = {"name": "c"}
    obj = {"spec": {"containers": [container]}}
    assert locate(obj, "spec.containers[0]", container) == ("spec", "containers", 0)
    assert locate(obj, "spec.containers[0]", {"name": "c"}) is None
    assert locate(obj, "spec.containers[1]", container) is None
    assert locate({"spec": {"containers": {"0": container}}}, "spec.containers[0]", container) is None


# rules that read parts of what the frame binds in part, in every way a selection can be written: the frame binds
# only those parts (`Rule.reads`), and each must still see what it sees on the whole object
PART_RULES: list[dict[str, Any]] = [
    {"scope": "object", "validations": [{"expression": "has(object.metadata.labels) && "
                                                       "object.metadata.labels.exists(k, k.startsWith('app'))"}]},
    {"scope": "object", "validations": [{"expression": "!has(.object.spec.replicas) || .object.spec.replicas < 5"}]},
    {"scope": "object", "validations": [{
        "expression": "object.?spec.?template.?metadata.?labels.orValue({}).size() < 9"}]},
    {"scope": "object", "validations": [{"expression": "size(object) > 3 || object.kind == 'Pod'"}]},
    {"scope": "object", "variables": [
        {"name": "pod", "expression": "object.kind == 'Pod' ? object.spec : (object.kind == 'CronJob' ? "
                                      "object.spec.jobTemplate.spec.template.spec : object.spec.?template.?spec"
                                      ".orValue({}))"},
        {"name": "spec", "expression": "has(object.spec) ? object.spec : {}"},
        {"name": "again", "expression": "variables.spec"}],
     "validations": [{"expression": "variables.again.?serviceName.orValue('') != 'x' && "
                                    "variables.spec.?template.?spec.?hostNetwork.orValue(false) == false"}]},
    {"scope": "podTemplate", "variables": [{"name": "c0", "expression": "template.containers[0]"}],
     "validations": [{"expression": "variables.c0.?image.orValue('') != '' && "
                                    "template.?volumes.orValue([]).size() < 20"}]},
    {"scope": "container", "validations": [{
        "expression": "container.?env.orValue([]).all(e, e.name != 'NVIDIA_VISIBLE_DEVICES' || "
                      "e.?value.orValue('') != 'all')"}]},
    {"scope": "container", "validations": [{"expression": "!('securityContext' in container) || "
                                                          "!container.securityContext.?privileged.orValue(false)"}]},
]


def _variants(obj: dict[str, Any], gpu: Any) -> list[dict[str, Any]]:
    """The object, and copies of it with one field changed that one of the rules above reads (in its first pod
    template or container, or its metadata): a rule that saw too little of it would decide otherwise."""
    def changed(change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(obj)
        workload = extract(copied, gpu=gpu)
        if workload.templates and workload.templates[0].spec.get("containers"):
            change(copied, workload.templates[0].spec, workload.templates[0].spec["containers"][0])
        return copied

    def labels(o: dict[str, Any], tpl: dict[str, Any], c: dict[str, Any]) -> None:
        o["metadata"]["labels"] = {**{f"k{i}": "v" for i in range(9)}, "app.kubernetes.io/name": "x"}
        o["spec"]["replicas"] = 7
        o.setdefault("spec", {}).setdefault("template", {}).setdefault("metadata", {})["labels"] = {
            f"l{i}": "v" for i in range(10)}

    return [obj] + [changed(change) for change in (
        labels,
        lambda o, tpl, c: tpl.update(nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        lambda o, tpl, c: tpl.update(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                                         "values": ["H100"]}]}]}}}),
        lambda o, tpl, c: tpl.update(hostNetwork=True, volumes=[{"name": f"v{i}"} for i in range(21)]),
        lambda o, tpl, c: c.update(env=[{"name": "A", "value": "1"},
                                        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
                                   securityContext={"runAsUser": 0, "privileged": True}, image=""),
        lambda o, tpl, c: o["spec"].update(serviceName="x"),
    )]


def test_parts_of_the_object_bound_alone_give_what_the_whole_object_gives_on_every_sample() -> None:
    ps = policyset(PART_RULES)
    parts = [r for r in ps.rules if int(r.id[1:]) >= 3]
    assert all(v.frame_body is not None for r in ps.rules for v in r.validations)
    facts = ManifestFacts(SAMPLES)
    compared, differed = 0, set()
    for sample in SAMPLES:
        outcomes = []
        for obj in _variants(sample, ps.gpu):
            workload = extract(obj, gpu=ps.gpu, resolve_object=facts.resolve_object)
            if not workload.templates:
                continue
            given = RuleInput(workload=workload, gpu=ps.gpu, environment=None, namespace_labels={}, request=None)
            for subset in (list(ps.rules), parts[1:3] + parts[5:6], parts[3:4] + parts[-1:]):
                got = findings(subset, given, fast=True)
                assert got == findings(subset, given, fast=False), obj["metadata"]
                if len(subset) == len(ps.rules):
                    outcomes.append({rid: [f for r, f in got if r == rid] for rid in (r.id for r in subset)})
            compared += 1
        differed |= {rid for outcome in outcomes[1:] for rid in outcome if outcome[rid] != outcomes[0][rid]}
    assert compared > 2000
    # every rule that reads a part decided otherwise on some change (r0, r1: GPUs and images; r6 reads it whole)
    assert differed >= {r.id for r in ps.rules} - {"r0", "r1", "r6"}


def test_what_a_rule_reads_of_the_object_template_and_container() -> None:
    ps = policyset(PART_RULES)
    reads = {r.id: dict(r.reads) for r in ps.rules}
    # h100-prod-only: `variables.pod` is one of three parts of the object; what it selects is read of each
    assert reads["r2"]["object"] >= {("kind",), ("spec", "nodeSelector"),
                                     ("spec", "template", "spec", "nodeSelector"),
                                     ("spec", "jobTemplate", "spec", "template", "spec", "affinity", "nodeAffinity")}
    assert all(p[:1] == ("spec",) or p == ("kind",) for p in reads["r2"]["object"])
    assert ("spec",) not in reads["r2"]["object"] and ("spec", "template", "spec") not in reads["r2"]["object"]
    assert reads["r3"] == {"object": {("metadata", "labels")}}  # a macro over the labels: all of them
    assert reads["r4"] == {"object": {("spec", "replicas")}}  # absolute names (`.object`) are the variable
    assert reads["r5"] == {"object": {("spec", "template", "metadata", "labels")}}
    assert reads["r6"] == {"object": {(), ("kind",)}}  # passed whole to size(): all of it
    # an alias of an alias, and a part that is `{}` or `.orValue(...)` of a chain: not a part, read as written
    assert reads["r7"]["object"] == {("kind",), ("spec",), ("spec", "serviceName"), ("spec", "template", "spec"),
                                     ("spec", "template", "spec", "hostNetwork"),
                                     ("spec", "jobTemplate", "spec", "template", "spec")}
    assert reads["r8"] == {"template": {("containers",), ("volumes",)}}
    assert reads["r9"] == {"container": {("env",)}}
    assert reads["r10"] == {"container": {(), ("securityContext", "privileged")}}  # `in container`: all of it


@pytest.mark.parametrize(("paths", "want"), [
    ([("a", "b")], {"a": {"b": {"c": 1}}}),
    ([("a",), ("a", "b")], {"a": {"b": {"c": 1}, "l": [1]}}),
    ([("a", "b", "c", "d")], {"a": {"b": {"c": 1}}}),  # through a value that is not a mapping: kept whole
    ([("a", "l", "x")], {"a": {"l": [1]}}),
    ([("missing", "x"), ("a", "missing")], {"a": {}}),
    ([], {}),
    ([(), ("a",)], {"a": {"b": {"c": 1}, "l": [1]}, "z": 2}),
])
def test_a_cut_keeps_what_the_paths_select(paths: list[tuple[str, ...]], want: Any) -> None:
    value = {"a": {"b": {"c": 1}, "l": [1]}, "z": 2}
    assert cut(value, field_tree(frozenset(paths))) == want


@pytest.mark.parametrize(("source", "want"), [
    ("object.spec", ([], [("object", ("spec",))])),
    ("(object.spec.?template)", ([], [("object", ("spec", "template"))])),
    ("a ? object.x : b ? (c ? object.y : {}) : variables.v.z",
     (["a", "b", "c"], [("object", ("x",)), ("object", ("y",)), ("variables", ("v", "z"))])),
    ("{'k': 1}.size() > 0 ? object.x : object.y", (["{ 'k' : 1 } . size ( ) > 0"], [("object", ("x",)),
                                                                                     ("object", ("y",))])),
    ("a ? object.x : object.y.orValue({})", None),  # a value made from a part: not one of the parts
    ("a ? .object.x : {}", None),  # an absolute name: read as written
    ("[object.x][0]", None),
    ("a ? object.x", None),
    ("? object.x : {}", None),
    ("object.x + 'unterminated", None),
])
def test_a_variable_that_picks_a_part_of_the_object(source: str, want: Any) -> None:
    assert alias_of(source, frozenset({"object", "variables"})) == want


@pytest.mark.parametrize(("source", "want"), [
    ("object.a.?b.c(1)", {"object": {("a", "b")}}),
    ("x.object.a", {}),
    ("f(.object.a) && [1].all(object, object > 0)", {"object": {("a",), ()}}),
    ("object['a'].b", {"object": {()}}),
    ("has(object.a.b) && object.a.c.exists(x, x)", {"object": {("a", "b"), ("a", "c")}}),
    ("'object.a' == \"object\"", {}),
])
def test_the_fields_an_expression_selects(source: str, want: Any) -> None:
    assert field_reads(source, frozenset({"object"})) == want


def test_the_one_program_walks_the_object_only_for_what_it_binds_whole() -> None:
    # the runtime plans a program on every evaluation: a walk to the containers that is never taken is work
    ps = policyset([{"scope": "container", "validations": [{"expression": "container.image != ''"}]},
                    {"scope": "container", "validations": [{"expression": "size(container) > 0"}]},
                    {"scope": "object", "validations": [{"expression": "size(object) > 3"}]}])
    image, whole_container, whole_object = ps.rules[3:]
    obj = next(iter(yaml.safe_load_all((EXAMPLES / "vllm-tensor-parallel" / "denied.yaml").read_text())))
    given = RuleInput(workload=extract(obj, gpu=ps.gpu), gpu=ps.gpu, environment=None, namespace_labels={},
                      request=None)
    for subset, located in (([image], set()), ([image, whole_container], set()),
                            ([image, whole_object], set()), ([image, whole_container, whole_object], {"container"})):
        frame = Frame(given, {r.id: r.params for r in subset}, subset)
        assert frame.located == located
        program = combined_program(tuple(v.frame_body or "" for r in subset for v in r.validations), frame.located)
        assert program is not None
        assert ("mlguardCP" in program.source) == bool(located)
        assert [v for v in frame.verdicts(Budget(60.0)).values()] == [[True]] * len(subset)


def _typed(value: Any) -> Any:
    """A value with the type of every part kept (1, 1.0 and True are told apart)."""
    if isinstance(value, dict):
        return ("map", sorted((_typed(k), _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


@pytest.mark.parametrize("value", [
    "plain", "é ü 日本 🎉", 'quote " and \\ backslash', "new\nline\ttab\x01\x7f", "", 0, -1, 2**63 - 1, 7.5, 1e16,
    -0.25, 0.1, True, False, None, [], {}, ["a", 1, 2.5, None, [True]], {"a": {"b": [1, {"c": "d"}]}},
    {1: "int key", "s": 2}, {"nested": {"x": [{"y": "z"}]}},
])
def test_a_parameter_written_in_as_a_literal_is_the_value_the_runtime_converts(value: Any) -> None:
    literal = param_literal(value)
    assert literal is not None
    written, bound = compile_frame(literal), compile_frame("mlguardP")
    assert written is not None and bound is not None
    assert _typed(written.run(frame_activation({}))) == _typed(bound.run(frame_activation({"mlguardP": value})))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**63, -(2**64), {1.5: "x"}, {"a": float("nan")},
                                   [datetime.date(2026, 1, 1)], {("t",): 1}])
def test_a_parameter_without_an_exact_literal_is_left_to_the_binding(value: Any) -> None:
    assert param_literal(value) is None


@pytest.mark.parametrize(("source", "want"), [
    ('mlguardP["r"].a == 1', '("x") == 1'),
    ('mlguardP["r"].a.size() + mlguardP["q"].n', '("x").size() + (3)'),
    ('has(mlguardP["r"].a)', 'has(mlguardP["r"].a)'),                  # has() needs a selection
    ('mlguardP["r"].?a.orValue("")', 'mlguardP["r"].?a.orValue("")'),  # an optional selection stays one
    ('mlguardP["r"].a(1)', 'mlguardP["r"].a(1)'),                      # a method, not a parameter
    ('mlguardP["r"].missing', 'mlguardP["r"].missing'),                # fails at run time as it did
    ('mlguardP["other"].a', 'mlguardP["other"].a'),
    ("'mlguardP[\"r\"].a' + mlguardP[\"r\"].a", "'mlguardP[\"r\"].a' + (\"x\")"),
    ('x.mlguardP["r"].a', 'x.mlguardP["r"].a'),
])
def test_which_selections_of_params_are_written_in(source: str, want: str) -> None:
    assert inline_params(source, {"r": {"a": '"x"'}, "q": {"n": "3"}}) == want


def test_rules_with_their_params_written_in_decide_as_each_rule_alone_with_them_bound() -> None:
    params = {"images": ["registry.example.com/", "nvcr.io/"], "max": 2, "ratio": 0.5, "labels": {"team": "ré\"s"},
              "byKind": {"Deployment": 1, "Pod": 0}, "flags": [True, None], "odd": {1: "one"}}
    exprs = [
        "params.images.exists(r, container.?image.orValue('').startsWith(r))",
        "has(params.max) && gpus <= params.max && params.ratio < 1.0",
        "params.?missing.orValue(3) == 3 && params.flags[0] && params.flags[1] == null",
        "params.labels.team == 'ré\"s' || container.name != ''",
        "params.byKind[object.kind] >= 0",  # fails on kinds the map lacks: the per-instance path says so
        "params.odd[1] == 'one' && params.nope == 1",  # fails everywhere on the missing parameter
    ]
    ps = policyset([{"scope": "container", "params": params, "validations": [{"expression": e}]} for e in exprs])
    rules = ps.rules[3:]
    compared = written = 0
    for obj in SAMPLES[:120]:
        workload = extract(obj, gpu=ps.gpu)
        if not workload.templates:
            continue
        given = RuleInput(workload=workload, gpu=ps.gpu, environment=None, namespace_labels={}, request=None)
        for subset in (rules, rules[:4]):
            assert findings(subset, given, fast=True) == findings(subset, given, fast=False), obj["metadata"]
        frame = Frame(given, {r.id: r.params for r in rules[:4]}, rules[:4])
        written += bool(frame.verdicts(Budget(60.0)))
        compared += 1
    assert compared > 60 and written == compared
    program = combined_program(tuple(v.frame_body or "" for r in rules[:4] for v in r.validations), frozenset(),
                               tuple((r.id, tuple((k, param_literal(v) or "") for k, v in params.items()))
                                     for r in rules[:4]))
    assert program is not None and program.source.count("mlguardP") == 2  # has(params.max) and params.?missing
