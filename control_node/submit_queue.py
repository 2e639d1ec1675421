"""The ``queue`` statement of the HTCondor submit language, as condor_submit reads it.

::

    queue [N]
    queue [N] [VAR] in [slice] (a, b, c)              items listed (one line or several)
    queue [N] [VAR[,VAR...]] from [slice] FILE        one item per line of FILE
    queue [N] [VAR[,VAR...]] from [slice] COMMAND |   one item per line the command prints
    queue [N] [VAR[,VAR...]] from [slice] ( ... )     one item per line, up to a ")" line
    queue [N] [VAR] matching [files|dirs] [slice] GLOB ...

Each item queues N procs (default 1). Without a variable name the item is ``$(Item)``.
A line of a ``from`` list is split on commas and/or white space until every variable
has a value; the last one takes the rest of the line (missing ones are empty). A blank
line is an item that sets no variable (they keep the previous item's values), and
lines beginning with ``#`` are skipped in a list written in the submit file. The slice is Python's
``[start:stop:step]`` over the items (no negative step). ``matching`` looks in the
submit directory; without ``files`` or ``dirs`` it matches both, in sorted order, a
directory with a trailing ``/``. ``in`` and ``matching`` give the first variable its
value and leave the others empty; ``#`` lines of an item file or a command's output are
items, as condor_submit reads them.

Everything here raises :class:`QueueError` (a ``ValueError``) with a readable message;
the parser adds the file and line.
"""

from __future__ import annotations

import ast
import glob
import operator
import os
import re
import subprocess
from dataclasses import dataclass

__all__ = [
    "PREDEFINED",
    "Item",
    "QueueError",
    "QueueSpec",
    "command_output",
    "evaluate_count",
    "parse_queue",
    "queue_items",
    "split_fields",
]

_KEYWORD = re.compile(r"(?<![^\s,])(in|from|matching)(?=[\s(\[]|$)", re.IGNORECASE)
#: A count: a number, a macro, or an integer expression of them (no blanks inside
#: when variable names follow, since blanks separate those).
_HEAD = re.compile(r"(.*?)((?:[A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*|\s+|$))*)", re.DOTALL)
_COUNT_ALONE = re.compile(r"(?:[0-9+*/%()\s-]|\$\([^()]*\))+")
_SLICE = re.compile(r"\[\s*([+-]?[0-9]*)\s*(?::\s*([+-]?[0-9]*)\s*)?(?::\s*([+-]?[0-9]*)\s*)?\]")
_SEPARATORS = re.compile(r"\s*,\s*|\s+")
#: The predefined macros, which neither a queue variable nor a submit key may name.
PREDEFINED = frozenset({"cluster", "clusterid", "process", "procid", "dollar"})
MAX_ITEMS = 1_000_000
#: Seconds a ``from COMMAND |`` may run.
COMMAND_TIMEOUT = 60
FORMS = "expected 'queue [N]' or 'queue [N] [VARS] in|from|matching ...'"


class QueueError(ValueError):
    """A queue statement that dfarm cannot expand."""


@dataclass(frozen=True)
class QueueSpec:
    """A parsed queue statement; ``source`` is macro-expanded before items are read."""

    count: str
    names: tuple[str, ...]
    mode: str | None  # None (plain 'queue N'), 'in', 'from' or 'matching'
    what: str  # for matching: 'files', 'dirs' or '' (both)
    slice: slice | None
    source: str
    block: tuple[str, ...] | None


@dataclass(frozen=True)
class Item:
    """One item of a queue statement: its position in the list (``index``, and ``row``,
    which condor_submit 24 numbers the same), and the values of the queue variables."""

    index: int
    row: int
    values: dict[str, str]


def parse_queue(args: str, block: tuple[str, ...] | None = None) -> QueueSpec:
    """Parse what follows the word ``queue``; ``block`` holds the lines of a list that
    goes on after the queue line."""
    m = _KEYWORD.search(args)
    if m is None:
        if block is not None or (args and not _COUNT_ALONE.fullmatch(args)):
            raise QueueError(f"cannot read 'queue {args}': {FORMS}")
        return QueueSpec(args, (), None, "", None, "", None)
    mode = m.group(1).lower()
    count, names = _head(args[: m.start()].strip())
    rest = args[m.end() :].strip()
    what = ""
    the_slice = None
    for _ in range(2):  # 'matching' takes files|dirs and the slice in either order
        word = re.match(r"(files|dirs)\b", rest, re.IGNORECASE)
        if mode == "matching" and word and not what:
            what, rest = word.group(1).lower(), rest[word.end() :].strip()
        if rest.startswith("[") and the_slice is None:
            s = _SLICE.match(rest)
            if s is None:
                raise QueueError(f"invalid slice in 'queue {args}': expected [start:stop:step]")
            the_slice, rest = _to_slice(s), rest[s.end() :].strip()
    if not rest and block is None:
        raise QueueError(f"'queue ... {mode}' needs a list of items")
    return QueueSpec(count, names or ("Item",), mode, what, the_slice, rest, block)


def _head(head: str) -> tuple[str, tuple[str, ...]]:
    """``[N] [VAR[,VAR...]]`` before the keyword: the names are the trailing words that
    can be names, the count all before them (``2 * 2 x``, even ``2x``, as condor_submit
    splits them)."""
    m = _HEAD.fullmatch(head)
    assert m is not None  # the count part takes whatever the names do not
    return m.group(1).strip(), tuple(n for n in re.split(r"[\s,]+", m.group(2)) if n)


def _to_slice(m: re.Match[str]) -> slice:
    start, stop, step = (int(g) if g else None for g in m.groups())
    if step is not None and step <= 0:
        raise QueueError("the step of a queue slice must be a positive number")
    return slice(start, stop, step)


def evaluate_count(text: str) -> int:
    """The value of a count expression (macros already expanded): whole numbers with
    ``+ - * / %`` and parentheses, ``/`` dividing whole numbers as ClassAds do."""
    try:
        tree = ast.parse(text.strip() or "1", mode="eval")
        value = _evaluate(tree.body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        raise QueueError(f"the queue count must be a whole number, not {text.strip()!r}") from None
    if value < 0:
        raise QueueError(f"the queue count must not be negative ({text.strip()} = {value})")
    return value


_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.floordiv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}  # fmt: skip


def _evaluate(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Mult) and abs(left * right) > MAX_ITEMS * MAX_ITEMS:
            raise ValueError("too large")
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError("not a whole-number expression")


def split_fields(line: str, count: int) -> list[str]:
    """Split one item line into ``count`` values; the last one keeps the rest."""
    if count == 1:  # the one variable takes the whole line (a maxsplit of 0 splits it all)
        return [line.strip()]
    fields = _SEPARATORS.split(line.strip(), maxsplit=count - 1) if line.strip() else []
    return fields + [""] * (count - len(fields))


def queue_items(spec: QueueSpec, source: str, cwd: str) -> list[Item]:
    """The selected items of a queue statement, with ``source`` its expanded list text."""
    if spec.mode is None:
        return [Item(0, 0, {})]
    if spec.mode == "matching":
        values = [[name] for name in _matching(spec.what, _inline(source, spec.block), cwd)]
    elif spec.mode == "in":
        values = [[v] for v in re.split(r"[,\s]+", _inline(source, spec.block)) if v]
    else:
        lines = _from_lines(source, spec.block, cwd)
        values = [split_fields(line, len(spec.names)) if line else [] for line in lines]
    if len(values) > MAX_ITEMS:
        raise QueueError(f"more than {MAX_ITEMS} items in one queue statement")
    indexes = range(len(values))[spec.slice] if spec.slice else range(len(values))
    # condor_submit 24 numbers $(Row) as $(ItemIndex): the place in the whole list
    items: list[Item] = []
    for index in indexes:
        # A blank line of a 'from' list sets no variable: each keeps its last value.
        kept = items[-1].values if items else {}
        items.append(
            Item(index, index, _values(spec.names, values[index]) if values[index] else kept)
        )
    return items


def _values(names: tuple[str, ...], fields: list[str]) -> dict[str, str]:
    """The variables of one item: names without a field are empty, and a name given
    twice takes its later field, as in condor_submit."""
    return {name: fields[i] if i < len(fields) else "" for i, name in enumerate(names)}


def _inline(source: str, block: tuple[str, ...] | None) -> str:
    """The text of an item list: a list in parentheses (one line or several) or bare."""
    if block is not None:
        return "\n".join([source[1:], *block])
    if source.startswith("("):
        if not source.endswith(")"):
            raise QueueError("the queue list opened with '(' is not closed")
        return source[1:-1]
    return source


def _from_lines(source: str, block: tuple[str, ...] | None, cwd: str) -> list[str]:
    """The item lines of a ``from`` list, stripped; a blank line is an item (``""``)."""
    if block is not None:
        return [line.strip() for line in block]
    if source.startswith("("):
        return _lines(_inline(source, block), True)
    if source.endswith("|"):
        return _lines(command_output(source[:-1].strip(), cwd), False)
    path = os.path.join(cwd, source)
    try:
        with open(path, encoding="utf-8") as f:
            return _lines(f.read(), False)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise QueueError(f"cannot read the item file '{source}' ({path}): {why}") from None


def _lines(text: str, skip_comments: bool) -> list[str]:
    """The item lines of ``text``, stripped, the one after a final newline left out.
    condor_submit skips ``#`` lines in a list written in the submit file, not in an
    item file or a command's output."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines if not (skip_comments and line.strip().startswith("#"))]


def command_output(command: str, cwd: str, what: str = "item command") -> str:
    """``from COMMAND |`` (and ``include command : COMMAND |``): what the command
    prints, run by the shell in the submit directory (as condor_submit runs it)."""
    if not command:
        raise QueueError(f"the {what} is empty")
    try:
        done = subprocess.run(
            command, shell=True, cwd=cwd, capture_output=True, timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise QueueError(f"the {what} {command!r} ran over {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise QueueError(f"the {what} {command!r} exited with status {done.returncode}: {why[0]}")
    try:
        return done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise QueueError(f"the {what} {command!r} printed text that is not UTF-8") from None


def _matching(what: str, source: str, cwd: str) -> list[str]:
    names: dict[str, None] = {}
    for pattern in (p for p in re.split(r"[,\s]+", source) if p):
        if os.path.isabs(pattern):
            raise QueueError(f"'queue matching' takes patterns relative to the submit directory,"
                             f" not {pattern!r}")  # fmt: skip
        for name in sorted(glob.glob(pattern, root_dir=cwd)):
            path = os.path.join(cwd, name)
            if (what == "files" and not os.path.isfile(path)) or (
                what == "dirs" and not os.path.isdir(path)
            ):
                continue
            names[name + "/" if os.path.isdir(path) else name] = None
    return list(names)
