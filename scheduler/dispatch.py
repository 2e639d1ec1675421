"""The idle queue and the matching of jobs to worker slots.

Dispatch here is first-in, first-out with ``priority``: the earliest submitted
job of the highest priority that fits a worker's free resources goes first.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from scheduler.store import Job


@dataclass
class Slots:
    """What a worker offers and what its running jobs hold."""

    worker_id: int
    name: str
    slots: int
    cpus: int
    memory_mb: int
    gpus: int
    disk_free_mb: int
    used_slots: int = 0
    used_cpus: int = 0
    used_memory_mb: int = 0
    used_gpus: int = 0
    draining: bool = False

    def fits(self, job: Job) -> bool:
        """Whether ``job`` could start here now."""
        spec = job.spec
        if self.draining or self.used_slots >= self.slots:
            return False
        if spec.machine is not None and spec.machine not in (self.name, str(self.worker_id)):
            return False
        return (
            self.used_cpus + spec.request_cpus <= self.cpus
            and self.used_memory_mb + (spec.request_memory or 0) <= self.memory_mb
            and self.used_gpus + spec.request_gpus <= self.gpus
            and (spec.request_disk or 0) <= self.disk_free_mb * 1024
        )

    def take(self, job: Job) -> None:
        self.used_slots += 1
        self.used_cpus += job.spec.request_cpus
        self.used_memory_mb += job.spec.request_memory or 0
        self.used_gpus += job.spec.request_gpus

    def give_back(self, job: Job) -> None:
        self.used_slots -= 1
        self.used_cpus -= job.spec.request_cpus
        self.used_memory_mb -= job.spec.request_memory or 0
        self.used_gpus -= job.spec.request_gpus

    @property
    def free(self) -> bool:
        return not self.draining and self.used_slots < self.slots


@dataclass(order=True)
class _Entry:
    key: tuple[int, int, int]
    job: Job = field(compare=False)


class IdleQueue:
    """Idle jobs ordered by (-priority, cluster, proc). Removal is lazy."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._queued: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def push(self, job: Job) -> None:
        self._queued.add((job.cluster, job.proc))
        heapq.heappush(self._heap, _Entry((-job.spec.priority, job.cluster, job.proc), job))

    def discard(self, job: Job) -> None:
        self._queued.discard((job.cluster, job.proc))

    def order(self) -> list[tuple[int, int]]:
        """The queued jobs' (cluster, proc), in the order slots are offered to them."""
        keys = (e.key[1:] for e in sorted(self._heap))
        return [key for key in dict.fromkeys(keys) if key in self._queued]

    def pop_fitting(self, slots: Slots) -> Job | None:
        """The first queued job that fits ``slots``, removed from the queue."""
        skipped: list[_Entry] = []
        found: Job | None = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            key = (entry.job.cluster, entry.job.proc)
            if key not in self._queued:
                continue
            if slots.fits(entry.job):
                self._queued.discard(key)
                found = entry.job
                break
            skipped.append(entry)
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return found
