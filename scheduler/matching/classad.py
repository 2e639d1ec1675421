"""ClassAd expressions with HTCondor's meaning, compiled to closures (never ``eval``).

One language for ``requirements``, ``rank`` and any expression over a job's and a
worker's attributes. Values are booleans, integers, reals, strings, lists
(``{1, "a"}``), records (``[a = 1; b = a + 1]``) and the two special values
:data:`UNDEFINED` (an attribute no ad has) and :data:`ERROR` (an operation that
makes no sense, such as ``"a" + 1`` or ``1 / 0``). As in HTCondor:

* names are case-insensitive; ``MY.x`` is the ad the expression belongs to (the
  job's), ``TARGET.x`` the other one (the worker's), and a bare ``x`` is looked up
  in MY first, then in TARGET;
* operators are strict (ERROR, then UNDEFINED, wins) except ``&&``, ``||`` and
  ``?:``, which follow three-valued logic, and ``=?=``/``=!=`` (``is``/``isnt``),
  which compare type and value and never give UNDEFINED;
* ``==`` and ``<`` ... compare strings without regard to case; booleans count as
  0 and 1 among numbers; integer division truncates; a real makes a result real.

Unlike HTCondor, an unknown function name is refused when the expression is
compiled (HTCondor evaluates it to ERROR, which leaves a job idle for ever).
The builtins are listed in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "ERROR",
    "UNDEFINED",
    "Ad",
    "ClassAdError",
    "Expression",
    "FUNCTIONS",
    "Special",
    "Value",
    "compile_expression",
    "unparse",
]

_MAX_LENGTH = 4096


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


def compile_expression(text: str) -> Expression:
    """Parse ``text``; raises :class:`ClassAdError` naming the column of the fault."""
    if len(text) > _MAX_LENGTH:
        raise ClassAdError(f"longer than {_MAX_LENGTH} characters")
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek().kind != "end":
        parser.fail(f"unexpected {parser.peek().text!r}")
    return Expression(text, node, parser.names)


# ----------------------------------------------------------------------------- values


def _is_number(v: object) -> bool:
    return isinstance(v, int | float)  # booleans included


def _truth(v: Value) -> Value:
    """A value as a boolean in ``&&``, ``||``, ``!`` and ``?:``."""
    if isinstance(v, bool | Special):
        return v
    if isinstance(v, int | float):
        return v != 0
    return ERROR


def _real_text(x: float) -> str:
    if math.isnan(x):
        return 'real("NaN")'
    if math.isinf(x):
        return 'real("INF")' if x > 0 else 'real("-INF")'
    return f"{x:.15E}"


def unparse(v: Value) -> str:
    """A value as ClassAd writes it (strings quoted)."""
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _text(v)


def _text(v: Value) -> str:
    """A value as ``string()`` and ``strcat()`` convert it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _real_text(v)
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        return "{ " + ",".join(unparse(x) for x in v) + " }"
    if isinstance(v, Record):
        return "[ " + "; ".join(f"{k} = {e.text}" for k, e in v.items()) + " ]"
    return v.name.lower()


_NUMBER_PREFIX = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _parse_real(s: str) -> float | None:
    m = _NUMBER_PREFIX.match(s)
    return float(m.group(0)) if m else None


def _lookup(name: str, ad: Ad, other: Ad) -> Value | None:
    """``name`` in ``ad`` (None when absent); an expression there is evaluated with
    ``ad`` as MY and ``other`` as TARGET."""
    found = ad.get(name)
    if found is None:
        return None
    if isinstance(found, Expression):
        return found.node(ad, other)
    return found


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, name, op, end
    text: str
    column: int
    value: object = None


_TOKEN = re.compile(
    r"""(?:
    (?P<number>(?:[0-9]+\.[0-9]+|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>=\?=|=!=|>>>|==|!=|<=|>=|&&|\|\||<<|>>|[<>!()+\-*/%?:{},;\[\].=|&^~])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            out.append(_Token("end", "end of expression", at + 1))
            return out
        m = _TOKEN.match(text, at)
        if m is None:
            if text[at] == '"':
                raise ClassAdError(f"column {at + 1}: unterminated string")
            raise ClassAdError(f"column {at + 1}: unexpected character {text[at]!r}")
        kind = m.lastgroup or "op"
        word = m.group(kind)
        value: object = None
        if kind == "number":
            value = float(word) if any(c in word for c in ".eE") else int(word)
        elif kind == "string":
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), word[1:-1])
        out.append(_Token(kind, word, at + 1, value))
        at = m.end()


# ----------------------------------------------------------------------------- operators


def _strict(a: Value, b: Value) -> Special | None:
    if a is ERROR or b is ERROR:
        return ERROR
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return None


def _arith(op: str) -> Callable[[Value, Value], Value]:
    def apply(a: Value, b: Value) -> Value:
        special = _strict(a, b)
        if special is not None:
            return special
        if not (_is_number(a) and _is_number(b)):
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
        special = _strict(a, b)
        if special is not None:
            return special
        if not (_is_int(a) and _is_int(b)):
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
        special = _strict(a, b)
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


_BINARY: dict[str, Callable[[Value, Value], Value]] = {
    **{op: _arith(op) for op in "+-*/%"},
    **{op: _bits(op) for op in ("|", "&", "^", "<<", ">>", ">>>")},
    **{op: _compare(op) for op in _ORDER},
    "=?=": identical,
    "=!=": _not_identical,
}


def _and(left: Node, right: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        a = left(my, target)
        if a is not True:
            a = _truth(a)
            if a is False or a is ERROR:
                return a
        b = right(my, target)
        if b is not True and b is not False:
            b = _truth(b)
        if a is True or b is ERROR or b is False:
            return b
        return UNDEFINED

    return node


def _or(left: Node, right: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        a = _truth(left(my, target))
        if a is True or a is ERROR:
            return a
        b = _truth(right(my, target))
        if a is False or b is ERROR or b is True:
            return b
        return UNDEFINED

    return node


def _conditional(test: Node, yes: Node, no: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        c = _truth(test(my, target))
        if c is True:
            return yes(my, target)
        if c is False:
            return no(my, target)
        return c

    return node


def _binary(op: str, left: Node, right: Node) -> Node:
    fn = _BINARY[op]
    return lambda my, target: fn(left(my, target), right(my, target))


def _negate(inner: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        v = inner(my, target)
        if isinstance(v, Special):
            return v
        if isinstance(v, bool) or not isinstance(v, int | float):
            return ERROR
        return -v

    return node


def _not(inner: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        v = _truth(inner(my, target))
        return v if isinstance(v, Special) else not v

    return node


def _complement(inner: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        v = inner(my, target)
        if isinstance(v, Special):
            return v
        return ~v if isinstance(v, int) and not isinstance(v, bool) else ERROR

    return node


def _select(base: Node, name: str) -> Node:
    """``base.name``: an attribute of a record (or of MY/TARGET, see the parser)."""

    def node(my: Ad, target: Ad) -> Value:
        b = base(my, target)
        if isinstance(b, Record):
            v = _lookup(name, b, target)
            return UNDEFINED if v is None else v
        return b if isinstance(b, Special) else ERROR

    return node


def _subscript(base: Node, index: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        b, i = base(my, target), index(my, target)
        special = _strict(b, i)
        if special is not None:
            return special
        if isinstance(b, tuple):
            if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(b):
                return b[i]
            return ERROR
        if isinstance(b, Record) and isinstance(i, str):
            v = _lookup(i.lower(), b, target)
            return UNDEFINED if v is None else v
        return ERROR

    return node


def _in_my(name: str, my: Ad, target: Ad) -> Value | None:
    """``name`` in MY, or in the ads a record in MY was written in."""
    v = _lookup(name, my, target)
    while v is None and type(my) is Record:
        my = my.parent
        v = _lookup(name, my, target)
    return v


def _attribute(scope: str, name: str) -> Node:
    if scope == "my":
        return lambda my, target: UNDEFINED if (v := _in_my(name, my, target)) is None else v
    if scope == "target":
        return lambda my, target: UNDEFINED if (v := _lookup(name, target, my)) is None else v

    def node(my: Ad, target: Ad) -> Value:
        v = my.get(name)
        if v is None:
            if type(my) is Record:
                v = _in_my(name, my, target)
            if v is None:
                v = target.get(name)
                if v is None:
                    return UNDEFINED
                return v.node(target, my) if isinstance(v, Expression) else v
        elif type(v) is Expression:
            return v.node(my, target)
        return v  # type: ignore[return-value]

    return node


# ----------------------------------------------------------------------------- functions


def _is_int(v: Value) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _to_real(v: Value) -> Value:
    if isinstance(v, Special):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        r = _parse_real(v)
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
    return v if isinstance(v, Special) else _text(v)


def _rounding(how: Callable[[float], int]) -> Callable[[Value], Value]:
    def fn(v: Value) -> Value:
        if _is_int(v):
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
    return "".join(_text(a) for a in args)


def _fn_substr(s: Value, offset: Value, length: Value | None = None) -> Value:
    special = _undefined_first(s, offset, UNDEFINED if length is UNDEFINED else 0)
    if special is not None:
        return special
    if not isinstance(s, str) or not _is_int(offset) or not (length is None or _is_int(length)):
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
    return special if special is not None else [_text(a) for a in args]


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
    equal = _BINARY["=="]
    return any(equal(item, x) is True for x in items)


def _type_test(kind: Callable[[Value], bool]) -> Callable[[Value], Value]:
    return lambda v: kind(v)


def _list_fold(how: str) -> Callable[[Value], Value]:
    """``sum``, ``avg``, ``min``, ``max`` of a list's numbers; UNDEFINED items are
    skipped, as HTCondor does."""
    add = _BINARY["+"]

    def fn(items: Value) -> Value:
        if isinstance(items, Special):
            return items
        if not isinstance(items, tuple):
            return ERROR
        if any(x is ERROR for x in items):
            return ERROR
        present = [x for x in items if x is not UNDEFINED]
        if not all(_is_number(x) for x in present):
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
        numbers = [int(x) if isinstance(x, bool) else x for x in present if _is_number(x)]
        best = min(numbers) if how == "min" else max(numbers)  # type: ignore[type-var]
        return float(best) if any(isinstance(x, float) for x in numbers) else best  # type: ignore[arg-type]

    return fn


def _fn_pow(a: Value, b: Value) -> Value:
    if not (_is_number(a) and _is_number(b)):
        return ERROR
    assert isinstance(a, int | float) and isinstance(b, int | float)
    if _is_int(a) and _is_int(b) and b >= 0:
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
    "isinteger": (_type_test(_is_int), 1, 1),
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
    "time": (lambda: int(time.time()), 0, 0),
    "pow": (_fn_pow, 2, 2),
    "sum": (_list_fold("sum"), 1, 1),
    "avg": (_list_fold("avg"), 1, 1),
    "min": (_list_fold("min"), 1, 1),
    "max": (_list_fold("max"), 1, 1),
}


def _call(name: str, args: Sequence[Node]) -> Node:
    if name == "ifthenelse":
        return _conditional(*args)
    fn = FUNCTIONS[name][0]
    if len(args) == 1:
        (only,) = args
        return lambda my, target: fn(only(my, target))
    if len(args) == 2:
        a, b = args
        return lambda my, target: fn(a(my, target), b(my, target))
    return lambda my, target: fn(*(arg(my, target) for arg in args))


# ----------------------------------------------------------------------------- parser

_LEVELS: list[tuple[str, ...]] = [
    ("|",),
    ("^",),
    ("&",),
    ("==", "!=", "=?=", "=!=", "is", "isnt"),
    ("<", "<=", ">", ">="),
    ("<<", ">>", ">>>"),
    ("+", "-"),
    ("*", "/", "%"),
]
_KEYWORD_OPS = {"is": "=?=", "isnt": "=!="}


class _Parser:
    """Recursive descent, one level of precedence at a time (lowest first)."""

    def __init__(self, text: str) -> None:
        self.items = _tokens(text)
        self.at = 0
        self.names: dict[tuple[str, str], int] = {}
        self.text = text

    def peek(self) -> _Token:
        return self.items[self.at]

    def take(self) -> _Token:
        token = self.items[self.at]
        self.at += 1
        return token

    def fail(self, message: str, token: _Token | None = None) -> None:
        token = token or self.peek()
        raise ClassAdError(f"column {token.column}: {message}")

    def accept(self, *ops: str) -> _Token | None:
        token = self.peek()
        if token.kind == "op" and token.text in ops:
            return self.take()
        if token.kind == "name" and token.text.lower() in ops:
            return self.take()
        return None

    def expect(self, op: str, opener: _Token) -> None:
        if not self.accept(op):
            self.fail(f"expected {op!r} to close the {opener.text!r} of column {opener.column}")

    def expression(self) -> Node:
        test = self.disjunction()
        if question := self.accept("?"):
            yes = self.expression()
            if not self.accept(":"):
                self.fail(f"expected ':' for the '?' of column {question.column}")
            return _conditional(test, yes, self.expression())
        return test

    def disjunction(self) -> Node:
        left = self.conjunction()
        while self.accept("||"):
            left = _or(left, self.conjunction())
        return left

    def conjunction(self) -> Node:
        left = self.binary(0)
        while self.accept("&&"):
            left = _and(left, self.binary(0))
        return left

    def binary(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while op := self.accept(*_LEVELS[level]):
            word = op.text.lower()
            left = _binary(_KEYWORD_OPS.get(word, word), left, self.binary(level + 1))
        return left

    def unary(self) -> Node:
        if self.accept("!"):
            return _not(self.unary())
        if self.accept("~"):
            return _complement(self.unary())
        if self.accept("-"):
            return _negate(self.unary())
        if self.accept("+"):
            inner = self.unary()
            return _binary("+", lambda my, target: 0, inner)
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                token = self.take()
                if token.kind != "name":
                    self.fail("expected an attribute name after '.'", token)
                node = _select(node, token.text.lower())
            elif opener := self.accept("["):
                index = self.expression()
                self.expect("]", opener)
                node = _subscript(node, index)
            else:
                return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("number", "string"):
            value = token.value
            return lambda my, target: value  # type: ignore[return-value]
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect(")", token)
            return inner
        if token.kind == "op" and token.text == "{":
            return self.list_literal(token)
        if token.kind == "op" and token.text == "[":
            return self.record_literal(token)
        if token.kind == "name":
            return self.name(token)
        if token.kind == "end":
            self.fail("the expression ends too early", token)
        self.fail(f"unexpected {token.text!r}", token)
        raise AssertionError  # fail always raises

    def list_literal(self, opener: _Token) -> Node:
        items: list[Node] = []
        if not self.accept("}"):
            items.append(self.expression())
            while self.accept(","):
                items.append(self.expression())
            self.expect("}", opener)
        return lambda my, target: tuple(item(my, target) for item in items)

    def record_literal(self, opener: _Token) -> Node:
        record = Record()
        while not self.accept("]"):
            token = self.take()
            if token.kind != "name":
                self.fail("expected an attribute name in the record", token)
            if not self.accept("="):
                self.fail("expected '=' after the attribute name", self.peek())
            start = self.peek().column - 1
            node = self.expression()
            text = self.text[start : self.peek().column - 1].strip()
            record[token.text.lower()] = Expression(text, node)
            if not self.accept(";") and self.peek().text != "]":
                self.fail(f"expected ';' or ']' to close the '[' of column {opener.column}")
        return lambda my, target: record.bound(my)

    def name(self, token: _Token) -> Node:
        word = token.text.lower()
        if word in ("true", "false"):
            value = word == "true"
            return lambda my, target: value
        if word in ("undefined", "error"):
            special = UNDEFINED if word == "undefined" else ERROR
            return lambda my, target: special
        if self.peek().kind == "op" and self.peek().text == "(":
            return self.call(token)
        if word in ("my", "target") and self.peek().text == ".":
            self.take()
            attr = self.take()
            if attr.kind != "name":
                self.fail("expected an attribute name after '.'", attr)
            self.names.setdefault((word, attr.text.lower()), token.column)
            return _attribute(word, attr.text.lower())
        self.names.setdefault(("", word), token.column)
        return _attribute("", word)

    def call(self, token: _Token) -> Node:
        word = token.text.lower()
        opener = self.take()
        args: list[Node] = []
        if not self.accept(")"):
            args.append(self.expression())
            while self.accept(","):
                args.append(self.expression())
            self.expect(")", opener)
        if word == "ifthenelse":
            fewest, most = 3, 3
        elif word in FUNCTIONS:
            fewest, most = FUNCTIONS[word][1:]
        else:
            self.fail(f"unknown function {token.text}()", token)
        if not fewest <= len(args) <= most:
            want = str(fewest) if fewest == most else f"{fewest} to {most}"
            self.fail(f"{token.text}() takes {want} arguments, not {len(args)}", token)
        return _call(word, args)
