"""Expansion of every queue form, the queue macros, conditionals and the random functions.

Cases marked "manual" are HTCondor's own examples (condor_submit manual page and the
"Submitting a Job" chapter): dfarm must give the job list documented there.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from control_node.submit_file import SubmitDescription, SubmitFileError, parse_submit_text
from control_node.submit_queue import parse_queue, split_fields


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "run.sh").chmod(0o755)
    return tmp_path


def parse(cwd: Path, text: str, **kw) -> SubmitDescription:
    kw.setdefault("environ", {})
    return parse_submit_text(
        "executable = run.sh\n" + text, filename="job.sub", cluster=7, cwd=str(cwd), **kw
    )


def args(cwd: Path, text: str, **kw) -> list[list[str]]:
    return [p.arguments for p in parse(cwd, text, **kw).procs]


def fails(cwd: Path, text: str) -> SubmitFileError:
    with pytest.raises(SubmitFileError) as info:
        parse(cwd, text)
    return info.value


ALL = "arguments = $(Item) p$(Process) s$(Step) i$(ItemIndex) r$(Row)\n"


# ----------------------------------------------------------------------------- forms


def test_manual_queue_3_in_a_b(farm: Path) -> None:
    # manual: $(Process) 0..5; $(Item) A for the first three, B for the next three;
    # $(Step) 0,1,2 for each item; $(ItemIndex) 0 for A and 1 for B; $(Row) the same.
    assert args(farm, ALL + "queue 3 in (A, B)\n") == [
        ["A", "p0", "s0", "i0", "r0"],
        ["A", "p1", "s1", "i0", "r0"],
        ["A", "p2", "s2", "i0", "r0"],
        ["B", "p3", "s0", "i1", "r1"],
        ["B", "p4", "s1", "i1", "r1"],
        ["B", "p5", "s2", "i1", "r1"],
    ]


def test_queue_in_with_a_variable_and_items_separated_by_commas_or_blanks(farm: Path) -> None:
    text = "arguments = -n $(name)\nqueue name in (alpha, beta gamma,delta)\n"
    assert args(farm, text) == [["-n", n] for n in ("alpha", "beta", "gamma", "delta")]


def test_queue_in_without_parentheses(farm: Path) -> None:
    # manual (-append example): "queue input in A, B, C"; each item is the job's input
    for name in "ABC":
        (farm / name).write_text(name)
    assert args(farm, "arguments = $(input)\nqueue input in A, B, C\n") == [["A"], ["B"], ["C"]]
    desc = parse(farm, "input = none\nqueue input in A, B, C\n")
    assert [p.input for p in desc.procs] == [str(farm / n) for n in "ABC"]


def test_queue_in_over_several_lines(farm: Path) -> None:
    # manual: a list that opens with "(" goes on to a line that begins with ")"
    text = "arguments = $(x)\nqueue x in (a, b\n  c\n  # not an item\n  d\n)\narguments = late\n"
    desc = parse(farm, text)
    assert [p.arguments for p in desc.procs] == [["a"], ["b"], ["c"], ["d"]]
    assert desc.warnings == [
        "job.sub:8: 'arguments' is set after the last 'queue' and has no effect"
    ]


def test_manual_queue_from_inline_list_with_two_variables(farm: Path) -> None:
    # manual (Submitting a Job, example 5): the last variable takes the rest of the line
    text = (
        "input = $(infile)\narguments = $(args)\n"
        "queue infile,args from (\n  file1, -a -b 26\n  file2, -c -d 92\n)\n"
    )
    (farm / "file1").write_text("1")
    (farm / "file2").write_text("2")
    desc = parse(farm, text)
    assert [p.arguments for p in desc.procs] == [["-a", "-b", "26"], ["-c", "-d", "92"]]
    assert [Path(p.input).name for p in desc.procs] == ["file1", "file2"]
    assert desc.procs[0].params == {"infile": "file1", "args": "-a -b 26"}


def test_queue_from_a_file_with_missing_fields_and_comments(farm: Path) -> None:
    (farm / "grid.txt").write_text("# a b\n1 2\n\n3, 4 extra\n5\n")
    text = "arguments = a=$(a) b=$(b)\nqueue a, b from grid.txt\n"
    # condor_submit reads a "#" line of an item file as an item (not in the submit file),
    # and a blank line as an item that sets no variable (they keep their values)
    assert args(farm, text) == [
        ["a=#", "b=a", "b"],
        ["a=1", "b=2"],
        ["a=1", "b=2"],
        ["a=3", "b=4", "extra"],
        ["a=5", "b="],
    ]


def test_queue_from_a_command(farm: Path) -> None:
    # manual: "if the file name ends with |, it is executed as a script" (in the submit dir)
    (farm / "items.sh").write_text("#!/bin/sh\necho 'a 1'\necho\necho 'b 2'\n")
    (farm / "items.sh").chmod(0o755)
    assert args(farm, "arguments = $(x)-$(y)\nqueue x y from ./items.sh |\n") == [
        ["a-1"],
        ["a-1"],
        ["b-2"],
    ]


def test_queue_from_file_named_by_a_macro(farm: Path) -> None:
    (farm / "list.txt").write_text("x\ny\n")
    assert args(farm, "f = list.txt\narguments = $(Item)\nqueue from $(f)\n") == [["x"], ["y"]]


def test_queue_matching_files_and_dirs(farm: Path) -> None:
    for name in ("b.dat", "a.dat", "c.txt"):
        (farm / name).write_text(name)
    (farm / "d.dat").mkdir()
    assert args(farm, "arguments = $(f)\nqueue f matching files *.dat\n") == [["a.dat"], ["b.dat"]]
    assert args(farm, "arguments = $(f)\nqueue f matching dirs *.dat\n") == [
        ["d.dat/"]
    ]  # condor_submit writes a directory with its slash
    both = args(farm, "arguments = $(Item)\nqueue matching *.dat, *.txt\n")
    assert both == [["a.dat"], ["b.dat"], ["d.dat/"], ["c.txt"]]
    assert args(farm, "arguments = x\nqueue matching *.none\n") == []


def test_slices_select_items_and_row_is_the_item_index(farm: Path) -> None:
    text = "arguments = $(Item) i$(ItemIndex) r$(Row)\nqueue in [1::2] (a, b, c, d, e)\n"
    # condor_submit 24 numbers $(Row) as $(ItemIndex)
    assert args(farm, text) == [["b", "i1", "r1"], ["d", "i3", "r3"]]
    assert args(farm, "arguments = $(Item)\nqueue in [:2] (a b c)\n") == [["a"], ["b"]]


def test_several_queue_statements_and_counts(farm: Path) -> None:
    text = (
        "arguments = $(Process) $(Step)\nqueue 2\n"
        "arguments = $(Item) $(Process) $(Step)\nqueue 2 Item in (x)\n"
        "arguments = $(v) $(Process)\nqueue v from (\n  one\n  two\n)\n"
    )
    assert args(farm, text) == [
        ["0", "0"],
        ["1", "1"],
        ["x", "2", "0"],
        ["x", "3", "1"],
        ["one", "4"],
        ["two", "5"],
    ]


def test_count_expressions(farm: Path) -> None:
    # manual: "<int expr> ... may be an integer or an expression that evaluates to an integer"
    assert len(parse(farm, "n = 4\nqueue $(n) * 2 - 1\n").procs) == 7
    assert len(parse(farm, "queue (7 + 2) / 2\n").procs) == 4
    assert len(parse(farm, "n = 2\narguments = $(Item)\nqueue $(n)*3 in (a, b)\n").procs) == 12


def test_item_is_empty_outside_an_item_queue(farm: Path) -> None:
    # as in condor_submit: Item is predefined, empty without an item list
    desc = parse(farm, "arguments = a$(Item)b\nqueue 2\n")
    assert [p.arguments for p in desc.procs] == [["ab"], ["ab"]] and desc.warnings == []


def test_queue_variables_override_file_macros_but_step_does_not(farm: Path) -> None:
    text = "x = file\nStep = mine\narguments = $(x) $(Step)\nqueue x in (item)\n"
    assert args(farm, text) == [["item", "mine"]]


def test_queue_variables_are_recorded_as_params(farm: Path) -> None:
    desc = parse(farm, "arguments = $(x:none)\nqueue 2 x in (a, b)\nqueue 1\n")
    assert [p.params for p in desc.procs] == [{"x": "a"}, {"x": "a"}, {"x": "b"}, {"x": "b"}, {}]


def test_parse_queue_and_split_fields() -> None:
    spec = parse_queue("10 a, b from [2:] data.txt")
    assert (spec.count, spec.names, spec.mode, spec.slice, spec.source) == (
        "10",
        ("a", "b"),
        "from",
        slice(2, None, None),
        "data.txt",
    )
    assert split_fields("1, 2, 3 4", 2) == ["1", "2, 3 4"]
    assert split_fields("1", 3) == ["1", "", ""]
    assert split_fields(" a b, c ", 1) == ["a b, c"]  # one variable: the whole line


def test_unclosed_multi_line_list(farm: Path) -> None:
    e = fails(farm, "queue x from (\n  a\n")
    assert e.line == 2 and "no line beginning with ')'" in e.message


# ----------------------------------------------------------------------------- macros


def test_default_values_env_and_dollar(farm: Path) -> None:
    text = "arguments = $(missing:dflt) $ENV(HOME) $(DOLLAR)(Item) $(Item)\nqueue in (z)\n"
    assert args(farm, text, environ={"HOME": "/h"}) == [["dflt", "/h", "$(Item)", "z"]]


@pytest.mark.parametrize(
    ("conditional", "expected"),
    [
        ("if defined fast\narguments = fast\nelse\narguments = slow\nendif\n", "fast"),
        ("if ! defined fast\narguments = slow\nelse\narguments = fast\nendif\n", "fast"),
        ("if defined nosuch\narguments = a\nelif $(fast)\narguments = b\nendif\n", "b"),
        ("if false\narguments = a\nelif 0\narguments = b\nelse\narguments = c\nendif\n", "c"),
        ("if true\nif defined nosuch\narguments = a\nelse\narguments = d\nendif\nendif\n", "d"),
        ("if no\nbogus_key = 1\nendif\narguments = e\n", "e"),
    ],
)
def test_if_else(farm: Path, conditional: str, expected: str) -> None:
    assert args(farm, "fast = yes\nenvironment = F=$(fast)\n" + conditional + "queue\n") == [
        [expected]
    ]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("else\n", 2, "'else' without an 'if'"),
        ("if defined x\n", 2, "has no 'endif'"),
        ("if version >= 9\nendif\n", 2, "cannot evaluate"),
        ("if $(x) == 3\nendif\n", 2, "not comparisons"),
        ("if true\nelse\nelif true\nendif\n", 4, "after 'else'"),
    ],
)
def test_bad_conditionals(farm: Path, text: str, line: int, fragment: str) -> None:
    e = fails(farm, text + "queue\n")
    assert e.line == line and fragment in e.message


# ----------------------------------------------------------------------------- random


def test_random_functions_are_reproducible_with_a_seed_and_in_range(farm: Path) -> None:
    text = (
        "random_seed = 12\nload = $RANDOM_NORMAL(10, 2)\nu = $RANDOM_UNIFORM(-1, 1)\n"
        "arguments = $(load) $(load) $(u) $RANDOM_INTEGER(0, 8, 2) $RANDOM_CHOICE(a, b, c)\n"
        "queue 200\n"
    )
    first, again = parse(farm, text), parse(farm, text)
    assert [p.arguments for p in first.procs] == [p.arguments for p in again.procs]
    assert first.random_seed == 12
    loads = [float(p.arguments[0]) for p in first.procs]
    assert all(p.arguments[0] == p.arguments[1] for p in first.procs)  # once per proc
    assert all(-1 <= float(p.arguments[2]) <= 1 for p in first.procs)
    assert {p.arguments[3] for p in first.procs} == {"0", "2", "4", "6", "8"}
    assert {p.arguments[4] for p in first.procs} == {"a", "b", "c"}
    assert 9 < statistics.mean(loads) < 11 and 1.5 < statistics.stdev(loads) < 2.5
    assert first.procs[0].params == {
        "load": first.procs[0].arguments[0],
        "u": first.procs[0].arguments[2],
        "arguments": first.procs[0].arguments[3],
        "arguments#2": first.procs[0].arguments[4],
    }
    other = parse(farm, text.replace("= 12", "= 13"))
    assert [p.arguments for p in other.procs] != [p.arguments for p in first.procs]


def test_a_procs_draws_do_not_depend_on_the_others(farm: Path) -> None:
    one = parse(farm, "random_seed = 5\narguments = $RANDOM_NORMAL(0, 1)\nqueue 3\n").procs
    two = parse(farm, "random_seed = 5\narguments = $RANDOM_NORMAL(0, 1)\nqueue 5\n").procs
    assert [p.arguments for p in one] == [p.arguments for p in two[:3]]


def test_without_a_seed_the_given_seed_is_used_and_reported(farm: Path) -> None:
    text = "arguments = $RANDOM_INTEGER(1, 1000000)\nqueue 4\n"
    first = parse(farm, text)
    again = parse(farm, text, seed=first.random_seed)
    assert [p.arguments for p in first.procs] == [p.arguments for p in again.procs]


def test_random_draws_with_items(farm: Path) -> None:
    text = "random_seed = 1\nx = $RANDOM_UNIFORM(0, 1)\narguments = $(Item) $(x)\nqueue in (a, b)\n"
    procs = parse(farm, text).procs
    assert [p.params["Item"] for p in procs] == ["a", "b"]
    assert all(p.params["x"] == p.arguments[1] for p in procs)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        ("$RANDOM_INTEGER(5, 1)", "greater than max"),
        ("$RANDOM_INTEGER(1, 5, 0)", "step must be positive"),
        ("$RANDOM_INTEGER(a, 5)", "whole numbers"),
        ("$RANDOM_NORMAL(1)", "takes 2 arguments"),
        ("$RANDOM_NORMAL(1, -2)", "must not be negative"),
        ("$RANDOM_UNIFORM(x, 2)", "must be a number"),
        ("$RANDOM_UNIFORM(3, 2)", "greater than high"),
        ("$RANDOM_CHOICE()", "at least one choice"),
    ],
)
def test_bad_random_calls(farm: Path, call: str, fragment: str) -> None:
    e = fails(farm, f"arguments = {call}\nqueue\n")
    assert e.line == 2 and fragment in e.message


def test_bad_random_seed(farm: Path) -> None:
    e = fails(farm, "random_seed = soon\narguments = $RANDOM_NORMAL(0, 1)\nqueue\n")
    assert e.line == 2 and "random_seed must be a whole number" in e.message


def test_result_file_is_added_to_the_output_files(farm: Path) -> None:
    desc = parse(farm, "result_file = r.json\ntransfer_output_files = a.txt\nqueue\n")
    assert desc.procs[0].result_file == "r.json"
    assert desc.procs[0].transfer_output_files == ["a.txt", "r.json"]
    e = fails(farm, "result_file = ../r.json\nqueue\n")
    assert e.line == 2 and "must be a file name" in e.message


def test_counts_slices_and_multi_line_lists_together(farm: Path) -> None:
    text = (
        "arguments = $(x) $(y) s$(Step) i$(ItemIndex) r$(Row)\n"
        "queue 2 x, y from [1:] (\n  a 1\n  b 2\n  c 3\n)\n"
    )
    assert args(farm, text) == [
        ["b", "2", "s0", "i1", "r1"],
        ["b", "2", "s1", "i1", "r1"],
        ["c", "3", "s0", "i2", "r2"],
        ["c", "3", "s1", "i2", "r2"],
    ]
    assert args(farm, "arguments = $(item)\nqueue in (\n  p q\n  r\n)\n") == [["p"], ["q"], ["r"]]


def test_double_dollar_without_parenthesis_is_literal(farm: Path) -> None:
    # HTCondor substitutes only $$(ATTR) (at match time); $(DOLLAR) is a literal "$"
    assert args(farm, "arguments = cost$$5 $$ $(DOLLAR)$(DOLLAR)\nqueue\n") == [
        ["cost$$5", "$$", "$$"]
    ]
    e = fails(farm, "arguments = $$(Cpus_Twice)\nqueue\n")
    assert e.line == 2 and "$(DOLLAR)" in e.message
