"""A seeded fuzzer over submit files: keys the parser knows (and some it does not),
macros, queue statements of every form with hostile items, conditionals, control
characters and Unicode. Every outcome is a parsed description or the parser's own
:class:`SubmitFileError` naming the file and a line of it: never another exception.
A few of the files go through ``dsub --dry-run`` too: an exit status of 0 or 1 with a
``dsub: error:`` line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_node.submit_file import (
    ACCEPTED_KEYS,
    SUPPORTED_KEYS,
    SubmitDescription,
    SubmitFileError,
    parse_submit_text,
)
from control_node.submit_queue import PREDEFINED

FILE = "fuzz.sub"


def seeded(examples: int) -> settings:
    """Settings of a fuzz test: the same ``examples`` every run."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


keys = st.sampled_from(
    sorted(SUPPORTED_KEYS | ACCEPTED_KEYS | PREDEFINED)
    + ["x", "Item", "my_var", "+Custom", "MY.Attr", "key@", "bad key", "request_foo", "if"]
)
#: Values: the files of the folder, paths out of it, numbers and units, and macros.
plain_values = st.sampled_from([
    "job.sh", "data.txt", "items.txt", "sub", "sub/", "../job.sh", "/etc/passwd", "/", ".",
    "..", "", '""', "''", "0", "1", "-1", "2", "99999999999999999999", "1e9", "2GB", "3 MB",
    "0.5K", "-5G", "nan", "inf", "True", "false", "Never", "Always", "Complete", "Error",
    "a@b.c", "a b c", '"a b" \'c d\'', "a=1 b=2", '"A=1;B=2"', "A=1;B=$ENV(HOME)",
    "vanilla", "docker", "YES", "NO", "IF_NEEDED", "ON_EXIT", "TARGET.Cpus > 0",
    "Memory >> 2", "(((((", "Name == \"w1\" && Cpus >= 1", "a, b, c", "job.sh, data.txt",
    "out, sub/y", "../x", "$(Process)", "$(Cluster).$(Process)", "$(x)", "$(x:default)",
    "$(undefined)", "$(Item)", "$(Step)", "$(ItemIndex)", "$(Row)", "$(Node)", "$(Dollar)",
    "$(submit_file)", "$$(Cpus)", "$$(Memory:1)", "$$(", "$(", "$()", "$(x", "$($(x))",
    "$RANDOM_INTEGER(1,5)", "$RANDOM_INTEGER(5,1)", "$RANDOM_INTEGER(1,5,0)",
    "$RANDOM_CHOICE(a,b)", "$RANDOM_CHOICE()", "$RANDOM_NORMAL(0,1)", "$RANDOM_UNIFORM(1,0)",
    "$CHOICE(0, a, b)", "$CHOICE(9, a)", "$ENV(HOME)", "$ENV(NOPE:x)", "$F(job.sh)",
    "$Fp(job.sh)", "$INT(1.5)", "$REAL(x)", "$SUBSTR(abc, 1)", "$(executable)",
    "$Fqpnxdbwu(x)", "$Fqa(executable)", "$SUBSTR(x,-1,-1)", "$SUBSTR(x)", "$INT(x,%s)",
    "$INT(1,%05d%n)", "$REAL(1,%.99f)", "$CHOICE(x)", "$CHOICE(-1,a)", "$CHOICE(0,nolist)",
    "$BASENAME(x)", "$DIRNAME()", "$(x$(Item))", "$INT(1e400)", "$INT(9**99)", "$REAL(1/0)",
    "\x00", "\x07", "\x1b[31m", "\u202e", "\ufeff", "é" * 50, "\U0001f600", "\\", "\\\n",
    "x" * 5000,
])  # fmt: skip
values = plain_values | st.text(max_size=20) | st.lists(plain_values, max_size=3).map(" ".join)
items = st.lists(plain_values | st.text(max_size=8), max_size=4)
counts = st.sampled_from(["", "0", "1", "2", "3", "-1", "1+1", "(2)", "2*3", "1/0", "$(n)", "x"])
names = st.sampled_from(["", "x", "x, y", "x y z", "Item", "Process", "1x", "x, x"])
slices = st.sampled_from(["", "[1:]", "[:1]", "[::2]", "[0:1:0]", "[a]", "[-1]"])


def queue_statement(parts: tuple[str, str, str, str, str, list[str]]) -> str:
    """A queue statement of one of its forms, with ``items`` listed or in items.txt."""
    count, var, form, slicing, source, listed = parts
    head = " ".join(part for part in ("queue", count, var) if part)
    joined = ", ".join(listed)
    if form == "plain":
        return head
    if form == "in":
        return f"{head} in {slicing} ({joined})"
    if form == "matching":
        return f"{head} matching {slicing} {joined or '*.txt'}"
    lines = "\n".join(listed)
    sources = {
        "file": "items.txt",
        "missing": "nope.txt",
        "list": f"({joined})",
        "block": f"(\n{lines}\n)",
        "open": f"(\n{lines}",
        "command": "printf 'a b\\nc d\\n' |",
        "failing": "false |",
    }
    return f"{head} from {slicing} {sources[source]}"


queues = st.tuples(
    counts,
    names,
    st.sampled_from(["plain", "in", "from", "matching"]),
    slices,
    st.sampled_from(["file", "missing", "list", "block", "open", "command", "failing"]),
    items,
).map(queue_statement)
conditionals = st.sampled_from(
    ["if defined x", "if $(x)", "if true", "if", "elif false", "else", "endif", "if 1 ==", "error"]
)
lines = st.one_of(
    st.tuples(keys, st.sampled_from([" = ", "=", " =", "= ", " += "]), values).map("".join),
    queues,
    conditionals,
    st.sampled_from(["", "# comment", "  ", "\\", "executable = job.sh", "include : x"]),
    st.text(max_size=40),
)
submit_texts = st.lists(lines, max_size=10).map("\n".join)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A submit folder: the executable, data, an item file, a sub-folder."""
    path = tmp_path_factory.mktemp("submit")
    (path / "job.sh").write_text("#!/bin/sh\n")
    (path / "job.sh").chmod(0o755)
    (path / "data.txt").write_text("data\n")
    (path / "items.txt").write_text("a b, c\n\n# skipped\nd\té f\n")
    (path / "sub").mkdir()
    return path


def parse(text: str, folder: Path) -> SubmitDescription | SubmitFileError:
    """The parse of ``text``; the parser's own error is an outcome, any other a failure."""
    try:
        return parse_submit_text(
            text, filename=FILE, cluster=1, cwd=str(folder), environ={"HOME": "/h"}, seed=1
        )
    except SubmitFileError as exc:
        return exc


def check_error(exc: SubmitFileError, text: str) -> None:
    """The error names the file, a line of it (or none, for the file as a whole), and
    says what is wrong on one line with no control character (none reaches the
    terminal that shows it)."""
    assert exc.path == FILE
    assert exc.line is None or 1 <= exc.line <= text.count("\n") + 1, (exc.line, text)
    assert str(exc).startswith(f"{FILE}:" if exc.line is None else f"{FILE}:{exc.line}: ")
    assert exc.message.strip(), text
    assert not [c for c in exc.message if unicodedata.category(c) == "Cc"], repr(exc.message)


@seeded(600)
@given(text=submit_texts)
def test_parser_returns_a_description_or_its_own_error(text: str, folder: Path) -> None:
    outcome = parse(text, folder)
    if isinstance(outcome, SubmitFileError):
        check_error(outcome, text)
    else:  # a queue may have no items: dsub says so
        assert all(proc.executable.startswith(str(folder)) for proc in outcome.procs)


#: The items of items.txt: its blank line is an item that keeps the previous values,
#: and its "#" line an item, as condor_submit reads an item file.
FILE_ITEMS = ["a b, c", "a b, c", "# skipped", "d\té f"]


@pytest.mark.parametrize(
    ("statement", "items"),
    [
        ("queue 2 x from items.txt", FILE_ITEMS),
        ("queue 2 from items.txt", FILE_ITEMS),
        ("queue 2 x from (\na b, c\nd\n)", ["a b, c", "d"]),
        ("queue x from printf 'a b\\nc d\\n' |", ["a b", "c d"]),
    ],
)
def test_one_variable_takes_the_whole_line(statement: str, items: list[str], folder: Path) -> None:
    """``queue N VAR from ...`` (N procs per line, as in HTCondor) once failed with
    ``zip() argument 2 is longer than argument 1`` whenever a line held a blank:
    the one variable takes the whole line."""
    outcome = parse(f"executable = job.sh\n{statement}\n", folder)
    assert isinstance(outcome, SubmitDescription), outcome
    values = [next(iter(proc.params.values())) for proc in outcome.procs]
    count = 2 if statement.startswith("queue 2") else 1
    assert values == [item for item in items for _ in range(count)]


def test_matching_with_two_variables_leaves_the_second_empty(folder: Path) -> None:
    (folder / "only-one.dat").write_text("a")
    outcome = parse("executable = job.sh\nqueue x, y matching *.dat\n", folder)
    assert isinstance(outcome, SubmitDescription), outcome  # as condor_submit reads it
    assert [proc.params for proc in outcome.procs] == [{"x": "only-one.dat", "y": ""}]


@seeded(4)
@given(text=submit_texts)
def test_dsub_dry_run_reports_errors_cleanly(text: str, folder: Path) -> None:
    (folder / FILE).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env["DFARM_HOME"] = str(folder / "no-home")
    done = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dsub", "--dry-run", "--json", FILE],
        cwd=folder, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    outcome = parse(text, folder)
    if isinstance(outcome, SubmitFileError):
        assert done.returncode == 1 and done.stderr == f"dsub: error: {outcome}\n", done.stderr
    else:
        assert done.returncode == 0, done.stderr
