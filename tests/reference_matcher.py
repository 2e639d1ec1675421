"""The reference the matcher (:mod:`scheduler.matchmaker`) is tested against: the
fair-share queue popped one free slot at a time, the next job by fair share that
fits it taken each time."""

from __future__ import annotations

import heapq

from scheduler.dispatch import Slots
from scheduler.fairshare import Entry, FairShareQueue, UserShare
from scheduler.job_records import Job
from scheduler.matching.capacity import Shape


def best_of(queue: FairShareQueue, share: UserShare, slots: Slots) -> tuple[Shape, Entry] | None:
    """The user's first job in order that fits ``slots``, with its heap's shape."""
    best: tuple[Shape, Entry] | None = None
    for shape in list(share.heaps):
        top = queue._top(share, shape)
        if top is None:
            del share.heaps[shape]
            continue
        if best is not None and top[:3] >= best[1][:3]:
            continue
        if slots.fits(top[4]):
            best = (shape, top)
    return best


def pop_fitting(queue: FairShareQueue, slots: Slots, now: float) -> Job | None:
    """The next job to run on ``slots`` by fair share, removed from the queue."""
    for share in queue.ranked(now):
        found = best_of(queue, share, slots)
        if found is not None:
            heapq.heappop(share.heaps[found[0]])
            job = found[1][4]
            queue.discard(job)
            return job
    return None
