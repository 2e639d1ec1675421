"""The jobs a request names: ids parsed, and only those the caller may see or touch
(see :mod:`scheduler.authz`)."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.authz import may_control, not_found, visible_info
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.job_records import Job, JobResult
from scheduler.protocol import JobState
from scheduler.state import SchedulerState

#: The states of the jobs that a user can still act on.
ACTIONABLE = frozenset({JobState.IDLE, JobState.RUNNING, JobState.HELD})


def parse_ids(ids: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids as (whole clusters, (cluster, proc) pairs); a malformed one is refused."""
    clusters: list[int] = []
    pairs: list[tuple[int, int]] = []
    for text in ids:
        try:
            cluster, proc = p.parse_job_id(text)
        except ValueError as exc:
            raise RequestError(str(exc), "invalid") from None
        if proc is None:
            clusters.append(cluster)
        else:
            pairs.append((cluster, proc))
    return clusters, pairs


def visible(caller: Caller, job: Job, result: JobResult | None = None) -> p.JobInfo:
    """The job as ``caller`` may see it."""
    return visible_info(caller, job, job.info(result))


def controlled(state: SchedulerState, caller: Caller, ids: list[str], all_jobs: bool) -> list[Job]:
    """The caller's jobs named by ``ids`` (or all its active ones), in queue or
    finished; naming a job that is not the caller's, or does not exist, is an error."""
    if all_jobs:
        return [j for j in state.jobs.active.values() if may_control(caller, j)]
    clusters, pairs = parse_ids(ids)
    if not clusters and not pairs:
        raise RequestError("name at least one job or cluster (or use -all)", "invalid")
    found = state.jobs.select(None, clusters, pairs, {s.value for s in ACTIONABLE})
    found += state.store.jobs(
        clusters=clusters, job_ids=pairs, states=[s.value for s in p.FINAL_STATES]
    )
    found = [j for j in found if may_control(caller, j)]
    have = {(j.cluster, j.proc) for j in found} | {(j.cluster, None) for j in found}
    missing = [t for t in ids if p.parse_job_id(t) not in have]
    if missing:
        raise RequestError(not_found(caller, " ".join(missing)), "not_found")
    return sorted(found, key=lambda j: (j.cluster, j.proc))


def owned_job(state: SchedulerState, caller: Caller, job_id: str) -> Job:
    """Job ``CLUSTER.PROC``, queued or finished, if ``caller`` may control it; else a
    RequestError that reveals nothing of other users' jobs."""
    try:
        cluster, proc = p.parse_job_id(job_id)
    except ValueError as exc:
        raise RequestError(str(exc), "invalid") from None
    job = None if proc is None else state.jobs.get(job_id)
    if job is None and proc is not None:
        found = state.store.jobs(job_ids=[(cluster, proc)])
        job = found[0] if found else None
    if job is None or not may_control(caller, job):
        raise RequestError(f"no job of yours is {job_id} (give CLUSTER.PROC)", "not_found")
    return job
