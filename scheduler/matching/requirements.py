"""``requirements``: a safe expression over worker attributes (never ``eval``).

The language is the part of HTCondor's ClassAd expressions that selects
machines: numbers, double-quoted strings, ``true``/``false``/``undefined``,
attribute names (case-insensitive, optionally prefixed ``TARGET.``),
parentheses, ``!``, unary ``-``, ``* / %``, ``+ -``, ``< <= > >=``,
``== != =?= =!=``, ``&&`` and ``||``. As in HTCondor, ``==`` compares strings
without regard to case, a comparison with an undefined value is undefined,
``&&``/``||`` are three-valued, and a job matches only where its requirements
evaluate to ``true``. An unknown attribute name is an error (a typo would
otherwise leave the job idle forever).

Attributes of a worker (see :func:`worker_ad`): ``Name``, ``Machine``,
``Cpus``, ``Memory`` (MB), ``Disk`` (KB), ``Gpus`` (what the worker offers),
``TotalCpus``, ``TotalMemory``, ``TotalDisk``, ``TotalGpus`` (the same),
``OpSys`` (``LINUX``), ``Arch`` (``X86_64``, ``aarch64``), ``LoadAvg`` (one
minute), ``GpuMemory`` (MB of its smallest GPU, 0 without) and ``WorkerId``.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REQUIREMENT_ATTRIBUTES",
    "Value",
    "Requirement",
    "RequirementsError",
    "compile_requirements",
    "normal_arch",
    "worker_ad",
]

#: Attribute names (lower case) a requirements expression may use.
REQUIREMENT_ATTRIBUTES = frozenset({
    "name", "machine", "cpus", "memory", "disk", "gpus", "totalcpus", "totalmemory",
    "totaldisk", "totalgpus", "opsys", "arch", "loadavg", "gpumemory", "workerid",
})  # fmt: skip
_ARCH = {"x86_64": "X86_64", "amd64": "X86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_MAX_LENGTH = 4096

#: A value of an attribute or an expression (None: undefined).
Value = bool | int | float | str | None
Node = Callable[[Mapping[str, Value]], Value]


class RequirementsError(ValueError):
    """A requirements expression that cannot be parsed; the message names the column."""


def normal_arch(arch: str) -> str:
    """``uname -m`` as HTCondor's ``Arch`` spells it."""
    return _ARCH.get(arch.lower(), arch)


def worker_ad(
    *,
    name: str,
    worker_id: int,
    cpus: int,
    memory_mb: int,
    gpus: int,
    disk_kb: int,
    hostname: str = "",
    opsys: str = "",
    arch: str = "",
    load_avg: float = 0.0,
    gpu_memory_mb: int = 0,
) -> dict[str, Value]:
    """A worker's attributes as requirements see them (keys in lower case)."""
    return {
        "name": name,
        "machine": hostname or name,
        "cpus": cpus,
        "memory": memory_mb,
        "disk": disk_kb,
        "gpus": gpus,
        "totalcpus": cpus,
        "totalmemory": memory_mb,
        "totaldisk": disk_kb,
        "totalgpus": gpus,
        "opsys": opsys.upper(),
        "arch": normal_arch(arch),
        "loadavg": load_avg,
        "gpumemory": gpu_memory_mb,
        "workerid": worker_id,
    }


@dataclass(frozen=True)
class Requirement:
    """A compiled expression: :meth:`matches` says whether a worker satisfies it."""

    text: str
    node: Node

    def evaluate(self, ad: Mapping[str, Value]) -> Value:
        return self.node(ad)

    def matches(self, ad: Mapping[str, Value]) -> bool:
        return self.node(ad) is True


@functools.lru_cache(maxsize=1024)
def compile_requirements(text: str) -> Requirement:
    """Parse ``text``; raises :class:`RequirementsError` naming the column of the fault."""
    if len(text) > _MAX_LENGTH:
        raise RequirementsError(f"longer than {_MAX_LENGTH} characters")
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek().kind != "end":
        parser.fail(f"unexpected {parser.peek().text!r}")
    return Requirement(text, node)


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, name, op, end
    text: str
    column: int
    value: Value = None


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[<>!()+\-*/%])
    )""",
    re.VERBOSE,
)


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
        if m is None or m.end() == at:
            if text[at] == '"':
                raise RequirementsError(f"column {at + 1}: unterminated string")
            raise RequirementsError(f"column {at + 1}: unexpected character {text[at]!r}")
        kind = m.lastgroup or "op"
        word = m.group(kind)
        column = m.start(kind) + 1
        value: Value = None
        if kind == "number":
            value = float(word) if any(c in word for c in ".eE") else int(word)
        elif kind == "string":
            value = re.sub(r"\\(.)", r"\1", word[1:-1])
        out.append(_Token(kind, word, column, value))
        at = m.end()


# ----------------------------------------------------------------------------- parser

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH: dict[str, Callable[[float, float], float | None]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": lambda a, b: None if b == 0 else (a // b if isinstance(a + b, int) else a / b),
    "%": lambda a, b: None if b == 0 else a % b,
}


def _number(v: Value) -> int | float | None:
    if isinstance(v, bool):
        return int(v)
    return v if isinstance(v, int | float) else None


def _equal(a: Value, b: Value) -> Value:
    if a is None or b is None:
        return None
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if isinstance(a, str) or isinstance(b, str):
        return None  # a string never equals a number: HTCondor's ERROR, never true
    return _number(a) == _number(b)


def _identical(a: Value, b: Value) -> bool:
    """``=?=``: same type and value (numbers compare across int and float); never undefined."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        return a == b
    return type(a) is type(b) and a == b


class _Parser:
    """Recursive descent, one method per precedence level (lowest first)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items = _tokens(text)
        self.at = 0

    def peek(self) -> _Token:
        return self.items[self.at]

    def take(self) -> _Token:
        token = self.items[self.at]
        self.at += 1
        return token

    def fail(self, message: str, token: _Token | None = None) -> None:
        token = token or self.peek()
        raise RequirementsError(f"column {token.column}: {message}")

    def accept(self, *ops: str) -> _Token | None:
        token = self.peek()
        if token.kind == "op" and token.text in ops:
            return self.take()
        return None

    def expression(self) -> Node:
        return self.disjunction()

    def disjunction(self) -> Node:
        left = self.conjunction()
        while self.accept("||"):
            right = self.conjunction()
            left = _or(left, right)
        return left

    def conjunction(self) -> Node:
        left = self.equality()
        while self.accept("&&"):
            right = self.equality()
            left = _and(left, right)
        return left

    def equality(self) -> Node:
        left = self.comparison()
        while op := self.accept("==", "!=", "=?=", "=!="):
            left = _equality(op.text, left, self.comparison())
        return left

    def comparison(self) -> Node:
        left = self.additive()
        while op := self.accept("<", "<=", ">", ">="):
            left = _compare(_COMPARE[op.text], left, self.additive())
        return left

    def additive(self) -> Node:
        left = self.multiplicative()
        while op := self.accept("+", "-"):
            left = _arith(_ARITH[op.text], left, self.multiplicative())
        return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while op := self.accept("*", "/", "%"):
            left = _arith(_ARITH[op.text], left, self.unary())
        return left

    def unary(self) -> Node:
        if self.accept("!"):
            inner = self.unary()
            return lambda ad: None if (v := inner(ad)) is None or not isinstance(v, bool) else not v
        if self.accept("-"):
            inner = self.unary()
            return lambda ad: None if (v := _number(inner(ad))) is None else -v
        if self.accept("+"):
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("number", "string"):
            value = token.value
            return lambda ad: value
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            if not self.accept(")"):
                self.fail(f"expected ')' to close the '(' of column {token.column}")
            return inner
        if token.kind == "name":
            return self.name(token)
        if token.kind == "end":
            self.fail("the expression ends too early", token)
        self.fail(f"unexpected {token.text!r}", token)
        raise AssertionError  # fail always raises

    def name(self, token: _Token) -> Node:
        word = token.text.lower()
        if word in ("true", "false"):
            value = word == "true"
            return lambda ad: value
        if word == "undefined":
            return lambda ad: None
        if self.peek().kind == "op" and self.peek().text == "(":
            self.fail(f"function calls such as {token.text}() are not supported", token)
        scope, _, attr = word.rpartition(".")
        if scope not in ("", "target"):
            self.fail(f"only worker (TARGET.) attributes may be named, not {token.text!r}", token)
        if attr not in REQUIREMENT_ATTRIBUTES:
            known = ", ".join(sorted(REQUIREMENT_ATTRIBUTES))
            self.fail(f"unknown attribute {token.text!r} (known: {known})", token)
        return lambda ad: ad.get(attr)


def _junction(left: Node, right: Node, decisive: bool) -> Node:
    """``||`` (``decisive`` True) or ``&&`` (False) in ClassAd's three-valued logic:
    one decisive side decides, else both must be defined for a defined result."""

    def node(ad: Mapping[str, Value]) -> Value:
        a = left(ad)
        if a is decisive:
            return decisive
        b = right(ad)
        if b is decisive:
            return decisive
        return (not decisive) if a is (not decisive) and b is (not decisive) else None

    return node


def _or(left: Node, right: Node) -> Node:
    return _junction(left, right, True)


def _and(left: Node, right: Node) -> Node:
    return _junction(left, right, False)


def _equality(op: str, left: Node, right: Node) -> Node:
    if op == "=?=":
        return lambda ad: _identical(left(ad), right(ad))
    if op == "=!=":
        return lambda ad: not _identical(left(ad), right(ad))
    if op == "==":
        return lambda ad: _equal(left(ad), right(ad))
    return lambda ad: None if (v := _equal(left(ad), right(ad))) is None else not v


def _compare(fn: Callable[[object, object], bool], left: Node, right: Node) -> Node:
    def node(ad: Mapping[str, Value]) -> Value:
        a, b = left(ad), right(ad)
        if isinstance(a, str) and isinstance(b, str):
            return fn(a.lower(), b.lower())
        x, y = _number(a), _number(b)
        return None if x is None or y is None else fn(x, y)

    return node


def _arith(fn: Callable[[float, float], float | None], left: Node, right: Node) -> Node:
    def node(ad: Mapping[str, Value]) -> Value:
        x, y = _number(left(ad)), _number(right(ad))
        return None if x is None or y is None else fn(x, y)

    return node
