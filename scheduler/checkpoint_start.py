"""What a starting job is sent of its checkpoints: its latest one, if its file is
still in the spool (one whose file is gone starts from the beginning, and its
event log says so); a restart also records the run time lost to evictions."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.checkpoint_table import wall_lost
from scheduler.job_records import Job
from scheduler.state import SchedulerState


def wants_checkpoints(job: Job) -> bool:
    """Whether ``job`` checkpoints itself (it set ``checkpoint_exit_code``)."""
    return "SuccessCheckpointExitCode" in job.spec.attributes


def for_run(state: SchedulerState, job: Job) -> p.CheckpointFile | None:
    """The checkpoint to send with ``job``'s attempt starting now, its folder ready
    for the next. A restart records the run time the job lost to evictions; one
    whose checkpoint file is gone says so in its events and starts afresh."""
    if job.attempt > 1:
        lost = wall_lost(state.store.events(job.cluster, job.proc))
        if lost != job.wall_lost:
            state.jobs.keep(job)
            job.wall_lost = lost
            state.store.checkpoints.save(job)
    if not wants_checkpoints(job):
        return None
    folder = state.spool.checkpoint_dir(job.cluster, job.proc)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    latest = job.checkpoint
    if latest is None:
        return None
    if not (folder / latest.name).is_file():
        state.jobs.keep(job)
        job.checkpoint = None
        state.store.checkpoints.save(job)
        gone = f"checkpoint {latest.name} is gone: it starts from the beginning"
        state.store.save_job(job, "checkpoint lost", gone)
        return None
    state.jobs.keep(job)
    job.resumes += 1
    state.store.checkpoints.save(job)
    state.store.save_job(job, "resumed", f"from checkpoint {job.checkpoints} ({latest.size} bytes)")
    return latest
