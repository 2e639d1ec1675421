"""The dashboard's index of the queue: the ids of the jobs in the queue (idle,
running, held), kept sorted as jobs change, all together, per owner, per state and
per owner and state, and each owner's idle jobs in the order they will run.

A page of the queue, sorted and filtered, is then a few binary searches and a
slice: O(page + log n) whatever the queue's depth, never a pass over it. A job's
place among its owner's idle jobs is O(log n) too. Changes register their undo
with the unit that made them, as the job table's do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial

from scheduler.job_records import Job
from scheduler.protocol import JobState
from scheduler.undo import UndoHook, no_undo
from scheduler.web.sorted_keys import SortedKeys

Key = tuple[int, int]
#: Where a job is filed: its owner, state and priority.
Place = tuple[str, str, int]
#: The states of the queue, in the order ``sort=state`` lists them.
STATES = (JobState.RUNNING.value, JobState.IDLE.value, JobState.HELD.value)
SORTS = ("id", "state", "owner")
#: Excluded entries walked past before a page jumps to its next entry by search.
_JUMP = 64
#: Ids a search reads between two turns of the event loop.
_CHUNK = 500


@dataclass
class _Segment:
    """The entries of ``keys[lo:hi]`` that are not in ``skip[slo:shi]`` (``skip`` is
    a sorted sublist of ``keys``: the one state a two-state filter leaves out)."""

    keys: SortedKeys
    lo: int
    hi: int
    skip: SortedKeys | None = None
    slo: int = 0
    shi: int = 0

    def __len__(self) -> int:
        return (self.hi - self.lo) - (self.shi - self.slo)

    def _before(self, i: int) -> int:
        """How many entries of the segment precede ``keys[i]``."""
        if self.skip is None:
            return i - self.lo
        cut = self.shi if i >= self.hi else self._skip_cut(self.keys[i])
        return (i - self.lo) - (cut - self.slo)

    def _index(self, k: int) -> int:
        """The index in ``keys`` of the segment's ``k``-th entry (0-based)."""
        if self.skip is None:
            return self.lo + k
        lo, hi = self.lo + k, min(self.hi, self.lo + k + (self.shi - self.slo))
        while lo < hi:  # the first i with k entries before it that is not skipped
            mid = (lo + hi) // 2
            if self._before(mid + 1) <= k:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _skip_cut(self, key: Key) -> int:
        """Where ``key`` would go in ``skip``, within the segment's range of it."""
        assert self.skip is not None
        return min(max(self.skip.bisect_left(key), self.slo), self.shi)

    def _skipped(self, key: Key) -> bool:
        assert self.skip is not None
        i = self._skip_cut(key)
        return i < self.shi and self.skip[i] == key

    def take(self, start: int, count: int, descending: bool) -> list[Key]:
        """``count`` entries from the ``start``-th, in the order asked for."""
        n = len(self)
        count = max(0, min(count, n - start))
        if self.skip is None:  # one slice
            if descending:
                return self.keys.slice(self.hi - start - count, self.hi - start)[::-1]
            return self.keys.slice(self.lo + start, self.lo + start + count)
        out: list[Key] = []
        k = start
        while len(out) < count:
            rank = n - 1 - k if descending else k
            i = self._index(rank)
            step = -1 if descending else 1
            walked, before = 0, len(out)
            while len(out) < count and self.lo <= i < self.hi and walked < _JUMP:
                key = self.keys[i]
                i += step
                if self.skip is not None and self._skipped(key):
                    walked += 1
                    continue
                out.append(key)
                k += 1
            if len(out) == before and walked < _JUMP:
                break  # the lists disagree: never loop on them
        return out


@dataclass
class Page:
    """A page of the queue: its jobs' ids in order, and how many match in all."""

    keys: list[Key]
    total: int


class QueueIndex:
    """The jobs in the queue, sorted by id in lists per owner and state."""

    def __init__(self, jobs: Iterable[Job] = (), undo: UndoHook = no_undo):
        self.undo = undo
        #: Sorted ids by (owner or None, state or None): (None, None) is every job.
        self._lists: dict[tuple[str | None, str | None], SortedKeys] = {(None, None): SortedKeys()}
        #: Each job's place.
        self.placed: dict[Key, Place] = {}
        #: Each owner's idle jobs by priority, sorted by id.
        self._idle: dict[str, dict[int, SortedKeys]] = {}
        self._groups: dict[Place, list[SortedKeys]] = {}
        filed: dict[int, tuple[SortedKeys, list[Key]]] = {}
        for job in jobs:
            place = _place(job)
            if place is not None:
                key = (job.cluster, job.proc)
                self.placed[key] = place
                for group in self._groups_of(place):
                    filed.setdefault(id(group), (group, []))[1].append(key)
        for group, keys in filed.values():
            group.fill(keys)

    def __len__(self) -> int:
        return len(self.placed)

    def changed(self, job: Job) -> None:
        """``job`` was submitted or changed: file it where it belongs now."""
        key = (job.cluster, job.proc)
        old, new = self.placed.get(key), _place(job)
        if old != new:
            self._move(key, old, new)
            self.undo(partial(self._move, key, new, old))

    def owners(self) -> list[str]:
        return sorted({owner for owner, _ in self._lists if owner is not None})

    def count(self, owner: str | None = None, state: str | None = None) -> int:
        return len(self._lists.get((owner, state), ()))

    def ahead_own(self, job: Job) -> int:
        """How many of its owner's idle jobs run before ``job`` (higher priority
        first, then by id), as :mod:`scheduler.fairshare` orders them."""
        key = (job.cluster, job.proc)
        place = self.placed.get(key)
        if place is not None and place[2] != job.spec.priority:
            self.changed(job)  # its priority was edited since it was filed
        by_priority = self._idle.get(job.owner, {})
        higher = sum(len(keys) for prio, keys in by_priority.items() if prio > job.spec.priority)
        same = by_priority.get(job.spec.priority)
        return higher + (same.bisect_left(key) if same is not None else 0)

    def page(
        self,
        owner: str | None = None,
        states: Iterable[str] | None = None,
        cluster: int | None = None,
        sort: str = "id",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> Page:
        """The ids of one page of the queue, filtered by owner (None: everyone's),
        states (None: all three) and cluster, sorted by ``sort`` (:data:`SORTS`; then
        by id)."""
        segments = self._segments(owner, _states(states), cluster, sort)
        if descending:
            segments.reverse()
        total = sum(len(s) for s in segments)
        keys: list[Key] = []
        skip = max(0, offset)
        for segment in segments:
            n = len(segment)
            if skip >= n:
                skip -= n
                continue
            keys += segment.take(skip, limit - len(keys), descending)
            skip = 0
            if len(keys) >= limit:
                break
        return Page(keys, total)

    def keys(
        self,
        owner: str | None,
        states: Iterable[str] | None,
        cluster: int | None,
        sort: str = "id",
        descending: bool = False,
    ) -> Iterator[list[Key]]:
        """The ids that pass the filters, in the order asked for, in chunks (each
        taken from the lists as they are then): for a search through the jobs' text."""
        segments = self._segments(owner, _states(states), cluster, sort)
        for segment in reversed(segments) if descending else segments:
            for start in range(0, len(segment), _CHUNK):
                yield segment.take(start, _CHUNK, descending)

    # ------------------------------------------------------------------ internals

    def _segments(
        self, owner: str | None, states: list[str], cluster: int | None, sort: str
    ) -> list[_Segment]:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        if not states:
            return []
        owners: list[str | None] = [owner]
        if sort == "owner" and owner is None:
            owners = list(self.owners())
        if sort == "state" or len(states) == 1:
            return [self._segment(o, s, None, cluster) for o in owners for s in states]
        left_out = [s for s in STATES if s not in states]
        return [self._segment(o, None, left_out[0] if left_out else None, cluster) for o in owners]

    def _segment(
        self, owner: str | None, state: str | None, skip: str | None, cluster: int | None
    ) -> _Segment:
        keys = self._lists.get((owner, state)) or SortedKeys()
        lo, hi = _range(keys, cluster)
        if skip is None:
            return _Segment(keys, lo, hi)
        skipped = self._lists.get((owner, skip)) or SortedKeys()
        return _Segment(keys, lo, hi, skipped, *_range(skipped, cluster))

    def _groups_of(self, place: Place) -> list[SortedKeys]:
        """The lists a job of this place is in (made once per place)."""
        groups = self._groups.get(place)
        if groups is None:
            owner, state, priority = place
            groups = self._groups[place] = [
                self._lists.setdefault(group, SortedKeys())
                for group in ((None, None), (owner, None), (None, state), (owner, state))
            ]
            if state == JobState.IDLE.value:
                groups.append(self._idle.setdefault(owner, {}).setdefault(priority, SortedKeys()))
        return groups

    def _move(self, key: Key, old: Place | None, new: Place | None) -> None:
        if old is not None:
            for group in self._groups_of(old):
                group.discard(key)
            del self.placed[key]
        if new is not None:
            for group in self._groups_of(new):
                group.add(key)
            self.placed[key] = new


def _place(job: Job) -> Place | None:
    if job.state.value not in STATES:
        return None
    return job.owner, job.state.value, job.spec.priority


def _states(states: Iterable[str] | None) -> list[str]:
    if states is None:
        return list(STATES)
    chosen = set(states)
    unknown = chosen - set(STATES)
    if unknown:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {sorted(unknown)[0]!r}")
    return [s for s in STATES if s in chosen]


def _range(keys: SortedKeys, cluster: int | None) -> tuple[int, int]:
    if cluster is None:
        return 0, len(keys)
    return keys.bisect_left((cluster, -1)), keys.bisect_right((cluster, 2**62))
