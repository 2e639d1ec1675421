"""Results are kept for a while after a job ends (default 7 days), then cleaned:
the spool files and the small results in the database go, the job's row and
events stay for ``dhistory``. Also measures the spool's disk use for ``dstat``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from scheduler.staging import Spool
from scheduler.store import Job, Store

log = logging.getLogger(__name__)

#: Most seconds between two sweeps for expired results (less for a short retention).
SWEEP_INTERVAL = 60.0
#: Seconds a measurement of the spool's size is reused.
USAGE_TTL = 10.0


class Retention:
    def __init__(self, store: Store, spool: Spool, keep_seconds: float, clock: Callable[[], float]):
        self.store, self.spool, self.keep_seconds = store, spool, keep_seconds
        self.clock = clock
        self._last_sweep = 0.0
        #: The last measurement of the spool's size: when, and how many bytes.
        self._usage: tuple[float, int] | None = None

    def expire(self, now: float, active: dict[tuple[int, int], Job], force: bool = False) -> int:
        """Clean the results of jobs that ended more than ``keep_seconds`` ago."""
        if not force and now - self._last_sweep < min(SWEEP_INTERVAL, self.keep_seconds / 2):
            return 0
        self._last_sweep = now
        expired = self.store.expired_results(now - self.keep_seconds)
        if not expired:
            return 0
        self.store.expire_results(expired, now)
        busy = {cluster for cluster, _ in active}
        for cluster, proc in expired:
            self.spool.clear_job_dir(cluster, proc)
        for cluster in {c for c, _ in expired} - busy:
            # No job of the cluster will run again: its inputs can go, and its
            # folder once no job keeps results there.
            shutil.rmtree(self.spool.input_dir(cluster), ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.spool.root / str(cluster)).rmdir()
        log.info("results of %d job(s) cleaned after %.0f s", len(expired), self.keep_seconds)
        self._usage = None
        return len(expired)

    def spool_bytes(self) -> int:
        """Bytes in the spool (inputs and large results) plus small results in SQLite."""
        now = self.clock()
        if self._usage is None or not 0 <= now - self._usage[0] <= USAGE_TTL:
            self._usage = (now, tree_size(self.spool.root) + self.store.results_bytes())
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
