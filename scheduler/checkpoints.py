"""Self-checkpointing jobs (HTCondor's ``checkpoint_exit_code``), the scheduler's side.

A job that exits with its checkpoint exit code has its checkpoint files uploaded
by its worker, as one tar, into ``<cluster>/checkpoints/<proc>/`` of the spool,
then the worker sends :class:`~scheduler.protocol.Checkpointed`. The scheduler
checks the file's size and SHA-256 (in a thread), commits it as the job's latest
checkpoint (event ``checkpointed``) and only then answers: the worker restarts
the job after that answer. The earlier checkpoint is removed once the new one is
committed. Every later start of the job, on any worker, is sent the latest
checkpoint (see :mod:`scheduler.checkpoint_start`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from functools import partial

from scheduler import protocol as p
from scheduler.callers import Link
from scheduler.connection import RequestError
from scheduler.job_records import Job
from scheduler.protocol import JobState
from scheduler.state import SchedulerState
from scheduler.transitions import evict
from scheduler.units import run_unit
from scheduler.workers import WorkerState

log = logging.getLogger("scheduler.server")


def on_checkpointed(state: SchedulerState, conn: Link, msg: p.Checkpointed) -> p.Message | None:
    """Verify the uploaded checkpoint in a thread, then commit it; the answer follows."""
    worker = state.workers.registered(conn)
    job = _current(worker, msg)
    name = msg.file.name
    if not name or "/" in name or name.startswith("."):
        raise RequestError(f"invalid checkpoint name {name!r}")
    path = state.spool.checkpoint_dir(job.cluster, job.proc) / name
    task = asyncio.get_running_loop().create_task(_verify_and_commit(state, worker, msg, path))
    state.hashing.add(task)
    task.add_done_callback(state.hashing.discard)
    return None


def _current(worker: WorkerState, msg: p.Checkpointed) -> Job:
    """The job whose running attempt ``msg`` speaks of; refused ("stale") otherwise:
    the worker stops that attempt."""
    job = worker.running.get(msg.job_id)
    if job is None or job.attempt != msg.attempt or job.state is not JobState.RUNNING:
        raise RequestError(f"attempt {msg.job_id}:{msg.attempt} is not running here", "stale")
    return job


def _digest(path: str) -> tuple[str, int]:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size


async def _verify_and_commit(
    state: SchedulerState, worker: WorkerState, msg: p.Checkpointed, path: os.PathLike[str]
) -> None:
    try:
        sha, size = await asyncio.to_thread(_digest, os.fspath(path))
    except OSError as exc:
        sha, size = f"unreadable: {exc.strerror}", -1
    if state.workers.of_link(worker.link) is not worker:
        return  # gone meanwhile: the attempt is taken back or run elsewhere
    reply = run_unit(state, "checkpointed", lambda: commit(state, worker, msg, sha, size))
    assert isinstance(reply, p.Message)
    worker.link.send(reply.with_id(msg.id))


def commit(
    state: SchedulerState, worker: WorkerState, msg: p.Checkpointed, sha: str, size: int
) -> p.Message:
    """Record the checkpoint whose file has this hash and size as the job's latest,
    if it is whole; the older one's file goes once this unit has committed."""
    job = _current(worker, msg)
    if (sha, size) != (msg.file.sha256, msg.file.size):
        state.effects.defer("drop damaged checkpoint", partial(_remove, state, job, msg.file))
        return p.Error(
            message=f"checkpoint {msg.file.name} of {msg.job_id} arrived damaged"
            f" ({size} bytes, sha256 {sha}): the older one is kept",
            code="checkpoint",
        )
    state.jobs.keep(job)
    job.checkpoint = msg.file
    job.checkpoints += 1
    job.checkpoint_time = state.clock()
    state.store.checkpoints.save(job)
    detail = (
        f"checkpoint {job.checkpoints} stored, {size} bytes, its attempt ran {msg.wall_time:.1f} s"
    )
    if msg.vacating:
        detail += ", asked for by its worker's drain"
    state.store.save_job(job, "checkpointed", detail)
    state.effects.defer("drop older checkpoints", partial(_remove_others, state, job, msg.file))
    if msg.vacating:  # it runs again elsewhere, from this checkpoint
        evict(state, worker, job, f"worker {worker.name} drained: vacated after its checkpoint")
        state.wake()
    return p.Ok()


def _remove(state: SchedulerState, job: Job, damaged: p.CheckpointFile) -> None:
    """Remove a checkpoint file that was never committed."""
    folder = state.spool.checkpoint_dir(job.cluster, job.proc)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / damaged.name)


def _remove_others(state: SchedulerState, job: Job, keep: p.CheckpointFile) -> None:
    """Remove the checkpoint files of ``job`` other than ``keep`` (earlier ones, and
    uploads never committed)."""
    folder = state.spool.checkpoint_dir(job.cluster, job.proc)
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name != keep.name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
