"""Unit tests for the submit-file parser (control_node.submit_file and the modules it uses).

Examples marked "manual" are taken from HTCondor's condor_submit manual page and
configuration chapter, so dfarm must give exactly the documented result.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from control_node.submit_file import (
    SubmitDescription,
    SubmitFileError,
    parse_disk_kb,
    parse_memory_mb,
    parse_submit_file,
    parse_submit_text,
)
from control_node.submit_quoting import parse_arguments, parse_environment, split_list


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    """A submit directory with an executable, a data file and an input file."""
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "data.txt").write_text("data\n")
    (tmp_path / "in.txt").write_text("stdin\n")
    return tmp_path


def parse(cwd: Path, text: str, *, cluster: int = 42, environ=None) -> SubmitDescription:
    return parse_submit_text(
        text, filename="job.sub", cluster=cluster, cwd=str(cwd), environ=environ or {}
    )


def fails(cwd: Path, text: str, *, environ=None) -> SubmitFileError:
    with pytest.raises(SubmitFileError) as info:
        parse(cwd, text, environ=environ)
    assert info.value.path == "job.sub"
    return info.value


def args_of(cwd: Path, value: str) -> list[str]:
    return parse(cwd, f"executable = run.sh\narguments = {value}\nqueue\n").procs[0].arguments


def env_of(cwd: Path, value: str) -> dict[str, str]:
    return parse(cwd, f"executable = run.sh\nenvironment = {value}\nqueue\n").procs[0].environment


# ----------------------------------------------------------------------------- seed format


def test_seed_executable_only(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\n")
    assert len(desc.procs) == 1
    p = desc.procs[0]
    assert p.proc == 0
    assert p.executable == str(farm / "run.sh")
    assert p.arguments == []
    assert p.transfer_input_files == []
    assert p.transfer_output_files is None
    assert p.initialdir == str(farm)
    assert (p.notify_user, p.notification, p.machine) == (None, "Never", None)
    assert (p.request_cpus, p.request_memory, p.request_disk, p.request_gpus) == (1, None, None, 0)
    assert (p.priority, p.getenv, p.environment, p.input, p.output) == (0, False, {}, None, None)
    assert desc.warnings == [] and desc.path == "job.sub"


def test_seed_with_data_email_client(farm: Path) -> None:
    text = "# seed\nexecutable = run.sh\n\ndata = data.txt\nemail = me@example.org\nclient = 3\n"
    (p,) = parse(farm, text).procs
    assert p.transfer_input_files == [str(farm / "data.txt")]
    assert p.arguments == ["data.txt"]
    assert p.notify_user == "me@example.org"
    assert p.notification == "Complete"
    assert p.machine == "3"


def test_seed_client_by_name(farm: Path) -> None:
    (p,) = parse(farm, "executable = run.sh\nclient = node-07.lab\n").procs
    assert p.machine == "node-07.lab"


def test_seed_data_in_subdirectory_passes_base_name(farm: Path) -> None:
    (farm / "d").mkdir()
    (farm / "d" / "x.csv").write_text("1\n")
    (p,) = parse(farm, "executable = run.sh\ndata = d/x.csv\n").procs
    assert p.arguments == ["x.csv"]
    assert p.transfer_input_files == [str(farm / "d" / "x.csv")]


def test_seed_keys_with_queue_and_explicit_arguments(farm: Path) -> None:
    text = "executable = run.sh\ndata = data.txt\narguments = -v\nqueue 2\n"
    desc = parse(farm, text)
    assert [p.arguments for p in desc.procs] == [["-v"], ["-v"]]
    assert desc.procs[1].transfer_input_files == [str(farm / "data.txt")]


def test_data_already_listed_is_not_duplicated(farm: Path) -> None:
    text = "executable = run.sh\ndata = data.txt\ntransfer_input_files = data.txt\nqueue\n"
    assert parse(farm, text).procs[0].transfer_input_files == [str(farm / "data.txt")]


def test_htcondor_keys_without_queue_is_an_error(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\narguments = 1\n")
    assert str(e) == "job.sub: no 'queue' statement"
    assert e.line is None


def test_missing_executable(farm: Path) -> None:
    assert fails(farm, "email = a@b.org\n").message == "missing 'executable'"
    e = fails(farm, "arguments = 1\n\nqueue\n")
    assert (e.line, e.message) == (3, "missing 'executable'")


# ----------------------------------------------------------------------------- queue


def test_queue_n_numbers_procs_and_expands_cluster_and_process(farm: Path) -> None:
    text = (
        "executable = run.sh\noutput = out.$(Cluster).$(Process)\n"
        "error = e.$(ClusterId)_$(ProcId)\nqueue 3\n"
    )
    desc = parse(farm, text, cluster=7)
    assert [p.proc for p in desc.procs] == [0, 1, 2]
    assert [p.output for p in desc.procs] == [str(farm / f"out.7.{i}") for i in range(3)]
    assert desc.procs[2].error == str(farm / "e.7_2")


def test_queue_keyword_is_case_insensitive(farm: Path) -> None:
    assert len(parse(farm, "Executable = run.sh\nQUEUE 2\n").procs) == 2


def test_queue_zero_queues_nothing(farm: Path) -> None:
    assert parse(farm, "executable = run.sh\nqueue 0\n").procs == []
    desc = parse(farm, "executable = run.sh\nqueue 0\narguments = x\nqueue 2\n")
    assert [(p.proc, p.arguments) for p in desc.procs] == [(0, ["x"]), (1, ["x"])]


def test_several_queue_statements_use_the_values_in_force(farm: Path) -> None:
    # manual, Example 1
    text = """Executable     = run.sh
Universe       = vanilla

Arguments      = 15 2000
Output  = foo.out0
Error   = foo.err0
Queue

Arguments      = 30 2000
Output  = foo.out1
Error   = foo.err1
Queue

Arguments      = 45 6000
Output  = foo.out2
Error   = foo.err2
Queue
"""
    desc = parse(farm, text)
    assert [p.arguments for p in desc.procs] == [["15", "2000"], ["30", "2000"], ["45", "6000"]]
    assert [Path(p.output).name for p in desc.procs] == ["foo.out0", "foo.out1", "foo.out2"]
    assert [Path(p.error).name for p in desc.procs] == ["foo.err0", "foo.err1", "foo.err2"]


def test_process_keeps_counting_across_queue_statements_and_step_restarts(farm: Path) -> None:
    text = "executable = run.sh\narguments = $(Process) $(Step)\nqueue 2\npriority = 5\nqueue 2\n"
    desc = parse(farm, text)
    assert [p.arguments for p in desc.procs] == [["0", "0"], ["1", "1"], ["2", "0"], ["3", "1"]]
    assert [p.priority for p in desc.procs] == [0, 0, 5, 5]


def test_queue_count_from_a_macro(farm: Path) -> None:
    assert len(parse(farm, "executable = run.sh\nn = 4\nqueue $(n)\n").procs) == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("queue 3**2", "must be a whole number"),
        ("queue -1", "must not be negative"),
        ("queue 1/0", "must be a whole number"),
        ("queue x", "cannot read 'queue x'"),
        ("queue x from", "needs a list of items"),
        ("queue x in [1:2:0] (a)", "step of a queue slice"),
        ("queue x in [a] (a)", "invalid slice"),
        ("queue x; y in (a)", "the queue count must be a whole number"),
        ("queue x from nosuch.txt", "cannot read the item file 'nosuch.txt'"),
        ("queue x from exit 3 |", "exited with status 3"),
    ],
)
def test_invalid_queue_statements_name_the_line(farm: Path, line: str, message: str) -> None:
    e = fails(farm, f"executable = run.sh\n{line}\n")
    assert e.line == 2
    assert message in e.message


def test_queue_macro_that_is_not_a_number(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\nn = many\nqueue $(n)\n")
    assert e.line == 3 and "whole number" in e.message


def test_setting_keys_after_the_last_queue_warns(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\nqueue\noutput = late.txt\n")
    assert desc.procs[0].output is None
    assert desc.warnings == ["job.sub:3: 'output' is set after the last 'queue' and has no effect"]


def test_changing_executable_between_queues_is_refused(farm: Path) -> None:
    (farm / "other.sh").write_text("#!/bin/sh\n")
    e = fails(farm, "executable = run.sh\nqueue\nexecutable = other.sh\nqueue\n")
    assert e.line == 3 and "second cluster" in e.message


# ----------------------------------------------------------------------------- macros


def test_user_macros_are_expanded_at_queue_time(farm: Path) -> None:
    # manual (configuration): C is bound to $(A), not to its value
    text = "executable = run.sh\nA = xxx\nC = $(A)\nA = yyy\narguments = $(C)\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["yyy"]


def test_macro_referring_to_itself_is_expanded_incrementally(farm: Path) -> None:
    # manual (configuration): the result of A is xxxyyyzzz
    text = (
        "executable = run.sh\nA = xxx\nB = $(A)\nA = $(A)yyy\nA = $(A)zzz\n"
        "arguments = $(A) $(B)\nqueue\n"
    )
    assert parse(farm, text).procs[0].arguments == ["xxxyyyzzz", "xxxyyyzzz"]
    # manual (submit): foo = bar / foo = snap $(foo) gives "snap bar"
    text = "executable = run.sh\nfoo = bar\nfoo = snap $(foo)\narguments = $(foo)\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["snap", "bar"]


def test_macro_referring_to_itself_without_a_base_is_empty_there(farm: Path) -> None:
    # condor_submit: foo = $(foo) bar with no earlier foo gives " bar"
    text = "executable = run.sh\nfoo = $(foo) bar\narguments = [$(foo)]\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["[", "bar]"]


def test_macro_names_are_case_insensitive(farm: Path) -> None:
    text = (
        "executable = run.sh\nMyDir = abc\n"
        "arguments = $(mydir) $(MYDIR) $(process) $(CLUSTER)\nqueue\n"
    )
    assert parse(farm, text, cluster=9).procs[0].arguments == ["abc", "abc", "0", "9"]


def test_macro_default_is_used_only_when_undefined(farm: Path) -> None:
    # manual: D = $(E:24) with E undefined gives 24
    text = "executable = run.sh\nD = $(E:24)\nF = 1\narguments = $(D) $(F:2)\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["24", "1"]


def test_macro_default_may_hold_a_macro(farm: Path) -> None:
    text = "executable = run.sh\nB = bee\narguments = $(A:$(B))\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["bee"]


def test_undefined_macro_is_empty_with_a_warning(farm: Path) -> None:
    # HTCondor expands an undefined macro to nothing
    text = "executable = run.sh\n\n\narguments = a$(executabel)b $(nosuch)\nqueue\n"
    desc = parse(farm, text)
    assert desc.procs[0].arguments == ["ab"]
    assert desc.warnings == [
        "job.sub:4: $(executabel) is not defined; did you mean $(executable)?",
        "job.sub:4: $(nosuch) is not defined and expands to nothing",
    ]


def test_predefined_macros_raise_no_warning(farm: Path) -> None:
    text = (
        "executable = run.sh\narguments = $(Cluster) $(ClusterId) $(Process) $(ProcId)"
        " $(Step) $(Item) $(ItemIndex) $(Row) $(Node) $(DOLLAR) $(SUBMIT_FILE)\nqueue\n"
    )
    desc = parse(farm, text)
    assert desc.warnings == []
    assert desc.procs[0].arguments == [
        "42",
        "42",
        "0",
        "0",
        "0",
        "0",
        "0",
        "$",
        str(farm / "job.sub"),
    ]


def test_macro_recursion_is_detected(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\nA = $(B)\nB = $(A)\narguments = $(A)\nqueue\n")
    assert e.line == 4
    assert "refers to itself" in e.message and "a -> b -> a" in e.message


def test_double_dollar_names_a_worker_attribute(farm: Path) -> None:
    text = "executable = run.sh\narguments = $$(OpSys) $$(cpus:1)\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["$$(OpSys)", "$$(cpus:1)"]
    e = fails(farm, "executable = run.sh\narguments = $$(KFlops)\nqueue\n")
    assert e.line == 2 and "'$$(KFlops)'" in e.message and "totalcpus" in e.message
    text = "executable = run.sh\narguments = $$([Memory * 0.9]) $$([ a ? b : c ])\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["$$([Memory", "*", "0.9])", "$$([", "a",
                                                     "?", "b", ":", "c", "])"]  # fmt: skip
    e = fails(farm, "executable = run.sh\narguments = $$([Memory *])\nqueue\n")
    assert e.line == 2 and "cannot parse the expression" in e.message
    e = fails(farm, "executable = run.sh\noutput = out.$$(Name)\nqueue\n")
    assert e.line == 2 and "only in arguments and environment" in e.message


def test_dollar_macro_and_lone_dollars_are_literal(farm: Path) -> None:
    text = "executable = run.sh\narguments = $(DOLLAR)(x) $1 cost$\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["$(x)", "$1", "cost$"]


def test_env_macro(farm: Path) -> None:
    text = "executable = run.sh\narguments = $ENV(HOME) $ENV(NOPE:none)\nqueue\n"
    assert parse(farm, text, environ={"HOME": "/home/u"}).procs[0].arguments == ["/home/u", "none"]
    # HTCondor: an unset variable without a default is the word UNDEFINED
    desc = parse(farm, "executable = run.sh\narguments = $ENV(NOPE)\nqueue\n")
    assert desc.procs[0].arguments == ["UNDEFINED"]
    assert desc.warnings == [
        "job.sub:2: $ENV(NOPE) is not set in the environment and expands to UNDEFINED"
    ]


def test_unknown_macro_functions_stay_as_text(farm: Path) -> None:
    # condor_submit leaves a $NAME(...) that is not one of its functions in place
    text = "executable = run.sh\narguments = $FOO(x) $Fz(x)\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["$FOO(x)", "$Fz(x)"]


def test_a_redefined_predefined_macro_wins_as_in_htcondor(farm: Path) -> None:
    text = "executable = run.sh\nProcess = 3\narguments = $(Process) $(ProcId)\nqueue 2\n"
    assert [p.arguments for p in parse(farm, text).procs] == [["3", "0"], ["3", "1"]]
    assert [p.proc for p in parse(farm, text).procs] == [0, 1]


def test_deeply_nested_and_huge_macros_are_errors(farm: Path) -> None:
    chain = "".join(f"a{i} = $(a{i + 1})\n" for i in range(300))
    e = fails(farm, f"executable = run.sh\n{chain}a300 = end\narguments = $(a0)\nqueue\n")
    assert e.line == 303 and "nested" in e.message
    bomb = "".join(f"b{i + 1} = $(b{i})$(b{i})$(b{i})$(b{i})\n" for i in range(20))
    e = fails(farm, f"executable = run.sh\nb0 = xxxxxxxx\n{bomb}arguments = $(b20)\nqueue\n")
    assert e.line == 23 and "longer than" in e.message


def test_unterminated_macro_reference_stays_as_text(farm: Path) -> None:
    # as in condor_submit
    text = "executable = run.sh\narguments = $(oops x$( y )\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["$(oops", "x$(", "y", ")"]


# ----------------------------------------------------------------------------- lines


def test_continuation_skips_comment_lines_that_continue(farm: Path) -> None:
    # condor_submit 24 skips a comment line that ends with '\'; one that does not ends
    # the value (then "$(D)" alone is an error there): refused with its line here
    text = "executable = run.sh\nB = b\nD = d\nA = $(B) \\\n{}\n$(D)\narguments = $(A)\nqueue\n"
    assert parse(farm, text.format("# $(C) \\")).procs[0].arguments == ["b", "d"]
    with pytest.raises(SubmitFileError, match=r"job.sub:5: a comment line inside a value"):
        parse(farm, text.format("# $(C)"))


def test_continuation_lines_build_one_value(farm: Path) -> None:
    (farm / "a.txt").write_text("a")
    text = "executable = run.sh\ntransfer_input_files = a.txt, \\\n    data.txt\nqueue\n"
    assert parse(farm, text).procs[0].transfer_input_files == [
        str(farm / "a.txt"),
        str(farm / "data.txt"),
    ]


def test_errors_in_continued_lines_name_the_first_line(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\narguments = a \\\n  b\nrequest_cpus = x\nqueue\n")
    assert e.line == 4


def test_lone_backslash_lines_are_blank(farm: Path) -> None:
    assert len(parse(farm, "executable = run.sh\n\\\n\nqueue\n").procs) == 1


def test_comment_ending_in_backslash_does_not_continue(farm: Path) -> None:
    text = "# a comment \\\nexecutable = run.sh\n  # indented comment\nqueue\n"
    assert len(parse(farm, text).procs) == 1


def test_crlf_line_endings_are_accepted(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\r\narguments = a b\r\nqueue\r\n")
    assert desc.procs[0].arguments == ["a", "b"]


def test_keys_are_case_insensitive_and_whitespace_is_stripped(farm: Path) -> None:
    (p,) = parse(farm, "  EXECUTABLE=run.sh  \n\tRequest_Cpus   =\t4 \nqueue\n").procs
    assert p.executable == str(farm / "run.sh") and p.request_cpus == 4


def test_line_without_equals(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\njust some words\nqueue\n")
    assert e.line == 2 and "expected 'key = value'" in e.message


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("include other.sub", "'include : ...'"),
        ("include : other.sub", "cannot include 'other.sub'"),
        ("if defined X", "'if'"),
        ("args @=end", "multi-line"),
        ("bad key = 1", "invalid submit key"),
    ],
)
def test_other_statements_are_rejected(farm: Path, line: str, fragment: str) -> None:
    e = fails(farm, f"executable = run.sh\n{line}\nqueue\n")
    assert e.line == 2 and fragment in e.message


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # manual, new syntax
        ('"3 simple arguments"', ["3", "simple", "arguments"]),
        ("\"one 'two with spaces' 3\"", ["one", "two with spaces", "3"]),
        (
            "\"one \"\"two\"\" 'spacey ''quoted'' argument'\"",
            ["one", '"two"', "spacey 'quoted' argument"],
        ),
        # manual, old syntax
        ("one \\\"two\\\" 'three'", ["one", '"two"', "'three'"]),
        # more
        ('""', []),
        ("\"a '' b\"", ["a", "", "b"]),
        ("\"x'y z'w\"", ["xy zw"]),
        ('"tab\tseparated"', ["tab", "separated"]),
        ("a\\b c\\\\d", ["a\\b", "c\\\\d"]),
        ("  -n   5  ", ["-n", "5"]),
        ("", []),
    ],
)
def test_arguments(value: str, expected: list[str]) -> None:
    assert parse_arguments(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"unterminated', "missing closing double quote"),
        ('"a" b', "after the closing double quote"),
        ('"\'open"', "missing closing single quote"),
        ('one "two"', "unescaped double quote"),
    ],
)
def test_bad_arguments(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_arguments(value)


def test_arguments_in_a_file(farm: Path) -> None:
    assert args_of(farm, "\"one 'two with spaces' 3\"") == ["one", "two with spaces", "3"]
    assert args_of(farm, 'one \\"two\\"') == ["one", '"two"']
    e = fails(farm, 'executable = run.sh\n\narguments = "oops\nqueue\n')
    assert e.line == 3 and "arguments" in e.message


# ----------------------------------------------------------------------------- environment


def test_environment_new_syntax_manual_example() -> None:
    value = "\"one=1 two=\"\"2\"\" three='spacey ''quoted'' value'\""
    assert parse_environment(value) == {"one": "1", "two": '"2"', "three": "spacey 'quoted' value"}


def test_environment_old_syntax_manual_example() -> None:
    value = "one=1;two=2;three=\"quotes have no 'special' meaning\""
    assert parse_environment(value) == {
        "one": "1",
        "two": "2",
        "three": "\"quotes have no 'special' meaning\"",
    }


def test_environment_details() -> None:
    assert parse_environment("A=;B=x=y;") == {"A": "", "B": "x=y"}
    assert parse_environment("\"'A=with space' B=2 A=3\"") == {"A": "3", "B": "2"}
    assert parse_environment('""') == {}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1A=x", "invalid environment variable name"),
        ("A-B=x", "invalid environment variable name"),
        ("A=1; B=2", "invalid environment variable name ' B'"),
        ("NOEQUALS", "has no '='"),
        ('"A=1 B"', "has no '='"),
        ('"A=\'x"', "missing closing single quote"),
    ],
)
def test_bad_environment(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_environment(value)


def test_environment_in_a_file(farm: Path) -> None:
    assert env_of(farm, '"PATH=/bin HOME=/h"') == {"PATH": "/bin", "HOME": "/h"}
    e = fails(farm, "executable = run.sh\nenvironment = 9X=1\nqueue\n")
    assert e.line == 2 and "9X" in e.message


def test_getenv_copies_environ_and_environment_overrides(farm: Path) -> None:
    environ = {"HOME": "/home/u", "LANG": "C", "BASH_FUNC_f%%": "() { x\n}"}
    text = "environment = LANG=en_US.UTF-8\nexecutable = run.sh\ngetenv = True\nqueue\n"
    desc = parse(farm, text, environ=environ)
    p = desc.procs[0]
    assert p.getenv is True
    assert p.environment == {"HOME": "/home/u", "LANG": "en_US.UTF-8"}
    assert desc.warnings == ["job.sub:3: getenv skipped unusable variables: 'BASH_FUNC_f%%'"]


def test_getenv_false_copies_nothing(farm: Path) -> None:
    (p,) = parse(farm, "executable = run.sh\ngetenv = false\nqueue\n", environ={"A": "1"}).procs
    assert p.getenv is False and p.environment == {}


def test_getenv_with_names_copies_those(farm: Path) -> None:
    environ = {"HOME": "/home/u", "PATH": "/bin", "LANG": "C"}
    desc = parse(farm, "executable = run.sh\ngetenv = HOME, PATH\nqueue\n", environ=environ)
    (p,) = desc.procs
    assert p.getenv is True and p.environment == {"HOME": "/home/u", "PATH": "/bin"}


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        ("1024", 1024),
        ("1G", 1024),
        ("1 GB", 1024),
        ("32 Mb", 32),  # manual, Example 2
        ("2048m", 2048),
        ("512K", 1),
        ("1536kb", 2),
        ("1T", 1024 * 1024),
        ("1.5G", 1536),
        ("0.5", 1),
    ],
)
def test_parse_memory_mb(value: str, mib: int) -> None:
    assert parse_memory_mb(value) == mib


@pytest.mark.parametrize(
    ("value", "kib"),
    [("100", 100), ("1M", 1024), ("1 GB", 1024 * 1024), ("1.5K", 2), ("2t", 2 * 2**30), ("1kb", 1)],
)
def test_parse_disk_kb(value: str, kib: int) -> None:
    assert parse_disk_kb(value) == kib


@pytest.mark.parametrize("value", ["", "lots", "1X", "1 GiB", "-5", "0", "1e3", "1,5G", "G"])
def test_bad_sizes(value: str) -> None:
    with pytest.raises(ValueError):
        parse_memory_mb(value)
    with pytest.raises(ValueError):
        parse_disk_kb(value)


def test_sizes_in_a_file(farm: Path) -> None:
    text = "executable = run.sh\nrequest_memory = 2 GB\nrequest_disk = 10M\nqueue\n"
    (p,) = parse(farm, text).procs
    assert (p.request_memory, p.request_disk) == (2048, 10240)
    e = fails(farm, "executable = run.sh\nrequest_memory = 2 GiB\nqueue\n")
    assert e.line == 2 and "request_memory" in e.message


# ----------------------------------------------------------------------------- key errors


def test_unknown_key_is_a_macro_with_a_warning(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\n" + "\n" * 10 + "argumnets = 1\nqueue\n")
    said = "job.sub:12: unknown key 'argumnets', did you mean 'arguments'?"
    assert desc.warnings == [said] and desc.unknown_keys == [said]
    assert desc.procs[0].arguments == []


def test_key_used_as_macro_is_not_unknown(farm: Path) -> None:
    text = "executable = run.sh\nbase = run7\noutput = $(base).out\nqueue\n"
    assert parse(farm, text).procs[0].output == str(farm / "run7.out")


@pytest.mark.parametrize(
    ("line", "attributes", "said"),
    [
        ("nice_user = true", {}, "'nice_user' has no effect here"),
        ("transfer_executable = false", {"TransferExecutable": "false"}, "TransferExecutable"),
    ],
)
def test_keys_dfarm_does_not_carry_out_are_accepted_with_a_warning(
    farm: Path, line: str, attributes: dict[str, str], said: str
) -> None:
    desc = parse(farm, f"executable = run.sh\n{line}\nqueue\n")
    assert desc.procs[0].attributes == attributes
    assert len(desc.warnings) == 1 and desc.warnings[0].startswith("job.sub:2: ")
    assert said in desc.warnings[0]


def test_rank_is_stored_and_used_with_no_warning(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\nRank = Memory\nqueue\n")
    assert desc.procs[0].attributes == {"Rank": "Memory"} and desc.warnings == []


def test_retries_and_wall_time_limit(farm: Path) -> None:
    text = "executable = run.sh\nmax_retries = 3\nallowed_job_duration = 60\nqueue\n"
    proc = parse(farm, text).procs[0]
    assert (proc.max_retries, proc.allowed_job_duration) == (3, 60)
    assert parse(farm, "executable = run.sh\nqueue\n").procs[0].max_retries == 0
    e = fails(farm, "executable = run.sh\nmax_retries = -1\nqueue\n")
    assert e.line == 2 and "max_retries must be between 0" in e.message
    e = fails(farm, "executable = run.sh\nallowed_job_duration = 1h\nqueue\n")
    assert e.line == 2 and "allowed_job_duration must be a whole number" in e.message


@pytest.mark.parametrize(
    ("line", "value"), [('+ProjectName = "x"', '"x"'), ("  MY.ProjectName = 1", "1")]
)
def test_custom_attributes_are_job_attributes(farm: Path, line: str, value: str) -> None:
    desc = parse(farm, f"executable = run.sh\n{line}\nqueue\n")
    assert desc.procs[0].attributes == {"ProjectName": value} and desc.warnings == []


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("universe = moon", "unknown universe 'moon'"),
        ("should_transfer_files = SOMETIMES", "invalid should_transfer_files"),
        ("should_transfer_files = maybe", "invalid should_transfer_files"),
        ("when_to_transfer_output = NEVER", "invalid when_to_transfer_output"),
        ("request_cpus = 0", "request_cpus"),
        ("request_cpus = two", "request_cpus"),
        ("request_gpus = -1", "request_gpus"),
        ("priority = 1.5", "priority"),
        ("notification = sometimes", "notification"),
        ("client = two words", "invalid client"),
    ],
)
def test_bad_values(farm: Path, line: str, fragment: str) -> None:
    e = fails(farm, f"executable = run.sh\n\n{line}\nqueue\n")
    assert e.line == 3 and fragment in e.message


def test_accepted_fixed_values(farm: Path) -> None:
    text = (
        "executable = run.sh\nuniverse = VANILLA\nshould_transfer_files = IF_NEEDED\n"
        "when_to_transfer_output = on_exit\npriority = -5\nrequest_gpus = 2\n"
        "notification = error\nnotify_user = a.b+c@mail.example.org\nqueue\n"
    )
    (p,) = parse(farm, text).procs
    assert (p.priority, p.request_gpus, p.notification) == (-5, 2, "Error")
    assert p.notify_user == "a.b+c@mail.example.org"


def test_notification_defaults(farm: Path) -> None:
    """notify_user alone sends no mail, as in HTCondor 24; dfarm's own email does."""
    (p,) = parse(farm, "executable = run.sh\nnotify_user = u@h\nqueue\n").procs
    assert (p.notify_user, p.notification) == ("u@h", "Never")
    (p,) = parse(farm, "executable = run.sh\nemail = u@h\nqueue\n").procs
    assert (p.notify_user, p.notification) == ("u@h", "Complete")
    (p,) = parse(
        farm, "executable = run.sh\nnotify_user = u@h\nnotification = NEVER\nqueue\n"
    ).procs
    assert p.notification == "Never"


@pytest.mark.parametrize(
    "address",
    ["nobody", "a@b@c", "a b@c", "a@b,c@d", "<a@b>", "a@", "@b", "a@-b.org", "a@b..org"],
)
def test_bad_email_addresses(farm: Path, address: str) -> None:
    e = fails(farm, f"executable = run.sh\nnotify_user = {address}\nqueue\n")
    assert e.line == 2 and "e-mail address" in e.message
    e = fails(farm, f"executable = run.sh\nemail = {address}\n")
    assert e.line == 2 and "e-mail address" in e.message


def test_email_and_notify_user_must_agree(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\nemail = a@b\nnotify_user = c@d\nqueue\n")
    assert e.line == 2 and "different addresses" in e.message


def test_control_characters_in_values_are_kept(farm: Path) -> None:
    # condor_submit keeps them: a job may take them in its arguments
    text = "executable = run.sh\narguments = a\x01b c\x1bd\nenvironment = A=x\x7fy\nqueue\n"
    proc = parse(farm, text).procs[0]
    assert proc.arguments == ["a\x01b", "c\x1bd"] and proc.environment == {"A": "x\x7fy"}


def test_a_nul_character_is_refused_and_errors_show_no_control_character(farm: Path) -> None:
    e = fails(farm, "executable = run.sh\n\narguments = a\x00b\nqueue\n")
    assert e.line == 3 and "control character U+0000" in e.message
    e = fails(farm, "executable = run.sh\ninitialdir = x\x1by\nqueue\n")
    assert e.line == 2 and "'x\\x1by'" in e.message


def test_line_breaks_from_env_macro(farm: Path) -> None:
    # condor_submit: a line break separates arguments; a path cannot hold one here
    text = "executable = run.sh\narguments = $ENV(X)\nqueue\n"
    assert parse(farm, text, environ={"X": "a\nb"}).procs[0].arguments == ["a", "b"]
    e = fails(farm, "executable = run.sh\noutput = $ENV(X)\nqueue\n", environ={"X": "a\nb"})
    assert e.line == 2 and "the value of 'output' spans lines" in e.message


# ----------------------------------------------------------------------------- files


def test_missing_submit_file(tmp_path: Path) -> None:
    with pytest.raises(SubmitFileError) as info:
        parse_submit_file(tmp_path / "nope.sub", cluster=1)
    assert info.value.line is None
    assert str(info.value).startswith(f"{tmp_path / 'nope.sub'}: cannot read")


def test_non_utf8_submit_file(farm: Path) -> None:
    (farm / "job.sub").write_bytes(b"executable = run.sh\narguments = caf\xe9\nqueue\n")
    with pytest.raises(SubmitFileError) as info:
        parse_submit_file(farm / "job.sub", cluster=1, cwd=str(farm))
    assert info.value.line == 2 and "UTF-8" in info.value.message


def test_parse_submit_file_defaults_cwd_to_current_directory(
    farm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (farm / "sub").mkdir()
    (farm / "sub" / "job.sub").write_text("executable = run.sh\n")
    monkeypatch.chdir(farm)
    desc = parse_submit_file(Path("sub/job.sub"), cluster=3)
    assert desc.path == os.path.join("sub", "job.sub")
    assert desc.procs[0].executable == str(farm / "run.sh")


def test_parse_submit_file_uses_os_environ_by_default(
    farm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFARM_TEST_VAR", "v1")
    (farm / "job.sub").write_text("executable = run.sh\narguments = $ENV(DFARM_TEST_VAR)\nqueue\n")
    desc = parse_submit_file(farm / "job.sub", cluster=3, cwd=str(farm))
    assert desc.procs[0].arguments == ["v1"]


# ----------------------------------------------------------------------------- paths


@pytest.fixture
def dirs(farm: Path) -> Path:
    """farm plus an initialdir 'work' holding its own in.txt and a 'sub' directory."""
    (farm / "work").mkdir()
    (farm / "work" / "in.txt").write_text("work stdin\n")
    (farm / "work" / "sub").mkdir()
    return farm


def test_executable_is_relative_to_cwd_not_initialdir(dirs: Path) -> None:
    # manual: "the path to the executable is not relative to initialdir"
    (p,) = parse(dirs, "initialdir = work\nexecutable = run.sh\nqueue\n").procs
    assert p.executable == str(dirs / "run.sh")
    assert p.initialdir == str(dirs / "work")


def test_other_paths_are_relative_to_initialdir(dirs: Path) -> None:
    text = (
        "executable = run.sh\ninitialdir = work\ninput = in.txt\noutput = out\nerror = sub/err\n"
        "log = job.log\ntransfer_input_files = ../data.txt\nqueue\n"
    )
    (p,) = parse(dirs, text).procs
    assert p.input == str(dirs / "work" / "in.txt")
    assert (p.output, p.error) == (str(dirs / "work" / "out"), str(dirs / "work" / "sub" / "err"))
    assert p.log == str(dirs / "work" / "job.log")
    assert p.transfer_input_files == [str(dirs / "data.txt")]


def test_initialdir_can_change_per_proc(dirs: Path) -> None:
    (dirs / "run0").mkdir()
    (dirs / "run1").mkdir()
    text = "executable = run.sh\ninitialdir = run$(Process)\noutput = out\nqueue 2\n"
    desc = parse(dirs, text)
    assert [p.output for p in desc.procs] == [
        str(dirs / "run0" / "out"),
        str(dirs / "run1" / "out"),
    ]


def test_absolute_paths_are_kept(dirs: Path) -> None:
    text = f"executable = {dirs / 'run.sh'}\ninitialdir = work\ninput = {dirs / 'in.txt'}\nqueue\n"
    (p,) = parse(dirs, text).procs
    assert p.input == str(dirs / "in.txt")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("input = x.txt", "input file 'x.txt' does not exist"),
        ("transfer_input_files = data.txt, nope.bin", "input file 'nope.bin' does not exist"),
        ("data = gone.csv", "data file 'gone.csv' does not exist"),
        ("initialdir = nowhere", "initialdir 'nowhere': No such directory"),
        ("initialdir = data.txt", "initialdir 'data.txt': not a directory"),
        ("input = work", "input file 'work' is not a regular file"),
        ("transfer_input_files = nodir/", "input file 'nodir/' does not exist"),
        ("transfer_input_files = http://x/", "URL input 'http://x/' names no file"),
        ("output = work", "output file 'work' is a directory"),
        ("error = nodir/err", "directory of error file 'nodir/err' does not exist"),
    ],
)
def test_path_errors(dirs: Path, line: str, message: str) -> None:
    e = fails(dirs, f"executable = run.sh\n\n{line}\nqueue\n")
    assert e.line == 3 and message in e.message


def test_missing_executable_file(dirs: Path) -> None:
    (dirs / "work" / "only_here.sh").write_text("#!/bin/sh\n")
    e = fails(dirs, "initialdir = work\nexecutable = only_here.sh\nqueue\n")
    assert e.line == 2
    assert (
        e.message
        == f"executable 'only_here.sh' does not exist (looked for {dirs / 'only_here.sh'})"
    )
    e = fails(dirs, "executable = work\nqueue\n")
    assert e.line == 1 and "not a regular file" in e.message


def test_transfer_input_files_list_syntax(dirs: Path) -> None:
    (dirs / "b.txt").write_text("b")
    text = "executable = run.sh\ntransfer_input_files = data.txt,b.txt ,  in.txt\nqueue\n"
    (p,) = parse(dirs, text).procs
    assert p.transfer_input_files == [str(dirs / n) for n in ("data.txt", "b.txt", "in.txt")]
    # Commas only, as HTCondor: one name with a space in it.
    text = "executable = run.sh\ntransfer_input_files = data.txt b.txt\nqueue\n"
    e = fails(dirs, text)
    assert "input file 'data.txt b.txt' does not exist" in e.message
    assert "separates the names of transfer_input_files with commas only" in e.message
    (dirs / "data.txt b.txt").write_text("one file")
    (p,) = parse(dirs, text).procs
    assert p.transfer_input_files == [str(dirs / "data.txt b.txt")]


def test_split_list() -> None:
    assert split_list("a, b,c  d,,\te") == ["a", "b", "c", "d", "e"]
    assert split_list("") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("out.txt, results/summary.csv", ["out.txt", "results/summary.csv"]),
        ("a b", ["a", "b"]),
        ('""', []),
        ("", []),
    ],
)
def test_transfer_output_files(dirs: Path, value: str, expected: list[str]) -> None:
    text = f"executable = run.sh\ntransfer_output_files = {value}\nqueue\n"
    assert parse(dirs, text).procs[0].transfer_output_files == expected


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../up.txt", "a/../../b", "ok, ../../x", "sub/..", ".", "./"]
)
def test_transfer_output_files_must_stay_in_the_sandbox(dirs: Path, name: str) -> None:
    e = fails(dirs, f"executable = run.sh\n\ntransfer_output_files = {name}\nqueue\n")
    assert e.line == 3
    assert f"transfer_output_files entry '{name.split(', ')[-1]}'" in e.message


@pytest.mark.parametrize(
    "lines",
    [
        "transfer_input_files = data.txt, work/data.txt",
        "input = in.txt\ntransfer_input_files = work/in.txt",
        "transfer_input_files = work/run.sh",
        "input = in.txt\ndata = work/in.txt",
    ],
)
def test_base_name_collisions_are_refused(dirs: Path, lines: str) -> None:
    (dirs / "work" / "data.txt").write_text("other")
    (dirs / "work" / "run.sh").write_text("other")
    e = fails(dirs, f"executable = run.sh\n{lines}\nqueue\n")
    assert e.line == 2 + lines.count("\n")
    assert "would collide in the job's sandbox" in e.message


def test_same_file_twice_is_not_a_collision(dirs: Path) -> None:
    text = "executable = run.sh\ninput = in.txt\ntransfer_input_files = in.txt, ./run.sh\nqueue\n"
    (p,) = parse(dirs, text).procs
    assert p.transfer_input_files == [str(dirs / "in.txt"), str(dirs / "run.sh")]


# ----------------------------------------------------------------------------- warnings


def test_output_and_error_in_the_same_file_warns(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\noutput = both.txt\nerror = both.txt\nqueue\n")
    assert desc.procs[0].output == desc.procs[0].error == str(farm / "both.txt")
    assert desc.warnings == ["job.sub:3: 'output' and 'error' name the same file"]


def test_procs_sharing_an_output_file_warn_once(farm: Path) -> None:
    desc = parse(farm, "executable = run.sh\noutput = out.txt\nerror = err.$(Process)\nqueue 3\n")
    assert desc.warnings == [
        f"job.sub:2: 3 procs write their output to the same file '{farm / 'out.txt'}'"
    ]
    assert parse(farm, "executable = run.sh\nlog = j.log\nqueue 3\n").warnings == []


# ----------------------------------------------------------------------------- misc


def test_error_without_line_formats_as_file_only() -> None:
    e = SubmitFileError("job.sub", None, "boom")
    assert str(e) == "job.sub: boom"
    assert str(SubmitFileError("job.sub", 4, "boom")) == "job.sub:4: boom"


def test_many_procs(farm: Path) -> None:
    text = (
        "executable = run.sh\ninput = in.txt\noutput = o/out.$(Process)\n"
        "arguments = $(Process)\nqueue 2000\n"
    )
    (farm / "o").mkdir()
    desc = parse(farm, text)
    assert len(desc.procs) == 2000
    assert desc.procs[-1].arguments == ["1999"]
    assert desc.procs[-1].output == str(farm / "o" / "out.1999")


def test_a_dag_nodes_my_vars_set_job_attributes(farm: Path) -> None:
    """``VARS node My.Name="..."`` (and ``+Name``, read as ``My.Name``) sets the job
    attribute, as DAGMan's VARS do; other VARS stay macros."""
    (farm / "job.sub").write_text("executable = run.sh\narguments = $(word)\nqueue\n")
    desc = parse_submit_file(
        farm / "job.sub",
        cluster=1,
        cwd=str(farm),
        macros={"My.Lab": '"optics"', "word": "hi"},
        append_macros={"MY.Step": "3"},
    )
    proc = desc.procs[0]
    assert proc.arguments == ["hi"]
    assert proc.attributes == {"Lab": '"optics"', "Step": "3"}
