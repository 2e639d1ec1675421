"""Jobs queued on a worker behind short running ones, so that a slot never waits.

When a job ends, its worker reports it and the scheduler answers with the slot's
next job; for jobs of a few milliseconds that round trip would leave the slot
idle about as long as the job ran, and every job would cost a message each way.
So behind a running job whose cluster's jobs are short, the scheduler queues up
to :data:`QUEUE_DEPTH` more jobs of the same shape on its worker, chosen by fair
share as for a free slot. The worker starts each the moment the one before it
ends, in its place (see :meth:`scheduler.dispatch.Slots.release`), and reports
the results of a chain a few at a time.

A job is queued only while the jobs ahead of it are expected to end within the
scheduler's ``--queue-wait`` (0.25 s by default), by the mean run time of
completed jobs of the cluster of the last of them: jobs of a cluster with no
completed job yet are never queued behind, so a long job never holds another
one back. A queued job is running (its worker has it) but has no start time,
and does not count for fair share, until the job ahead of it leaves
(:func:`release`). Jobs with a ``rank`` are never queued: each starts on the
worker it ranks best among those free at that moment (see
:mod:`scheduler.matchmaker`).
"""

from __future__ import annotations

import math

from scheduler.dispatch import Slots
from scheduler.job_records import Job
from scheduler.jobs import JobTable
from scheduler.matching.capacity import shape_of
from scheduler.undo import UndoHook, no_undo

#: Most jobs queued behind one running job.
QUEUE_DEPTH = 16
#: Clusters whose mean run time is remembered (the most recently finished ones).
KEPT_CLUSTERS = 4096


class RunTimes:
    """The mean wall time of recently completed jobs, per cluster."""

    def __init__(self, undo: UndoHook = no_undo) -> None:
        self._mean: dict[int, float] = {}
        self.undo = undo

    def record(self, cluster: int, wall_time: float) -> None:
        old = self._mean.pop(cluster, None)
        # Weighted towards recent runs, which is what the next jobs will be like.
        self._mean[cluster] = wall_time if old is None else old + (wall_time - old) * 0.2
        evicted = None
        if len(self._mean) > KEPT_CLUSTERS:
            first = next(iter(self._mean))
            evicted = (first, self._mean.pop(first))

        def restore() -> None:
            # The means come back; their order (which is forgotten first) may not.
            self._mean.pop(cluster, None)
            if old is not None:
                self._mean[cluster] = old
            if evicted is not None:
                self._mean[evicted[0]] = evicted[1]

        self.undo(restore)

    def expected(self, cluster: int) -> float:
        """Expected run time of a job of ``cluster``; infinite when none completed."""
        return self._mean.get(cluster, math.inf)


def queue_behind(
    jobs: JobTable,
    slots: Slots,
    running: dict[str, Job],
    head: Job,
    run_times: RunTimes,
    wait: float,
    now: float,
) -> list[tuple[Job, Job]]:
    """Queue idle jobs behind the chain that starts with ``head`` (a running job of
    the worker ``slots``, whose jobs are ``running``) and mark them running at
    ``now``, while each is expected to start within ``wait`` seconds.
    Returns (the job each waits for, the job) in order."""
    tail_id, depth = slots.chain(head)
    if depth >= QUEUE_DEPTH or slots.draining or not len(jobs.queue):
        return []
    shape = shape_of(head.spec)
    if shape[0] is not None:  # ranked: each goes to the best worker free when it starts
        return []
    # The jobs of a chain have one shape and mostly one cluster: the one of its last
    # job tells how long each takes.
    tail = running[tail_id]
    each = run_times.expected(tail.cluster)
    queued: list[tuple[Job, Job]] = []
    while depth < QUEUE_DEPTH and (depth + 1) * each <= wait:
        job = jobs.queue.pop_shape(shape, now)
        if job is None:
            break
        jobs.start(job, slots.name, now, queued=True)
        slots.queue_behind(head, job)
        queued.append((tail, job))
        tail, depth = job, depth + 1
        each = max(each, run_times.expected(job.cluster))
    return queued


def release(
    jobs: JobTable, slots: Slots, running: dict[str, Job], job: Job, now: float
) -> Job | None:
    """``job`` left the worker ``slots`` (whose jobs are ``running``): the job queued
    behind it, if any, begins in its place at ``now`` and is returned."""
    follower = slots.release(job)
    if follower is None:
        return None
    began = running[follower]
    jobs.began(began, now)
    return began
