"""The builtin functions of ClassAd expressions, as HTCondor's manual and library
define them (the oracle of ``tests/test_classad.py``)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from scheduler.matching.classad_values import (
    BINARY,
    ERROR,
    UNDEFINED,
    Record,
    Special,
    Value,
    as_text,
    is_int,
    is_number,
    parse_real,
)

__all__ = ["FUNCTIONS", "evaluation_clock"]

#: The clock ``time()`` reads: the system's, unless :func:`evaluation_clock` says.
_CLOCK: ContextVar[Callable[[], float]] = ContextVar("classad_clock", default=time.time)


@contextmanager
def evaluation_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Within the block, ``time()`` is ``clock`` (the scheduler's, for job policies)."""
    token = _CLOCK.set(clock)
    try:
        yield
    finally:
        _CLOCK.reset(token)


def _to_real(v: Value) -> Value:
    if isinstance(v, Special):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        r = parse_real(v)
        return ERROR if r is None else r
    return ERROR


def _fn_int(v: Value) -> Value:
    r = _to_real(v)
    if isinstance(r, float):
        return int(r) if math.isfinite(r) else ERROR
    return r


def _fn_real(v: Value) -> Value:
    return _to_real(v)


def _fn_string(v: Value) -> Value:
    return v if isinstance(v, Special) else as_text(v)


def _rounding(how: Callable[[float], int]) -> Callable[[Value], Value]:
    def fn(v: Value) -> Value:
        if is_int(v):
            return v
        r = _to_real(v)
        if not isinstance(r, float) or not math.isfinite(r):
            return ERROR
        return how(r)

    return fn


def _fn_size(v: Value) -> Value:
    if isinstance(v, Special):
        return v
    if isinstance(v, str | tuple | Record):
        return len(v)
    return ERROR


def _fn_strcat(*args: Value) -> Value:
    for a in args:
        if isinstance(a, Special):
            return a  # the first of them, as HTCondor
    return "".join(as_text(a) for a in args)


def _fn_substr(s: Value, offset: Value, length: Value | None = None) -> Value:
    special = _undefined_first(s, offset, UNDEFINED if length is UNDEFINED else 0)
    if special is not None:
        return special
    if not isinstance(s, str) or not is_int(offset) or not (length is None or is_int(length)):
        return ERROR
    assert isinstance(offset, int)
    n = len(s)
    start = offset if offset >= 0 else max(n + offset, 0)
    if start >= n:
        return ""
    if length is None:
        return s[start:]
    assert isinstance(length, int)
    end = start + length if length >= 0 else n + length
    return s[start:end] if end > start else ""


def _undefined_first(*args: Value) -> Special | None:
    """UNDEFINED if an argument is, else ERROR if one is (the order of HTCondor's
    string functions)."""
    if any(a is UNDEFINED for a in args):
        return UNDEFINED
    return ERROR if any(a is ERROR for a in args) else None


def _string_args(*args: Value) -> Special | list[str]:
    """The arguments as strings, or the UNDEFINED or ERROR that one of them makes."""
    special = _undefined_first(*args)
    return special if special is not None else [as_text(a) for a in args]


def _comparing(fold: bool) -> Callable[[Value, Value], Value]:
    def fn(a: Value, b: Value) -> Value:
        texts = _string_args(a, b)
        if isinstance(texts, Special):
            return texts
        x, y = (t.lower() for t in texts) if fold else texts
        return (x > y) - (x < y)

    return fn


def _case(upper: bool) -> Callable[[Value], Value]:
    def fn(v: Value) -> Value:
        texts = _string_args(v)
        if isinstance(texts, Special):
            return texts
        return texts[0].upper() if upper else texts[0].lower()

    return fn


_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _fn_regexp(pattern: Value, target: Value, options: Value = "") -> Value:
    args = (pattern, target, options)
    if any(a is ERROR for a in args):
        return ERROR
    if any(a is UNDEFINED for a in args):
        return UNDEFINED
    if not (isinstance(pattern, str) and isinstance(target, str) and isinstance(options, str)):
        return ERROR
    flags = 0
    for c in options.lower():
        flags |= _REGEX_FLAGS.get(c, 0)
    try:
        return re.search(pattern, target, flags) is not None
    except re.error:
        return ERROR


def _string_list(fold: bool) -> Callable[..., Value]:
    def fn(item: Value, items: Value, delimiters: Value = ", ") -> Value:
        args = (item, items, delimiters)
        if any(a is ERROR for a in args):
            return ERROR
        if any(a is UNDEFINED for a in args):
            return UNDEFINED
        if not all(isinstance(a, str) for a in args):
            return ERROR
        assert isinstance(item, str) and isinstance(items, str) and isinstance(delimiters, str)
        split = re.split("[" + re.escape(delimiters) + "]", items) if delimiters else [items]
        words = [w.strip() for w in split if w.strip()]
        if fold:
            return item.lower() in (w.lower() for w in words)
        return item in words

    return fn


def _fn_member(item: Value, items: Value) -> Value:
    special = _undefined_first(item, items)
    if special is not None:
        return special
    if not isinstance(items, tuple) or isinstance(item, tuple | Record):
        return ERROR
    equal = BINARY["=="]
    return any(equal(item, x) is True for x in items)


def _type_test(kind: Callable[[Value], bool]) -> Callable[[Value], Value]:
    return lambda v: kind(v)


def _list_fold(how: str) -> Callable[[Value], Value]:
    """``sum``, ``avg``, ``min``, ``max`` of a list's numbers; UNDEFINED items are
    skipped, as HTCondor does."""
    add = BINARY["+"]

    def fn(items: Value) -> Value:
        if isinstance(items, Special):
            return items
        if not isinstance(items, tuple):
            return ERROR
        if any(x is ERROR for x in items):
            return ERROR
        present = [x for x in items if x is not UNDEFINED]
        if not all(is_number(x) for x in present):
            return ERROR
        if how in ("sum", "avg"):
            if not present:
                return 0
            total = present[0]
            for x in present[1:]:
                total = add(total, x)
            if how == "sum":
                return total
            assert isinstance(total, int | float)
            return float(total) / len(present)
        if len(present) < 2:
            return present[0] if present else UNDEFINED
        numbers = [int(x) if isinstance(x, bool) else x for x in present if is_number(x)]
        best = min(numbers) if how == "min" else max(numbers)  # type: ignore[type-var]
        return float(best) if any(isinstance(x, float) for x in numbers) else best  # type: ignore[arg-type]

    return fn


def _fn_pow(a: Value, b: Value) -> Value:
    if not (is_number(a) and is_number(b)):
        return ERROR
    assert isinstance(a, int | float) and isinstance(b, int | float)
    if is_int(a) and is_int(b) and b >= 0:
        return int(a) ** int(b)
    try:
        return float(a) ** float(b)
    except (OverflowError, ZeroDivisionError):
        return ERROR


#: Builtin functions (lower-case name): (implementation, fewest, most arguments).
FUNCTIONS: dict[str, tuple[Callable[..., Value], int, int]] = {
    "isundefined": (_type_test(lambda v: v is UNDEFINED), 1, 1),
    "iserror": (_type_test(lambda v: v is ERROR), 1, 1),
    "isstring": (_type_test(lambda v: isinstance(v, str)), 1, 1),
    "isinteger": (_type_test(is_int), 1, 1),
    "isreal": (_type_test(lambda v: isinstance(v, float)), 1, 1),
    "isboolean": (_type_test(lambda v: isinstance(v, bool)), 1, 1),
    "islist": (_type_test(lambda v: isinstance(v, tuple)), 1, 1),
    "isclassad": (_type_test(lambda v: isinstance(v, Record)), 1, 1),
    "size": (_fn_size, 1, 1),
    "strcat": (_fn_strcat, 0, 64),
    "substr": (_fn_substr, 2, 3),
    "strcmp": (_comparing(False), 2, 2),
    "stricmp": (_comparing(True), 2, 2),
    "tolower": (_case(False), 1, 1),
    "toupper": (_case(True), 1, 1),
    "regexp": (_fn_regexp, 2, 3),
    "stringlistmember": (_string_list(False), 2, 3),
    "stringlistimember": (_string_list(True), 2, 3),
    "member": (_fn_member, 2, 2),
    "floor": (_rounding(math.floor), 1, 1),
    "ceiling": (_rounding(math.ceil), 1, 1),
    "round": (_rounding(round), 1, 1),
    "int": (_fn_int, 1, 1),
    "real": (_fn_real, 1, 1),
    "string": (_fn_string, 1, 1),
    "time": (lambda: int(_CLOCK.get()()), 0, 0),
    "pow": (_fn_pow, 2, 2),
    "sum": (_list_fold("sum"), 1, 1),
    "avg": (_list_fold("avg"), 1, 1),
    "min": (_list_fold("min"), 1, 1),
    "max": (_list_fold("max"), 1, 1),
}
