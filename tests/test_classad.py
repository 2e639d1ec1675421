"""The ClassAd evaluator: HTCondor's semantics case by case, and generated expressions
over generated ads checked against HTCondor's own ClassAd library (``classad2``,
from the ``htcondor`` wheel of the test extra) as the oracle."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.matching.classad import (
    ERROR,
    UNDEFINED,
    ClassAdError,
    Record,
    Value,
    compile_expression,
)
from scheduler.matching.requirements import rank_value

JOB = {"requestcpus": 4, "requestmemory": 2048, "flavour": "Short", "both": "job"}
MACHINE = {"cpus": 8, "memory": 16384, "opsys": "LINUX", "both": "machine", "tags": ("a", "B")}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Cpus >= RequestCpus && TARGET.Memory >= MY.RequestMemory", True),
        ("both", "job"),  # a bare name: MY first
        ("TARGET.both", "machine"),
        ('flavour == "short" && flavour =!= "short"', True),
        ("MY.Cpus", UNDEFINED),
        ("NoSuchThing", UNDEFINED),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("-7 % 3", -1),
        ("7.0 / 2", 3.5),
        ("1 / 0", ERROR),
        ("true + 1", 2),
        ("1 =?= 1.0", False),
        ("1 == 1.0", True),
        ('"a" == 1', ERROR),
        ("undefined && false", False),
        ("undefined || true", True),
        ("error || true", ERROR),
        ("1.5 && true", True),
        ("undefined ? 1 : 2", UNDEFINED),
        ('Cpus > 4 ? "big" : "small"', "big"),
        ("{1, 2, 3}[1]", 2),
        ("[a = 1; b = a + 1].b", 2),
        ('[a = 1]["A"]', 1),
        ("size(TARGET.tags)", 2),
        ('member("b", tags)', True),
        ('strcat("n", Cpus, "-", 2.5, true)', "n8-2.500000000000000E+00true"),
        ('substr("hello", 1, 3)', "ell"),
        ('substr("hello", -2)', "lo"),
        ('strcmp("a", "B") > 0 && stricmp("a", "B") < 0', True),
        ('toUpper(flavour) == "SHORT" && toLower("AbC") =?= "abc"', True),
        ('regexp("^lin", OpSys, "i")', True),
        ('regexp("[", "x")', ERROR),
        ('stringListMember("b", "a, b,c")', True),
        ('stringListMember("B", "a,b")', False),
        ('stringListIMember("B", "a,b")', True),
        ("floor(2.5) + ceiling(2.1) + round(2.5) + round(3.5)", 2 + 3 + 2 + 4),
        ('int("3.7") + int(-3.7) + real(1)', 1.0),
        ("string(1.5)", "1.500000000000000E+00"),
        ('isUndefined(x) && isError(1/0) && isString("") && isInteger(1) && isReal(1.0)', True),
        ("isBoolean(true) && isList({}) && !isInteger(1.0)", True),
        ("ifThenElse(Cpus > 100, error, 5)", 5),
        ("time() > 1700000000", True),
        ("max({1, 2.5}) + min({3, 1}) + sum({1, 2}) + avg({1, 2})", 2.5 + 1 + 3 + 1.5),
        ("pow(2, 10)", 1024),
        ("1 is 1 && undefined isnt 1", True),
        ("5 | 2 ^ 1 & 3", 5 | (2 ^ (1 & 3))),
    ],
)
def test_semantics(text: str, value: Value) -> None:
    got = compile_expression(text).evaluate(JOB, MACHINE)
    assert got == value and type(got) is type(value)


def test_expressions_in_ads_are_evaluated_in_their_ad() -> None:
    job = {"requestcpus": compile_expression("MY.base * 2"), "base": 3}
    machine = {"cpus": compile_expression("TARGET.RequestCpus + 2")}
    assert compile_expression("Cpus").evaluate(job, machine) == 8
    loop = {"a": compile_expression("a + 1")}
    assert compile_expression("a").evaluate(loop) is ERROR


def test_rank_is_a_number_or_zero() -> None:
    assert rank_value('Memory / 1024 + (OpSys == "LINUX")', JOB, MACHINE) == 17.0
    assert rank_value("NoSuchThing", JOB, MACHINE) == 0.0
    assert rank_value('"text"', JOB, MACHINE) == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo(1)", "column 1: unknown function foo()"),
        ("{1, 2", "column 6: expected '}' to close the '{' of column 1"),
        ("[a = 1", "column 7: expected ';' or ']' to close the '[' of column 1"),
        ("a.1", "column 2: unexpected '.1'"),
        ("1 +", "column 4: the expression ends too early"),
    ],
)
def test_parse_errors_name_the_column(text: str, message: str) -> None:
    with pytest.raises(ClassAdError) as info:
        compile_expression(text)
    assert str(info.value) == message


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ClassAdError, match="nested too deeply"):
        compile_expression("(" * 2000 + "1" + ")" * 2000)
    assert compile_expression("(" * 30 + "1" + ")" * 30).evaluate() == 1


# ----------------------------------------------------------------------------- oracle

classad2: Any = pytest.importorskip(
    "classad2", reason="htcondor (HTCondor's ClassAd library, the oracle) is not installed"
)

SCALARS = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([0.5, -1.25, 2.0, 0.0]),
    st.sampled_from(["abc", "Abc", "", "x1"]),
    st.booleans(),
)
#: The job's ad (MY) and the worker's (TARGET): each attribute may be absent.
MY_ADS = st.fixed_dictionaries(
    {}, optional={"a": SCALARS, "b": SCALARS, "s": SCALARS, "t": SCALARS, "l": st.just(("x", 1))}
)
TARGET_ADS = st.fixed_dictionaries(
    {}, optional={"a": SCALARS, "s": SCALARS, "n": SCALARS, "f": SCALARS}
)
#: A bare name is one only MY may have: classad2 alone does not look one up in TARGET
#: (HTCondor's daemons do, and so does dfarm: see test_semantics).
NAMES = ["b", "t", "l", "missing", "MY.a", "MY.S", "MY.b", "TARGET.a", "TARGET.s",
         "TARGET.n", "TARGET.f", "TARGET.missing"]  # fmt: skip
LITERALS = ["0", "1", "2", "5", "-3", "0.5", "2.0", "-1.25", '"abc"', '"ABC"', '""', '"x1"',
            "true", "false", "undefined", "error"]  # fmt: skip
BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "=?=", "=!=", "&&", "||",
          "is", "isnt", "|", "&", "^"]  # fmt: skip
UNARY_FUNCTIONS = ["isUndefined", "isError", "isString", "isInteger", "isReal", "isBoolean",
                   "isList", "size", "toLower", "toUpper", "floor", "ceiling", "round", "int",
                   "real", "string"]  # fmt: skip


def _expressions() -> st.SearchStrategy[str]:
    atoms = st.sampled_from(NAMES + LITERALS)

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(BINARY), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
            st.tuples(st.sampled_from(["-", "!"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            st.tuples(st.sampled_from(UNARY_FUNCTIONS), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(["strcmp", "stricmp", "member"]), inner, inner).map(
                lambda t: f"{t[0]}({t[1]}, {t[2]})"
            ),
            st.tuples(inner, inner, inner).map(lambda t: f"ifThenElse({t[0]}, {t[1]}, {t[2]})"),
            st.tuples(inner, inner).map(lambda t: f"substr({t[0]}, {t[1]})"),
            st.lists(inner, max_size=3).map(lambda xs: f"strcat({', '.join(xs)})"),
            # HTCondor writes a list made into a string with its items unevaluated:
            # items here are literals, so that both write the same text.
            st.lists(st.sampled_from(LITERALS), max_size=3).map(
                lambda xs: "{" + ", ".join(xs) + "}"
            ),
            st.tuples(st.lists(inner, min_size=1, max_size=3), inner).map(
                lambda t: "{" + ", ".join(t[0]) + "}[" + t[1] + "]"
            ),
            st.tuples(inner, inner).map(lambda t: f"[x = {t[0]}; y = x].y =?= ({t[1]})"),
            st.tuples(
                st.sampled_from(["^a", "b.$", "[0-9]", "X"]), inner, st.sampled_from(['""', '"i"'])
            ).map(lambda t: f'regexp("{t[0]}", {t[1]}, {t[2]})'),
            st.tuples(
                st.sampled_from(["sum", "min", "max", "avg"]), st.lists(inner, max_size=3)
            ).map(lambda t: f"{t[0]}({{{', '.join(t[1])}}})"),
        )

    return st.recursive(atoms, grow, max_leaves=8)


def _ad(values: dict[str, Any]) -> Any:
    ad = classad2.ClassAd()
    for name, value in values.items():
        ad[name] = list(value) if isinstance(value, tuple) else value
    return ad


def _plain(value: Any, my: Any, target: Any) -> Any:
    """classad2's value in this module's terms (a list's items are left unevaluated)."""
    if isinstance(value, classad2.ExprTree):
        return _plain(value.eval(my, target), my, target)
    if isinstance(value, classad2.ClassAd):
        return Record
    if isinstance(value, list):
        return tuple(_plain(v, my, target) for v in value)
    if type(value).__name__ == "Value":  # classad2.Value.Undefined / .Error
        return UNDEFINED if int(value) == 2 else ERROR
    return value


def _same(mine: Any, theirs: Any) -> bool:
    if theirs is Record:
        return isinstance(mine, Record)
    if isinstance(theirs, tuple):
        return (
            isinstance(mine, tuple)
            and len(mine) == len(theirs)
            and all(_same(a, b) for a, b in zip(mine, theirs, strict=True))
        )
    if isinstance(theirs, float) and isinstance(mine, float) and math.isnan(theirs):
        return math.isnan(mine)
    return type(mine) is type(theirs) and mine == theirs


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_expressions(), MY_ADS, TARGET_ADS)
def test_same_value_as_htcondor(
    text: str, my_ad: dict[str, Value], target_ad: dict[str, Value]
) -> None:
    my, target = _ad(my_ad), _ad(target_ad)
    theirs = _plain(classad2.ExprTree(text).eval(my, target), my, target)
    # A real that is not finite (a division by zero of reals): values HTCondor itself
    # gives unevenly (1.0/0 is ERROR, -1.0/0 is -inf), left out.
    assume(not (isinstance(theirs, float) and math.isinf(theirs)))
    mine = compile_expression(text).evaluate(my_ad, target_ad)
    assert _same(mine, theirs), (
        f"{text} over {my_ad}, {target_ad}: dfarm {mine!r}, HTCondor {theirs!r}"
    )


#: A job's GPU constraint (MY) and a worker's GPUs (TARGET), as HTCondor 24 writes them.
GPU_JOB = "[RequireGPUs = Capability >= 7.5 && GlobalMemoryMb >= 11000; RequestGPUs = 1; Num = 3]"
GPU_WORKER = (
    "[AvailableGPUs = {[Capability = 8.0; GlobalMemoryMb = 16000],"
    " [Capability = 6.0; GlobalMemoryMb = 16000], [Capability = 9.0; GlobalMemoryMb = 12000]};"
    " Other = {[Capability = 8.0; GlobalMemoryMb = 16000], 1}; Num = 3; Foo = 5]"
)


@pytest.mark.parametrize(
    "text",
    [
        "countMatches(MY.RequireGPUs, TARGET.AvailableGPUs)",
        "countMatches(RequireGPUs, TARGET.AvailableGPUs)",
        "countMatches(MY.RequireGPUs, TARGET.AvailableGPUs) >= RequestGPUs",
        "countMatches(Capability > 7, TARGET.AvailableGPUs)",
        "countMatches(Capability > Num, TARGET.AvailableGPUs)",
        "countMatches(Capability > TARGET.Foo, TARGET.AvailableGPUs)",
        "countMatches(Capability > 7.5 || Nope, TARGET.AvailableGPUs)",
        "countMatches(MY.RequireGPUs, TARGET.Nope)",
        "countMatches(MY.Nope, TARGET.AvailableGPUs)",
        "countMatches(true, TARGET.AvailableGPUs)",
        "countMatches(3, TARGET.AvailableGPUs)",
        'countMatches("x", TARGET.AvailableGPUs)',
        "countMatches(undefined, TARGET.AvailableGPUs)",
        "countMatches(MY.RequireGPUs, TARGET.Other)",
        "countMatches(MY.RequireGPUs, TARGET.Num)",
        "countMatches(MY.RequireGPUs, {})",
        "countMatches(Capability > 7, {[Capability = 8], undefined, 3, [Capability = 9]})",
    ],
)
def test_count_matches_as_htcondor(text: str) -> None:
    """countMatches is HTCondor's (registered when its ``htcondor`` module loads)."""
    with warnings.catch_warnings():  # it warns that there is no condor_config
        warnings.simplefilter("ignore")
        import htcondor  # noqa: F401  (registers countMatches in classad2)

    my, target = classad2.ClassAd(GPU_JOB), classad2.ClassAd(GPU_WORKER)
    theirs = _plain(classad2.ExprTree(text).eval(my, target), my, target)
    job, worker = compile_expression(GPU_JOB).evaluate(), compile_expression(GPU_WORKER).evaluate()
    assert isinstance(job, Record) and isinstance(worker, Record)
    mine = compile_expression(text).evaluate(job, worker)
    assert _same(mine, theirs), f"{text}: dfarm {mine!r}, HTCondor {theirs!r}"
