"""Who hears of job changes: subscribers of a cluster (``dq -watch``, ``dwait``), those
awaiting a cluster's end, and the mailer."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.authz import may_control
from scheduler.callers import Replier
from scheduler.cluster_done import cluster_may_be_done
from scheduler.dags import job_changed
from scheduler.job_records import Job
from scheduler.state import SchedulerState


def notify(state: SchedulerState, job: Job) -> None:
    """``job`` changed (its row and event are written): tell those watching it."""
    state.mailer.changed(job)
    state.policies.note(job)
    subs = state.subscribers.get(job.cluster)
    if subs:
        update: p.JobUpdate | None = None
        for conn, states in subs.items():
            if not may_control(conn, job) or (states and job.state.value not in states):
                continue  # updates go to the job's owner (and admins) only
            update = update or p.JobUpdate(job=job.info())
            conn.send(update, urgent=False)
    if job.cluster in state.awaiting and job.state not in p.UNFINISHED_STATES:
        cluster_may_be_done(state, job.cluster)
    if state.dags.by_cluster or state.dags.external:
        job_changed(state, job)


def forget(state: SchedulerState, caller: Replier) -> None:
    """``caller`` is gone: it watches and awaits nothing any more."""
    state.subscribers.keep_all(list(state.subscribers))
    state.awaiting.keep_all(list(state.awaiting))
    for subs in state.subscribers.values():
        subs.pop(caller, None)
    for waiting in state.awaiting.values():
        waiting.discard(caller)
