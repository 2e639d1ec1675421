"""The error of a submit file that dfarm refuses, with its file and line."""

from __future__ import annotations

from control_node.submit_quoting import printable

__all__ = ["SubmitFileError"]


class SubmitFileError(Exception):
    """A submit file that dfarm refuses: ``str(e)`` is ``"file:line: message"``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(path, line, message)
        self.path, self.line, self.message = path, line, printable(message)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"
