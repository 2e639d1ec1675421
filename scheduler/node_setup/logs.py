"""Logging set-up for the daemons (configured only in their entry points)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: journald stamps every line itself.
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def under_systemd() -> bool:
    """True when stderr goes to journald (systemd sets ``JOURNAL_STREAM`` for a service)."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def log_path(option: str | Path | None, default: Path | None) -> Path | None:
    """The file to log to: the option's (``-`` = none), else ``default`` unless the
    process runs under systemd, whose journal keeps stderr."""
    if option is not None:
        return None if str(option) == "-" else Path(option)
    return None if under_systemd() else default


#: What must not reach a log line as it is: control characters (a newline would forge
#: a line), the Unicode line separators, and lone surrogates (not UTF-8 at all).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class SafeFormatter(logging.Formatter):
    """A formatter that writes each record on one line of printable text: the
    characters of :data:`_UNSAFE` in a message (names and values a peer sent) are
    escaped, so that no peer can forge or break a line of the log. Tracebacks,
    appended after the message, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if _UNSAFE.search(record.message):
            record.message = _UNSAFE.sub(_escape, record.message)
        return super().formatMessage(record)


def _escape(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    """Log to stderr and, if given, to a rotating file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=10 * 2**20, backupCount=3)
        )
    handlers[0].setFormatter(SafeFormatter(JOURNAL_FORMAT if under_systemd() else FORMAT))
    for handler in handlers[1:]:
        handler.setFormatter(SafeFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=handlers, force=True)
