"""What connected workers offer: their attributes as ``requirements`` see them, and
the jobs of a submission no connected worker could ever run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from scheduler.matching.capacity import Capacity, Shape, machine_ad, never_reasons, shape_of
from scheduler.matching.requirements import Value
from scheduler.protocol import JobSpec, WorkerMetrics

__all__ = ["WorkerSlots", "capacities", "impossible_warnings", "slot_attributes"]


class WorkerSlots(Protocol):
    """What matching reads of a connected worker (the scheduler's ``Slots``)."""

    @property
    def worker_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def cpus(self) -> int: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def gpus(self) -> int: ...
    @property
    def disk_free_mb(self) -> int: ...
    @property
    def draining(self) -> bool: ...
    @property
    def attributes(self) -> dict[str, Value]: ...


def slot_attributes(slots: WorkerSlots, metrics: WorkerMetrics | None) -> dict[str, Value]:
    """The attributes ``requirements`` see on this worker."""
    return machine_ad(slots.name, slots.worker_id, slots.cpus, slots.memory_mb, slots.gpus, metrics)


def capacities(workers: Iterable[WorkerSlots]) -> list[Capacity]:
    """What each connected worker offers when empty."""
    return [
        Capacity(
            worker_id=s.worker_id,
            name=s.name,
            cpus=s.cpus,
            memory_mb=s.memory_mb,
            gpus=s.gpus,
            disk_kb=s.disk_free_mb * 1024,
            ad=s.attributes,
        )
        for s in workers
        if not s.draining
    ]


def impossible_warnings(specs: list[JobSpec], workers: list[Capacity], first: int = 0) -> list[str]:
    """Warnings for the jobs of a submission that no connected worker could ever run
    (one per distinct set of requests, so a large cluster costs a few checks)."""
    by_shape: dict[Shape, list[int]] = {}
    for proc, spec in enumerate(specs):
        by_shape.setdefault(shape_of(spec), []).append(proc)
    warnings = []
    for procs in by_shape.values():
        _, reasons = never_reasons(specs[procs[0]], workers)
        if reasons:
            which = f"job {first + procs[0]}" if len(procs) == 1 else "jobs of this cluster"
            warnings.append(
                f"{which} will stay idle until such a worker connects: {'; '.join(reasons)}"
            )
    return warnings
