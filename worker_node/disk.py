"""Whether the worker's disk is full: then no attempt ends as completed.

A job that fills the work directory's file system sees its writes fail and ends
with whatever it could write: its outputs are cut short, its exit code is often
1 and its stderr empty (that write failed too). Such an attempt is the worker's
failure, not the job's: the worker reports it as ``disk full on worker NAME``
(``JobFinished.disk_full``) and the scheduler runs the job elsewhere. Meanwhile
the worker reports itself full in its metrics (``WorkerMetrics.disk_full``) and
takes no job until its heartbeats find room again.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from scheduler.protocol import JobFinished

log = logging.getLogger(__name__)

#: Errors of a write that found no room.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = tuple(os.strerror(code) for code in FULL_ERRNOS)


def is_full_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for lack of space."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    return any(text in str(exc) for text in _FULL_TEXTS)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer (a job) may still use on ``path``'s file system."""
    return shutil.disk_usage(path).free


class DiskWatch:
    """The worker's work directory and the free space it must keep."""

    def __init__(
        self, path: Path, min_free: int, name: str, free: Callable[[Path], int] = free_bytes
    ):
        self.path = path
        self.min_free = min_free
        self.name = name
        self._free_of = free
        self._full = False

    def problem(self) -> str | None:
        """Why the disk counts as full now (``disk full on worker NAME: ...``), or None."""
        try:
            free = self._free_of(self.path)
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", self.path, exc)
            return None
        self.seen(free)
        if not self._full:
            return None
        return f"disk full on worker {self.name}: {self.path} has {free} bytes free"

    def seen(self, free: int) -> bool:
        """Note ``free`` bytes found free (by a heartbeat); True while that is too few."""
        full = free < self.min_free
        if full != self._full:
            if full:
                log.error("disk full: %s has %d bytes free; no new jobs until there is room",
                          self.path, free)  # fmt: skip
            else:
                log.warning("disk has room again: %s has %d bytes free", self.path, free)
        self._full = full
        return full

    def judge(self, result: JobFinished, error: BaseException | None = None) -> JobFinished:
        """The attempt's result as reported: a failure of this worker when one of its
        writes failed for lack of space (``error``, or named in the failure, as when
        inputs could not be staged); otherwise ``result`` unchanged."""
        if result.disk_full:
            return result
        why = error if error is not None and is_full_error(error) else None
        if why is None and result.failure is not None and is_full_error(Exception(result.failure)):
            why = result.failure
        if why is None:
            return result
        return dataclasses.replace(
            result,
            failure=f"disk full on worker {self.name}: {why}",
            disk_full=True,
            files={},
            output_files=[],
        )
