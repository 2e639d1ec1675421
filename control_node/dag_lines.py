"""The statements of a DAG file as DAGMan reads them, and the error that names one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from control_node.submit_quoting import printable

__all__ = ["MAX_BYTES", "DagFileError", "Line", "quoted_words", "read_lines"]

#: The largest DAG (or DAG CONFIG) file read.
MAX_BYTES = 64 << 20
#: A word, or a double-quoted name that may hold blanks.
_WORD = re.compile(r'\s*(?:"([^"]*)"|(\S+))')


class DagFileError(Exception):
    """A DAG file that dfarm refuses: ``str(e)`` is ``"file:line: message"``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(path, line, message)
        self.path, self.line, self.message = path, line, printable(message)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Line:
    """One statement: its file, the number of its first line and its text (a
    continuation joined to it)."""

    path: str
    number: int
    text: str

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def keyword(self) -> str:
        return self.text.split(maxsplit=1)[0].upper()

    def error(self, message: str) -> DagFileError:
        return DagFileError(self.path, self.number, message)


def quoted_words(line: Line) -> list[str]:
    """The words of a JOB, SUBDAG or SPLICE line, where a file or folder name may be in
    double quotes to hold blanks (``JOB A "my job.sub" DIR "run 1"``), as DAGMan reads
    them."""
    words: list[str] = []
    at = 0
    while line.text[at:].strip():
        m = _WORD.match(line.text, at)
        assert m is not None  # one of the two forms matches any non-blank text
        if m[1] is None and m[2].startswith('"'):
            raise line.error(f"the double quote of {m[2]} is not closed")
        words.append(m[2] if m[1] is None else m[1])
        at = m.end()
    return words


def read_lines(path: Path) -> list[Line]:
    """The statements of one file: blank and ``#`` lines left out, a line ending in a
    backslash joined to the next by a blank. As in DAGMan, a comment line does not
    continue, and one inside a continuation is skipped when it ends in a backslash and
    otherwise ends the statement."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise DagFileError(str(path), None, f"larger than {MAX_BYTES >> 20} MiB")
        raw = path.read_bytes()
    except OSError as e:
        raise DagFileError(str(path), None, f"cannot be read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DagFileError(str(path), line, "is not UTF-8 text") from None
    name = str(path)
    lines: list[Line] = []
    parts: list[str] = []
    start = 0

    def close() -> None:
        joined = " ".join(p for p in parts if p)
        if joined:
            lines.append(Line(name, start, joined))
        parts.clear()

    for number, physical in enumerate(text.splitlines(), 1):
        stripped = physical.strip()
        if parts and stripped.startswith("#"):
            if not stripped.endswith("\\"):
                close()
            continue
        if not parts:
            if not stripped or stripped[0] == "#":
                continue
            if stripped[-1] != "\\":
                lines.append(Line(name, number, stripped))
                continue
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        close()
    close()
    return lines
