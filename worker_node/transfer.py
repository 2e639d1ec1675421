"""Moving a job's files between the worker and the scheduler's spool over FTP.

Inputs are cached by content hash under ``<work>/cache/<owner>/``: a cluster of
10,000 procs fetches its executable once per worker. Every download is hashed as
it arrives and a mismatch is refused, so nobody can plant content in the cache
under another file's hash. Each owner has a cache of their own, a folder only
the worker may enter (0700): a job reads its inputs through the links in its own
sandbox, never through the cache, and two owners never share an input's inode,
even for the same content (container images excepted: read-only, kept once per
worker, see :mod:`worker_node.containers`).
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from scheduler.protocol import FtpGrant, InputFile, unpack_bytes
from scheduler.transport.ftp import ARRIVAL_POLL, ARRIVAL_STALL, ARRIVING, FTP_ERRORS, retrieve
from scheduler.transport.ftp import ftp_session as grant_session
from scheduler.transport.hashing import HashingWriter

BLOCK = 1 << 20
#: Reading an input still being uploaded: when less than this came in a request,
#: the reader pauses (ARRIVAL_POLL) before the next.
CATCH_UP = 4 << 20


class TransferError(Exception):
    """A file could not be moved; the message says which and why."""


@contextlib.contextmanager
def ftp_session(grant: FtpGrant) -> Iterator[ftplib.FTP]:
    """An FTP session for a job's grant; any FTP failure becomes a TransferError."""
    try:
        with grant_session(grant) as ftp:
            yield ftp
    except FTP_ERRORS as exc:
        raise TransferError(f"FTP to {grant.host}:{grant.port} failed: {exc}") from None


#: The mode of the caches' folders: the worker's alone.
PRIVATE = 0o700


class InputCache:
    """Content-addressed store of staged inputs on one worker."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
        root.chmod(PRIVATE)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        #: Inode of each cached file by hash: knowing what is cached costs no stat,
        #: and a sandbox file still linked to its cache entry is an unchanged input.
        self.inodes: dict[str, int] = {}
        for entry in os.scandir(root):
            if entry.is_file() and ".part" not in entry.name:
                self.inodes[entry.name] = entry.inode()

    def _lock(self, sha256: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def fetch(self, ftp: ftplib.FTP, remote: str, wanted: InputFile) -> Path:
        """The cached copy of ``wanted``, downloading ``remote`` if it is not cached."""
        target = self.path(wanted.sha256)
        with self._lock(wanted.sha256):
            if wanted.sha256 in self.inodes:
                return target
            tmp = target.with_suffix(f".part{threading.get_ident()}")
            with open(tmp, "wb") as out, HashingWriter(out.write) as sink:
                try:
                    _retrieve_arriving(ftp, remote, sink, wanted)
                except (TransferError, *FTP_ERRORS) as exc:
                    tmp.unlink(missing_ok=True)
                    raise TransferError(f"cannot fetch input {wanted.name!r}: {exc}") from None
            if sink.digest.hexdigest() != wanted.sha256:
                tmp.unlink(missing_ok=True)
                raise TransferError(f"input {wanted.name!r} does not match its hash")
            self._install(tmp, wanted.sha256)
            return target

    def _install(self, tmp: Path, sha256: str) -> None:
        tmp.chmod(0o555)
        inode = tmp.stat().st_ino
        tmp.replace(self.path(sha256))
        # Known as cached only once it is in place: a job staged in another thread
        # links it without taking the lock.
        self.inodes[sha256] = inode

    def add_inline(self, files: dict[str, str]) -> None:
        """Cache inputs that arrived inside the message, checking each hash."""
        for sha, text in files.items():
            if sha in self.inodes:
                continue
            data = unpack_bytes(text)
            if hashlib.sha256(data).hexdigest() != sha:
                raise TransferError("an inline input does not match its hash")
            with self._lock(sha):
                tmp = self.path(sha).with_suffix(f".part{threading.get_ident()}")
                tmp.write_bytes(data)
                self._install(tmp, sha)

    def missing(self, inputs: list[InputFile]) -> list[InputFile]:
        return [item for item in inputs if item.sha256 not in self.inodes]

    def download(self, ftp: ftplib.FTP, inputs: list[InputFile]) -> None:
        for item in inputs:
            self.fetch(ftp, f"input/{item.sha256}", item)

    def forget(self, sha256: str) -> None:
        """Remove an entry (a sandbox linked to it keeps its file)."""
        with self._lock(sha256):
            self.inodes.pop(sha256, None)
            self.path(sha256).unlink(missing_ok=True)

    def entry(self, sha256: str) -> tuple[Path, int]:
        """A cached input's path and inode (it must be cached)."""
        return self.path(sha256), self.inodes[sha256]


class OwnerCaches:
    """The input caches of a worker, one per owner, below ``root``."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
        root.chmod(PRIVATE)
        self._caches: dict[str, InputCache] = {}
        self._guard = threading.Lock()
        for entry in os.scandir(root):
            if not entry.is_dir(follow_symlinks=False):
                # An entry of the single cache every owner shared before.
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def for_owner(self, owner: str) -> InputCache:
        """``owner``'s cache (its folder is named by a hash of the name, which
        may hold any character)."""
        with self._guard:
            cache = self._caches.get(owner)
            if cache is None:
                folder = self.root / hashlib.sha256(owner.encode()).hexdigest()[:32]
                cache = self._caches[owner] = InputCache(folder)
            return cache


def _retrieve_arriving(
    ftp: ftplib.FTP, remote: str, sink: HashingWriter, wanted: InputFile
) -> None:
    """Download ``remote``, reading on while it is still being uploaded (its
    marker is there) until it has ``wanted.size`` bytes."""
    got = retrieve(ftp, remote, sink)
    idle_since = time.monotonic()
    while got < wanted.size:
        arriving = _exists(ftp, remote + ARRIVING)
        more = retrieve(ftp, remote, sink, got)  # after the look: whole if it was gone
        got += more
        if got >= wanted.size:
            break
        if not arriving:
            raise TransferError(f"its upload ended after {got} of {wanted.size} bytes")
        now = time.monotonic()
        if more:
            idle_since = now
        elif now - idle_since > ARRIVAL_STALL:
            raise TransferError(f"its upload made no progress for {ARRIVAL_STALL:.0f} s")
        if more < CATCH_UP:
            time.sleep(ARRIVAL_POLL)  # let a few MiB arrive before the next request


def _exists(ftp: ftplib.FTP, remote: str) -> bool:
    try:
        ftp.size(remote)
    except ftplib.error_perm:
        return False
    return True


def upload(ftp: ftplib.FTP, source: BinaryIO, remote: str) -> None:
    """Upload an open file from its current position."""
    try:
        ftp.storbinary(f"STOR {remote}", source, blocksize=BLOCK)
    except FTP_ERRORS as exc:
        raise TransferError(f"cannot upload {remote!r}: {exc}") from None
