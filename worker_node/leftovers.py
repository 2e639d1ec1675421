"""Jobs a previous run of this worker left running.

A worker killed with ``kill -9`` cannot stop its jobs (each runs in a session of
its own), and the scheduler runs them again elsewhere. When the worker starts
again, it kills what is left of them, found as HTCondor tracks a job's processes:
by a variable in their environment, here ``DFARM_SCRATCH_DIR`` below this
worker's ``jobs`` directory, which every process of a job inherits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


def kill_leftovers(jobs_dir: Path) -> int:
    """Kill the process groups of jobs from ``jobs_dir``; returns how many were found."""
    prefix = str(jobs_dir) + os.sep
    groups = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get("DFARM_SCRATCH_DIR", "").startswith(prefix):
                groups.add(os.getpgid(proc.pid))
    groups.discard(os.getpgid(0))  # never this worker itself
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    if groups:
        log.info("killed %d job(s) left running by an earlier run of this worker", len(groups))
    return len(groups)
