"""Every command a runbook shows parses with the real tool (kubectl, mlguard, python -m rollouts,
promtool) or, for the Argo Rollouts plugin, against its documented subcommands and flags."""

from __future__ import annotations

import shutil

import pytest
from runbook_checks import (
    check_argo_rollouts,
    check_command,
    check_jq,
    check_kubectl,
    check_mlguard,
    check_promtool,
    check_rollouts,
)
from runbook_lib import all_commands, program_of, segments

COMMANDS = all_commands()
CHECKED = ("kubectl", "kubectl-argo-rollouts", "mlguard", "rollouts", "promtool", "jq")


def by_program(program: str) -> list[tuple[str, list[str]]]:
    return [(str(cmd), argv) for cmd, argv in COMMANDS if program_of(argv) == program]


def test_runbooks_show_enough_commands_of_each_kind() -> None:
    counts = {p: len(by_program(p)) for p in CHECKED}
    assert counts["kubectl"] >= 60, counts
    assert counts["mlguard"] >= 8, counts
    assert counts["kubectl-argo-rollouts"] >= 8, counts
    assert counts["rollouts"] >= 3, counts


@pytest.mark.parametrize("program", CHECKED)
def test_every_command_parses(program: str) -> None:
    if program in ("kubectl", "promtool", "jq"):  # scripts/setup.sh --test installs them: missing is a failure
        assert shutil.which(program), f"{program} is not installed: run scripts/setup.sh --test"
    problems = []
    for where, argv in by_program(program):
        for problem in check_command(argv):
            problems.append(f"{where}\n    -> {problem}")
    assert not problems, "\n".join(problems)


def test_argo_rollouts_subcommands_used_exist() -> None:
    used = {argv[3] for _, argv in by_program("kubectl-argo-rollouts") if len(argv) > 3}
    assert {"abort", "promote", "retry", "get", "undo"} <= used, used


# ---- the checkers catch what they are for ------------------------------------------------------------

def test_argo_checker_rejects_unknown_subcommand_kind_and_flag() -> None:
    assert check_argo_rollouts(["kubectl", "argo", "rollouts", "rollback", "x"])
    assert check_argo_rollouts(["kubectl", "argo", "rollouts", "retry", "x"])  # needs `rollout`
    assert check_argo_rollouts(["kubectl", "argo", "rollouts", "promote", "x", "--force"])
    assert not check_argo_rollouts(["kubectl", "argo", "rollouts", "promote", "x", "--full", "-n", "ns"])
    assert not check_argo_rollouts(["kubectl", "argo", "rollouts", "undo", "x", "--to-revision=3"])


def test_kubectl_checker_rejects_unknown_flags_and_subcommands() -> None:
    assert check_kubectl(["kubectl", "get", "pods", "--bogus-flag"])
    assert check_kubectl(["kubectl", "cordonn", "node-1"])
    assert not check_kubectl(["kubectl", "get", "pods", "-n", "ph-namespace", "-o", "wide"])
    assert not check_kubectl(["kubectl", "exec", "p", "--", "nvidia-smi", "--bogus"])  # after -- is remote


def test_mlguard_checker_rejects_bad_flags_and_values() -> None:
    assert check_mlguard([], ["check", "--format", "yaml", "x.yaml"])
    assert check_mlguard([], ["check", "--no-such-flag", "x.yaml"])
    assert check_mlguard([], ["eval", "verify"])  # --public-key is required
    assert not check_mlguard([], ["check", "--format", "json", "--policyset", "p.yaml", "x.yaml"])


def test_mlguard_checker_runs_report_flags_through_the_report_parser() -> None:
    base = ["report", "gpu", "--prometheus", "http://p:9090"]
    assert check_mlguard([], [*base, "--format", "yaml"])
    assert check_mlguard([], [*base, "--by", "teams"])
    assert check_mlguard([], [*base, "--window", "7days"])
    assert check_mlguard([], ["report", "gpu", "--window", "7d"])  # --prometheus is required
    assert not check_mlguard([], [*base, "--window", "7d", "--by", "team,model", "--format", "json"])


def test_rollouts_checker_rejects_unknown_checks_and_parameters() -> None:
    base = ["python", "-m", "rollouts", "check"]
    assert check_rollouts([*base, "no-such-check"])
    assert check_rollouts([*base, "latency", "--param", "stable_hash=x"])
    assert check_rollouts([*base, "latency", "--bogus"])
    assert not check_rollouts([*base, "latency", "--param", "stable=a", "--param", "canary=b",
                               "--prometheus", "http://p:9090", "--format", "text"])


def test_promtool_checker_rejects_bad_flags_and_bad_queries() -> None:
    assert check_promtool(["promtool", "query", "instant", "--bogus", "http://p:9090", "up"])
    assert check_promtool(["promtool", "query", "instant", "http://p:9090", "sum(rate(x[5m])"])
    assert not check_promtool(["promtool", "query", "instant", "http://p:9090", "sum(rate(up[5m]))"])


def test_segments_split_pipelines_and_placeholders() -> None:
    argv = segments("NS=x kubectl get pods -n <namespace> -o json | jq '.items | length' && mlguard test")
    assert argv == [["kubectl", "get", "pods", "-n", "ph-namespace", "-o", "json"],
                    ["jq", ".items | length"], ["mlguard", "test"]]


def test_jq_checker_rejects_filters_that_do_not_compile() -> None:
    assert check_jq(["jq", "-c", "select(.event == "])
    assert not check_jq(["jq", "-R", "-c", "fromjson? | select(.event == \"decision\")"])
    assert not check_jq(["jq", "-n", "--slurpfile", "b", "/tmp/x", "$b | length"])
