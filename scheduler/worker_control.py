"""Draining workers: a worker stopped with SIGTERM, or drained from the scheduler
node with ``dfarm worker --drain NAME``, takes no new jobs, lets its running jobs
finish and gives back those still running after its grace period."""

from __future__ import annotations

import logging

from scheduler import protocol as p
from scheduler.callers import Link
from scheduler.connection import RequestError
from scheduler.handshake import BY_POOL_SECRET
from scheduler.protocol import JobState
from scheduler.state import SchedulerState
from scheduler.transitions import evict

log = logging.getLogger("scheduler.server")


def on_drain_worker(state: SchedulerState, conn: Link, msg: p.DrainWorker) -> p.Message:
    """From an operator holding the pool secret (a worker-role connection): a
    worker's own credential drains no other worker."""
    if conn.auth != BY_POOL_SECRET:
        raise RequestError(
            "draining a worker takes the pool secret: run 'dfarm worker --drain NAME'"
            " on the scheduler node",
            "forbidden",
        )
    worker = state.workers.named(msg.name)
    if worker is None:
        raise RequestError(f"no worker named {msg.name!r} is connected", "not_found")
    worker.slots.changing()
    worker.slots.draining = True
    worker.send(p.Drain(grace=msg.grace))
    log.info("worker %s: drain requested from %s", msg.name, conn.peer)
    return p.Ok()


def on_draining(state: SchedulerState, conn: Link, msg: p.Draining) -> p.Message:
    worker = state.workers.registered(conn)
    worker.slots.changing()
    worker.slots.draining = True
    requeued = []
    with state.store.transaction():
        for entry in msg.requeue:
            job_id, _, attempt = entry.partition(":")
            job = worker.running.get(job_id)
            if job is None or str(job.attempt) != attempt or job.state is not JobState.RUNNING:
                continue
            evict(state, worker, job, f"worker {worker.name} shut down")
            requeued.append(job_id)
    log.info(
        "worker %s is draining: %d running, %d requeued",
        worker.name, len(worker.running), len(requeued),
    )  # fmt: skip
    if requeued:
        state.wake()
    return p.Ok()
