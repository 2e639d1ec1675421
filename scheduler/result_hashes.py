"""The SHA-256 of each large result file, recorded when the scheduler takes a job's
result and checked whenever the file is delivered.

A result in the spool may be damaged or lost after it arrived (a disk error, an
operator's slip, a worker with the spool's file system that should not have
written there). Its hash is recorded in the database when the job completes,
computed in a thread (the files are of the user's size); ``dfetch`` receives the
hashes with the download grant and checks each file as it downloads it, and the
web dashboard checks a file before sending it. A mismatch, or a file that is
gone, is an error naming the file, never a silent delivery.

With each hash, the version of the file it was taken from is recorded (device,
inode, size, modification and change times in nanoseconds): a file still of that
version need not be hashed again to be vouched for (:mod:`scheduler.result_fds`),
before a restart of the scheduler or after it. Any write to the file, a truncation,
or another file in its place changes one of them: where the kernel stamps times a
clock tick at a time, a write in the same tick as the version's change time would
not, so a file changed less than :data:`SETTLE_NS` before it is hashed is first left
to settle that long (a fraction of the hashing itself).

Small results travel inside messages and are kept in SQLite itself.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import NamedTuple

#: Bytes read at a time while hashing.
BLOCK = 1 << 20
#: Nanoseconds a file's change time must lie in the past for its version to tell
#: any later write (more than a clock tick, 10 ms at most on Linux).
SETTLE_NS = 20_000_000
#: Largest value an SQLite integer holds.
_MOST = (1 << 63) - 1


class FileVersion(NamedTuple):
    """What tells one version of a file from another without reading it."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileVersion:
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                   status.st_ctime_ns)  # fmt: skip

    def storable(self) -> bool:
        """Whether every field fits an SQLite integer (an inode may not, on some file
        systems: such a version is not recorded, and the file is hashed when read)."""
        return all(0 <= value <= _MOST for value in self)


class FileHash(NamedTuple):
    """A result file's SHA-256 and size, and the version they were taken from."""

    sha256: str
    size: int
    version: FileVersion | None = None


def hash_results(job_dir: Path) -> dict[str, FileHash]:
    """SHA-256, size and version of every result file in ``job_dir`` (``stdout``,
    ``stderr``, ``outputs/NAME``), by name; links and the folders of attempts are left
    out."""
    found: dict[str, FileHash] = {}
    for folder in (job_dir, job_dir / "outputs"):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # an attempt's folder, a file being written
            digest = _hash(Path(entry.path))
            if digest is not None:
                name = entry.name if folder == job_dir else f"outputs/{entry.name}"
                found[name] = digest
    return found


def file_hash(path: Path) -> tuple[str, int] | None:
    """SHA-256 and size of the plain file ``path`` (None: not one, or unreadable)."""
    found = _hash(path, versioned=False)
    return None if found is None else (found.sha256, found.size)


def _hash(path: Path, versioned: bool = True) -> FileHash | None:
    """:func:`file_hash` and, if ``versioned``, the version hashed (None if the file
    changed while it was read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    digest = hashlib.sha256()
    size = 0
    try:
        now, before = time.time_ns(), os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None
        young = SETTLE_NS - (now - before.st_ctime_ns)
        if versioned and 0 < young <= SETTLE_NS:
            time.sleep(young / 1e9)
            now, before = time.time_ns(), os.fstat(fd)
        while block := os.read(fd, BLOCK):
            digest.update(block)
            size += len(block)
        version: FileVersion | None = FileVersion.of(before)
        if version != FileVersion.of(os.fstat(fd)) or size != before.st_size:
            version = None  # written to while it was read
        elif not versioned or now - before.st_ctime_ns < SETTLE_NS:
            version = None  # not settled (a change time ahead of the clock)
    except OSError:
        return None
    finally:
        os.close(fd)
    return FileHash(
        digest.hexdigest(), size, version if version is not None and version.storable() else None
    )


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
