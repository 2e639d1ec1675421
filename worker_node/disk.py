"""Whether the worker's disk is full: then no attempt ends as completed.

A job that fills the work directory's file system sees its writes fail and ends
with whatever it could write: its outputs are cut short, its exit code is often
1 and its stderr empty (that write failed too). Such an attempt is the worker's
failure, not the job's: the worker reports it as ``disk full on worker NAME``
(``JobFinished.disk_full``) and the scheduler runs the job elsewhere. Meanwhile
the worker reports itself full in its metrics (``WorkerMetrics.disk_full``) and
takes no job until its heartbeats find room again.

A job's write may fail on a disk that is full only for a moment, and the job end
after room came back: a thread looks at the free space every ``INTERVAL`` seconds,
and an attempt during which the disk was seen full counts as ended on a full disk.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scheduler.protocol import NOT_STARTED, JobFinished

log = logging.getLogger(__name__)

#: Errors of a write that found no room.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = tuple(os.strerror(code) for code in FULL_ERRNOS)
#: How the failure of an attempt whose inputs could not be staged begins.
STAGING = NOT_STARTED[0]
#: Seconds between two looks at the free space while jobs run.
INTERVAL = 0.2


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
        self,
        path: Path,
        min_free: int,
        name: str,
        free: Callable[[Path], int] = free_bytes,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.min_free = min_free
        self.name = name
        self._free_of = free
        self._clock = clock
        self._full = False
        #: When the disk was last seen full, and how little it had then.
        self._last_full = float("-inf")
        self._least = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        """Look at the free space every ``INTERVAL`` seconds until :meth:`stop`."""
        threading.Thread(target=self._watch, name="disk-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.problem()

    def problem(self, since: float | None = None) -> str | None:
        """Why the disk counts as full (``disk full on worker NAME: ...``): it is now,
        or was seen so after ``since`` (a time of the clock); None if not."""
        try:
            free = self._free_of(self.path)
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", self.path, exc)
            return None
        with self._lock:
            self._seen(free)
            if self._full or (since is not None and self._last_full >= since):
                least = free if self._full else self._least
                return f"disk full on worker {self.name}: {self.path} had {least} bytes free"
        return None

    def _seen(self, free: int) -> None:
        full = free < self.min_free
        if full != self._full:
            if full:
                log.error("disk full: %s has %d bytes free; no new jobs until there is room",
                          self.path, free)  # fmt: skip
            else:
                log.warning("disk has room again: %s has %d bytes free", self.path, free)
        if full:
            self._last_full, self._least = self._clock(), free
        self._full = full

    def judge(self, result: JobFinished, error: BaseException | None = None) -> JobFinished:
        """The attempt's result as reported: a failure of this worker when one of its
        writes failed for lack of space (``error``, or inputs that could not be staged
        for it); otherwise ``result`` unchanged. (Results that the scheduler's disk
        could not take are the scheduler's business, not this worker's.)"""
        if result.disk_full:
            return result
        why: BaseException | str | None = (
            error if error is not None and is_full_error(error) else None
        )
        staging = result.failure or ""
        if why is None and staging.startswith(STAGING) and is_full_error(Exception(staging)):
            why = staging
        if why is None:
            return result
        return dataclasses.replace(
            result,
            failure=f"disk full on worker {self.name}: {why}",
            disk_full=True,
            files={},
            output_files=[],
        )
