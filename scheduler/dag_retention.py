"""An ended DAG's files expire with its results: once it has been ended for the
results' retention time (as a cluster's results are kept after its jobs end), its
copies of its nodes' inputs in the spool and its folder (``HOME/dags/ID``: scripts
and log) are removed. Its rows stay, for ``dq -dag`` and ``dhistory``; it can no
longer be run again (``--rerun-failed``).

A sweep is a unit: the DAGs are marked in SQLite and their files removed once that
is committed (:mod:`scheduler.effects`)."""

from __future__ import annotations

import logging
import shutil
from functools import partial

from scheduler.dags import dag_folder
from scheduler.retention import SWEEP_INTERVAL
from scheduler.state import SchedulerState

log = logging.getLogger("scheduler.server")


def expire_dags(state: SchedulerState, now: float) -> int:
    """Remove the files of the DAGs ended more than the retention time ago; returns
    how many DAGs."""
    book = state.dags
    keep = state.config.result_retention
    if now - book.last_sweep < min(SWEEP_INTERVAL, keep / 2):
        return 0
    last = book.last_sweep
    book.remember(lambda: setattr(book, "last_sweep", last))
    book.last_sweep = now
    expired = book.tables.expire_files(now - keep)
    if expired:
        state.effects.defer("clean expired DAGs", partial(_remove, state, expired))
        log.info("files of %d ended DAG(s) cleaned after %.0f s", len(expired), keep)
    return len(expired)


def _remove(state: SchedulerState, dags: list[int]) -> None:
    for dag in dags:
        state.spool.remove_cluster(dag)
        shutil.rmtree(dag_folder(state, dag), ignore_errors=True)
