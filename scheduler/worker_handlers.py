"""What the scheduler does with the messages of workers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from functools import partial
from pathlib import Path

from scheduler import protocol as p
from scheduler.callers import Link
from scheduler.connection import RequestError
from scheduler.dispatch import Slots
from scheduler.handshake import BY_POOL_SECRET
from scheduler.job_records import Job
from scheduler.job_results import extract_result
from scheduler.matching.attributes import slot_attributes
from scheduler.policies import Verdict, evaluate, retries_folded
from scheduler.protocol import JobState
from scheduler.result_hashes import FileHash, hash_results
from scheduler.starting import revoke_grant
from scheduler.state import SchedulerState
from scheduler.submission import safe_name, safe_result_name
from scheduler.transitions import (
    evict,
    finish,
    hold_failed,
    remove_ended,
    requeue_ended,
    requeue_lost,
    retry,
)
from scheduler.units import run_unit
from scheduler.workers import WorkerState

log = logging.getLogger("scheduler.server")

POOL_SECRET_REFUSED = (
    "this scheduler takes workers with a credential of their own only, not the pool"
    " secret: run 'dfarm worker add NAME' on the scheduler node and start the worker with"
    " --credential-file (or start a throw-away scheduler with --allow-pool-secret)"
)
#: Attempts of a job that may fail on full worker disks before it is held.
MAX_DISK_FULL = 3


def _status(msg: p.JobFinished) -> str:
    """``exit code 1`` or ``signal 9``: how a job's program ended."""
    return f"exit code {msg.exit_code}" if msg.exit_signal is None else f"signal {msg.exit_signal}"


def _check_registration(msg: p.Register) -> None:
    """Refuse what no real worker sends, before anything is recorded."""
    if msg.slots < 1 or msg.cpus < 1 or msg.memory_mb < 0 or msg.gpus < 0:
        raise RequestError("slots and cpus must be >= 1, memory and gpus >= 0", "invalid")
    if len(msg.incarnation) > 64:
        raise RequestError("incarnation: at most 64 characters", "invalid")
    for field, entries in (("running", msg.running), ("dropped", msg.dropped)):
        for entry in entries:
            job_id, _, attempt = entry.partition(":")
            try:
                proc = p.parse_job_id(job_id)[1]
            except ValueError:
                proc = None
            if proc is None or not attempt.isdigit():
                raise RequestError(f"{field}: {entry[:40]!r} is not JOB_ID:ATTEMPT", "invalid")


def on_register(state: SchedulerState, conn: Link, msg: p.Register) -> None:
    if state.workers.of_link(conn) is not None:
        raise RequestError("this worker is already registered")
    if conn.auth == BY_POOL_SECRET and not state.config.allow_pool_secret:
        log.warning("worker %s from %s: the pool secret is not accepted", conn.name, conn.peer)
        raise RequestError(POOL_SECRET_REFUSED, "auth")
    _check_registration(msg)
    now = state.clock()
    worker_id = state.store.accounts.worker_id(conn.name, now)
    if worker_id in state.workers:
        raise RequestError(f"a worker named {conn.name!r} is already connected", "conflict")
    before = state.store.accounts.swap_incarnation(worker_id, msg.incarnation)
    returning = bool(msg.incarnation) and msg.incarnation == before
    slots = Slots(
        worker_id=worker_id,
        name=conn.name,
        slots=max(1, msg.slots),
        cpus=msg.cpus,
        memory_mb=msg.memory_mb,
        gpus=msg.gpus,
        disk_free_mb=msg.metrics.disk_free_mb,
    )
    slots.attributes = slot_attributes(slots, msg.metrics)
    worker = WorkerState(
        slots=slots, link=conn, metrics=msg.metrics, last_heartbeat=now, connected_since=now
    )
    _disk_state(state, slots, msg.metrics.disk_full)
    state.workers.add(worker)
    # Several heartbeats fit in the timeout, so one late heartbeat loses nothing.
    interval = min(state.config.heartbeat_interval, state.config.worker_timeout / 3)
    # The reply goes first: a worker reads nothing else before it (stale attempts
    # are stopped with messages that follow).
    reply = p.Registered(worker_id=worker_id, heartbeat_interval=interval, spool=state.spool.share)
    conn.send(reply.with_id(msg.id))
    _adopt(state, worker, msg.running, set(msg.dropped), returning)
    log.info(
        "worker %s (id %d) registered from %s: %d slots, %d cpus, %d MB",
        conn.name, worker_id, conn.peer, msg.slots, msg.cpus, msg.memory_mb,
    )  # fmt: skip
    state.wake()
    return None


def _adopt(
    state: SchedulerState,
    worker: WorkerState,
    running: list[str],
    dropped: set[str],
    returning: bool,
) -> None:
    """Take back the attempts a returning worker still runs; stop the stale ones;
    requeue the others: as never started, those it ``dropped`` unstarted, and all of
    them when it is ``returning`` (the process that registered last under its name,
    which lists every attempt it was given: one it does not list never reached it,
    the connection, or the scheduler, having gone between its commit and its send)."""
    name = worker.name
    for entry in running:
        job_id, _, attempt_text = entry.partition(":")
        job = state.jobs.get(job_id)
        attempt = int(attempt_text) if attempt_text.isdigit() else -1
        awaited = state.workers.awaited(job_id)
        if (
            job is not None
            and job.state is JobState.RUNNING
            and awaited is not None
            and awaited[0] == name
            and job.attempt == attempt
        ):
            state.workers.returned(job_id)
            # Queued there when the connection broke: it has started since.
            state.jobs.began(job, state.clock())
            worker.slots.take(job)
            grant = state.spool.grant_job(
                job.cluster,
                job.proc,
                worker.link.local_host,
                state.config.job_grant_ttl,
                state.dags.inputs_of(job.cluster),
            )
            state.store.remember(partial(revoke_grant, state, grant))
            state.workers.attach(worker, job, grant)
            # The grant of its run_job died with the connection (or the scheduler).
            worker.send(p.NewGrant(job_id=job_id, attempt=attempt, ftp=grant))
            log.info("worker %s still runs job %s: adopted", name, job_id)
        else:
            worker.send(p.KillJob(job_id=job_id, attempt=attempt, reason="stale attempt"))
    # What it no longer runs (it was restarted) need not wait for the deadline.
    for job_id in state.workers.orphans_of(name):
        state.workers.returned(job_id)
        job = state.jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING:
            continue
        if f"{job.id}:{job.attempt}" in dropped:
            requeue_lost(state, job, f"queued on worker {name}, which dropped it unstarted",
                         started=False)  # fmt: skip
        elif returning:
            requeue_lost(state, job, f"sent to worker {name}, which never received it",
                         started=False)  # fmt: skip
        else:
            requeue_lost(state, job, f"worker {name} came back without it")


def on_heartbeat(state: SchedulerState, conn: Link, msg: p.Heartbeat) -> None:
    worker = state.workers.registered(conn)
    worker.slots.changing()
    heard = worker.metrics, worker.last_heartbeat

    def restore() -> None:
        worker.metrics, worker.last_heartbeat = heard

    state.store.remember(restore)
    worker.metrics, worker.last_heartbeat = msg.metrics, state.clock()
    # A job's grant lasts while its worker is heard from, however long the job runs.
    users = [grant.user for grant in worker.grants.values()]
    state.spool.authorizer.extend(users, worker.last_heartbeat + state.config.job_grant_ttl)
    _memory_usage(worker, msg.metrics.job_memory_mb)
    worker.slots.disk_free_mb = msg.metrics.disk_free_mb
    worker.slots.attributes = slot_attributes(worker.slots, msg.metrics)
    _disk_state(state, worker.slots, msg.metrics.disk_full)


def _memory_usage(worker: WorkerState, peaks: dict[str, int]) -> None:
    """Each running job's ``MemoryUsage``: its attempt's peak, as the worker measured it."""
    for job in worker.running.values():
        peak = peaks.get(f"{job.id}:{job.attempt}")
        if peak is not None:
            job.memory_usage = peak


def _disk_state(state: SchedulerState, slots: Slots, full: bool) -> None:
    """A worker whose disk is full gets no job until it reports room again."""
    if full == slots.disk_full:
        return
    slots.disk_full = full
    if full:
        log.warning("worker %s: its disk is full; it gets no job until it has room",
                    slots.name)  # fmt: skip
    else:
        log.info("worker %s: its disk has room again", slots.name)
        state.wake()


def _has_result(state: SchedulerState, job: Job) -> bool:
    """Whether a job has a result: one of a sweep (queue variables, or a cluster of
    several jobs) or one naming a ``result_file``; an ordinary job has none."""
    spec = job.spec
    if spec.result_file or spec.params or state.jobs.unfinished.get(job.cluster, 0) > 1:
        return True
    lone = state.dags.lone_job(job.cluster)  # a DAG node's cluster: known without a read
    if lone is not None:
        return not lone
    return state.store.cluster_has_others(job.cluster, job.proc)


def on_job_finished(state: SchedulerState, conn: Link, msg: p.JobFinished) -> p.Message | None:
    worker = state.workers.registered(conn)
    job = _current(worker, msg)
    if job is None:
        if msg.spooled:
            try:
                cluster, proc = p.parse_job_id(msg.job_id)
            except ValueError as exc:
                raise RequestError(str(exc)) from None
            if proc is not None:
                state.effects.defer(
                    "drop attempt", partial(state.spool.drop_attempt, cluster, proc, msg.attempt)
                )
        return p.Ok()
    if msg.spooled and msg.disk_full:  # results cut short: never taken
        state.effects.defer(
            "drop attempt", partial(state.spool.drop_attempt, job.cluster, job.proc, msg.attempt)
        )
        return _finish(state, worker, msg, {}, None)
    if msg.spooled:
        try:
            state.spool.take_attempt(job.cluster, job.proc, msg.attempt)
        except OSError as exc:
            why = f"its results could not be put in place in the spool: {exc}"
            msg = dataclasses.replace(msg, failure=msg.failure or why)
    # Large results, linked into the spool or uploaded over FTP, are in the job's folder.
    job_dir = None if msg.disk_full else state.spool.results_dir(job.cluster, job.proc)
    if job_dir is None:
        return _finish(state, worker, msg, {}, None)
    # Large results: their hashes first, in a thread; the reply follows.
    task = asyncio.get_running_loop().create_task(_hash_and_finish(state, worker, msg, job_dir))
    state.hashing.add(task)
    task.add_done_callback(state.hashing.discard)
    return None


def _current(worker: WorkerState, msg: p.JobFinished) -> Job | None:
    """The job whose attempt ``msg`` reports, if it is still the running one."""
    job = worker.running.get(msg.job_id)
    if job is None or job.attempt != msg.attempt or job.state is not JobState.RUNNING:
        log.info(
            "worker %s: result of stale attempt %s:%d discarded",
            worker.name,
            msg.job_id,
            msg.attempt,
        )
        return None
    return job


async def _hash_and_finish(
    state: SchedulerState, worker: WorkerState, msg: p.JobFinished, job_dir: Path
) -> None:
    try:
        hashes = await asyncio.to_thread(hash_results, job_dir)
    except Exception:
        log.exception("internal error hashing the result of %s", msg.job_id)
        worker.link.send(p.Error(id=msg.id, message="internal error taking the result",
                                 code="internal"))  # fmt: skip
        return
    if state.workers.of_link(worker.link) is not worker:
        return  # gone meanwhile: it sends the result again when it is back
    reply = run_unit(state, "job_finished", lambda: _finish(state, worker, msg, hashes, job_dir))
    assert isinstance(reply, p.Message)
    worker.link.send(reply.with_id(msg.id))


def _finish(
    state: SchedulerState,
    worker: WorkerState,
    msg: p.JobFinished,
    hashes: dict[str, FileHash],
    job_dir: Path | None,
) -> p.Message:
    """Record the end of an attempt whose large results (if any) are in ``job_dir``
    and have these hashes."""
    job = _current(worker, msg)
    if job is None:
        return p.Ok()
    failure = msg.failure
    try:
        files = {name: p.unpack_bytes(text) for name, text in msg.files.items()}
        if not all(safe_result_name(name) for name in files) or not all(
            safe_name(name) for name in msg.output_files
        ):
            raise p.ProtocolError("invalid result file name")
    except p.ProtocolError as exc:
        files, failure = {}, failure or f"the worker sent invalid results: {exc}"
        msg = dataclasses.replace(msg, output_files=[])
    outcome: dict[str, object] = dict(
        end_time=state.clock(),
        wall_time=msg.wall_time,
        cpu_time=msg.cpu_time,
        exit_code=msg.exit_code,
        exit_signal=msg.exit_signal,
        output_files=msg.output_files,
    )
    if msg.memory_usage_mb is not None:
        job.memory_usage = msg.memory_usage_mb
    again = _run_again(state, job, msg, failure) if failure else ""
    with state.store.transaction():
        state.store.results.save_files(job.cluster, job.proc, files)
        if hashes:  # an earlier attempt's were deleted when this one started
            state.store.results.save_hashes(job.cluster, job.proc, hashes)
        if msg.exit_signal is None and not failure:
            state.run_times.record(job.cluster, msg.wall_time)
        # Each move refills the slot in the same transaction: the reply and the
        # next RunJob leave together, after the commit.
        if again:
            evict(state, worker, job, again)
        elif failure:
            ended = msg.exit_code is not None or msg.exit_signal is not None
            hold_failed(state, worker, job, failure, outcome, _status(msg) if ended else None)
        elif verdict := _exit_policy(state, job, msg):
            status = _status(msg)
            if verdict.action == "hold":
                hold_failed(state, worker, job, verdict.reason, outcome, status, verdict.code)
            elif verdict.action == "remove":
                remove_ended(state, worker, job, verdict.reason, outcome, status)
            else:
                requeue_ended(state, worker, job, verdict.reason, outcome, status)
        elif retry_reason := _retry(state, job, msg):
            retry(state, worker, job, retry_reason, outcome)
        else:
            result = None
            if _has_result(state, job):
                result = extract_result(job.spec, files, job_dir, msg.exit_code, msg.exit_signal)
                state.store.results.save_result(job.cluster, job.proc, result)
            # Held by the job, so the update pushed on completion carries the result.
            finish(state, worker, job, _status(msg), result, outcome)
    return p.Ok()


def _exit_policy(state: SchedulerState, job: Job, msg: p.JobFinished) -> Verdict | None:
    """What the job's policies decide as its program ended (see
    :mod:`scheduler.policies`); None: nothing, it ends as it would without them."""
    if msg.exit_code is None and msg.exit_signal is None:
        return None
    return evaluate(
        state, job, exit_code=msg.exit_code, exit_signal=msg.exit_signal, wall_time=msg.wall_time
    )


def _run_again(state: SchedulerState, job: Job, msg: p.JobFinished, failure: str) -> str:
    """Why an attempt that failed is not held but run again (elsewhere), or "":
    a full disk, the worker's (up to MAX_DISK_FULL times) or the scheduler's
    (its results could not be kept), is no fault of the job."""
    if msg.disk_full:
        events = state.store.events(job.cluster, job.proc)
        before = sum(e.event == "evicted" and e.detail.startswith("disk full") for e in events)
        return failure if before + 1 < MAX_DISK_FULL else ""
    if state.disk.check(force=True) or state.disk.full_since(job.start_time or job.submit_time):
        return f"{failure}; run again: the scheduler's disk was full"
    return ""


def _retry(state: SchedulerState, job: Job, msg: p.JobFinished) -> str:
    """Why a failed run is run again (``max_retries``), or "" when it is not (nor
    when the job's ``OnExitRemove`` has decided its retries)."""
    if msg.exit_code == 0 or job.spec.max_retries <= 0 or retries_folded(job.spec.attributes):
        return ""
    done = sum(e.event == "retrying" for e in state.store.events(job.cluster, job.proc))
    if done >= job.spec.max_retries:
        return ""
    status = (
        f"exit code {msg.exit_code}" if msg.exit_signal is None else f"signal {msg.exit_signal}"
    )
    return f"{status}: retry {done + 1} of {job.spec.max_retries}"
