"""``include : FILE``, ``include command : CMD |``, ``error :`` and ``warning :`` in a
submit file, as condor_submit 24 reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_node.submit_file import SubmitFileError, parse_submit_text


def parse(tmp_path: Path, text: str) -> list[int]:
    """The request_cpus of each proc of ``text`` read in ``tmp_path``."""
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    desc = parse_submit_text(text, filename="t.sub", cluster=1, cwd=str(tmp_path), seed=1)
    return [p.request_cpus for p in desc.procs]


def test_include_reads_the_file_where_it_stands(tmp_path: Path) -> None:
    (tmp_path / "a.inc").write_text("request_cpus = 3\n")
    assert parse(tmp_path, "executable = job.sh\ninclude : a.inc\nqueue\n") == [3]
    text = "executable = job.sh\ninclude : a.inc\nrequest_cpus = 2\nqueue\n"
    assert parse(tmp_path, text) == [2]


def test_include_path_expands_macros_and_nested_includes_are_relative(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "outer.inc").write_text("include : sub/inner.inc\n")
    (tmp_path / "sub" / "inner.inc").write_text("include : last.inc\n")
    (tmp_path / "sub" / "last.inc").write_text("request_cpus = 4\n")
    text = "executable = job.sh\nname = outer\ninclude : $(name).inc\nqueue\n"
    assert parse(tmp_path, text) == [4]


def test_include_command_runs_the_command(tmp_path: Path) -> None:
    text = "executable = job.sh\ninclude command : echo request_cpus = 5 |\nqueue\n"
    assert parse(tmp_path, text) == [5]
    text = "executable = job.sh\ninclude : echo request_cpus = 6 |\nqueue\n"
    assert parse(tmp_path, text) == [6]


def test_include_in_an_inactive_branch_is_skipped(tmp_path: Path) -> None:
    text = "executable = job.sh\nif false\ninclude : missing.inc\nendif\nqueue\n"
    assert parse(tmp_path, text) == [1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("include : missing.inc\n", "t.sub:2: cannot include 'missing.inc'"),
        ("include a.inc\n", "t.sub:2: expected 'include : ...'"),
        ("include : self.inc\n", "self.inc:1: 'self.inc' includes itself"),
        ("include command : exit 3 |\n", "t.sub:2: the include command 'exit 3' exited"),
        ("error : stop $(x)\n", "t.sub:2: stop here"),
        ("include : bad.inc\n", "bad.inc:2: expected 'key = value' or 'queue'"),
        ("p = $(q)\nq = $(p)\nwarning : $(p)\n", "t.sub:4: "),
        ("include : /dev/zero\n", "t.sub:2: '/dev/zero' is over"),
        ("p = $(q)\nq = $(p)\ninclude : $(p)\n", "t.sub:4: "),
    ],
)
def test_include_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "self.inc").write_text("include : self.inc\n")
    (tmp_path / "bad.inc").write_text("a = 1\nnonsense\n")
    with pytest.raises(SubmitFileError) as e:
        parse(tmp_path, "x = here\n" + text + "executable = job.sh\nqueue\n")
    assert message in str(e.value)


def test_a_cycle_of_two_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.inc").write_text("include : b.inc\n")
    (tmp_path / "b.inc").write_text("include : a.inc\n")
    with pytest.raises(SubmitFileError, match="a cycle"):
        parse(tmp_path, "executable = job.sh\ninclude : a.inc\nqueue\n")


def test_warning_statement_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    text = "executable = job.sh\nwarning : careful\nqueue\n"
    desc = parse_submit_text(text, filename="t.sub", cluster=1, cwd=str(tmp_path), seed=1)
    assert "t.sub:2: careful" in desc.warnings


def test_warnings_name_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    (tmp_path / "a.inc").write_text("argumnets = x\nlate = 1\n")
    text = "executable = job.sh\nqueue\ninclude : a.inc\n"
    desc = parse_submit_text(text, filename="t.sub", cluster=1, cwd=str(tmp_path), seed=1)
    inc = str(tmp_path / "a.inc")
    assert any(w.startswith(f"{inc}:1: unknown key 'argumnets'") for w in desc.warnings)
    assert f"{inc}:2: 'late' is set after the last 'queue' and has no effect" in desc.warnings


def test_keys_of_an_included_queue_file_are_not_late(tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    (tmp_path / "q.inc").write_text("request_cpus = 2\nqueue\n")
    text = "\n\n\n\nexecutable = job.sh\ninclude : q.inc\n"
    desc = parse_submit_text(text, filename="t.sub", cluster=1, cwd=str(tmp_path), seed=1)
    assert [p.request_cpus for p in desc.procs] == [2]
    assert not [w for w in desc.warnings if "after the last" in w]
