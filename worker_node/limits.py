"""Enforcing a job's limits while it runs: memory (``request_memory``, measured with
psutil over the job's whole process tree) and wall time (``allowed_job_duration``).

A job over a limit is killed, and the reason (which limit, and by how much) becomes
its hold reason. Jobs without limits cost nothing: no thread is started for them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from worker_node.runner import Attempt

#: Seconds between two measurements of a job's memory.
INTERVAL = 0.25


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def check(attempt: Attempt, started: float, now: float) -> str | None:
    """The reason ``attempt`` must stop, or None while it is within its limits."""
    spec = attempt.msg.spec
    if spec.allowed_job_duration is not None and now - started > spec.allowed_job_duration:
        return (
            f"wall-time limit exceeded: ran {now - started:.0f} s, more than"
            f" allowed_job_duration = {spec.allowed_job_duration} s"
        )
    if spec.request_memory is not None and attempt.process is not None:
        used = attempt.memory_mb()
        attempt.peak_memory_mb = max(attempt.peak_memory_mb, used)
        if used > spec.request_memory:
            return (
                f"memory limit exceeded: used {used:.0f} MB, {used - spec.request_memory:.0f} MB"
                f" over request_memory = {spec.request_memory} MB"
            )
    return None


@contextlib.contextmanager
def watch_limits(attempt: Attempt, started: float) -> Iterator[None]:
    """While the body waits for the job, kill it if it goes over a limit."""
    spec = attempt.msg.spec
    if spec.request_memory is None and spec.allowed_job_duration is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(INTERVAL):
            reason = check(attempt, started, time.monotonic())
            if reason is not None:
                attempt.limit_exceeded = reason
                attempt.kill(reason)
                return

    thread = threading.Thread(target=watch, name=f"limits-{attempt.key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
