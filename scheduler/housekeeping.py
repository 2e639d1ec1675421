"""What the scheduler does each second, whatever its peers send: silent workers are
declared lost, orphaned jobs past their deadline requeued, and grants, probes,
reservations and old results expire; every ``policy_interval`` seconds, the jobs'
periodic policies are evaluated."""

from __future__ import annotations

import logging

from scheduler.clusters import expire_reservations
from scheduler.dag_retention import expire_dags
from scheduler.policies import policy_round
from scheduler.protocol import JobState
from scheduler.state import SchedulerState
from scheduler.transitions import requeue_lost
from scheduler.units import run_unit

log = logging.getLogger("scheduler.server")


def housekeeping(state: SchedulerState, now: float) -> None:
    """One round at ``now``, each task a unit of work."""
    run_unit(state, "silent workers", lambda: close_silent(state, now))
    run_unit(state, "orphan requeue", lambda: requeue_orphans(state, now))
    state.spool.authorizer.expire(now)
    state.spool.end_expired_probes()
    run_unit(state, "reservation expiry", lambda: expire_reservations(state, now))
    run_unit(state, "retention", lambda: state.retention.expire(now, state.jobs.active))
    run_unit(state, "DAG retention", lambda: expire_dags(state, now))
    policy_round(state, now)


def close_silent(state: SchedulerState, now: float) -> None:
    """Close the connection of each worker silent past the timeout, once this unit
    committed: its loss (see :func:`scheduler.departures.connection_closed`) follows
    when its reader ends."""
    for worker in state.workers:
        silent = now - worker.last_heartbeat
        if silent > state.config.worker_timeout:
            log.warning("worker %s sent no heartbeat for %.0f s: declared lost",
                        worker.name, silent)  # fmt: skip
            state.effects.defer("close a silent worker", worker.link.close)


def requeue_orphans(state: SchedulerState, now: float) -> None:
    """Requeue the running jobs whose worker did not come back by their deadline."""
    expired = state.workers.orphans_due(now)
    if not expired:
        return
    with state.store.transaction():
        for job_id, worker_name in expired:
            job = state.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING:
                requeue_lost(state, job, f"worker {worker_name} was lost")
    state.wake()
