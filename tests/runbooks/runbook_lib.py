"""Reading runbooks: sections, fenced blocks, shell commands, PromQL, links and anchors.

Conventions the runbooks follow (and these helpers rely on):

- ``## `` headings are the fixed sections, in order (``SECTIONS``).
- Every PromQL expression is alone in a fenced block marked ``promql``.
- Commands live in ``sh`` blocks (every non-comment line is a command, ``\\`` continues it) or
  ``console`` blocks (lines starting with ``$ `` are commands, the others show output).
- Placeholders are ``<lower-case-words>``; the index (README.md) lists every one that is used.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
INDEX = RUNBOOKS / "README.md"
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Verification", "Prevention")
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([A-Za-z0-9_+-]*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
SEPARATORS = frozenset({"|", "||", "&&", ";", "&"})


class RunbookFormatError(ValueError):
    """A runbook that the helpers cannot read (e.g. an unclosed code fence)."""


def runbook_files() -> list[Path]:
    """Every runbook (not the index)."""
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language tag, text, and the line of its opening fence."""

    lang: str
    text: str
    line: int
    file: str


@dataclass(frozen=True)
class Heading:
    level: int
    title: str
    line: int


@dataclass(frozen=True)
class Command:
    """One shell command line (continuations joined), with where it came from."""

    text: str
    line: int
    file: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def parse(text: str, *, name: str = "<text>") -> tuple[list[Heading], list[Block]]:
    """Headings outside code fences, and the fenced blocks, of a Markdown document."""
    headings: list[Heading] = []
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            indent, marker, lang, start = len(fence.group(1)), fence.group(2), fence.group(3).lower(), i + 1
            body = []
            i += 1
            while i < len(lines) and not (lines[i].strip().startswith(marker[0] * len(marker))
                                          and lines[i].strip().strip(marker[0]) == ""):
                line = lines[i]
                body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
                i += 1
            if i >= len(lines):
                raise RunbookFormatError(f"{name}:{start}: code fence opened here is never closed")
            blocks.append(Block(lang=lang, text="\n".join(body), line=start, file=name))
        else:
            heading = HEADING.match(lines[i])
            if heading:
                headings.append(Heading(len(heading.group(1)), heading.group(2), i + 1))
        i += 1
    return headings, blocks


def read(path: Path) -> tuple[list[Heading], list[Block]]:
    return parse(path.read_text(), name=path.name)


def section_titles(headings: list[Heading]) -> list[str]:
    return [h.title for h in headings if h.level == 2]


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", title).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(headings: list[Heading]) -> set[str]:
    """All anchors of a document, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for h in headings:
        base = github_anchor(h.title)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def commands(block: Block) -> Iterator[Command]:
    """The commands of a ``sh`` / ``console`` block (continuation lines joined)."""
    if block.lang not in ("sh", "console", "bash", "shell"):
        return
    console = block.lang == "console"
    pending: list[str] = []
    first = 0
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        line = raw.rstrip()
        if pending:
            pending.append(line.strip())
        elif console:
            if not line.startswith("$ "):
                continue
            pending, first = [line[2:].strip()], offset
        else:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            pending, first = [stripped], offset
        if pending[-1].endswith("\\"):
            pending[-1] = pending[-1][:-1].rstrip()
            continue
        yield Command(" ".join(p for p in pending if p), first, block.file)
        pending = []
    if pending:
        raise RunbookFormatError(f"{block.file}:{first}: command ends with a continuation backslash")


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def substitute_placeholders(text: str) -> str:
    """``<namespace>`` -> ``ph-namespace``: a plain word every parser accepts as a value."""
    return PLACEHOLDER.sub(lambda m: f"ph-{m.group(1)}", text)


def segments(command: str) -> list[list[str]]:
    """Split a command line into its simple commands (at |, &&, ||, ;), each as argv words.

    Leading ``VAR=value`` assignments are dropped. Placeholders are made plain words first.
    """
    lexer = shlex.shlex(substitute_placeholders(command), posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = list(lexer)
    out: list[list[str]] = []
    current: list[str] = []
    skip = False
    for word in [*words, ";"]:
        if skip:  # the target of a redirection
            skip = False
            continue
        if word not in SEPARATORS and re.fullmatch(r"[<>&]+", word):  # >, >>, <, >&, &>
            if current and current[-1].isdigit():  # 2>... : the fd number is not an argument
                current.pop()
            skip = True
            continue
        if word in SEPARATORS:
            while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                current.pop(0)
            if current:
                out.append(current)
            current = []
        else:
            current.append(word)
    return out


def program_of(argv: list[str]) -> str:
    """What a simple command runs: kubectl, kubectl-argo-rollouts, mlguard, rollouts, promtool, ..."""
    if argv[:3] == ["kubectl", "argo", "rollouts"]:
        return "kubectl-argo-rollouts"
    if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
        return {"policies.cli": "mlguard", "rollouts": "rollouts"}.get(argv[2], f"python -m {argv[2]}")
    return argv[0]


def mlguard_argv(argv: list[str]) -> list[str]:
    """The argument list the mlguard parser sees (after ``mlguard`` or ``python -m policies.cli``)."""
    return argv[1:] if argv[0] == "mlguard" else argv[3:]


def all_commands(paths: list[Path] | None = None) -> list[tuple[Command, list[str]]]:
    """(command, argv) for every simple command in every runbook."""
    out = []
    for path in paths if paths is not None else runbook_files():
        _, blocks = read(path)
        for block in blocks:
            for cmd in commands(block):
                for argv in segments(cmd.text):
                    out.append((cmd, argv))
    return out


def promql_blocks(paths: list[Path] | None = None) -> list[Block]:
    found = []
    for path in paths if paths is not None else runbook_files():
        _, blocks = read(path)
        found.extend(b for b in blocks if b.lang == "promql")
    return found


def links(text: str) -> Iterator[tuple[str, int]]:
    """Relative Markdown link targets outside code blocks, with their line numbers."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = match.group("target")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            yield target, number
