"""A job leaves its worker: the one transition that frees what the job held there.

Whether the job finished, was removed or held, was given back by a draining worker,
or its worker was lost, the same steps run here and nowhere else: its FTP grant is
revoked, it leaves the worker's jobs and the index of where jobs run, and its slot
is freed or handed to the job queued behind it (see :mod:`scheduler.queue_ahead`);
a worker still running it is told to kill it. The job's own move (to completed,
idle, held or removed) goes through :class:`scheduler.jobs.JobTable`, which writes
its row and event and tells those watching.
"""

from __future__ import annotations

import logging

from scheduler import protocol as p
from scheduler.queue_ahead import release
from scheduler.state import SchedulerState
from scheduler.store import Job
from scheduler.workers import WorkerState

log = logging.getLogger("scheduler.server")


def job_leaves(
    state: SchedulerState,
    worker: WorkerState,
    job: Job,
    kill: str | None = None,
    free_slot: bool = True,
) -> Job | None:
    """``job`` no longer runs on ``worker``. With ``kill``, the worker is told to kill
    it (for that reason). Returns the job queued behind it, which began in its place;
    without ``free_slot`` (its worker is gone) the slot is left as it is."""
    grant = state.workers.detach(worker, job.id)
    if grant is not None:
        state.store.remember(state.spool.revoke(grant))
    follower = None
    if free_slot:
        follower = release(state.jobs, worker.slots, worker.running, job, state.clock())
    if kill is not None:
        worker.send(p.KillJob(job_id=job.id, attempt=job.attempt, reason=kill))
    return follower


def stop_attempt(state: SchedulerState, job: Job, reason: str) -> None:
    """``job`` was stopped (removed or held) while running: kill the attempt its worker
    runs and free its slot; an orphan's attempt no longer waits for its worker."""
    state.workers.returned(job.id)
    worker = state.workers.of_job(job.id)
    if worker is not None:
        job_leaves(state, worker, job, kill=reason)


def worker_lost(state: SchedulerState, worker: WorkerState) -> None:
    """``worker``'s connection is gone: its jobs wait for it until the worker timeout
    (a revoked worker cannot come back: at once), then are requeued; one that comes
    back gets new grants for the jobs it still runs."""
    count = len(worker.running)
    deadline = state.clock() + (0 if worker.link.revoked else state.config.worker_timeout)
    for job in list(worker.running.values()):
        state.workers.orphan(job.id, worker.name, deadline)
        job_leaves(state, worker, job, free_slot=False)
    state.workers.remove(worker)
    log.info("worker %s disconnected with %d running job(s)", worker.name, count)
