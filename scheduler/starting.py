"""Starting jobs: idle jobs matched to free slots by fair share and sent to their
workers, with short jobs queued behind them (see :mod:`scheduler.queue_ahead`)."""

from __future__ import annotations

import dataclasses
from functools import partial

from scheduler import checkpoint_start, queue_ahead
from scheduler import protocol as p
from scheduler.dispatch import Slots
from scheduler.job_records import Job
from scheduler.matching.macros import match_spec
from scheduler.state import SchedulerState
from scheduler.workers import WorkerState


def schedule_once(state: SchedulerState, candidates: list[Slots] | None = None) -> None:
    """Start idle jobs on free slots (of ``candidates``, default every worker). A job
    with a rank chosen for one of ``candidates`` may start on any free worker it
    ranks higher (see :mod:`scheduler.matchmaker`)."""
    elsewhere = None
    if candidates is None:
        candidates = state.workers.slots()
    else:
        elsewhere = state.workers.slots
    free = [slots for slots in candidates if slots.free]
    if not free or not len(state.jobs.queue) or state.disk.full:
        return  # with the disk full, jobs wait: their results could not be kept
    assigned = state.jobs.assign(free, elsewhere)
    matches = [(state.workers.get(slots.worker_id), job) for slots, job in assigned]
    if not matches:
        return
    for worker, job in matches:
        send_run(state, worker, job)
    with state.store.transaction():
        for worker, job in matches:
            queue_behind(state, worker, job)


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
    if job.attempt > 1:
        forget_earlier_attempt(state, job)
    grant = grant_job_files(state, worker, job)
    state.workers.attach(worker, job, grant)
    files = read_inline_inputs(state, worker, job)
    inputs = state.dags.inputs_of(job.cluster)
    message = run_message(job, worker.slots, worker.metrics, grant, files, after, inputs)
    checkpoint = checkpoint_start.for_run(state, job)
    if checkpoint is not None:
        message = dataclasses.replace(message, checkpoint=checkpoint)
    worker.send(message)


def run_message(
    job: Job,
    slots: Slots,
    metrics: p.WorkerMetrics,
    grant: p.FtpGrant,
    files: dict[str, str],
    after: Job | None = None,
    inputs_from: int | None = None,
) -> p.RunJob:
    """What tells a worker to run ``job``: its spec with the worker's values put in,
    its FTP grant, the inputs sent inline, the job it starts after, if any, and the
    cluster whose inputs it reads (a DAG's), if not its own."""
    return p.RunJob(
        job_id=job.id,
        attempt=job.attempt,
        owner=job.owner,
        spec=match_spec(job.spec, slots, metrics),
        ftp=grant,
        files=files,
        after="" if after is None else f"{after.id}:{after.attempt}",
        inputs_from=inputs_from,
    )


def forget_earlier_attempt(state: SchedulerState, job: Job) -> None:
    """Delete what an earlier attempt of ``job`` left: its file rows and spool files."""
    state.store.results.clear_files(job.cluster, job.proc)
    state.effects.defer(
        "clear job folder", partial(state.spool.clear_job_dir, job.cluster, job.proc)
    )


def grant_job_files(state: SchedulerState, worker: WorkerState, job: Job) -> p.FtpGrant:
    """An FTP grant for ``worker`` to fetch ``job``'s inputs and put its results
    (revoked again if the unit fails)."""
    grant = state.spool.grant_job(
        job.cluster,
        job.proc,
        worker.link.local_host,
        state.config.job_grant_ttl,
        state.dags.inputs_of(job.cluster),
    )
    state.store.remember(lambda: revoke_grant(state, grant))
    return grant


def inputs_to_inline(job: Job, sent: set[str]) -> list[p.InputFile]:
    """``job``'s inputs not yet sent to a worker that holds those of ``sent``."""
    return [item for item in job.spec.inputs if item.sha256 not in sent]


def read_inline_inputs(state: SchedulerState, worker: WorkerState, job: Job) -> dict[str, str]:
    """The small inputs of ``job`` to send inline to ``worker``, read from the spool
    (larger ones it fetches by FTP); the worker keeps them, so each goes once."""
    files = {}
    inputs = state.dags.inputs_of(job.cluster)  # a DAG node's jobs read the DAG's
    for item in inputs_to_inline(job, worker.sent_inputs):
        data = state.spool.inline_input(job.cluster if inputs is None else inputs, item)
        if data is not None:
            files[item.sha256] = data
            worker.sent_inputs.add(item.sha256)
            # Its frame is dropped if the unit fails: it is sent again next time.
            state.store.remember(partial(worker.sent_inputs.discard, item.sha256))
    return files


def revoke_grant(state: SchedulerState, grant: p.FtpGrant) -> None:
    """The undo of a grant issued by a unit that failed."""
    state.spool.revoke(grant)
