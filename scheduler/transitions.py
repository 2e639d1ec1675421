"""The moves of a job between states, each with everything it means.

One function per legal move of :data:`scheduler.jobstate.ALLOWED`; no caller
repeats any of its steps. The job's own change (checked, its row and event
written, the queue, fair-share usage, the watchers told) goes through
:meth:`scheduler.jobs.JobTable.transition`, called from here alone. A running job
that moves also leaves its worker, here and nowhere else: its FTP grant is
revoked, it leaves the worker's jobs and the index of where jobs run, and its
slot is freed or handed to the job queued behind it (see
:mod:`scheduler.queue_ahead`). Then:

- when its worker reported the attempt's end (:func:`finish`, :func:`retry`,
  :func:`evict`, :func:`hold_failed`, and as the job's policies say
  :func:`requeue_ended`, :func:`remove_ended`), the slot's next job is started in the same
  unit, so the reply and the next ``RunJob`` leave together;
- when the scheduler stopped it (:func:`hold`, :func:`remove`), its worker is told
  to kill the attempt, and the pass that follows the change refills the slot;
- when its worker is gone (:func:`worker_lost`) the job stays running, waiting
  for it until the worker timeout; then :func:`requeue_lost` puts it back.

Idle to running (the jobs matched to free slots, and those queued behind a running
one) is :func:`scheduler.starting.schedule_once` and
:func:`scheduler.starting.queue_behind`: the match, the slots taken and the jobs
marked running (:meth:`scheduler.jobs.JobTable.start`) are one step of the job
table there.
"""

from __future__ import annotations

import logging

from scheduler import protocol as p
from scheduler import queue_ahead
from scheduler.job_records import Job, JobResult
from scheduler.protocol import JobState
from scheduler.starting import queue_behind, schedule_once
from scheduler.state import SchedulerState
from scheduler.workers import WorkerState

log = logging.getLogger("scheduler.server")


# ------------------------------------------------------------------ the attempt ended


def finish(
    state: SchedulerState,
    worker: WorkerState,
    job: Job,
    status: str,
    result: JobResult | None,
    outcome: dict[str, object],
) -> None:
    """running -> completed: event ``terminated`` (``status``), with the attempt's
    ``outcome`` and ``result``; the job leaves ``worker`` and its slot is refilled."""
    state.jobs.transition(job, JobState.COMPLETED, "terminated", status, result=result, **outcome)
    _leave_and_refill(state, worker, job)


def retry(
    state: SchedulerState, worker: WorkerState, job: Job, reason: str, outcome: dict[str, object]
) -> None:
    """running -> idle: event ``retrying`` (``reason``), the failed attempt's
    ``outcome`` kept; the job leaves ``worker`` and its slot is refilled."""
    state.jobs.transition(job, JobState.IDLE, "retrying", reason, worker=None, **outcome)
    _leave_and_refill(state, worker, job)


def evict(state: SchedulerState, worker: WorkerState, job: Job, reason: str) -> None:
    """running -> idle: event ``evicted`` (``reason``), the attempt lost with no fault
    of the job (its worker's or the scheduler's disk was full, or a draining worker
    gave it back); the job leaves ``worker`` and its slot is refilled (a draining
    worker's is not: it takes no job)."""
    state.jobs.transition(job, JobState.IDLE, "evicted", reason, worker=None)
    _leave_and_refill(state, worker, job)


def hold_failed(
    state: SchedulerState,
    worker: WorkerState,
    job: Job,
    failure: str,
    outcome: dict[str, object],
    terminated: str | None = None,
    code: tuple[int, int] | None = None,
) -> None:
    """running -> held: the attempt failed, or its end fired the job's
    ``on_exit_hold`` (``failure``, the event ``held`` and the hold reason), its
    ``outcome`` kept; when its program had ended, event
    ``terminated`` (``terminated``) first, as HTCondor's log has the termination
    before the hold; ``code``: its HoldReasonCode and subcode (a policy's). The job
    leaves ``worker`` and its slot is refilled."""
    if terminated is not None:
        state.store.save_job(job, "terminated", terminated)
    changes = {"end_time": state.clock(), **outcome, **_codes(code)}
    state.jobs.transition(job, JobState.HELD, "held", failure, hold_reason=failure, **changes)
    _leave_and_refill(state, worker, job)


def requeue_ended(
    state: SchedulerState,
    worker: WorkerState,
    job: Job,
    reason: str,
    outcome: dict[str, object],
    terminated: str,
) -> None:
    """running -> idle: the program ended (event ``terminated``, ``terminated``) and
    the job's ``on_exit_remove`` said FALSE: event ``requeued`` (``reason``), the
    attempt's ``outcome`` kept, and it runs again from the start (HTCondor's
    "terminated and requeued"). The job leaves ``worker`` and its slot is refilled."""
    state.store.save_job(job, "terminated", terminated)
    state.jobs.transition(job, JobState.IDLE, "requeued", reason, worker=None, **outcome)
    _leave_and_refill(state, worker, job)


def remove_ended(
    state: SchedulerState,
    worker: WorkerState,
    job: Job,
    reason: str,
    outcome: dict[str, object],
    terminated: str,
) -> None:
    """running -> removed: the program ended (event ``terminated``, ``terminated``)
    and the job's ``periodic_remove`` fired as it did: event ``removed``
    (``reason``), the attempt's ``outcome`` kept. The job leaves ``worker`` and its
    slot is refilled (there is no attempt left to kill)."""
    state.store.save_job(job, "terminated", terminated)
    state.jobs.transition(job, JobState.REMOVED, "removed", reason, **outcome)
    _leave_and_refill(state, worker, job)


def requeue_lost(state: SchedulerState, job: Job, reason: str, started: bool = True) -> None:
    """running -> idle: event ``evicted`` (``reason``), the attempt lost with its
    worker (gone past the worker timeout, or back without the job). The job waits
    for no worker any more; one that never ``started`` (queued on the worker behind
    another) does not count that start."""
    state.workers.returned(job.id)
    starts = job.num_starts if started else max(0, job.num_starts - 1)
    state.jobs.transition(job, JobState.IDLE, "evicted", reason, worker=None, num_starts=starts)


# ------------------------------------------------------------------ the scheduler stops it


def hold(state: SchedulerState, job: Job, reason: str, code: tuple[int, int] | None = None) -> None:
    """idle or running -> held: event ``held`` (``reason``, also the hold reason);
    ``code``: its HoldReasonCode and subcode (a policy's). A running job's worker is
    told to kill the attempt (for ``reason``) and its slot is freed; an orphan waits
    for its worker no more."""
    was_running = job.state is JobState.RUNNING
    state.jobs.transition(
        job, JobState.HELD, "held", reason, hold_reason=reason, end_time=state.clock(),
        **_codes(code),
    )  # fmt: skip
    if was_running:
        _stop_attempt(state, job, reason)


def release(state: SchedulerState, job: Job, detail: str) -> None:
    """held -> idle: event ``released`` (``detail``); the job is queued again."""
    state.jobs.transition(job, JobState.IDLE, "released", detail, hold_reason=None,
                          hold_code=None, hold_subcode=None)  # fmt: skip


def remove(state: SchedulerState, job: Job, detail: str, kill: str | None = None) -> None:
    """idle, running or held -> removed: event ``removed`` (``detail``), its end time
    now. A running job's worker is told to kill the attempt (for ``kill``, by
    default ``detail``) and its slot is freed; an orphan waits for its worker no
    more."""
    was_running = job.state is JobState.RUNNING
    state.jobs.transition(job, JobState.REMOVED, "removed", detail, end_time=state.clock())
    if was_running:
        _stop_attempt(state, job, detail if kill is None else kill)


# ------------------------------------------------------------------ the worker is gone


def worker_lost(state: SchedulerState, worker: WorkerState) -> None:
    """``worker``'s connection is gone: its jobs stay running, waiting for it until
    the worker timeout (a revoked worker cannot come back: at once), then are
    requeued (:func:`requeue_lost`); one that comes back gets new grants for the jobs
    it still runs. Their grants are revoked now; the worker's slots go with it."""
    count = len(worker.running)
    deadline = state.clock() + (0 if worker.link.revoked else state.config.worker_timeout)
    for job in list(worker.running.values()):
        state.workers.orphan(job.id, worker.name, deadline)
        _leaves(state, worker, job, free_slot=False)
    state.workers.remove(worker)
    log.info("worker %s disconnected with %d running job(s)", worker.name, count)


# ------------------------------------------------------------------ leaving a worker


def _codes(code: tuple[int, int] | None) -> dict[str, object]:
    """The fields of a hold's HoldReasonCode and subcode, if it set them."""
    return {} if code is None else {"hold_code": code[0], "hold_subcode": code[1]}


def _leaves(
    state: SchedulerState,
    worker: WorkerState,
    job: Job,
    kill: str | None = None,
    free_slot: bool = True,
) -> Job | None:
    """``job`` no longer runs on ``worker``: its grant is revoked. With ``kill``, the
    worker is told to kill it (for that reason). Returns the job queued behind it,
    which began in its place; without ``free_slot`` (its worker is gone) the slot
    is left as it is."""
    grant = state.workers.detach(worker, job.id)
    if grant is not None:
        state.store.remember(state.spool.revoke(grant))
    follower = None
    if free_slot:
        follower = queue_ahead.release(state.jobs, worker.slots, worker.running, job, state.clock())
    if kill is not None:
        worker.send(p.KillJob(job_id=job.id, attempt=job.attempt, reason=kill))
    return follower


def _leave_and_refill(state: SchedulerState, worker: WorkerState, job: Job) -> None:
    """``job``'s attempt ended on ``worker``: it leaves, and its slot goes at once to
    the job queued behind it (then queued behind in turn) or to the next idle job."""
    follower = _leaves(state, worker, job)
    if follower is None:
        schedule_once(state, [worker.slots])
    else:
        queue_behind(state, worker, follower)


def _stop_attempt(state: SchedulerState, job: Job, reason: str) -> None:
    """``job`` was stopped while running: its worker, if connected, is told to kill
    the attempt and its slot is freed; an orphan's attempt waits for its worker no
    more."""
    state.workers.returned(job.id)
    worker = state.workers.of_job(job.id)
    if worker is not None:
        _leaves(state, worker, job, kill=reason)
