"""Each worker's metrics over the last hour, sampled from its heartbeats, for the
small charts of the worker page. Kept in memory only: a restarted scheduler starts
a new hour."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from scheduler import protocol as p

WINDOW = 3600.0
#: What each chart shows: title, unit and how to read it from a worker's record.
SERIES: dict[str, tuple[str, str, Callable[[p.WorkerInfo], float]]] = {
    "load": (
        "load average (1 min)",
        "",
        lambda w: w.metrics.load_avg[0] if w.metrics.load_avg else 0,
    ),
    "slots_used": ("slots used", "", lambda w: w.slots_used),
    "cpus_used": ("cores requested by jobs", "", lambda w: w.cpus_used),
    "memory_available_mb": ("RAM available", "MB", lambda w: w.metrics.memory_available_mb),
}
WIDTH, HEIGHT = 240, 60


class MetricsHistory:
    """Samples of every worker seen in the last hour, by worker name."""

    def __init__(self, interval: float, clock: Callable[[], float]):
        self.interval = max(1.0, interval)
        #: The scheduler's clock: samples are stamped, and charts drawn, by it.
        self.clock = clock
        self._samples: dict[str, deque[tuple[float, dict[str, float]]]] = {}

    def record(self, workers: list[p.WorkerInfo], now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for worker in workers:
            samples = self._samples.setdefault(worker.name, deque())
            samples.append((now, {key: float(get(worker)) for key, (_, _, get) in SERIES.items()}))
        for name in list(self._samples):
            samples = self._samples[name]
            while samples and samples[0][0] < now - WINDOW:
                samples.popleft()
            if not samples:
                del self._samples[name]

    async def run(self, read: Callable[[], list[p.WorkerInfo]]) -> None:
        while True:
            self.record(read())
            await asyncio.sleep(self.interval)

    def charts(self, name: str, now: float | None = None) -> list[dict[str, Any]]:
        """One chart per series: title, last value, range, and SVG polyline points
        (time runs over the last hour, left to right)."""
        now = self.clock() if now is None else now
        samples = list(self._samples.get(name, ()))
        charts = []
        for key, (title, unit, _) in SERIES.items():
            values = [(t, v[key]) for t, v in samples]
            top = max((v for _, v in values), default=0.0)
            top = top if top > 0 else 1.0
            points = " ".join(
                f"{WIDTH * (1 - (now - t) / WINDOW):.1f},{HEIGHT * (1 - v / top):.1f}"
                for t, v in values
            )
            charts.append({
                "key": key, "title": title, "unit": unit, "max": top,
                "last": values[-1][1] if values else None, "points": points,
                "samples": len(values),
            })  # fmt: skip
        return charts
