"""Where a finished job's result files are: small ones in SQLite, large ones in the spool.

``dtail`` on a finished job, ``dfetch``'s inline files and the web dashboard's downloads
all find a file through :func:`result_file`.
"""

from __future__ import annotations

import os
from pathlib import Path

from scheduler.job_records import Job
from scheduler.protocol import JobState
from scheduler.staging import Spool
from scheduler.store import Store
from scheduler.submission import safe_result_name


def result_file(
    store: Store, spool: Spool, job: Job, name: str, small: dict[str, bytes] | None = None
) -> bytes | Path | None:
    """The result file ``name`` (``stdout``, ``stderr`` or ``outputs/NAME``) of a
    completed job: its bytes when small, its spool path when large, None when there is
    none (not completed, never written, a name that is not a result, or cleaned).
    ``small`` is the job's small files (``store.results.files``) when the caller has loaded
    them already, to look up several files with one read."""
    if job.state is not JobState.COMPLETED or not safe_result_name(name):
        return None
    if small is None:
        small = store.results.files(job.cluster, job.proc)
    if name in small:
        return small[name]
    path = spool.job_dir(job.cluster, job.proc) / name
    # A worker writes the spool over FTP: never follow a link it could have left.
    if path.is_symlink() or not path.is_file() or os.path.islink(path.parent):
        return None
    return path


def read_range(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of the spool file ``path`` from ``offset`` on, and its
    size; nothing (and size 0) if it cannot be read. Only those bytes are read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b"", 0
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, max(0, min(limit, size - offset)), offset), size
    except OSError:
        return b"", 0
    finally:
        os.close(fd)
