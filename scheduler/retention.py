"""Results are kept for a while after a job ends (default 7 days), then cleaned:
the spool files and the small results in the database go, the job's row and
events stay for ``dhistory``. Also measures the spool's disk use for ``dstat``.

A sweep is a unit of work: it forgets the results in the database and defers the
removal of their files (:mod:`scheduler.effects`) until that is committed."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from scheduler.effects import Effects
from scheduler.job_records import Job
from scheduler.staging import CHECKPOINTS, Spool
from scheduler.store import Store

log = logging.getLogger(__name__)

#: Most seconds between two sweeps for expired results (less for a short retention).
SWEEP_INTERVAL = 60.0
#: Seconds a measurement of the spool's size is reused.
USAGE_TTL = 10.0


class Retention:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        keep_seconds: float,
        clock: Callable[[], float],
        effects: Effects,
        removed: Callable[[list[int]], None] = lambda clusters: None,
    ):
        self.store, self.spool, self.keep_seconds = store, spool, keep_seconds
        self.clock, self.effects = clock, effects
        #: Told of the clusters whose files a sweep removed (the quota's kept sizes).
        self.removed = removed
        self._last_sweep = 0.0
        #: The last measurement of the spool's size: when, and how many bytes.
        self._usage: tuple[float, int] | None = None

    def expire(self, now: float, active: dict[tuple[int, int], Job], force: bool = False) -> int:
        """Clean the results of jobs that ended more than ``keep_seconds`` ago."""
        if not force and now - self._last_sweep < min(SWEEP_INTERVAL, self.keep_seconds / 2):
            return 0
        last = self._last_sweep
        self.store.remember(lambda: setattr(self, "_last_sweep", last))
        self._last_sweep = now
        expired = self.store.results.expired_results(now - self.keep_seconds)
        if not expired:
            return 0
        self.store.results.expire_results(expired, now)
        busy = {cluster for cluster, _ in active}
        idle = sorted({c for c, _ in expired} - busy)
        self.effects.defer("clean expired results", lambda: self._remove(expired, idle))
        log.info("results of %d job(s) cleaned after %.0f s", len(expired), self.keep_seconds)
        return len(expired)

    def _remove(self, expired: list[tuple[int, int]], idle: list[int]) -> None:
        """The files of a sweep: the folders of the ``expired`` jobs, and the inputs
        of the clusters none of whose jobs is active (``idle``)."""
        for cluster, proc in expired:
            self.spool.clear_job_dir(cluster, proc)
            shutil.rmtree(self.spool.checkpoint_dir(cluster, proc), ignore_errors=True)
        for cluster in idle:
            # No job of the cluster will run again: its inputs can go, and its
            # folder once no job keeps results there.
            shutil.rmtree(self.spool.input_dir(cluster), ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.spool.root / str(cluster) / CHECKPOINTS).rmdir()
            with contextlib.suppress(OSError):
                (self.spool.root / str(cluster)).rmdir()
        self._usage = None
        self.removed(sorted({cluster for cluster, _ in expired} | set(idle)))

    def spool_bytes(self) -> int:
        """Bytes in the spool (inputs and large results) plus small results in SQLite."""
        now = self.clock()
        if self._usage is None or not 0 <= now - self._usage[0] <= USAGE_TTL:
            self._usage = (now, tree_size(self.spool.root) + self.store.results.results_bytes())
        return self._usage[1]


def tree_size(root: Path, skip: Collection[str] = ()) -> int:
    """Bytes of the files below ``root``, but for the paths in ``skip``."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if path not in skip:
                with contextlib.suppress(OSError):  # removed while we looked
                    total += os.lstat(path).st_size
    return total
