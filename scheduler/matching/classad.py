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

import re
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.matching.classad_functions import FUNCTIONS
from scheduler.matching.classad_values import (
    BINARY,
    ERROR,
    UNDEFINED,
    Ad,
    ClassAdError,
    Expression,
    Node,
    Record,
    Special,
    Value,
    lookup,
    strict,
    truth,
    unparse,
)

__all__ = [
    "ERROR",
    "UNDEFINED",
    "Ad",
    "ClassAdError",
    "Expression",
    "FUNCTIONS",
    "Record",
    "Special",
    "Value",
    "compile_expression",
    "unparse",
]

_MAX_LENGTH = 4096


def compile_expression(text: str) -> Expression:
    """Parse ``text``; raises :class:`ClassAdError` naming the column of the fault."""
    if len(text) > _MAX_LENGTH:
        raise ClassAdError(f"longer than {_MAX_LENGTH} characters")
    parser = _Parser(text)
    try:
        node = parser.expression()
    except RecursionError:
        raise ClassAdError(f"column {parser.peek().column}: nested too deeply") from None
    if parser.peek().kind != "end":
        parser.fail(f"unexpected {parser.peek().text!r}")
    return Expression(text, node, parser.names)


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


# ----------------------------------------------------------------------------- nodes


def _and(left: Node, right: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        a = left(my, target)
        if a is not True:
            a = truth(a)
            if a is False or a is ERROR:
                return a
        b = right(my, target)
        if b is not True and b is not False:
            b = truth(b)
        if a is True or b is ERROR or b is False:
            return b
        return UNDEFINED

    return node


def _or(left: Node, right: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        a = truth(left(my, target))
        if a is True or a is ERROR:
            return a
        b = truth(right(my, target))
        if a is False or b is ERROR or b is True:
            return b
        return UNDEFINED

    return node


def _conditional(test: Node, yes: Node, no: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        c = truth(test(my, target))
        if c is True:
            return yes(my, target)
        if c is False:
            return no(my, target)
        return c

    return node


def _binary(op: str, left: Node, right: Node) -> Node:
    fn = BINARY[op]
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
        v = truth(inner(my, target))
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
            v = lookup(name, b, target)
            return UNDEFINED if v is None else v
        return b if isinstance(b, Special) else ERROR

    return node


def _subscript(base: Node, index: Node) -> Node:
    def node(my: Ad, target: Ad) -> Value:
        b, i = base(my, target), index(my, target)
        special = strict(b, i)
        if special is not None:
            return special
        if isinstance(b, tuple):
            if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(b):
                return b[i]
            return ERROR
        if isinstance(b, Record) and isinstance(i, str):
            v = lookup(i.lower(), b, target)
            return UNDEFINED if v is None else v
        return ERROR

    return node


def _in_my(name: str, my: Ad, target: Ad) -> Value | None:
    """``name`` in MY, or in the ads a record in MY was written in."""
    v = lookup(name, my, target)
    while v is None and type(my) is Record:
        my = my.parent
        v = lookup(name, my, target)
    return v


def _attribute(scope: str, name: str) -> Node:
    """A reference to an attribute; the node keeps what it names (``reference``),
    which ``countMatches`` reads."""
    node = _attribute_node(scope, name)
    setattr(node, "reference", (scope, name))  # noqa: B010 (a function's attribute)
    return node


def _attribute_node(scope: str, name: str) -> Node:
    if scope == "my":
        return lambda my, target: UNDEFINED if (v := _in_my(name, my, target)) is None else v
    if scope == "target":
        return lambda my, target: UNDEFINED if (v := lookup(name, target, my)) is None else v

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


def _referenced(node: Node, my: Ad, target: Ad) -> Node | None:
    """What an attribute reference names, unevaluated (None where it is absent); any
    other node as it is."""
    ref: tuple[str, str] | None = getattr(node, "reference", None)
    if ref is None:
        return node
    scope, name = ref
    found = None
    if scope in ("", "my"):
        ad: Ad = my
        found = ad.get(name)
        while found is None and type(ad) is Record:
            ad = ad.parent
            found = ad.get(name)
    if found is None and scope in ("", "target"):
        found = target.get(name)
    if found is None:
        return None
    if isinstance(found, Expression):
        return found.node
    return lambda my, target: found


def _count_matches(constraint: Node, items: Node) -> Node:
    """``countMatches(constraint, list)``: how many records of ``list`` satisfy
    ``constraint`` (an attribute naming an expression is that expression), each
    evaluated in the record, as HTCondor's ``countMatches``: an absent list counts
    none, a value that is no list is ERROR."""

    def node(my: Ad, target: Ad) -> Value:
        values = items(my, target)
        if values is UNDEFINED:
            return 0
        if not isinstance(values, tuple):
            return ERROR
        test = _referenced(constraint, my, target)
        if test is None:
            return 0
        count = 0
        for item in values:
            if isinstance(item, Record):
                v = test(item.bound(my), _NO_TARGET)
                count += isinstance(v, int | float) and v != 0
        return count

    return node


_NO_TARGET: dict[str, Value] = {}


def _call(name: str, args: Sequence[Node]) -> Node:
    if name == "ifthenelse":
        return _conditional(*args)
    if name == "countmatches":
        return _count_matches(*args)
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
        elif word == "countmatches":
            fewest, most = 2, 2
        elif word in FUNCTIONS:
            fewest, most = FUNCTIONS[word][1:]
        else:
            self.fail(f"unknown function {token.text}()", token)
        if not fewest <= len(args) <= most:
            want = str(fewest) if fewest == most else f"{fewest} to {most}"
            self.fail(f"{token.text}() takes {want} arguments, not {len(args)}", token)
        return _call(word, args)
