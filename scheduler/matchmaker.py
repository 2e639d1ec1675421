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

A job with a ``rank`` (:mod:`scheduler.matching.rank`) prefers some workers, as in
HTCondor's negotiator: when the job chosen for a worker has one, its rank is
evaluated on every worker that could start it at this moment (room left on the
matcher's copy of its counters, requirements true), among the workers being filled
and those of ``elsewhere``, and the job goes to the one with the highest rank; on a
tie, to the worker being filled, else the first in order. So a ranked job may go to
another worker than the one being filled, which keeps filling with the next job.
The job is still chosen by fair share: rank orders workers, never users or jobs.
A job without a rank costs one look-up of its spec's cached ``Rank``.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable, Iterable
from typing import NamedTuple

from scheduler.dispatch import Slots
from scheduler.fairshare import Entry, FairShareQueue, UserShare
from scheduler.job_records import Job
from scheduler.matching.capacity import Shape
from scheduler.matching.classad import Ad
from scheduler.matching.job_ad import job_ad
from scheduler.matching.rank import rank_of
from scheduler.matching.requirements import rank_value


class Match(NamedTuple):
    """One decision: ``job`` starts on the worker ``worker_id``."""

    worker_id: int
    job: Job


def match(
    queue: FairShareQueue,
    free: Iterable[Slots],
    now: float,
    elsewhere: Callable[[], Iterable[Slots]] | None = None,
) -> list[Match]:
    """The jobs of ``queue`` to start at ``now`` on the workers ``free``, in order.
    ``elsewhere`` gives further workers a ranked job may go to instead (asked for
    only when a job with a rank is chosen)."""
    view = _QueueView(queue, now)
    matches: list[Match] = []
    workers = _Workers(free, elsewhere)
    for real in workers.filled:
        slots = workers.view(real)
        while slots.free:
            job = view.take_fitting(slots)
            if job is None:
                break
            rank = rank_of(job.spec)
            target = slots if rank is None else workers.best(job, rank, slots)
            target.take(job)
            matches.append(Match(target.worker_id, job))
    return matches


class _Workers:
    """The matcher's copies of the workers' counters (made when first needed; a
    copy's dicts are only read), and the ranks of the jobs on them."""

    def __init__(self, free: Iterable[Slots], elsewhere: Callable[[], Iterable[Slots]] | None):
        self.filled = list(free)
        self.elsewhere = elsewhere
        self.copies: dict[int, Slots] = {}
        self.all: list[Slots] | None = None
        #: Rank by (spec, worker id): the procs of a cluster share their spec.
        self.ranks: dict[tuple[int, int], float] = {}
        self.ads: dict[int, Ad] = {}

    def view(self, real: Slots) -> Slots:
        slots = self.copies.get(real.worker_id)
        if slots is None:
            slots = self.copies[real.worker_id] = copy.copy(real)
        return slots

    def _all(self) -> list[Slots]:
        if self.all is None:
            self.all = list(self.filled)
            if self.elsewhere is not None:
                seen = {s.worker_id for s in self.all}
                self.all += [s for s in self.elsewhere() if s.free and s.worker_id not in seen]
        return self.all

    def best(self, job: Job, rank: str, current: Slots) -> Slots:
        """The worker with the highest rank for ``job`` among those that could start
        it now; ``current`` (where it fits) wins a tie, then the first in order."""
        best, top = current, self._rank(job, rank, current)
        for real in self._all():
            if real.worker_id == current.worker_id:
                continue
            slots = self.copies.get(real.worker_id, real)
            if slots.fits(job):
                value = self._rank(job, rank, slots)
                if value > top:
                    best, top = slots, value
        return self.view(best) if best is not current else current

    def _rank(self, job: Job, rank: str, slots: Slots) -> float:
        key = (id(job.spec), slots.worker_id)
        value = self.ranks.get(key)
        if value is None:
            ad = self.ads.get(id(job.spec))
            if ad is None:
                ad = self.ads[id(job.spec)] = job_ad(job.spec)
            value = self.ranks[key] = rank_value(rank, ad, slots.attributes)
        return value


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
                if slots.fits(top[4]):
                    best = top
            if best is not None:
                job = best[4]
                self.chosen.add((job.cluster, job.proc))
                idle, cpus, started = self._counts(share)
                # As FairShareQueue.started, term for term, so the ranking matches.
                request = job.spec.request_cpus
                self.users[share.name] = (idle - 1, cpus + request, started + self.now * request)
                return job
        return None
