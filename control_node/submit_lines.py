"""The lines of an HTCondor submit file, as condor_submit reads them: ``key = value``
statements, ``key @=TAG`` multi-line values (the lines up to ``@TAG``, stripped, blank
and ``#`` lines left out, joined by newlines: a newline separates arguments as a blank
does), ``queue`` (with a list that goes on over lines), conditionals, ``include``,
``error`` and ``warning``; a trailing backslash continues a line (a comment line inside
the continuation is skipped when it ends with a backslash too, and refused otherwise,
as condor_submit ends the value there); ``#`` starts a comment line."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CONTROL_CHARS", "MULTI_LINE", "LineError", "Statement", "read_statements"]

#: The characters a value cannot hold. condor_submit keeps every other control
#: character of a value as it is (a job may take them in its arguments).
CONTROL_CHARS = re.compile(r"[\x00\n]")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_QUEUE = re.compile(r"queue\b(.*)", re.IGNORECASE | re.DOTALL)
_CONDITIONALS = frozenset({"if", "elif", "else", "endif"})
_STATEMENT_WORDS = frozenset({"include", "error", "warning"})
#: ``include : FILE``, ``include command : CMD |``, ``error : TEXT``, ``warning : TEXT``.
_COLON_STATEMENT = re.compile(
    r"(include(?:\s+command)?|error|warning)\s*:(.*)", re.IGNORECASE | re.DOTALL
)
#: ``key @=TAG``: a multi-line value, up to the line ``@TAG``.
MULTI_LINE = re.compile(r"[ \t]*([^\s=]+)[ \t]+@=[ \t]*(.*?)[ \t\r]*")
#: A queue line that opens a list it does not close: the list goes on to a ")" line.
_OPEN_LIST = re.compile(r"queue\b.*\([^()]*", re.IGNORECASE | re.DOTALL)


class LineError(ValueError):
    """A line that is not a statement dfarm accepts; ``line`` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Statement:
    """``key = value`` (value stripped), ``queue`` and its arguments (``key`` None), a
    conditional line (``kind`` ``if``, ``elif``, ``else`` or ``endif``, ``key`` None), or
    an ``include``, ``include command``, ``error`` or ``warning`` statement (``key`` None,
    ``value`` what follows the colon)."""

    line: int
    key: str | None
    value: str
    #: ``set``, ``queue``, ``if``, ``elif``, ``else``, ``endif``, ``include``,
    #: ``include command``, ``error`` or ``warning``.
    kind: str = "set"
    #: The lines of a queue list that goes on after its line, up to the ``)`` line
    #: (``#`` comments left out; a blank line is an item of a ``from`` list).
    block: tuple[str, ...] | None = None
    #: The included file the statement comes from (None: the submit file itself).
    file: str | None = None


Line = tuple[int, str, tuple[str, ...] | None]


def _list_block(raw: list[str], i: int, start: int) -> tuple[tuple[str, ...], int]:
    """The lines of a queue list from raw line ``i`` to the line that begins with ')'."""
    block: list[str] = []
    while i < len(raw):
        text = raw[i].strip()
        i += 1
        if text.startswith(")"):
            if text[1:].strip():
                raise LineError(i, "unexpected text after the ')' that closes the queue list")
            return tuple(block), i
        if not text.startswith("#"):
            block.append(text)
    raise LineError(start, "the queue list opened with '(' has no line beginning with ')'")


_COMMENT_ENDS_VALUE = (
    "a comment line inside a value continued with '\\' ends the value in condor_submit"
    " (which then misreads or refuses the lines after it): end the comment line with"
    " '\\' too, or move the comment above the value"
)


def _multi_line_value(raw: list[str], i: int, start: int, tag: str) -> tuple[str, int]:
    """The value of ``key @=TAG`` (on line ``start``) from raw line ``i`` to the line
    ``@TAG``, and the line after that, as condor_submit reads it: each line stripped,
    blank and ``#`` lines left out, a trailing backslash joining the next line, the
    lines joined by newlines."""
    lines: list[str] = []
    while i < len(raw):
        line = raw[i].strip()
        i += 1
        while line.endswith("\\") and i < len(raw):
            line = line[:-1] + raw[i].strip()
            i += 1
        if line == "@" + tag:
            return "\n".join(lines), i
        if line and not line.startswith("#"):
            lines.append(line)
    raise LineError(start, f"the multi-line value opened with '@={tag}' has no line '@{tag}'")


def _logical_lines(text: str) -> list[Line]:
    raw = text.split("\n")
    for no, line in enumerate(raw, 1):
        m = CONTROL_CHARS.search(line.rstrip("\r"))
        if m:
            raise LineError(no, f"control character U+{ord(m[0]):04X} in line")
    out: list[Line] = []
    i = 0
    while i < len(raw):
        start, line = i + 1, raw[i].rstrip(" \t\r")
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        multi = MULTI_LINE.fullmatch(line)
        if multi:
            if multi[1].startswith("+"):
                name = multi[1][1:]
                raise LineError(
                    start,
                    f"condor_submit reads no multi-line '+{name}': write 'MY.{name} @=TAG'",
                )
            value, i = _multi_line_value(raw, i, start, multi[2])
            out.append((start, f"{multi[1]} = {value}", None))
            continue
        parts = []
        while line.endswith("\\"):
            parts.append(line[:-1])
            while i < len(raw) and raw[i].lstrip().startswith("#"):
                if not raw[i].rstrip(" \t\r").endswith("\\"):
                    raise LineError(i + 1, _COMMENT_ENDS_VALUE)
                i += 1
            line = raw[i].rstrip(" \t\r").lstrip(" \t") if i < len(raw) else ""
            i += 1
        parts.append(line)
        joined = "".join(parts)
        if not joined.strip():
            continue
        block = None
        if _OPEN_LIST.fullmatch(joined.strip()):
            block, i = _list_block(raw, i, start)
        out.append((start, joined, block))
    return out


def _statement(no: int, text: str, block: tuple[str, ...] | None) -> Statement:
    m = _QUEUE.fullmatch(text.strip())
    if m:
        return Statement(no, None, m.group(1).strip(), "queue", block)
    m = _COLON_STATEMENT.fullmatch(text.strip())
    if m:
        return Statement(no, None, m.group(2).strip(), " ".join(m.group(1).lower().split()))
    key, eq, value = text.partition("=")
    key = key.strip()
    word = text.split(None, 1)[0].lower()
    if word in _CONDITIONALS and (not eq or key.lower() != word):
        return Statement(no, None, text.strip()[len(word) :].strip(), word)
    if not eq:
        word = word.lstrip("@")
        if word in _STATEMENT_WORDS:
            raise LineError(no, f"expected '{word} : ...' (a colon after '{word}')")
        raise LineError(no, "expected 'key = value' or 'queue'")
    if key.endswith("@"):
        raise LineError(
            no,
            "a multi-line value is written 'key @=TAG' (blanks before '@='), then its"
            " lines, then a line '@TAG'",
        )
    if key.startswith("+") or key.lower().startswith("my."):
        raise LineError(no, f"custom job attribute '{key}' (+Attr / MY.Attr) is not supported yet")
    if not _KEY.fullmatch(key):
        raise LineError(no, f"invalid submit key {key!r}")
    return Statement(no, key, value.strip())


def read_statements(text: str) -> list[Statement]:
    """Split submit-file text into statements, joining continued lines; raises LineError."""
    return [_statement(no, line, block) for no, line, block in _logical_lines(text)]


# ----------------------------------------------------------------------------- warnings
