"""The large result files of a reply, downloaded over a few FTP sessions at once.

One session moves one file at a time, and each file's transfer starts with a few
round trips (``TYPE``, ``PASV``, ``RETR``) and ends waiting for the server's word:
a few sessions side by side keep the wire and the disk busy between files. Every
file is still checked against the SHA-256 the scheduler recorded when it arrived.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from control_node.connection import DfarmError
from control_node.fetch_writer import buffers, receive
from scheduler import protocol as p

if TYPE_CHECKING:
    import ftplib

# ftplib (and with it ssl) is imported when a download starts: a query starts without it.

#: FTP sessions at most for one reply's downloads.
SESSIONS = 3


@dataclass(frozen=True)
class Download:
    """One file of the spool to write at ``local``."""

    job_id: str
    #: The name the job knows it by (``stdout``, ``outputs/NAME``).
    name: str
    remote: str
    local: Path
    #: The SHA-256 recorded when it arrived; None for a job older than hashes, whose
    #: stdout or stderr may be missing (then it is written empty).
    expected: str | None


def download_all(grant: p.FtpGrant, downloads: list[Download], damaged: list[str]) -> None:
    """Download every file over up to :data:`SESSIONS` sessions; a file missing from
    the spool or of another hash is not written but told in ``damaged``."""
    if not downloads:
        return
    work: queue.SimpleQueue[Download] = queue.SimpleQueue()
    for item in downloads:
        work.put(item)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_session, args=(grant, work, damaged, errors), daemon=True)
        for _ in range(min(SESSIONS, len(downloads)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        from scheduler.transport.ftp import FTP_ERRORS

        if isinstance(errors[0], FTP_ERRORS):
            raise DfarmError(f"downloading results failed: {errors[0]}") from None
        raise errors[0]


def _session(
    grant: p.FtpGrant,
    work: queue.SimpleQueue[Download],
    damaged: list[str],
    errors: list[BaseException],
) -> None:
    """Take downloads off ``work`` until none is left (or another session failed)."""
    from scheduler.transport.ftp import ftp_session

    try:
        with ftp_session(grant) as ftp:
            free = buffers()
            while not errors:
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                _one(ftp, item, damaged, free)
    except BaseException as exc:  # told by download_all
        errors.append(exc)


def _one(ftp: ftplib.FTP, item: Download, damaged: list[str], free: queue.Queue[bytearray]) -> None:
    sha = download(ftp, item.remote, item.local, item.expected, free)
    if item.expected is None:
        if sha is None and item.name in ("stdout", "stderr"):
            _write(item.local, b"")  # the job printed nothing there
    elif sha is None:
        damaged.append(f"job {item.job_id}: result file {item.name} is missing from the spool")
    elif sha != item.expected:
        damaged.append(
            f"job {item.job_id}: result file {item.name} is damaged in the spool (its SHA-256"
            " is not the one recorded when it arrived)"
        )


def download(
    ftp: ftplib.FTP,
    remote: str,
    local: Path,
    expected: str | None = None,
    free: queue.Queue[bytearray] | None = None,
) -> str | None:
    """Download one file and return its SHA-256; None when the spool has no such
    file. With ``expected``, a file of another hash is not kept."""
    import ftplib

    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    try:
        with open(tmp, "wb") as f:
            sha = receive(ftp, remote, f, free)
    except ftplib.error_perm:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    if expected is not None and sha != expected:
        tmp.unlink()
    else:
        os.replace(tmp, local)
    return sha


def _write(local: Path, data: bytes) -> None:
    tmp = local.with_name(f".{local.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, local)
