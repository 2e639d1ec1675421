"""Logging set-up for the daemons (configured only in their entry points)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    """Log to stderr and, if given, to a rotating file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=10 * 2**20, backupCount=3)
        )
    logging.basicConfig(level=level.upper(), format=FORMAT, handlers=handlers, force=True)
