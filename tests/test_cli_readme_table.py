"""The command table of README.md against every console script's ``--help``: a command
or option that a script has and the table does not name fails, and so does a command
the table names that no script has."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TestCluster, write

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "configuration-reference.md").read_text()
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
#: The table's introduction says every client command takes these.
CLIENT_OPTIONS = {"--scheduler", "--json"}
#: ``dfarm`` subcommands, and the actions of ``dfarm user``.
DFARM = ["up", "scheduler", "worker", "user", "users", "config", "doctor", "backup",
         "install-service", "workers"]  # fmt: skip
USER_ACTIONS = ["add", "list", "remove", "token", "password"]


def table_rows() -> list[str]:
    """The rows of the table under ``## Commands``."""
    section = README.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def first_cell(row: str) -> str:
    return re.split(r"(?<!\\)\|", row)[1]


def rows_of(command: str) -> str:
    """The rows whose first cell names ``command`` (``dq``, ``dfarm user``), joined."""
    pattern = re.compile(r"`" + re.escape(command) + r"(?![\w-])")
    return "\n".join(row for row in table_rows() if pattern.search(first_cell(row)))


def help_of(script: str, argv: list[str]) -> str:
    module, _, name = SCRIPTS[script].partition(":")
    main: Callable[[list[str]], int] = getattr(importlib.import_module(module), name)
    out = io.StringIO()
    with warnings.catch_warnings():  # pyftpdlib imports asyncore, deprecated in 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*argv, "--help"])
    return out.getvalue()


def option_groups(text: str) -> list[list[str]]:
    """Each option of a help text with its spellings (``-l, --long``), from the lines
    that list options, else from the usage line."""
    groups = []
    for line in text.splitlines():
        m = re.match(r"^  (-[\w-]+.*?)(?:\s{2,}|$)", line)
        if m:
            groups.append([part.split()[0] for part in m[1].split(", ")])
    if not groups:
        usage = text.split("\n\n", 1)[0]
        groups = [[opt] for opt in re.findall(r"\[(--?[a-zA-Z][\w-]*)", usage)]
    return [g for g in groups if "--help" not in g]


def mentions(text: str, option: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", text) is not None


def in_reference(option: str) -> bool:
    return f"`{option.lstrip('-').replace('-', '_')}`" in REFERENCE


COMMANDS = [(name, []) for name in SCRIPTS if name != "dfarm"] + [("dfarm", [sub]) for sub in DFARM]
COMMANDS += [("dfarm", ["user", action]) for action in USER_ACTIONS]


@pytest.mark.parametrize(("script", "argv"), COMMANDS, ids=[" ".join([s, *a]) for s, a in COMMANDS])
def test_every_command_and_option_is_in_the_table(script: str, argv: list[str]) -> None:
    name = " ".join([script, *argv[:1]])
    rows = rows_of(name)
    assert rows, f"README.md's command table has no row for `{name}`"
    if argv[1:]:  # an action of dfarm user: named in the row
        assert mentions(rows, argv[1]), f"`{name}` row does not name the action {argv[1]!r}"
    text = help_of(script, argv)
    assert text.strip(), f"{name} --help printed nothing"
    by_reference = "docs/configuration-reference.md" in rows
    missing = []
    for spellings in option_groups(text):
        client = script != "dfarm" or argv == ["users"]
        if client and CLIENT_OPTIONS & set(spellings):
            continue
        if any(mentions(rows, s) for s in spellings):
            continue
        if by_reference and any(in_reference(s) for s in spellings):
            continue
        missing.append("/".join(spellings))
    assert not missing, f"README.md's row for `{name}` lacks {', '.join(missing)}"


def test_the_dfarm_subcommands_are_those_dfarm_knows() -> None:
    usage = help_of("dfarm", [])
    assert sorted(set(re.findall(r"^    dfarm ([\w-]+)", usage, re.M))) == sorted(DFARM)
    actions = help_of("dfarm", ["user"])
    assert re.search(r"\{(.*?)\}", actions)[1].split(",") == USER_ACTIONS  # type: ignore[index]


def test_every_command_in_the_table_exists() -> None:
    for row in table_rows():
        for code in re.findall(r"`([^`]+)`", first_cell(row)):
            word = code.split()[0]
            if word.startswith("d") and not word.startswith("-"):
                assert word in SCRIPTS, f"README.md names `{word}`, which is no command"


def test_without_a_scheduler_the_message_names_dfarm_home(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env["HOME"] = str(tmp_path)
    for extra, said in (
        ({}, "DFARM_HOME is not set, so ~/.dfarm"),
        ({"DFARM_HOME": str(tmp_path / "h")}, f"DFARM_HOME is {tmp_path / 'h'}"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "control_node.cli.dq"], env={**env, **extra},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 1 and "no scheduler found" in out.stderr
        assert (
            said in out.stderr and "after 'dfarm up --home DIR', set DFARM_HOME=DIR" in out.stderr
        )


def test_a_job_sees_the_environment_the_readme_lists(cluster: TestCluster, tmp_path: Path) -> None:
    row = next(r for r in README.splitlines() if r.startswith("| `environment` |"))
    listed = set(re.findall(r"`([A-Z][A-Z_]+)`", row))
    assert {"USER", "LOGNAME", "DFARM_PYTHON", "DFARM_SCRATCH_DIR", "HOME"} <= listed
    write(tmp_path / "env.sh", "#!/bin/sh\nenv\n", True)
    write(tmp_path / "env.sub", "executable = env.sh\nqueue\n")
    assert cluster.run("dsub", "--wait", "--per-job", "env.sub", cwd=tmp_path).returncode == 0
    seen = dict(
        line.split("=", 1) for line in (tmp_path / "1.0" / "stdout").read_text().splitlines()
        if "=" in line
    )  # fmt: skip
    # Those of the worker's own that it has, the GPUs' on a worker with GPUs, and the
    # account's where a root worker runs the job as another account.
    optional = {"LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES"}
    if os.geteuid() != 0:
        optional |= {"USER", "LOGNAME"}
    assert listed - optional <= set(seen), listed - set(seen)
    assert seen["DFARM_SCRATCH_DIR"] == seen["HOME"] == seen["TMPDIR"]
    if os.geteuid() == 0:
        assert seen["USER"] == seen["LOGNAME"] != "root"
