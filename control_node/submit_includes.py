"""The statements of a submit file as read: the custom attribute lines marked, a
byte-order mark refused, and ``include``, ``error`` and ``warning`` statements carried
out (an include's statements read in its place).

Mixed into the parser of :mod:`control_node.submit_file`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator

from control_node.submit_errors import SubmitFileError
from control_node.submit_keys import CUSTOM_PREFIX
from control_node.submit_lines import MULTI_LINE, LineError, Statement, read_statements
from control_node.submit_macros import MacroError, used_names
from control_node.submit_queue import QueueError, command_output

__all__ = [
    "DIRECTIVES",
    "MAX_INCLUDE_BYTES",
    "MAX_INCLUDE_DEPTH",
    "IncludeReader",
    "mark_custom_attributes",
    "refuse_byte_order_mark",
]

#: ``+Name =`` or ``MY.Name =`` at the start of a line: a custom job attribute.
#: (``MY.Name @=TAG`` too: condor_submit reads no multi-line ``+Name``.)
_CUSTOM = re.compile(
    r"^([ \t]*)(?:\+(?=[A-Za-z_][A-Za-z0-9_]*[ \t]*=)"
    r"|[Mm][Yy]\.(?=[A-Za-z_][A-Za-z0-9_]*(?:[ \t]*|[ \t]+@)=))"
)
#: The statements :meth:`IncludeReader.directive` carries out.
DIRECTIVES = frozenset({"include", "include command", "error", "warning"})
#: How deep ``include`` statements may nest.
MAX_INCLUDE_DEPTH = 20
#: The largest file an ``include`` reads (``include : /dev/zero`` must end).
MAX_INCLUDE_BYTES = 64 << 20


class IncludeReader:
    """``include``, ``error`` and ``warning`` statements."""

    # Provided by the parser.
    filename: str
    cwd: str
    expand_condition: Callable[[str], str]
    warn: Callable[..., None]

    def directive(
        self, st: Statement, pending: list[tuple[Iterator[Statement], str]], used: set[str]
    ) -> None:
        """An active ``include``, ``include command``, ``error`` or ``warning`` statement;
        an include pushes its statements on ``pending``."""
        if st.kind in ("error", "warning"):
            try:
                text = self.expand_condition(st.value)
            except MacroError as e:
                raise SubmitFileError(self.where(st), st.line, str(e)) from None
            if st.kind == "error":
                raise SubmitFileError(self.where(st), st.line, text)
            self.warn(st.line, text, st.file)
            return
        name, included = self.include(st, [path for _, path in pending])
        used |= {m for s in included for m in used_names(s.value)}
        pending.append((iter(included), name))

    def where(self, st: Statement) -> str:
        """The file a statement comes from, as errors name it."""
        return st.file or self.filename

    def include_path(self, st: Statement) -> str:
        """The absolute path an ``include : FILE`` names: macros expanded, relative to
        the folder of the file that includes it."""
        try:
            value = self.expand_condition(st.value).strip()
        except MacroError as e:
            raise SubmitFileError(self.where(st), st.line, str(e)) from None
        base = os.path.dirname(st.file) if st.file else self.cwd
        return os.path.normpath(os.path.join(base, value))

    def include(self, st: Statement, reading: list[str]) -> tuple[str, list[Statement]]:
        """The name and statements of an ``include : FILE`` or ``include command : CMD |``;
        ``reading`` lists the files being read, to refuse a cycle."""
        where = self.where(st)
        try:
            value = self.expand_condition(st.value).strip()
        except MacroError as e:
            raise SubmitFileError(where, st.line, str(e)) from None
        if len(reading) > MAX_INCLUDE_DEPTH:
            raise SubmitFileError(where, st.line, f"includes nested over {MAX_INCLUDE_DEPTH} deep")
        if st.kind == "include command" or value.endswith("|"):
            try:
                text = command_output(value.removesuffix("|").strip(), self.cwd, "include command")
            except QueueError as e:
                raise SubmitFileError(where, st.line, str(e)) from None
            name = f"{where}:{st.line}:{value}"
        else:
            name = self.include_path(st)
            if not value:
                raise SubmitFileError(where, st.line, "'include :' names no file")
            if name in reading:
                raise SubmitFileError(where, st.line, f"'{value}' includes itself (a cycle)")
            try:
                with open(name, "rb") as f:
                    data = f.read(MAX_INCLUDE_BYTES + 1)
                if len(data) > MAX_INCLUDE_BYTES:
                    raise SubmitFileError(
                        where, st.line, f"'{value}' is over {MAX_INCLUDE_BYTES} bytes"
                    )
                text = data.decode("utf-8")
            except OSError as e:
                why = e.strerror or str(e)
                raise SubmitFileError(where, st.line, f"cannot include '{value}': {why}") from None
            except UnicodeDecodeError:
                raise SubmitFileError(where, st.line, f"'{value}' is not valid UTF-8") from None
        refuse_byte_order_mark(text, name)
        try:
            stmts = read_statements(mark_custom_attributes(text))
        except LineError as e:
            raise SubmitFileError(name, e.line, str(e)) from None
        return name, [dataclasses.replace(s, file=name) for s in stmts]


def refuse_byte_order_mark(text: str, name: str) -> None:
    """condor_submit refuses a file (submit or included) that starts with a byte-order mark."""
    if text.startswith("\ufeff"):
        raise SubmitFileError(
            name,
            1,
            "the file starts with a byte-order mark (it was saved as 'UTF-8 with BOM'),"
            " which condor_submit refuses: save it as plain UTF-8, or remove the mark with"
            f" sed -i '1s/^\\xEF\\xBB\\xBF//' {name}",
        )


def mark_custom_attributes(text: str) -> str:
    """``text`` with each ``+Name =`` / ``MY.Name =`` line (not a continued one) keyed
    ``CUSTOM_PREFIX + Name``, which the statement reader takes as a plain key."""
    lines = text.split("\n")
    continued = False
    closing: str | None = None  # inside a multi-line value: the line that ends it
    for i, line in enumerate(lines):
        if closing is not None:
            closing = None if line.strip() == closing else closing
            continue
        if not continued:
            lines[i] = _CUSTOM.sub(r"\1" + CUSTOM_PREFIX, line, count=1)
            multi = MULTI_LINE.fullmatch(line.rstrip(" \t\r"))
            closing = "@" + multi[2] if multi else None
        continued = line.rstrip(" \t\r").endswith("\\")
    return "\n".join(lines)
