"""What the scheduler tells users about the queue: fair-share usage, why a job is
not running, and the queue's counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler import protocol as p
from scheduler.authz import may_act_for, may_control
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.dispatch import Slots
from scheduler.fairshare import UserShare
from scheduler.job_records import Job
from scheduler.matching.attributes import capacities
from scheduler.matching.capacity import Capacity, never_reasons
from scheduler.protocol import JobState
from scheduler.state import SchedulerState

#: Finished runs whose mean run time estimates the wait.
_RECENT_RUNS = 200


@dataclass
class _Pool:
    """What the analyses of one request share, worked out once for all its jobs."""

    now: float
    slots: list[Slots]
    capacities: list[Capacity]
    #: Users with idle jobs, in the order fair share serves them.
    ranked: list[UserShare]
    mean_run_time: float | None
    #: Seconds each running job has run so far, by its worker's name.
    running: dict[str, list[float]]
    #: How many of its owner's idle jobs come before a job, where the caller keeps
    #: an index of them (None: counted from the queue).
    ahead_own: Callable[[Job], int] | None = None


def on_query_users(state: SchedulerState, conn: Caller, msg: p.QueryUsers) -> p.Message:
    queue, now = state.jobs.queue, state.clock()
    rank = {share.name: i for i, share in enumerate(queue.ranked(now), start=1)}
    usage = {name: queue.effective_usage(name, now) for name in queue.users}
    total = sum(usage.values())
    users = [
        p.UserUsage(
            user=share.name,
            effective_usage=round(usage[share.name], 3),
            share=round(usage[share.name] / total, 4) if total > 0 else 0.0,
            idle=share.idle,
            running=share.running,
            running_cpus=share.running_cpus,
            rank=rank.get(share.name, 0),
        )
        for share in sorted(queue.users.values(), key=lambda s: (usage[s.name], s.name))
        if share.idle or share.running or usage[share.name] >= 0.001
    ]
    return p.UserList(users=users, halflife=queue.halflife)


def on_query_counts(state: SchedulerState, conn: Caller, msg: p.QueryCounts) -> p.Message:
    counts = state.summary.by_state(None if msg.all_users else conn.name)
    return p.JobCounts(counts={s.value: counts.get(s.value, 0) for s in JobState})


def on_analyze_jobs(state: SchedulerState, conn: Caller, msg: p.AnalyzeJobs) -> p.Message:
    jobs: list[Job] = []
    whole: list[int] = []
    for text in msg.ids:
        try:
            cluster, proc = p.parse_job_id(text)
        except ValueError as exc:
            raise RequestError(str(exc), "invalid") from None
        if proc is None and msg.by_cluster:
            line = state.summary.cluster(cluster)
            if line is None or not may_act_for(conn, line.owner):
                raise RequestError(f"no job of yours in the queue matches {text}", "not_found")
            whole.append(cluster)
            continue
        if proc is None:
            found = [j for k, j in state.jobs.active.items() if k[0] == cluster]
        else:
            job = state.jobs.active.get((cluster, proc))
            found = [job] if job is not None else []
        found = [j for j in found if may_control(conn, j)]
        if not found:
            raise RequestError(f"no job of yours in the queue matches {text}", "not_found")
        jobs += sorted(found, key=lambda j: j.proc)[:100]
    now, slots = state.clock(), state.workers.slots()
    clusters = [_summarise(state, cluster, slots) for cluster in whole]
    if not jobs:
        return p.JobAnalyses(jobs=[], clusters=clusters)
    running: dict[str, list[float]] = {}
    for job in state.jobs.active.values():
        if job.state is JobState.RUNNING and job.worker and job.start_time is not None:
            running.setdefault(job.worker, []).append(max(0.0, now - job.start_time))
    pool = _Pool(now, slots, capacities(slots), state.jobs.queue.ranked(now),
                 _mean_run_time(state), running)  # fmt: skip
    return p.JobAnalyses(jobs=[_analyze(state, job, pool) for job in jobs[:100]], clusters=clusters)


def _summarise(state: SchedulerState, cluster: int, slots: list[Slots]) -> p.ClusterAnalysis:
    """A cluster's counts, its idle jobs counted per reason and its held jobs per hold
    reason, from the queue's summary: the reason worked out once per job shape (the
    procs that differ in nothing but their number share one spec), at the cost of its
    shapes, not of its jobs."""
    summary = state.summary
    line = summary.cluster(cluster)
    if line is None:
        return p.ClusterAnalysis(cluster=cluster, owner="", idle=0, running=0, held=0)
    reasons: Counter[str] = Counter()
    found = capacities(slots)
    for job, n in summary.idle_shapes(cluster):
        reasons[_idle_reason(job, slots, found)] += n
    return p.ClusterAnalysis(
        cluster=cluster,
        owner=line.owner,
        idle=line.idle,
        running=line.running,
        held=line.held,
        idle_reasons=dict(reasons.most_common()),
        hold_reasons=dict(Counter(summary.hold_reasons(cluster)).most_common()),
    )


def _idle_reason(job: Job, slots: list[Slots], found: list[Capacity]) -> str:
    """Why an idle job waits, in the words of its analysis."""
    matching, reasons = never_reasons(job.spec, found)
    if reasons:
        return f"cannot run on any connected worker: {'; '.join(reasons)}"
    names = set(matching)
    if any(s.name in names and s.fits(job) for s in slots):
        return "waiting for its turn: a worker that could run it has room now"
    return (
        f"waiting for room: {len(matching)} of {len(slots)} connected worker(s)"
        " could run it, none has room now"
    )


def analyze(
    state: SchedulerState,
    jobs: list[Job],
    running_jobs: list[Job],
    ahead_own: Callable[[Job], int],
) -> list[p.JobAnalysis]:
    """``dq -analyze`` of ``jobs`` (the caller checked who may see them), given the
    running jobs and ``ahead_own`` counting each one's own jobs ahead of it: the
    dashboard's page of the queue, at the cost of its jobs, not of the queue's."""
    now, slots = state.clock(), state.workers.slots()
    running: dict[str, list[float]] = {}
    for job in running_jobs:
        if job.worker and job.start_time is not None:
            running.setdefault(job.worker, []).append(max(0.0, now - job.start_time))
    pool = _Pool(now, slots, capacities(slots), state.jobs.queue.ranked(now),
                 _mean_run_time(state), running, ahead_own)  # fmt: skip
    return [_analyze(state, job, pool) for job in jobs]


def _analyze(state: SchedulerState, job: Job, pool: _Pool) -> p.JobAnalysis:
    now, slots = pool.now, pool.slots
    usage = state.jobs.queue.effective_usage(job.owner, now)
    common: dict[str, Any] = dict(
        id=job.id, state=job.state.value, owner=job.owner, owner_usage=usage
    )
    if job.state is JobState.RUNNING:
        return p.JobAnalysis(**common, summary=f"Job {job.id} is running on worker {job.worker}.")
    if job.state is JobState.HELD:
        return p.JobAnalysis(
            **common,
            summary=f"Job {job.id} is held: {job.hold_reason}. 'drelease {job.id}'"
            " puts it back in the queue.",
        )
    matching, reasons = never_reasons(job.spec, pool.capacities)
    names = set(matching)
    free = sum(1 for s in slots if s.name in names and s.fits(job))
    queue = state.jobs.queue
    ahead_others = 0
    for share in pool.ranked:
        if share.name == job.owner:
            break
        ahead_others += share.idle
    mine = (-job.spec.priority, job.cluster, job.proc)
    ahead_own = (
        pool.ahead_own(job)
        if pool.ahead_own
        else sum(
            1 for j in queue.jobs_of(job.owner) if (-j.spec.priority, j.cluster, j.proc) < mine
        )
    )
    position = ahead_others + ahead_own + 1
    numbers: dict[str, Any] = dict(
        reasons=reasons,
        workers_connected=len(slots),
        workers_matching=len(matching),
        workers_free=free,
        ahead_other_users=ahead_others,
        ahead_own=ahead_own,
        position=position,
    )
    if reasons:
        text = (
            f"Job {job.id} cannot run on any connected worker: {'; '.join(reasons)}."
            f" It stays idle until such a worker connects."
        )
        return p.JobAnalysis(**common, **numbers, summary=text)
    mean = pool.mean_run_time
    lanes = sum(max(1, min(s.slots, s.cpus // max(1, job.spec.request_cpus))) for s in slots
                if s.name in names)  # fmt: skip
    elapsed = [t for name in names for t in pool.running.get(name, [])]
    estimate = _estimate(now, mean, position, free, lanes, elapsed)
    words = [
        f"Job {job.id} is idle. {len(matching)} of {len(slots)} connected worker(s)"
        f" could run it; {free} of them ha{'s' if free == 1 else 've'} room for it now.",
        f"Ahead of it: {ahead_others} job(s) of users with less usage"
        f" and {ahead_own} of your own (position {position} in the queue;"
        f" your usage is {usage:.0f} cpu-seconds).",
    ]
    if estimate is not None and mean is not None:
        words.append(
            f"From the mean run time of recent jobs ({mean:.1f} s) and how long the"
            f" running ones have run, it should start in about"
            f" {max(0.0, estimate - now):.0f} s."
        )
    elif mean is not None:
        words.append(
            f"The jobs running now have run longer ({max(elapsed):.0f} s) than the mean"
            f" of recent jobs ({mean:.1f} s), so there is no estimate of when it starts."
        )
    else:
        words.append("No job has finished yet, so there is no estimate of when it starts.")
    return p.JobAnalysis(
        **common,
        **numbers,
        summary=" ".join(words),
        estimated_start=estimate,
        mean_run_time=mean,
    )


def _mean_run_time(state: SchedulerState) -> float | None:
    rows = state.store.query(
        "SELECT AVG(wall_time) AS mean FROM (SELECT wall_time FROM jobs"
        " WHERE state=? AND wall_time IS NOT NULL ORDER BY end_time DESC LIMIT ?)",
        (JobState.COMPLETED.value, _RECENT_RUNS),
    )
    mean = rows[0]["mean"] if rows else None
    return None if mean is None else float(mean)


def _estimate(
    now: float, mean: float | None, position: int, free: int, lanes: int, elapsed: list[float]
) -> float | None:
    """When a job at ``position`` should start: each running job on a worker that could
    run it ends after the mean run time of recent jobs less what it has run already, and
    each job ahead takes the mean, spread over ``lanes``. None without a mean, or when a
    running job has already run longer than the mean (the mean says nothing then)."""
    if mean is None or any(t > mean for t in elapsed):
        return None
    if free:  # a slot is free now: only the jobs ahead in the queue come first
        return now + mean * (position - 1) / lanes
    remaining = sum(mean - t for t in elapsed)
    return now + (remaining + mean * (position - 1)) / lanes
