"""Whether the scheduler's disk has room: new work is refused while it has not.

The scheduler's home (database, spool, logs) lives on one file system. Below
``min_free`` bytes free there, or once a write failed for lack of space (SQLite's
``SQLITE_FULL``, ``ENOSPC`` or ``EDQUOT`` from a spool write), the disk counts as
full: submissions and other changes users ask for are refused with a line that
says so, running jobs go on, and the state shows in ``dstat``. A periodic
:meth:`DiskSpace.check` (and every refusal) looks again; the state clears on its
own once there is room. When the disk was last full is kept, so that an attempt
whose results could not be stored then is run again rather than held.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: Errors of a write that found no room.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for lack of space."""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == _SQLITE_FULL or (code is None and "disk is full" in str(exc))
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system."""
    return shutil.disk_usage(path).free


def full_message(path: Path, free: int) -> str:
    """What users and the log are told while the disk is full."""
    return f"scheduler disk full: {path} has {free} bytes free"


class DiskSpace:
    """The state of the scheduler's disk, checked at most every ``interval`` seconds
    of ``clock`` (and whenever asked with ``force``)."""

    def __init__(
        self,
        path: Path,
        min_free: int,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
        free: Callable[[Path], int] = free_bytes,
        wall: Callable[[], float] = time.time,
    ):
        self.path = path
        self.min_free = min_free
        self.clock = clock
        self.interval = interval
        self._free_of = free
        self._wall = wall
        self.free = min_free
        #: Why the disk counts as full; None while it has room.
        self.problem: str | None = None
        #: When (``wall`` clock, seconds since the epoch) it was last found full.
        self.last_full = float("-inf")
        self._checked = float("-inf")
        #: Called when the disk has room again.
        self.on_room: Callable[[], None] = lambda: None

    @property
    def full(self) -> bool:
        return self.problem is not None

    def check(self, force: bool = False) -> bool:
        """Look at the free space again (unless looked at less than ``interval`` ago);
        True while the disk is full."""
        now = self.clock()
        if not force and now - self._checked < self.interval:
            return self.full
        self._checked = now
        try:
            self.free = self._free_of(self.path)
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", self.path, exc)
            return self.full
        if self.free < self.min_free:
            self._set_full(full_message(self.path, self.free))
        elif self.problem is not None:
            log.warning("scheduler disk has room again: %s has %d bytes free", self.path, self.free)
            self.problem = None
            self.on_room()
        return self.full

    def write_failed(self, exc: BaseException) -> None:
        """A write found no room: full until the next check finds room."""
        self._checked = self.clock()
        with contextlib.suppress(OSError):
            self.free = self._free_of(self.path)
        self._set_full(f"{full_message(self.path, self.free)} ({exc})")

    def full_since(self, when: float) -> bool:
        """Whether the disk was found full at ``when`` (``wall`` clock) or later."""
        return self.last_full >= when

    def refusal(self) -> str | None:
        """Why new work is refused now (a fresh look at the disk), or None."""
        return self.problem if self.check(force=True) else None

    def _set_full(self, problem: str) -> None:
        if self.problem is None:
            log.error("%s: new submissions are refused until there is room", problem)
        self.problem = problem
        self.last_full = self._wall()
