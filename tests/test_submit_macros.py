"""Macros and macro functions, each case checked against its expected value and, when
the ``htcondor`` 24 bindings are installed, against condor_submit's own expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
from htcondor_oracle import ERROR, HTCONDOR, condor_expand, condor_jobs

from control_node.submit_file import parse_submit_text
from control_node.submit_functions import filename_parts
from control_node.submit_lines import read_statements
from control_node.submit_macros import MacroContext, MacroError, expand_macros

HEAD = """\
f = /a/b/c.tar.gz
rel = c.tar.gz
d = dir/sub/
w = a\\b\\c.txt
q = "/q/r.txt"
n = 42
r = 3.14159
neg = -3
list = x, y, z
empty =
two = $(n)$(n)
o = o
x = f
"""
ENVIRON = {"MYVAR": "envval", "HOME": "/home/u"}

#: (expression, what condor_submit expands it to; ERROR when it stops with an error)
CASES = [
    # the $F family
    ("$F(f)", "/a/b/c.tar.gz"),
    ("$Fp(f)", "/a/b/"),
    ("$Fn(f)", "c.tar"),
    ("$Fx(f)", ".gz"),
    ("$Fnx(f)", "c.tar.gz"),
    ("$Fpn(f)", "/a/b/c.tar"),
    ("$Fpnx(f)", "/a/b/c.tar.gz"),
    ("$Fd(f)", "b/"),
    ("$Fdb(f)", "b"),
    ("$Fpb(f)", "/a/b"),
    ("$Fdn(f)", "b/c.tar"),
    ("$Fdx(f)", "b/c.tar.gz"),
    ("$Fq(f)", '"/a/b/c.tar.gz"'),
    ("$Fqa(f)", "'/a/b/c.tar.gz'"),
    ("$Fqn(f)", '"c.tar"'),
    ("$Fqd(rel)", '""'),
    ("$Fa(f)", "/a/b/c.tar.gz"),
    ("$Fw(f)", "\\a\\b\\c.tar.gz"),
    ("$Fwn(f)", "\\a\\b\\c.tar"),
    ("$Fu(w)", "a/b/c.txt"),
    ("$Fn(w)", "a\\b\\c"),
    ("$Fp(rel)", ""),
    ("$Fpx(rel)", ".gz"),
    ("$Fd(rel)", ""),
    ("$Fp(d)", "dir/sub/"),
    ("$Fd(d)", "sub/"),
    ("$Fn(d)", ""),
    ("$Fn(q)", "r"),
    ("$F(q)", "/q/r.txt"),
    ("$Fn(nosuch.txt)", "nosuch"),
    ("$Fn(a/b.c)", "b"),
    ("$Fp()", ""),
    ("$FP(f)", "/a/b/"),
    ("$BASENAME(f)", "c.tar.gz"),
    ("$DIRNAME(f)", "/a/b/"),
    ("$DIRNAME(rel)", ""),
    # $INT and $REAL
    ("$INT(n)", "42"),
    ("$INT(n,%05d)", "00042"),
    ("$INT(n,x%dy)", "x42y"),
    ("$INT(n,%x)", "2a"),
    ("$INT(r)", "3"),
    ("$INT(neg)", "-3"),
    ("$INT(7)", "7"),
    ("$INT(3+4)", "7"),
    ("$INT(7/2)", "3"),
    ("$INT(-2.7)", "-2"),
    ("$INT(two)", "4242"),
    ("$REAL(r)", "3.14159"),
    ("$REAL(r,%.2f)", "3.14"),
    ("$REAL(n)", "42"),
    ("$REAL(n,%.3f)", "42.000"),
    ("$REAL(n,%.0f)", "42.0"),
    ("$REAL(7/2)", "3"),
    ("$REAL(7.0/2)", "3.5"),
    ("$INT(nope)", ERROR),
    ("$INT()", ERROR),
    ("$INT( n )", ERROR),
    ("$INT(n,%s)", ERROR),
    ("$REAL(n,%d)", ERROR),
    ("$REAL(list)", ERROR),
    # $SUBSTR
    ("$SUBSTR(f,2)", "/b/c.tar.gz"),
    ("$SUBSTR(f,-3)", ".gz"),
    ("$SUBSTR(f,1,3)", "a/b"),
    ("$SUBSTR(f,-6,2)", "ta"),
    ("$SUBSTR(f,2,-2)", "/b/c.tar."),
    ("$SUBSTR(f,100)", ""),
    ("$SUBSTR(f,0,-100)", ""),
    ("$SUBSTR(f,-100,2)", "/a"),
    ("$SUBSTR(nosuch,1)", ""),
    ("$SUBSTR(f,neg)", ".gz"),
    ("$SUBSTR(f)", ERROR),
    ("$SUBSTR(f,x)", ERROR),
    ("$SUBSTR(f,1,x)", ERROR),
    # $CHOICE
    ("$CHOICE(1,list)", "y"),
    ("$CHOICE(0,a,b,c)", "a"),
    ("$CHOICE(1, a, b)", "b"),
    ("$CHOICE(2,list)", "z"),
    ("$CHOICE(n,a,b)", ERROR),
    ("$CHOICE(n)", ERROR),
    ("$CHOICE(1,nolist)", ERROR),
    ("$CHOICE(-1,a,b)", ERROR),
    # $ENV
    ("$ENV(MYVAR)", "envval"),
    ("$ENV(NOPE)", "UNDEFINED"),
    ("$ENV(NOPE:dflt)", "dflt"),
    ("$ENV(MYVAR:dflt)", "envval"),
    # plain macros
    ("$(f)", "/a/b/c.tar.gz"),
    ("$(F)", "/a/b/c.tar.gz"),
    ("$(nosuch)", ""),
    ("a$(nosuch)b", "ab"),
    ("$(nosuch:def)", "def"),
    ("$(empty:def)", "def"),
    ("$(n:def)", "42"),
    ("$(a.b)", ""),
    ("$(1abc)", ""),
    ("$(DOLLAR)", "$"),
    ("$(DOLLAR)(n)", "$(n)"),
    # a name made by macros
    ("$(tw$(o))", "4242"),
    ("$($(x))", "/a/b/c.tar.gz"),
    ("$(n$(nosuch))", "42"),
    ("$( $(n))", "$( 42)"),
    # what is not a macro stays as text
    ("$(n)$(n", "42$(n"),
    ("a$(  f  )b", "a$(  f  )b"),
    ("$Fz(f)", "$Fz(f)"),
    ("$FOO(f)", "$FOO(f)"),
    ("$n", "$n"),
    ("100$", "100$"),
    ("$$(Cpus)", "$$(Cpus)"),
    # function names are in capitals; the $F options in either case
    ("$int(7)", "$int(7)"),
    ("$Env(HOME)", "$Env(HOME)"),
    ("$fn(f)", "$fn(f)"),
    ("$FPN(f)", "/a/b/c.tar"),
    ("$random_integer(1, 2)", "$random_integer(1, 2)"),
]


def dfarm_expand(expr: str) -> str:
    defs: dict[str, str] = {}
    for st in read_statements(HEAD):
        assert st.key is not None
        defs[st.key.lower()] = st.value
    ctx = MacroContext(defs, {"dollar": "$"}, {}, ENVIRON, {})
    return expand_macros(expr, ctx)


@pytest.mark.parametrize(("expr", "expected"), CASES)
def test_macro_expands_as_condor_submit(expr: str, expected: str) -> None:
    if expected == ERROR:
        with pytest.raises(MacroError):
            dfarm_expand(expr)
    else:
        assert dfarm_expand(expr) == expected


@pytest.mark.skipif(not HTCONDOR, reason="the htcondor bindings are not installed")
def test_expected_values_are_htcondors() -> None:
    keys = {f"k{i}": expr for i, (expr, _) in enumerate(CASES)}
    head = HEAD + "".join(f"{k} = [{expr}]\n" for k, expr in keys.items())
    got = condor_expand(head, list(keys), ENVIRON)
    wrong = [(expr, got[k], exp) for (k, expr), (_, exp) in zip(keys.items(), CASES, strict=True)
             if got[k] != (exp if exp == ERROR else f"[{exp}]")]  # fmt: skip
    assert wrong == []


PATHS = ["/a/b/c.tar.gz", "c.tar.gz", "dir/sub/", "x/y.txt", '"/q/r s.txt"', "'/q/r.txt'",
         "/top", "/", "noext", ".hidden", "d/.hidden", "/a/b/c/", "a/b/c/d.e"]  # fmt: skip
LETTERS = ["", "p", "n", "x", "d", "db", "pb", "q", "qa", "pn", "nx", "px", "pnx", "dn",
           "dx", "dp", "qn", "qd", "qp", "w"]  # fmt: skip


@pytest.mark.skipif(not HTCONDOR, reason="the htcondor bindings are not installed")
def test_every_filename_option_on_every_kind_of_path() -> None:
    head = "".join(f"p{i} = {p}\n" for i, p in enumerate(PATHS))
    keys = {f"k{i}_{o}": (o, p) for i, p in enumerate(PATHS) for o in LETTERS}
    head += "".join(f"{k} = [$F{o}(p{k[1:].split('_')[0]})]\n" for k, (o, _) in keys.items())
    got = condor_expand(head, list(keys))
    wrong = [(o, p, got[k]) for k, (o, p) in keys.items()
             if got[k] != f"[{filename_parts(o, p)}]"]  # fmt: skip
    assert wrong == []


def test_filename_parts_without_htcondor() -> None:
    assert filename_parts("pn", "/data/run1/out.root") == "/data/run1/out"
    assert filename_parts("db", "/data/run1/out.root") == "run1"
    assert filename_parts("qn", "dir/sub/") == '"'  # HTCondor's own result, kept


# ----------------------------------------------------------------------------- in a file


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    return tmp_path


def test_functions_in_a_file_use_the_queue_variables(farm: Path) -> None:
    text = (
        "executable = run.sh\n"
        "arguments = $Fn(file) $Fx(file) $INT(Process,%03d) $SUBSTR(file,0,1)"
        " $CHOICE(Process, red, green)\n"
        "queue file in (data/a.txt, b.csv)\n"
    )
    desc = parse_submit_text(text, filename="job.sub", cluster=3, cwd=str(farm), environ={})
    assert [p.arguments for p in desc.procs] == [
        ["a", ".txt", "000", "d", "red"],
        ["b", ".csv", "001", "b", "green"],
    ]


def test_a_bad_function_names_the_line(farm: Path) -> None:
    from control_node.submit_file import SubmitFileError

    text = "executable = run.sh\narguments = $INT(nope)\nqueue\n"
    with pytest.raises(SubmitFileError) as info:
        parse_submit_text(text, filename="job.sub", cluster=3, cwd=str(farm), environ={})
    assert info.value.line == 2 and "$INT()" in info.value.message


# ----------------------------------------------------------------------------- if / else

#: (condition, whether the if branch is taken; ERROR if condor_submit refuses it)
CONDITIONS: list[tuple[str, bool | str]] = [
    ("$(nosuch)", False),
    ("$(e)", False),
    ("$(x)", True),
    ("0", False),
    ("1.5", True),
    ("-1", True),
    ("true", True),
    ("False", False),
    ("yes", True),
    ("defined nosuch", False),
    ("defined e", False),
    ("defined x", True),
    ("!defined x", False),
    ("! defined nosuch", True),
    ("defined", False),
    ("defined Process", True),
    ("defined ClusterId", True),
    ("defined Step", True),
    ("defined Row", True),
    ("defined ItemIndex", True),
    ("defined Item", False),
    ("defined DOLLAR", False),
    ("version >= 8.0", True),
    ("version > 99.0", False),
    ("version == 24.12.24", True),
    ("version >= 24.12", True),
    ("version < 25", ERROR),
    ("$(x) == 3", ERROR),
    ("defined x && defined e", ERROR),
    ("foo", ERROR),
]


def conditional(cond: str) -> str:
    return (
        f"executable = run.sh\nx = 3\ne =\nif {cond}\narguments = T\nelse\narguments = F\n"
        "endif\nenvironment = X=$(x)$(e)\nqueue\n"
    )


@pytest.mark.parametrize(("cond", "taken"), CONDITIONS)
def test_condition(farm: Path, cond: str, taken: bool | str) -> None:
    from control_node.submit_file import SubmitFileError

    try:
        desc = parse_submit_text(conditional(cond), filename="j.sub", cluster=1, cwd=str(farm))
    except SubmitFileError as e:
        assert taken == ERROR and e.line == 4, e
        return
    assert desc.procs[0].arguments == ["T" if taken is True else "F"]


@pytest.mark.skipif(not HTCONDOR, reason="the htcondor bindings are not installed")
@pytest.mark.parametrize(("cond", "taken"), CONDITIONS)
def test_condition_is_htcondors(farm: Path, cond: str, taken: bool | str) -> None:
    got = condor_jobs(conditional(cond).replace("run.sh", "/bin/true"), str(farm))
    if taken == ERROR:
        assert "error" in got
    else:
        assert [job["Args"] for job in got["jobs"]] == ["T" if taken is True else "F"]


def test_random_choice_of_a_list_macro(farm: Path) -> None:
    # condor_submit: one argument naming a macro chooses among that macro's items
    text = (
        "executable = run.sh\ncolors = red, green\narguments = $RANDOM_CHOICE(colors)\nqueue 20\n"
    )
    desc = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(farm), seed=5)
    assert {a for p in desc.procs for a in p.arguments} == {"red", "green"}


def test_a_value_never_expanded_may_hold_what_dfarm_cannot_substitute(farm: Path) -> None:
    # condor_submit accepts $$(ANY) anywhere; dfarm refuses it only where it is used
    text = "executable = run.sh\njunk = $$(KFlops)\nqueue\narguments = $(junk)\n"
    desc = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(farm))
    assert len(desc.procs) == 1


# ----------------------------------------------------------------------------- per key

PREDEFINED_ARGS = (
    "arguments = $(Cluster) $(ClusterId) $(Process) $(ProcId) $(Step) [$(Item)]"
    " $(ItemIndex) $(Row) [$(Node)]\n"
)


def test_predefined_macros_are_htcondors(farm: Path) -> None:
    text = "executable = run.sh\n" + PREDEFINED_ARGS + "queue 2\n"
    desc = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(farm))
    mine = [" ".join(p.arguments) for p in desc.procs]
    assert mine == ["1 1 0 0 0 [] 0 0 []", "1 1 1 1 1 [] 0 0 []"] and desc.warnings == []
    if HTCONDOR:
        got = condor_jobs(text.replace("run.sh", "/bin/true"), str(farm))
        assert [job["Args"] for job in got["jobs"]] == mine


#: An undefined macro as the whole value of a key: the key is unset, as in HTCondor
#: (dfarm's field, its value; HTCondor's attribute, its value).
UNSET = [
    ("output", "output", None, "Out", "/dev/null"),
    ("error", "error", None, "Err", "/dev/null"),
    ("input", "input", None, "In", "/dev/null"),
    ("arguments", "arguments", [], "Args", ""),
    ("environment", "environment", {}, "Environment", ""),
    ("request_cpus", "request_cpus", 1, "RequestCpus", "1"),
    ("priority", "priority", 0, "JobPrio", "0"),
]


@pytest.mark.parametrize(("key", "field", "value", "attr", "condor"), UNSET)
def test_undefined_macro_leaves_a_key_unset(
    farm: Path, key: str, field: str, value: object, attr: str, condor: str
) -> None:
    text = f"executable = run.sh\n{key} = $(nosuch)\nqueue\n"
    desc = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(farm))
    assert getattr(desc.procs[0], field) == value
    assert desc.warnings == ["j.sub:2: $(nosuch) is not defined and expands to nothing"]
    if HTCONDOR:
        got = condor_jobs(text.replace("run.sh", "/bin/true"), str(farm))
        assert got["jobs"][0].get(attr, "") == condor
