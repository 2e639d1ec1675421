"""ClassAd values (UNDEFINED, ERROR, lists, records), compiled expressions, and the
operators on values, with HTCondor's meaning (see :mod:`.classad`)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "BINARY",
    "ERROR",
    "UNDEFINED",
    "Ad",
    "ClassAdError",
    "Expression",
    "Node",
    "Record",
    "Special",
    "Value",
    "as_text",
    "identical",
    "is_int",
    "is_number",
    "lookup",
    "parse_real",
    "strict",
    "truth",
    "unparse",
]


class Special:
    """UNDEFINED or ERROR (two instances only)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name


UNDEFINED = Special("UNDEFINED")
ERROR = Special("ERROR")

#: A value: what an expression gives, and what an ad holds (or an :class:`Expression`).
Value = Union[bool, int, float, str, Special, tuple["Value", ...], "Record"]
#: An ad: attribute names in lower case to values or expressions (evaluated there).
Ad = Mapping[str, "Value | Expression | None"]
Node = Callable[[Ad, Ad], Value]
_EMPTY: dict[str, Value] = {}


class ClassAdError(ValueError):
    """An expression that cannot be parsed; the message names the column."""


class Record(dict[str, "Expression"]):
    """A record's attributes (lower-case names), each evaluated in the record; a bare
    name the record lacks is looked up in ``parent``, the ad it was written in."""

    parent: Ad = {}

    def bound(self, parent: Ad) -> Record:
        copy = Record(self)
        copy.parent = parent
        return copy


@dataclass(frozen=True)
class Expression:
    """A compiled expression. ``names`` holds each attribute it names, as
    ``(scope, name)`` in lower case with scope ``""``, ``"my"`` or ``"target"``."""

    text: str
    node: Node = field(compare=False)
    #: The column (1-based) where each attribute is first named.
    columns: Mapping[tuple[str, str], int] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.columns)

    def evaluate(self, my: Ad = _EMPTY, target: Ad = _EMPTY) -> Value:
        """The value with ``my`` as MY and ``target`` as TARGET."""
        try:
            return self.node(my, target)
        except RecursionError:
            return ERROR


# ----------------------------------------------------------------------------- values


def is_number(v: object) -> bool:
    return isinstance(v, int | float)  # booleans included


def truth(v: Value) -> Value:
    """A value as a boolean in ``&&``, ``||``, ``!`` and ``?:``."""
    if isinstance(v, bool | Special):
        return v
    if isinstance(v, int | float):
        return v != 0
    return ERROR


def real_text(x: float) -> str:
    if math.isnan(x):
        return 'real("NaN")'
    if math.isinf(x):
        return 'real("INF")' if x > 0 else 'real("-INF")'
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"  # as HTCondor writes zero
    return f"{x:.15E}"


def unparse(v: Value) -> str:
    """A value as ClassAd writes it (strings quoted)."""
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return as_text(v)


def as_text(v: Value) -> str:
    """A value as ``string()`` and ``strcat()`` convert it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return real_text(v)
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return "{ " + ",".join(unparse(x) for x in v) + " }"
    if isinstance(v, Record):
        return "[ " + "; ".join(f"{k} = {e.text}" for k, e in v.items()) + " ]"
    return v.name.lower()


_NUMBER_PREFIX = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_real(s: str) -> float | None:
    m = _NUMBER_PREFIX.match(s)
    return float(m.group(0)) if m else None


def lookup(name: str, ad: Ad, other: Ad) -> Value | None:
    """``name`` in ``ad`` (None when absent); an expression there is evaluated with
    ``ad`` as MY and ``other`` as TARGET."""
    found = ad.get(name)
    if found is None:
        return None
    if isinstance(found, Expression):
        return found.node(ad, other)
    return found


# ----------------------------------------------------------------------------- operators


def strict(a: Value, b: Value) -> Special | None:
    if a is ERROR or b is ERROR:
        return ERROR
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return None


def _arith(op: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        special = strict(a, b)
        if special is not None:
            return special
        if not (is_number(a) and is_number(b)):
            return ERROR
        x, y = a, b
        assert isinstance(x, int | float) and isinstance(y, int | float)
        if isinstance(x, bool):
            x = int(x)
        if isinstance(y, bool):
            y = int(y)
        real = isinstance(x, float) or isinstance(y, float)
        if op == "+":
            r: int | float = x + y
        elif op == "-":
            r = x - y
        elif op == "*":
            r = x * y
        elif op == "/":
            if y == 0:
                return ERROR
            r = x / y if real else _int_div(int(x), int(y))
        else:  # %
            if real or y == 0:
                return ERROR
            r = int(x) - int(y) * _int_div(int(x), int(y))
        if r == math.inf:
            return ERROR  # as HTCondor: +inf is an overflow; -inf and NaN are values
        return float(r) if real else r

    return apply


def _int_div(x: int, y: int) -> int:
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _bits(op: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        special = strict(a, b)
        if special is not None:
            return special
        if not (is_int(a) and is_int(b)):
            return ERROR
        x, y = int(a), int(b)  # type: ignore[arg-type]
        if op == "|":
            return x | y
        if op == "&":
            return x & y
        if op == "^":
            return x ^ y
        if op == "<<":
            return x << y if 0 <= y < 64 else ERROR
        if op == ">>":
            return x >> y if 0 <= y < 64 else ERROR
        return (x % (1 << 64)) >> y if 0 <= y < 64 else ERROR  # >>>

    return apply


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


_NUMBERS = frozenset({int, float, bool})


def _compare(op: str) -> Callable[[Value, Value], Value]:
    test = _ORDER[op]

    def apply(a: Value, b: Value) -> Value:
        ta, tb = type(a), type(b)
        if ta in _NUMBERS and tb in _NUMBERS:
            return test(a, b)
        if ta is str and tb is str:
            return test(a.lower(), b.lower())  # type: ignore[union-attr]
        special = strict(a, b)
        return ERROR if special is None else special

    return apply


def identical(a: Value, b: Value) -> Value:
    """``=?=``: same type and same value (strings with case); ERROR for two lists."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | Record):
        return ERROR
    return a is b if isinstance(a, Special) else a == b


def _not_identical(a: Value, b: Value) -> Value:
    v = identical(a, b)
    return v if isinstance(v, Special) else not v


BINARY: dict[str, Callable[[Value, Value], Value]] = {
    **{op: _arith(op) for op in "+-*/%"},
    **{op: _bits(op) for op in ("|", "&", "^", "<<", ">>", ">>>")},
    **{op: _compare(op) for op in _ORDER},
    "=?=": identical,
    "=!=": _not_identical,
}


def is_int(v: Value) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
