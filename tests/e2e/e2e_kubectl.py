"""kubectl as users run it, with a transcript: every command, its input's name, its output and exit code.

The transcript is printed at the end of the e2e run (and written to a file), so a failing case shows
what the API server and the webhook said. `Transcript.current` is the test being run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def warnings(self) -> list[str]:
        """The lines kubectl prints for the API server's ``Warning`` headers."""
        return [line[len("Warning: "):] for line in self.stderr.splitlines() if line.startswith("Warning: ")]


@dataclass
class Transcript:
    """Per test: the commands run and what came back."""

    entries: dict[str, list[str]] = field(default_factory=dict)
    current: str = "(setup)"

    def add(self, who: str, result: Result, stdin_label: str | None) -> None:
        shown = " ".join(result.argv[3:]) if result.argv[1:2] == ["--kubeconfig"] else " ".join(result.argv)
        lines = [f"[{who}] $ kubectl {shown}" + (f"   < {stdin_label}" if stdin_label else "")]
        lines += [f"    {line}" for line in result.stdout.rstrip().splitlines()[:40]]
        lines += [f"    (stderr) {line}" for line in result.stderr.rstrip().splitlines()[:40]]
        lines.append(f"    (exit {result.returncode})")
        self.entries.setdefault(self.current, []).append("\n".join(lines))

    def note(self, text: str) -> None:
        self.entries.setdefault(self.current, []).append(f"# {text}")

    def render(self) -> str:
        out = []
        for test, lines in self.entries.items():
            out.append(f"=== {test}")
            out.extend(lines)
        return "\n".join(out) + "\n"


TRANSCRIPT = Transcript()


def describe(manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    items = [manifest] if isinstance(manifest, Mapping) else list(manifest)
    return ", ".join(f"{m.get('kind')}/{(m.get('metadata') or {}).get('name')}" for m in items)


class Kubectl:
    """kubectl with one user's kubeconfig (a client certificate: user name and group)."""

    def __init__(self, kubeconfig: Path, *, who: str, transcript: Transcript = TRANSCRIPT) -> None:
        self.kubeconfig = kubeconfig
        self.who = who
        self.transcript = transcript

    def run(self, *args: str, manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
            quiet: bool = False, timeout: float = 60) -> Result:
        stdin = None
        if manifest is not None:
            docs = [manifest] if isinstance(manifest, Mapping) else list(manifest)
            stdin = yaml.safe_dump_all(docs, sort_keys=False)
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        if not quiet:
            self.transcript.add(self.who, result, describe(manifest) if manifest is not None else None)
        return result

    def apply(self, manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]], *extra: str) -> Result:
        return self.run("apply", "-f", "-", *extra, manifest=manifest)

    def create(self, manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]], *extra: str) -> Result:
        return self.run("create", "-f", "-", *extra, manifest=manifest)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, *,
            quiet: bool = True) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        result = self.run("get", kind, *([name] if name else []), *ns, "-o", "json", quiet=quiet)
        assert result.ok, result.output
        found: dict[str, Any] = result.json()
        return found

    def items(self, kind: str, namespace: str, *selector: str, quiet: bool = True) -> list[dict[str, Any]]:
        result = self.run("get", kind, "-n", namespace, *selector, "-o", "json", quiet=quiet)
        assert result.ok, result.output
        items: list[dict[str, Any]] = result.json().get("items") or []
        return items
