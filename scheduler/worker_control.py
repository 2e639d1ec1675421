"""Draining workers: a worker stopped with SIGTERM, or drained from the scheduler
node with ``dfarm worker --drain NAME``, takes no new jobs, lets its running jobs
finish and gives back those still running after its grace period."""

from __future__ import annotations

import logging

from scheduler import protocol as p
from scheduler.connection import Connection, RequestError
from scheduler.handshake import BY_POOL_SECRET
from scheduler.protocol import JobState
from scheduler.queue_ahead import release

log = logging.getLogger("scheduler.server")


class WorkerControlHandlers:
    """Mixed into :class:`scheduler.server.Scheduler`."""

    def on_drain_worker(self, conn: Connection, msg: p.DrainWorker) -> p.Message:
        """From an operator holding the pool secret (a worker-role connection): a
        worker's own credential drains no other worker."""
        if conn.auth != BY_POOL_SECRET:
            raise RequestError(
                "draining a worker takes the pool secret: run 'dfarm worker --drain NAME'"
                " on the scheduler node",
                "forbidden",
            )
        worker = next((w for w in self.workers.values() if w.name == msg.name), None)
        if worker is None or worker.slots is None:
            raise RequestError(f"no worker named {msg.name!r} is connected", "not_found")
        worker.slots.draining = True
        worker.send(p.Drain(grace=msg.grace))
        log.info("worker %s: drain requested from %s", msg.name, conn.peer)
        return p.Ok()

    def on_draining(self, conn: Connection, msg: p.Draining) -> p.Message:
        slots = self._registered(conn)
        slots.draining = True
        requeued = []
        with self.store.transaction():
            for entry in msg.requeue:
                job_id, _, attempt = entry.partition(":")
                job = conn.running.get(job_id)
                if job is None or str(job.attempt) != attempt or job.state is not JobState.RUNNING:
                    continue
                self.jobs.requeue(job, f"worker {conn.name} shut down")
                del conn.running[job_id]
                self.spool.revoke(conn.grants.pop(job_id))
                release(self.jobs, slots, conn.running, job)
                requeued.append(job_id)
        log.info(
            "worker %s is draining: %d running, %d requeued",
            conn.name, len(conn.running), len(requeued),
        )  # fmt: skip
        if requeued:
            self._wake.set()
        return p.Ok()
