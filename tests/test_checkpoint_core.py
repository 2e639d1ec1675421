"""Checkpoints in the scheduler's core, with a fake clock and no sockets: a checkpoint
is committed only whole, only for the running attempt; a vacated job is requeued at
once, and every later start is sent the latest checkpoint."""

from __future__ import annotations

import hashlib

from core_fakes import FakeClock, register, submit

from scheduler import protocol as p
from scheduler.checkpoints import commit
from scheduler.job_records import Job
from scheduler.protocol import JobState
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.units import run_unit
from scheduler.worker_control import on_draining

CHECKPOINTING = {"SuccessCheckpointExitCode": "85"}


def upload(state: SchedulerState, job: Job, name: str, data: bytes) -> p.Checkpointed:
    """What a worker does: the file into the job's checkpoint folder, then the message."""
    folder = state.spool.checkpoint_dir(job.cluster, job.proc)
    (folder / name).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return p.Checkpointed(id=7, job_id=job.id, attempt=job.attempt,
                          file=p.CheckpointFile(name=name, sha256=sha, size=len(data)))  # fmt: skip


def committed(state: SchedulerState, msg: p.Checkpointed, data: bytes) -> p.Message:
    worker = state.workers.named("w1")
    assert worker is not None
    sha = hashlib.sha256(data).hexdigest()
    reply = run_unit(state, "checkpointed", lambda: commit(state, worker, msg, sha, len(data)))
    state.effects.run()
    assert isinstance(reply, p.Message)
    return reply


def test_a_checkpoint_is_committed_whole_and_replaces_the_older_one(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1", slots=1)
    (job,) = submit(state, "ann", 1, attributes=CHECKPOINTING)
    schedule_once(state)
    (run,) = link.of(p.RunJob)
    assert run.checkpoint is None
    folder = state.spool.checkpoint_dir(job.cluster, job.proc)
    assert folder.is_dir()  # ready for the worker's upload
    first = upload(state, job, "1-1.tar", b"one")
    assert isinstance(committed(state, first, b"one"), p.Ok)
    clock.advance(5)
    second = upload(state, job, "1-2.tar", b"two")
    # Damaged on the way: refused, the older one kept, the damaged file removed.
    reply = committed(state, second, b"tw")
    assert isinstance(reply, p.Error) and reply.code == "checkpoint"
    assert job.checkpoint == first.file and job.checkpoints == 1
    assert sorted(f.name for f in folder.iterdir()) == ["1-1.tar"]
    second = upload(state, job, "1-3.tar", b"two")
    assert isinstance(committed(state, second, b"two"), p.Ok)
    assert (job.checkpoint, job.checkpoints, job.checkpoint_time) == (second.file, 2, clock())
    assert sorted(f.name for f in folder.iterdir()) == ["1-3.tar"]
    events = [e.event for e in state.store.events(job.cluster, job.proc)]
    assert events.count("checkpointed") == 2


def test_a_stale_attempt_cannot_commit(state: SchedulerState) -> None:
    register(state, "w1", slots=1)
    (job,) = submit(state, "ann", 1, attributes=CHECKPOINTING)
    schedule_once(state)
    stale = upload(state, job, "0-1.tar", b"old")
    stale = p.Checkpointed(id=7, job_id=job.id, attempt=job.attempt + 1, file=stale.file)
    reply = committed(state, stale, b"old")
    assert isinstance(reply, p.Error) and reply.code == "stale"
    assert job.checkpoints == 0


def test_a_vacated_job_is_requeued_and_its_next_start_resumes(
    state: SchedulerState, clock: FakeClock
) -> None:
    w1 = register(state, "w1", slots=1)
    (job,) = submit(state, "ann", 1, attributes=CHECKPOINTING)
    schedule_once(state)
    clock.advance(10)
    on_draining(state, w1, p.Draining())  # w1 drains: it takes no job
    vacating = upload(state, job, "1-1.tar", b"state")
    vacating = p.Checkpointed(id=7, job_id=job.id, attempt=1, file=vacating.file, vacating=True)
    assert isinstance(committed(state, vacating, b"state"), p.Ok)
    assert job.state is JobState.IDLE
    link = register(state, "w2", slots=1)
    schedule_once(state)
    (run,) = link.of(p.RunJob)
    assert (run.attempt, run.checkpoint) == (2, vacating.file)
    assert (job.resumes, job.wall_lost) == (1, 0.0)  # evicted right after its checkpoint
    events = [e.event for e in state.store.events(job.cluster, job.proc)]
    assert events[-4:] == ["checkpointed", "evicted", "executing", "resumed"]
