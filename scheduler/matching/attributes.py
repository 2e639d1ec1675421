"""The scheduler's side of matchmaking: worker attributes and what workers offer."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.dispatch import Slots
from scheduler.fairshare import Shape, shape_of
from scheduler.protocol import Capacity, JobSpec, Value, WorkerMetrics, machine_ad, never_reasons


def slot_attributes(slots: Slots, metrics: WorkerMetrics | None) -> dict[str, Value]:
    """The attributes ``requirements`` see on this worker."""
    return machine_ad(slots.name, slots.worker_id, slots.cpus, slots.memory_mb, slots.gpus, metrics)


def capacities(workers: Iterable[Slots]) -> list[Capacity]:
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
