"""A connection closed: what it held in the scheduler's state is let go."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.clusters import abandon_submissions_of
from scheduler.connection import Connection
from scheduler.probe import end_probes
from scheduler.protocol import Role
from scheduler.state import SchedulerState
from scheduler.transitions import worker_lost
from scheduler.watchers import forget
from scheduler.workers import WorkerState


def connection_closed(state: SchedulerState, conn: Connection) -> None:
    """``conn`` is gone: its probes end; a user's watches end and the clusters it was
    submitting are cut off; a worker's jobs wait for it (see :func:`worker_lost`)."""
    end_probes(state, conn)
    if conn.role is Role.CONTROL:
        state.controls.pop(conn.id, None)
        forget(state, conn)
        abandon_submissions_of(state, conn)
    worker = state.workers.of_link(conn)
    if worker is not None:
        drop_tails(state, worker)
        worker_lost(state, worker)


def drop_tails(state: SchedulerState, worker: WorkerState) -> None:
    """Answer the output requests a departing worker will never answer."""
    for token, (caller, request_id, link) in list(state.tails.items()):
        if link is worker.link:
            del state.tails[token]
            caller.send(p.Error(id=request_id, message="the job's worker went away", code="gone"))
