"""The idle queue, ordered by fair share between users.

Each user's *usage* is the slot time their jobs consumed (wall seconds x
requested cpus), decayed with a half-life as HTCondor's ``PRIORITY_HALFLIFE``;
jobs that are running count as they run. When a slot frees, the job that runs
next belongs to the user with the least effective usage among users with a job
that fits; within one user, higher ``priority`` first, then submit order.

The queue holds, per user, one heap per *shape* (the requests and requirements
that decide where a job fits: the jobs of one cluster usually share one), so
the next job that fits a slot is found without scanning the queue: the cost of
a choice is O(U log U + U x S + log n) for U users with idle jobs, S shapes per
user and n idle jobs. Decay is lazy: a user's usage is stored as a value at a
timestamp and decayed when read, never rewritten by a periodic task.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from scheduler.job_records import Job
from scheduler.matching.capacity import Shape, shape_of
from scheduler.undo import UndoHook, no_undo

#: Default half-life of usage, in seconds (one day, as HTCondor).
DEFAULT_HALFLIFE = 86400.0

#: (-priority, cluster, proc, push number, job): the order of one user's jobs. The
#: push number keeps a job's stale entry (see :meth:`FairShareQueue.discard`) and its
#: new one apart when it is queued again, so that the heap never compares jobs.
Entry = tuple[int, int, int, int, Job]


@dataclass
class UserShare:
    """One user's usage and idle jobs."""

    name: str
    #: Decayed usage (cpu-seconds) as of :attr:`stamp`, finished runs only.
    value: float = 0.0
    stamp: float = 0.0
    #: Cpus held by the user's running jobs and the sum of ``start_time * cpus``
    #: over them: the running term of the usage is ``cpus * now - started``.
    running_cpus: int = 0
    started: float = 0.0
    idle: int = 0
    running: int = 0
    heaps: dict[Shape, list[Entry]] = field(default_factory=dict)

    def decayed(self, now: float, halflife: float) -> float:
        """The usage of finished runs, decayed to ``now``."""
        if self.value == 0.0 or now <= self.stamp:
            return self.value
        return self.value * 0.5 ** ((now - self.stamp) / halflife)

    def effective(self, now: float, halflife: float) -> float:
        """Usage at ``now``: finished runs decayed, running jobs counted as they run."""
        return self.decayed(now, halflife) + max(0.0, self.running_cpus * now - self.started)


class FairShareQueue:
    """Idle jobs by user and shape; removal is lazy (stale entries are skipped)."""

    def __init__(self, halflife: float = DEFAULT_HALFLIFE) -> None:
        if halflife <= 0:
            raise ValueError("the usage half-life must be greater than 0 seconds")
        self.halflife = halflife
        self.users: dict[str, UserShare] = {}
        #: The live entry of each queued job; any other entry of it in a heap is stale.
        self._queued: dict[tuple[int, int], Entry] = {}
        self._pushes = itertools.count()
        #: Where each change registers its undo (see :mod:`scheduler.undo`).
        self.undo: UndoHook = no_undo

    def __len__(self) -> int:
        return len(self._queued)

    def user(self, name: str) -> UserShare:
        share = self.users.get(name)
        if share is None:
            share = self.users[name] = UserShare(name)
            self.undo(lambda: self._forget(name))
        return share

    def _forget(self, name: str) -> None:
        self.users.pop(name, None)

    def _keep_usage(self, share: UserShare) -> None:
        """Register the undo of a change to ``share``'s usage."""
        saved = (share.value, share.stamp, share.running_cpus, share.started, share.running)

        def restore() -> None:
            share.value, share.stamp, share.running_cpus, share.started, share.running = saved

        self.undo(restore)

    # ------------------------------------------------------------------ usage

    def load_usage(self, name: str, value: float, stamp: float) -> None:
        share = self.user(name)
        share.value, share.stamp = value, stamp

    def started(self, job: Job) -> None:
        """A job of ``job.owner`` started running at ``job.start_time``."""
        share = self.user(job.owner)
        self._keep_usage(share)
        share.running += 1
        share.running_cpus += job.spec.request_cpus
        share.started += (job.start_time or 0.0) * job.spec.request_cpus

    def stopped(self, job: Job, start_time: float | None, now: float) -> UserShare:
        """A running job ended (for whatever reason): its slot time joins the usage."""
        share = self.user(job.owner)
        self._keep_usage(share)
        cpus = job.spec.request_cpus
        start = start_time if start_time is not None else now
        share.running = max(0, share.running - 1)
        share.running_cpus = max(0, share.running_cpus - cpus)
        share.started -= start * cpus
        if share.running_cpus == 0:
            share.started = 0.0  # no rounding residue once nothing runs
        share.value = share.decayed(now, self.halflife) + max(0.0, now - start) * cpus
        share.stamp = now
        return share

    def effective_usage(self, name: str, now: float) -> float:
        share = self.users.get(name)
        return 0.0 if share is None else share.effective(now, self.halflife)

    def ranked(self, now: float) -> list[UserShare]:
        """Users with idle jobs, least effective usage first (then fewest cpus running)."""
        waiting = [u for u in self.users.values() if u.idle]
        hl = self.halflife
        waiting.sort(key=lambda u: (u.effective(now, hl), u.running_cpus, u.name))
        return waiting

    # ------------------------------------------------------------------ queue

    def push(self, job: Job) -> None:
        key = (job.cluster, job.proc)
        if key in self._queued:
            return
        share = self.user(job.owner)
        share.idle += 1
        entry = (-job.spec.priority, job.cluster, job.proc, next(self._pushes), job)
        self._queued[key] = entry
        heapq.heappush(share.heaps.setdefault(shape_of(job.spec), []), entry)
        self.undo(lambda: self.discard(job))

    def discard(self, job: Job) -> None:
        key = (job.cluster, job.proc)
        if self._queued.pop(key, None) is not None:
            share = self.user(job.owner)
            share.idle -= 1
            self.undo(lambda: self.push(job))
            # Its entry is stale now: one at the top of its heap goes at once, so
            # that a reader who does not pop (see scheduler/matchmaker.py) never
            # walks past a run of them.
            shape = shape_of(job.spec)
            if shape in share.heaps:
                self._top(share, shape)

    def live(self, entry: Entry) -> bool:
        """Whether ``entry`` (of one of the heaps) is its job's place in the queue."""
        return self._queued.get((entry[1], entry[2])) is entry

    def _top(self, share: UserShare, shape: Shape) -> Entry | None:
        """The first live entry of one heap (stale ones are dropped on the way)."""
        heap = share.heaps[shape]
        while heap:
            entry = heap[0]
            if self._queued.get((entry[1], entry[2])) is entry:
                return entry
            heapq.heappop(heap)
        return None

    def pop_shape(self, shape: Shape, now: float) -> Job | None:
        """The next job of ``shape`` by fair share, removed from the queue: it fits
        wherever a job of that shape runs."""
        for share in self.ranked(now):
            if shape in share.heaps and self._top(share, shape) is not None:
                job = heapq.heappop(share.heaps[shape])[4]
                self.discard(job)
                return job
        return None

    def jobs_of(self, name: str) -> Iterator[Job]:
        """A user's idle jobs (any order)."""
        share = self.users.get(name)
        if share is None:
            return
        for heap in share.heaps.values():
            for entry in heap:
                if self._queued.get((entry[1], entry[2])) is entry:
                    yield entry[4]
