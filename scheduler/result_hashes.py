"""The SHA-256 of each large result file, recorded when the scheduler takes a job's
result and checked whenever the file is delivered.

A result in the spool may be damaged or lost after it arrived (a disk error, an
operator's slip, a worker with the spool's file system that should not have
written there). Its hash is recorded in the database when the job completes,
computed in a thread (the files are of the user's size); ``dfetch`` receives the
hashes with the download grant and checks each file as it downloads it, and the
web dashboard checks a file before sending it. A mismatch, or a file that is
gone, is an error naming the file, never a silent delivery.

Small results travel inside messages and are kept in SQLite itself.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

#: Bytes read at a time while hashing.
BLOCK = 1 << 20


#: Told of each file hashed: its status before it was read, and its SHA-256.
OnHashed = Callable[[os.stat_result, str], None]


def hash_results(job_dir: Path, on_hashed: OnHashed | None = None) -> dict[str, tuple[str, int]]:
    """SHA-256 and size of every result file in ``job_dir`` (``stdout``, ``stderr``,
    ``outputs/NAME``), by name; links and the folders of attempts are left out."""
    found: dict[str, tuple[str, int]] = {}
    for folder in (job_dir, job_dir / "outputs"):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # an attempt's folder, a file being written
            digest = file_hash(Path(entry.path), on_hashed)
            if digest is not None:
                name = entry.name if folder == job_dir else f"outputs/{entry.name}"
                found[name] = digest
    return found


def file_hash(path: Path, on_hashed: OnHashed | None = None) -> tuple[str, int] | None:
    """SHA-256 and size of the plain file ``path`` (None: not one, or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    digest = hashlib.sha256()
    size = 0
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None
        while block := os.read(fd, BLOCK):
            digest.update(block)
            size += len(block)
    except OSError:
        return None
    finally:
        os.close(fd)
    if on_hashed is not None:
        on_hashed(before, digest.hexdigest())
    return digest.hexdigest(), size


def check(path: Path, expected: tuple[str, int], name: str) -> None:
    """Raise :class:`ResultDamaged` unless ``path`` has the recorded hash and size."""
    found = file_hash(path)
    if found is None:
        raise ResultDamaged(f"result file {name} is missing from the spool")
    if found != expected:
        raise ResultDamaged(
            f"result file {name} is damaged in the spool: it no longer has the SHA-256 "
            "recorded when it arrived"
        )


class ResultDamaged(Exception):
    """A stored result that is not what arrived."""
