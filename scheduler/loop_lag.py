"""The event loop's lag: how late a callback runs after the time it was scheduled for.

A timer every ``interval`` seconds notes how late it ran; the last ``window`` lags give
the maximum and the 99th percentile, which the scheduler logs every ``report_every``
seconds and shows in ``/api/overview``. One lag over ``threshold`` is logged at once: a
handler held the loop and every connection waited. The cost is one timer callback per
interval (about 20 a second), and a sort of the window when someone asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

INTERVAL = 0.05
WINDOW = 1200  # one minute of lags at INTERVAL
THRESHOLD = 0.1
REPORT_EVERY = 60.0


@dataclass(frozen=True)
class LagStats:
    """The lags in the window, in seconds."""

    samples: int
    p99: float
    max: float
    #: The seconds the window spans.
    span: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "samples": self.samples,
            "p99_ms": round(self.p99 * 1000, 2),
            "max_ms": round(self.max * 1000, 2),
            "window_s": round(self.span, 1),
        }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


class LoopLag:
    """A monitor of the running loop's lag; :meth:`start` it on the loop to watch."""

    def __init__(
        self,
        interval: float = INTERVAL,
        window: int = WINDOW,
        threshold: float = THRESHOLD,
        report_every: float = REPORT_EVERY,
        on_spike: Callable[[float], None] | None = None,
    ):
        self.interval, self.threshold, self.report_every = interval, threshold, report_every
        self.lags: deque[float] = deque(maxlen=window)
        #: Called with each lag over the threshold (default: a warning in the log).
        self.on_spike = on_spike or self._warn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._next_report = 0.0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        now = self._loop.time()
        self._next_report = now + self.report_every
        self._schedule(now)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def record(self, lag: float) -> None:
        """Note one lag (seconds)."""
        self.lags.append(lag)
        if lag > self.threshold:
            self.on_spike(lag)

    def stats(self) -> LagStats:
        lags = list(self.lags)
        return LagStats(
            samples=len(lags),
            p99=percentile(lags, 0.99),
            max=max(lags, default=0.0),
            span=len(lags) * self.interval,
        )

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        # The loop may run a timer up to its clock's resolution early: no lag then.
        self.record(max(0.0, now - self._due))
        if now >= self._next_report:
            self._next_report = now + self.report_every
            stats = self.stats()
            log.info(
                "loop lag over the last %.0f s: p99 %.1f ms, max %.1f ms",
                stats.span, stats.p99 * 1000, stats.max * 1000,
            )  # fmt: skip
        self._schedule(now)

    def _warn(self, lag: float) -> None:
        log.warning(
            "loop lag: a callback ran %.0f ms late (over %.0f ms): the loop was held",
            lag * 1000,
            self.threshold * 1000,
        )
