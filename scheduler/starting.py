"""Starting jobs: idle jobs matched to free slots by fair share and sent to their
workers, with short jobs queued behind them (see :mod:`scheduler.queue_ahead`)."""

from __future__ import annotations

from functools import partial

from scheduler import protocol as p
from scheduler import queue_ahead
from scheduler.dispatch import Slots
from scheduler.matching.macros import match_spec
from scheduler.state import SchedulerState
from scheduler.store import Job
from scheduler.workers import WorkerState


def schedule_once(state: SchedulerState, candidates: list[Slots] | None = None) -> None:
    """Start idle jobs on free slots (of ``candidates``, default every worker)."""
    if candidates is None:
        candidates = state.workers.slots()
    free = [slots for slots in candidates if slots.free]
    if not free or not len(state.jobs.queue) or state.disk.full:
        return  # with the disk full, jobs wait: their results could not be kept
    assigned = state.jobs.assign(free)
    for slots, job in assigned:
        send_run(state, state.workers.get(slots.worker_id), job)
    with state.store.transaction():
        for slots, job in assigned:
            queue_behind(state, state.workers.get(slots.worker_id), job)


def queue_behind(state: SchedulerState, worker: WorkerState, head: Job) -> None:
    """Queue jobs on ``head``'s worker behind it, if they would start soon."""
    chain = queue_ahead.queue_behind(
        state.jobs,
        worker.slots,
        worker.running,
        head,
        state.run_times,
        state.config.queue_wait,
        state.clock(),
    )
    for leader, job in chain:
        send_run(state, worker, job, after=leader)


def send_run(
    state: SchedulerState, worker: WorkerState, job: Job, after: Job | None = None
) -> None:
    """Send a job just marked running to its worker (to start after ``after``)."""
    if job.attempt > 1:  # forget what an earlier attempt left
        state.store.clear_files(job.cluster, job.proc)
        state.spool.clear_job_dir(job.cluster, job.proc)
    grant = state.spool.grant_job(
        job.cluster, job.proc, worker.link.local_host, state.config.job_grant_ttl
    )
    state.store.remember(lambda: revoke_grant(state, grant))
    state.workers.attach(worker, job, grant)
    files = {}
    for item in job.spec.inputs:
        if item.sha256 not in worker.sent_inputs:
            data = state.spool.inline_input(job.cluster, item)
            if data is not None:
                files[item.sha256] = data
                worker.sent_inputs.add(item.sha256)
                # Its frame is dropped if the unit fails: it is sent again next time.
                state.store.remember(partial(worker.sent_inputs.discard, item.sha256))
    worker.send(
        p.RunJob(
            job_id=job.id,
            attempt=job.attempt,
            owner=job.owner,
            spec=match_spec(job.spec, worker.slots, worker.metrics),
            ftp=grant,
            files=files,
            after="" if after is None else f"{after.id}:{after.attempt}",
        )
    )


def revoke_grant(state: SchedulerState, grant: p.FtpGrant) -> None:
    """The undo of a grant issued by a unit that failed."""
    state.spool.revoke(grant)
