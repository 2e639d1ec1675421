"""A job's total run time, from its events: every run, retries and lost attempts included."""

from __future__ import annotations

from scheduler.protocol import JobEvent

#: Events that end a run.
RUN_ENDS = frozenset({"terminated", "retrying", "held", "evicted", "removed"})


def total_run_time(events: list[JobEvent]) -> float:
    """Seconds between each ``executing`` event and the event that ended that run."""
    total, started = 0.0, None
    for event in events:
        if event.event == "executing":
            started = event.time
        elif event.event in RUN_ENDS and started is not None:
            total += event.time - started
            started = None
    return total


def run_time_so_far(events: list[JobEvent], now: float) -> float | None:
    """:func:`total_run_time`, counting a run still going on up to ``now``; None for a
    job that never started."""
    if not any(event.event == "executing" for event in events):
        return None
    total = total_run_time(events)
    last = next((e for e in reversed(events) if e.event in RUN_ENDS | {"executing"}), None)
    if last is not None and last.event == "executing":
        total += max(0.0, now - last.time)
    return total
