"""``getenv`` as condor_submit 24 reads it: true/false, or a list of names with ``*``
wildcards and ``!NAME`` exclusions; each case checked against HTCondor's own code when
the ``htcondor`` 24 bindings are installed."""

from __future__ import annotations

from pathlib import Path

import pytest
from htcondor_oracle import HTCONDOR, condor_jobs

from control_node.submit_file import parse_submit_text
from control_node.submit_quoting import parse_environment

ENVIRON = {"PATH": "/bin", "HOME": "/h", "PYX": "1", "PATHX": "2", "LANG": "C", "XHOME": "3"}

CASES = [
    ("true", set(ENVIRON)),
    ("TRUE", set(ENVIRON)),
    ("1", set(ENVIRON)),
    ("false", set()),
    ("0", set()),
    ("PATH, HOME", {"PATH", "HOME"}),
    ("HOME PATH", {"PATH", "HOME"}),
    ("HOME;PATH", {"PATH", "HOME"}),
    ("HOME,,PATH", {"PATH", "HOME"}),
    ("path", {"PATH"}),
    ("P*", {"PATH", "PATHX", "PYX"}),
    ("H*E", {"HOME"}),
    ("*ME", {"HOME", "XHOME"}),
    ("*", set(ENVIRON)),
    ("!PATH, *", set(ENVIRON) - {"PATH"}),
    ("*, !P*", {"HOME", "LANG", "XHOME"}),
    ("-PATH, *", set(ENVIRON)),
    ("-PATH", set()),
    ("P?TH", set()),
    ("yes", set()),
    ("yes, HOME", {"HOME"}),
    ('"HOME"', set()),
]


def dfarm_names(value: str, tmp_path: Path) -> set[str]:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    text = f"executable = job.sh\ngetenv = {value}\nqueue\n"
    desc = parse_submit_text(
        text, filename="t.sub", cluster=1, cwd=str(tmp_path), environ=ENVIRON, seed=1
    )
    return set(desc.procs[0].environment)


@pytest.mark.parametrize(("value", "names"), CASES)
def test_getenv_imports_the_names_it_lists(value: str, names: set[str], tmp_path: Path) -> None:
    assert dfarm_names(value, tmp_path) == names


@pytest.mark.skipif(not HTCONDOR, reason="needs the htcondor 24 bindings")
@pytest.mark.parametrize(("value", "names"), CASES)
def test_getenv_reads_as_htcondor_reads_it(value: str, names: set[str], tmp_path: Path) -> None:
    text = f"executable = /bin/true\ngetenv = {value}\nqueue\n"
    theirs = condor_jobs(text, str(tmp_path), dict(ENVIRON))
    env = theirs["jobs"][0].get("Environment", "").strip('"')
    # the oracle's process also has CONDOR_CONFIG and the locale Python sets
    assert set(parse_environment(f'"{env}"')) & set(ENVIRON) == names


def test_environment_wins_over_getenv(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    text = 'executable = job.sh\ngetenv = HOME\nenvironment = "HOME=/mine A=1"\nqueue\n'
    desc = parse_submit_text(
        text, filename="t.sub", cluster=1, cwd=str(tmp_path), environ=ENVIRON, seed=1
    )
    assert desc.procs[0].environment == {"HOME": "/mine", "A": "1"}
