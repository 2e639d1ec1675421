"""Matching idle jobs to free slots, as a function: it decides, it changes nothing.

:func:`match` reads the fair-share queue and the free slots and returns which job
goes to which worker, in the order the queue would have given them out one by one:
for each worker in turn, while it has room, the first job that fits of the user
with the least effective usage. Starting a job changes the queue (the job leaves
it, and its user's running cpus grow, which moves the user down the ranking) and
the slots (the job holds its resources): the matcher follows both on a view of
its own (a copy of each worker's counters, the users' running cpus, the jobs
already chosen) and leaves the real ones to the caller, which applies the matches
(:func:`scheduler.starting.schedule_once`).
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Iterable
from typing import NamedTuple

from scheduler.dispatch import Slots
from scheduler.fairshare import Entry, FairShareQueue, UserShare
from scheduler.job_records import Job
from scheduler.matching.capacity import Shape


class Match(NamedTuple):
    """One decision: ``job`` starts on the worker ``worker_id``."""

    worker_id: int
    job: Job


def match(queue: FairShareQueue, free: Iterable[Slots], now: float) -> list[Match]:
    """The jobs of ``queue`` to start at ``now`` on the workers ``free``, in order."""
    view = _QueueView(queue, now)
    matches: list[Match] = []
    for real in free:
        slots = copy.copy(real)  # its counters change here; its dicts are only read
        while slots.free:
            job = view.take_fitting(slots)
            if job is None:
                break
            slots.take(job)
            matches.append(Match(real.worker_id, job))
    return matches


class _Cursor:
    """The live entries of one heap in order, read without popping it: a frontier
    of heap positions, the smallest first (the children of a position are
    never smaller than it)."""

    def __init__(self, heap: list[Entry]) -> None:
        self.heap = heap
        self.frontier: list[tuple[int, int, int, int]] = []
        if heap:
            self._push(0)

    def _push(self, i: int) -> None:
        entry = self.heap[i]
        heapq.heappush(self.frontier, (entry[0], entry[1], entry[2], i))

    def top(self, usable: _QueueView) -> Entry | None:
        """The first entry still queued and not yet chosen."""
        frontier, size = self.frontier, len(self.heap)
        while frontier:
            i = frontier[0][3]
            entry = self.heap[i]
            if usable.usable(entry):
                return entry
            heapq.heappop(frontier)
            for child in (2 * i + 1, 2 * i + 2):
                if child < size:
                    self._push(child)
        return None


class _QueueView:
    """The queue as it would be after the jobs chosen so far started at ``now``."""

    def __init__(self, queue: FairShareQueue, now: float) -> None:
        self.queue, self.now = queue, now
        self.chosen: set[tuple[int, int]] = set()
        #: Per user touched: idle jobs left, running cpus, sum of start x cpus.
        self.users: dict[str, tuple[int, int, float]] = {}
        self.cursors: dict[tuple[str, Shape], _Cursor] = {}

    def usable(self, entry: Entry) -> bool:
        return self.queue.live(entry) and (entry[1], entry[2]) not in self.chosen

    def _counts(self, share: UserShare) -> tuple[int, int, float]:
        return self.users.get(share.name, (share.idle, share.running_cpus, share.started))

    def ranked(self) -> list[UserShare]:
        """As :meth:`FairShareQueue.ranked`, with the chosen jobs running."""
        now, halflife = self.now, self.queue.halflife
        keyed = []
        for share in self.queue.users.values():
            idle, cpus, started = self._counts(share)
            if idle:
                usage = share.decayed(now, halflife) + max(0.0, cpus * now - started)
                keyed.append(((usage, cpus, share.name), share))
        keyed.sort(key=lambda pair: pair[0])
        return [share for _, share in keyed]

    def _top(self, share: UserShare, shape: Shape) -> Entry | None:
        cursor = self.cursors.get((share.name, shape))
        if cursor is None:
            cursor = self.cursors[(share.name, shape)] = _Cursor(share.heaps[shape])
        return cursor.top(self)

    def take_fitting(self, slots: Slots) -> Job | None:
        """The next job that fits ``slots`` by fair share, counted as started."""
        for share in self.ranked():
            best: Entry | None = None
            for shape in share.heaps:
                top = self._top(share, shape)
                if top is None or (best is not None and top[:3] >= best[:3]):
                    continue
                if slots.fits(top[3]):
                    best = top
            if best is not None:
                job = best[3]
                self.chosen.add((job.cluster, job.proc))
                idle, cpus, started = self._counts(share)
                # As FairShareQueue.started, term for term, so the ranking matches.
                request = job.spec.request_cpus
                self.users[share.name] = (idle - 1, cpus + request, started + self.now * request)
                return job
        return None
