"""Every form of the queue statement, each checked against the jobs written down for it
and, when the ``htcondor`` 24 bindings are installed, against condor_submit's own
expansion of the same file in the same directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from htcondor_oracle import HTCONDOR, condor_jobs

from control_node.submit_file import SubmitFileError, parse_submit_text

ARGS = "arguments = [$(x)] [$(y)] [$(Item)] $(Process) $(Step) $(ItemIndex) $(Row)\n"
ITEMS = "a b c\nd\n e,f \n# not a comment here\ng, h, i\n"
ERROR = None

#: (queue statement(s), the arguments of each job as one string; ERROR if refused)
FORMS: list[tuple[str, list[str] | None]] = [
    ("queue", ["[] [] [] 0 0 0 0"]),
    ("queue 2", ["[] [] [] 0 0 0 0", "[] [] [] 1 1 0 0"]),
    ("queue 2*2 x in (a)", [f"[a] [] [] {i} {i} 0 0" for i in range(4)]),
    ("n = 3\nqueue $(n) x in (a)", [f"[a] [] [] {i} {i} 0 0" for i in range(3)]),
    ("queue 2 * 2 x in (a)", [f"[a] [] [] {i} {i} 0 0" for i in range(4)]),
    ("queue 2x in (a)", [f"[a] [] [] {i} {i} 0 0" for i in range(2)]),
    ("queue x  ,  y in (a)", ["[a] [] [] 0 0 0 0"]),
    ("queue x; y in (a)", ERROR),
    ("queue in a b c", ["[] [] [a] 0 0 0 0", "[] [] [b] 1 0 1 1", "[] [] [c] 2 0 2 2"]),
    ("queue x in (a b, c)", ["[a] [] [] 0 0 0 0", "[b] [] [] 1 0 1 1", "[c] [] [] 2 0 2 2"]),
    ("QUEUE x IN (a)", ["[a] [] [] 0 0 0 0"]),
    ("queue x in a, b", ["[a] [] [] 0 0 0 0", "[b] [] [] 1 0 1 1"]),
    ("queue x in (a,\n  b\n  # c\n)", ["[a] [] [] 0 0 0 0", "[b] [] [] 1 0 1 1"]),
    ("queue x,y in (a, b)", ["[a] [] [] 0 0 0 0", "[b] [] [] 1 0 1 1"]),
    ("queue x, in (a)", ["[a] [] [] 0 0 0 0"]),
    ("queue x,x in (a)", ["[] [] [] 0 0 0 0"]),
    ("queue Process in (a, b)", ["[] [] [] a 0 0 0", "[] [] [] b 0 1 1"]),
    ("queue Step, x in (a)", ["[] [] [] 0 a 0 0"]),
    ("queue x in (a, 'b c')", ["[a] [] [] 0 0 0 0", "['b] [] [] 1 0 1 1", "[c'] [] [] 2 0 2 2"]),
    ("queue x in [1:] (a, b, c)", ["[b] [] [] 0 0 1 1", "[c] [] [] 1 0 2 2"]),
    ("queue x in [:2] (a, b, c)", ["[a] [] [] 0 0 0 0", "[b] [] [] 1 0 1 1"]),
    ("queue x in [::2] (a, b, c)", ["[a] [] [] 0 0 0 0", "[c] [] [] 1 0 2 2"]),
    ("queue x in [-1:] (a, b, c)", ["[c] [] [] 0 0 2 2"]),
    ("queue x in [1] (a, b, c)", ["[b] [] [] 0 0 1 1", "[c] [] [] 1 0 2 2"]),
    (
        "queue 2 x from items.txt",
        [
            "[a b c] [] [] 0 0 0 0",
            "[a b c] [] [] 1 1 0 0",
            "[d] [] [] 2 0 1 1",
            "[d] [] [] 3 1 1 1",
            "[e,f] [] [] 4 0 2 2",
            "[e,f] [] [] 5 1 2 2",
            "[# not a comment here] [] [] 6 0 3 3",
            "[# not a comment here] [] [] 7 1 3 3",
            "[g, h, i] [] [] 8 0 4 4",
            "[g, h, i] [] [] 9 1 4 4",
        ],
    ),  # fmt: skip
    (
        "queue x,y from items.txt",
        [
            "[a] [b c] [] 0 0 0 0",
            "[d] [] [] 1 0 1 1",
            "[e] [f] [] 2 0 2 2",
            "[#] [not a comment here] [] 3 0 3 3",
            "[g] [h, i] [] 4 0 4 4",
        ],
    ),  # fmt: skip
    (
        "queue 2 x y from [1:3] items.txt",
        [
            "[d] [] [] 0 0 1 1",
            "[d] [] [] 1 1 1 1",
            "[e] [f] [] 2 0 2 2",
            "[e] [f] [] 3 1 2 2",
        ],
    ),  # fmt: skip
    (
        "queue from items.txt",
        [
            "[] [] [a b c] 0 0 0 0",
            "[] [] [d] 1 0 1 1",
            "[] [] [e,f] 2 0 2 2",
            "[] [] [# not a comment here] 3 0 3 3",
            "[] [] [g, h, i] 4 0 4 4",
        ],
    ),  # fmt: skip
    ("queue x from (\n  a b\n  # c\n  d\n)", ["[a b] [] [] 0 0 0 0", "[d] [] [] 1 0 1 1"]),
    ("queue x,y from (\n  1 2\n  3\n)", ["[1] [2] [] 0 0 0 0", "[3] [] [] 1 0 1 1"]),
    (
        "queue 2 x,y from seq 1 2 |",
        [
            "[1] [] [] 0 0 0 0",
            "[1] [] [] 1 1 0 0",
            "[2] [] [] 2 0 1 1",
            "[2] [] [] 3 1 1 1",
        ],
    ),  # fmt: skip
    (
        "queue x from cat more.txt items.txt |",
        [
            "[x] [] [] 0 0 0 0",
            "[a b c] [] [] 1 0 1 1",
            "[d] [] [] 2 0 2 2",
            "[e,f] [] [] 3 0 3 3",
            "[# not a comment here] [] [] 4 0 4 4",
            "[g, h, i] [] [] 5 0 5 5",
        ],
    ),  # fmt: skip
    ("queue x matching *.txt", ["[items.txt] [] [] 0 0 0 0", "[more.txt] [] [] 1 0 1 1"]),
    ("queue x matching files *.txt", ["[items.txt] [] [] 0 0 0 0", "[more.txt] [] [] 1 0 1 1"]),
    ("queue x matching dirs sub*", ["[sub1/] [] [] 0 0 0 0", "[sub2/] [] [] 1 0 1 1"]),
    ("queue x matching s*", ["[sub1/] [] [] 0 0 0 0", "[sub2/] [] [] 1 0 1 1"]),
    ("queue x,y matching m*.txt", ["[more.txt] [] [] 0 0 0 0"]),
    ("queue x matching [1:] *.txt", ["[more.txt] [] [] 0 0 1 1"]),
    ("queue x matching [1:] files *.txt", ["[more.txt] [] [] 0 0 1 1"]),
    ("queue x matching files [1:] *.txt", ["[more.txt] [] [] 0 0 1 1"]),
    ("queue 2 x", ERROR),
    ("queue x in", ERROR),
    ("queue x from nofile.txt", ERROR),
    ("queue x in ( a,b\nc )", ERROR),
    ("queue x from false |", ERROR),
]


@pytest.fixture
def here(tmp_path: Path) -> Path:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "items.txt").write_text(ITEMS)
    (tmp_path / "more.txt").write_text("x\n")
    (tmp_path / "sub1").mkdir()
    (tmp_path / "sub2").mkdir()
    return tmp_path


def text_of(statement: str) -> str:
    return "executable = run.sh\n" + ARGS + statement + "\n"


def dfarm_jobs(statement: str, cwd: Path) -> list[str] | None:
    try:
        desc = parse_submit_text(
            text_of(statement), filename="job.sub", cluster=1, cwd=str(cwd), environ={}
        )
    except SubmitFileError as e:
        assert e.line is not None and e.line >= 3
        return None
    return [" ".join(p.arguments) for p in desc.procs]


@pytest.mark.parametrize(("statement", "expected"), FORMS)
def test_queue_form(here: Path, statement: str, expected: list[str] | None) -> None:
    assert dfarm_jobs(statement, here) == expected


@pytest.mark.skipif(not HTCONDOR, reason="the htcondor bindings are not installed")
@pytest.mark.parametrize(("statement", "expected"), FORMS)
def test_expected_jobs_are_htcondors(
    here: Path, statement: str, expected: list[str] | None
) -> None:
    got = condor_jobs(text_of(statement).replace("run.sh", "/bin/true"), str(here))
    if expected is None:
        assert "error" in got
    else:
        assert [job.get("Args", "") for job in got["jobs"]] == expected


#: Forms the bindings cannot be asked about: they expand one queue statement only,
#: and make one job of a statement with no items (condor_submit queues none).
DFARM_ONLY: list[tuple[str, list[str] | None]] = [
    ("queue x in (a)\nqueue x in (b)", ["[a] [] [] 0 0 0 0", "[b] [] [] 1 0 0 0"]),
    ("queue x matching files sub*", []),
    ("queue x in ()", []),
    ("queue 0 x in (a, b)", []),
]


@pytest.mark.parametrize(("statement", "expected"), DFARM_ONLY)
def test_queue_form_beyond_the_bindings(
    here: Path, statement: str, expected: list[str] | None
) -> None:
    assert dfarm_jobs(statement, here) == expected
