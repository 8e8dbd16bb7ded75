"""The Dockerfile's structure (no container engine here to build it): multi-stage, wheel built in
the builder and installed in a slim runtime stage without build tools, non-root numeric USER that
matches the manifests, exec-form ENTRYPOINT, and the image the kustomize base names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import yaml
from kustomize_testlib import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|python3?-dev|libc6?-dev|git)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Instructions with line continuations joined and comments dropped; ARGs before FROM resolved."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        elif op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif stages:
            stages[-1].instructions.append((op, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    assert DOCKERFILE.is_file(), "Dockerfile at the repository root"
    return parse(DOCKERFILE.read_text(encoding="utf-8"))[1]


def structure_problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile's structure (empty when it is right)."""
    problems: list[str] = []
    stages = parse(text)[1]
    if len(stages) < 2:
        return ["not multi-stage"]
    for stage in stages:
        if not re.fullmatch(r"python:3\.11-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.base):
            problems.append(f"base {stage.base} is not slim Python 3.11")
    builder, final = stages[0], stages[-1]
    if not any("pip wheel" in run for run in builder.all("RUN")):
        problems.append("the builder does not build wheels")
    for source in ("pyproject.toml", "policies/", "webhook/", "rollouts/"):
        if not any(source in copy for copy in builder.all("COPY")):
            problems.append(f"the builder does not copy {source}")
    installs = [run for run in final.all("RUN") if "pip install" in run]
    if not installs or not all("--no-index" in r and "from=builder" in r for r in installs):
        problems.append("the final stage does not install only the builder's wheels")
    for run in final.all("RUN"):
        if "apt-get install" in run or "apk add" in run or BUILD_TOOLS.search(run):
            problems.append(f"the final stage installs packages or build tools: {run}")
    for copy in final.all("COPY"):
        if "/wheels" in copy:
            problems.append("wheels copied into a layer of the final stage")
    users = final.all("USER")
    uid = users[-1].partition(":")[0] if users else ""
    if not uid.isdigit() or int(uid) == 0:
        problems.append("the final stage must set a numeric non-root USER")
    entrypoints = final.all("ENTRYPOINT")
    if not entrypoints or yaml.safe_load(entrypoints[-1]) != ["mlguard"]:
        problems.append('ENTRYPOINT must be ["mlguard"] (exec form)')
    return problems


def test_dockerfile_structure() -> None:
    assert structure_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("old,new,problem", [
    ("USER 10001:10001", "USER root", "numeric non-root USER"),
    ("USER 10001:10001", "", "numeric non-root USER"),
    ('ENTRYPOINT ["mlguard"]', "ENTRYPOINT mlguard", "ENTRYPOINT"),
    ("FROM ${PYTHON_IMAGE} AS runtime", "FROM ${PYTHON_IMAGE} AS runtime\nRUN apt-get install -y gcc",
     "build tools"),
    ("--no-index ", "", "only the builder's wheels"),
    ("ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python:3.11", "not slim"),
])
def test_structure_check_catches_regressions(old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    problems = structure_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


def test_runs_as_the_non_root_uid_of_the_manifests(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, non-root (runAsNonRoot needs a numeric UID)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    for path in (REPO / "kustomize/base").rglob("deployment.yaml"):
        pod = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(uid), path
        if gid:
            assert pod["securityContext"]["runAsGroup"] == int(gid), path


def test_image_is_the_one_kustomize_deploys(stages: list[Stage]) -> None:
    base = yaml.safe_load((REPO / "kustomize/base/kustomization.yaml").read_text())
    [image] = [i for i in base["images"] if i["name"] == "mlguard"]
    labels = " ".join(stages[-1].all("LABEL"))
    source = re.search(r'org\.opencontainers\.image\.source="https://github\.com/([^"]+)"', labels)
    assert source, "OCI source label"
    assert image["newName"] == f"ghcr.io/{source.group(1)}"
    exposed = " ".join(stages[-1].all("EXPOSE")).split()
    assert {"8443", "8080"} <= set(exposed)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over context-relative paths."""
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a matched directory excludes its contents."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result


def test_dockerignore_matcher() -> None:
    assert ignored("tests/x.py", ["tests"]) and not ignored("webhook/tests/x.py", ["tests"])
    assert ignored("a/b/c.key", ["**/*.key"]) and ignored("c.key", ["**/*.key"])
    assert not ignored("README.md", ["*.md", "!README.md"])


def test_dockerignore_keeps_the_context_small_and_secret_free(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".git/config", "tests/kustomize/conftest.py", ".venv/bin/python",
                 "kustomize/components/manual-tls/tls/tls.key", "webhook/__pycache__/app.cpython-311.pyc"):
        assert ignored(path, patterns), f"{path} would be sent to the build"
    for copy in stages[0].all("COPY"):
        for source in copy.split()[:-1]:
            if not source.startswith("--"):
                assert not ignored(source.rstrip("/"), patterns), f"COPY {source} is excluded by .dockerignore"
