"""Every code block of README.md and docs/*.md that shows dfarm at work runs as
written, against a real scheduler and real workers.

- ```` ```python ```` blocks of one document run in order in one Python process
  (a shared namespace, as in a notebook), with ``DFARM_HOME`` naming the cluster.
- Shell blocks (fenced as ``sh``, ``bash``, ``console``, ``shell`` or without a
  language, or indented) that run a dfarm command (a console script of
  pyproject.toml) run with bash, each against a cluster of its own, so that
  cluster ids start at 1 as on a new cluster. In a block with ``$`` prompts only
  the prompted lines are commands; the others are their output.
- Every block runs from a folder laid out as the repository's root: a copy of
  ``submit_examples/`` and a link to ``.venv``.

A comment right before a block changes that: ``<!-- not run: REASON -->`` (it
cannot run here, for instance it needs a second machine), or
``<!-- run: cwd=submit_examples status=1 -->`` (the folder it runs in, and the
exit status it is shown with). Any other block (submit files, configuration,
output) is not a command and is not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import TestCluster

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = frozenset(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
SHELLS = frozenset({"", "sh", "bash", "console", "shell", "indented"})
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(not run|run):\s*(.*?)\s*-->\s*$")
#: Seconds one group of blocks may take.
BLOCK_TIMEOUT = 240

Cluster = Callable[..., TestCluster]


@dataclass
class Block:
    """One code block of a document, and what the comment before it says."""

    doc: str
    line: int
    lang: str
    text: str
    not_run: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def console(self) -> bool:
        return any(line.startswith("$ ") for line in self.text.splitlines())

    def commands(self) -> list[str]:
        """The lines bash runs: the prompted ones of a console block, else all."""
        lines = self.text.splitlines()
        if self.console:
            return [line[2:] for line in lines if line.startswith("$ ")]
        return lines

    @property
    def runs_dfarm(self) -> bool:
        return self.lang in SHELLS and any(
            line.split() and line.split()[0] in SCRIPTS for line in self.commands()
        )


def _marker(lines: list[str], at: int) -> tuple[str | None, dict[str, str]]:
    """The ``not run`` reason and ``run`` options of the comment before line ``at``."""
    before = at - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    m = MARKER.match(lines[before]) if before >= 0 else None
    if m is None:
        return None, {}
    if m[1] == "not run":
        return m[2], {}
    return None, dict(part.split("=", 1) for part in m[2].split())


def blocks(path: Path) -> Iterator[Block]:
    """The fenced and indented code blocks of a Markdown file."""
    lines = path.read_text().splitlines()
    name = str(path.relative_to(ROOT))
    i, after_blank = 0, True
    while i < len(lines):
        line = lines[i]
        if m := FENCE.match(line):
            indent, fence, lang = m.groups()
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence):
                end += 1
            body = [text.removeprefix(indent) for text in lines[i + 1 : end]]
            yield Block(name, i + 1, lang, "\n".join(body), *_marker(lines, i))
            i, after_blank = end + 1, False
        elif after_blank and line.startswith("    ") and line.strip():
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            while not lines[end - 1].strip():
                end -= 1
            body = [text[4:] for text in lines[i:end]]
            yield Block(name, i + 1, "indented", "\n".join(body), *_marker(lines, i))
            i, after_blank = end, False
        else:
            after_blank = not line.strip()
            i += 1


ALL = [block for doc in DOCS for block in blocks(doc)]
PYTHON = {
    doc: [b for b in ALL if b.doc == doc and b.lang == "python" and b.not_run is None]
    for doc in dict.fromkeys(b.doc for b in ALL if b.lang == "python")
}
SHELL = [b for b in ALL if b.runs_dfarm and b.not_run is None]

#: Runs the blocks given as JSON [[where, source], ...] in one namespace, as
#: ``__main__`` (so that Client.map sends their functions by value); top-level
#: ``await`` runs in an event loop, as in a notebook.
PYTHON_DRIVER = """
import ast, asyncio, inspect, json, sys, traceback
ns = {"__name__": "__main__"}
for where, source in json.load(sys.stdin):
    try:
        code = compile(source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(code, ns))
        else:
            exec(code, ns)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the block at {where} failed")
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder laid out as the repository's root, with the examples' files."""
    where = tmp_path / "root"
    where.mkdir()
    where.chmod(0o755)  # jobs of a root worker run as other accounts
    shutil.copytree(ROOT / "submit_examples", where / "submit_examples")
    venv = ROOT / ".venv"
    if venv.is_dir():
        (where / ".venv").symlink_to(venv)
    return where


def environment(cluster: TestCluster, home: Path) -> dict[str, str]:
    env = cluster.env(HOME=str(home))
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def test_the_documents_have_blocks_that_run() -> None:
    """The extraction finds what it should: a test of nothing would pass."""
    assert sum(len(group) for group in PYTHON.values()) >= 5
    assert len(SHELL) >= 3
    assert all(b.not_run for b in ALL if b.lang == "python" and b not in sum(PYTHON.values(), []))


@pytest.mark.parametrize("block", [b for b in ALL if b.not_run is not None], ids=lambda b: b.where)
def test_a_block_not_run_says_why(block: Block) -> None:
    assert len(block.not_run or "") >= 10, f"{block.where}: say why it is not run"


@pytest.mark.parametrize("doc", list(PYTHON))
def test_python_blocks_run(doc: str, make_cluster: Cluster, workdir: Path) -> None:
    cluster = make_cluster(workers=2, slots=2)
    source = json.dumps([[b.where, b.text] for b in PYTHON[doc]])
    result = subprocess.run(
        [sys.executable, "-c", PYTHON_DRIVER],
        input=source,
        cwd=workdir,
        env=environment(cluster, workdir),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.where)
def test_shell_blocks_run(block: Block, make_cluster: Cluster, workdir: Path) -> None:
    cluster = make_cluster(workers=2, slots=2)
    script = "set -e\n" + "\n".join(block.commands()) + "\n"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=workdir / block.options.get("cwd", "."),
        env=environment(cluster, workdir),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    expected = int(block.options.get("status", "0"))
    assert result.returncode == expected, (
        f"{block.where}: exit status {result.returncode}, shown with {expected}\n"
        + result.stdout[-3000:]
        + result.stderr[-3000:]
    )
