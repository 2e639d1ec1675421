"""Inputs whose jobs are queued while their upload still runs (cut-through).

A client uploads each large input under a temporary name (``part-<n>``) and
hashes it at the same time; the hash is known long before the upload ends, and
the jobs are queued then, naming the upload. The scheduler names the file by its
hash at once, a hard link to the file still being written, with a marker
``<sha256>.arriving`` beside it, so that workers start reading the input while
it arrives:

- a worker on another machine reads what has arrived over FTP, and reads on
  from there while the marker is present;
- a worker on the spool's file system waits for the marker to go, then links.

The marker goes when the upload ends with the declared size. An upload that
ends short, fails, or is cut by a restart loses the file and the marker, and
its cluster, still incomplete until the upload ends, is abandoned.

Calls come from two threads: the FTP server's (uploads starting and ending) and
the scheduler's (naming uploads); one lock orders them.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scheduler.submission import SHA256
from scheduler.transport.ftp import ARRIVING

#: The names under which clients upload inputs.
UPLOAD_NAME = re.compile(r"part-[0-9]{1,9}")


class ArrivalError(Exception):
    """An upload that cannot become the input it is said to be."""


@dataclass(frozen=True)
class Arrival:
    """An input named by its hash while its upload runs."""

    cluster: int
    target: Path
    size: int


class Arrivals:
    """Uploads in progress, and those of them already named by their hash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uploading: set[str] = set()
        self._named: dict[str, Arrival] = {}
        #: Called (in the FTP server's thread) with the cluster and a reason when
        #: a named upload ends without its input.
        self.on_failed: Callable[[int, str], object] = lambda cluster, why: None

    # -- the FTP server's side ---------------------------------------------

    def started(self, path: str) -> None:
        """An upload into ``path`` is starting (its file is about to open)."""
        with self._lock:
            self._uploading.add(path)

    def ended(self, path: str) -> None:
        """The upload into ``path`` ended, whole or not."""
        with self._lock:
            self._uploading.discard(path)
            arrival = self._named.pop(path, None)
            if arrival is None:
                return
            marker = marker_path(arrival.target)
            try:
                size = os.stat(arrival.target).st_size
            except OSError:
                size = -1
            if size == arrival.size:
                _remove(marker)
                return
            # The target first: a reader that still sees the marker then finds no file.
            _remove(arrival.target)
            _remove(marker)
        self.on_failed(
            arrival.cluster,
            f"the upload of input {arrival.target.name[:12]} ended after {max(size, 0)}"
            f" of {arrival.size} bytes",
        )

    # -- the scheduler's side ----------------------------------------------

    def name(self, cluster: int, folder: Path, upload: str, sha256: str, size: int) -> None:
        """Make the upload ``folder/upload`` the input ``folder/sha256`` of ``size``
        bytes, now if it has ended and as it arrives if not; raises ArrivalError."""
        if not UPLOAD_NAME.fullmatch(upload):
            raise ArrivalError(f"{upload!r} is not an upload's name")
        if not SHA256.fullmatch(sha256):
            raise ArrivalError(f"the upload {upload} is named by an invalid sha256")
        source, target = folder / upload, folder / sha256
        with self._lock:
            try:
                st = os.lstat(source)
            except FileNotFoundError:
                raise ArrivalError(f"the upload {upload} was not found") from None
            if not stat.S_ISREG(st.st_mode):
                raise ArrivalError(f"the upload {upload} is not a file")
            if os.path.lexists(target):  # the same content, uploaded twice
                os.unlink(source)
                return
            running = str(source) in self._uploading
            if st.st_size > size or (not running and st.st_size != size):
                raise ArrivalError(f"the upload {upload} has {st.st_size} bytes, expected {size}")
            if not running:
                os.replace(source, target)
                return
            # The marker before the name: whoever sees the name unmarked sees it whole.
            os.close(os.open(marker_path(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.link(source, target)
            os.unlink(source)
            self._named[str(source)] = Arrival(cluster, target, size)


def marker_path(target: Path) -> Path:
    """The marker saying that ``target`` is still arriving."""
    return target.with_name(target.name + ARRIVING)


def clear_interrupted(spool: Path) -> int:
    """Remove the inputs whose upload a restart cut: those named while they arrived
    (their markers remain) and those still under their upload's name (the grants
    that could finish them died with the scheduler); returns how many."""
    count = 0
    for marker in spool.glob(f"*/input/*{ARRIVING}"):
        _remove(marker.with_name(marker.name.removesuffix(ARRIVING)))
        _remove(marker)
        count += 1
    for folder in spool.glob("*/input"):
        count += remove_uploads(folder)
    return count


def remove_uploads(folder: Path) -> int:
    """Remove the files of ``folder`` still under an upload's name; returns how many."""
    count = 0
    for upload in folder.glob("part-*"):
        if UPLOAD_NAME.fullmatch(upload.name):
            _remove(upload)
            count += 1
    return count


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
