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
