"""Moving a job's files between the worker and the scheduler's spool over FTP.

Inputs are cached by content hash under ``<work>/cache``: a cluster of 10,000
procs fetches its executable once per worker. Every download is hashed as it
arrives and a mismatch is refused, so nobody can plant content in the cache
under another file's hash.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from scheduler.protocol import FtpGrant, InputFile, unpack_bytes

BLOCK = 1 << 20


class TransferError(Exception):
    """A file could not be moved; the message says which and why."""


@contextlib.contextmanager
def ftp_session(grant: FtpGrant, timeout: float = 60) -> Iterator[ftplib.FTP]:
    ftp = ftplib.FTP()
    try:
        ftp.connect(grant.host, grant.port, timeout=timeout)
        ftp.login(grant.user, grant.password)
        yield ftp
    except (OSError, EOFError, ftplib.Error) as exc:
        raise TransferError(f"FTP to {grant.host}:{grant.port} failed: {exc}") from None
    finally:
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()
        ftp.close()


class InputCache:
    """Content-addressed store of staged inputs on one worker."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, sha256: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def fetch(self, ftp: ftplib.FTP, remote: str, wanted: InputFile) -> Path:
        """The cached copy of ``wanted``, downloading ``remote`` if it is not cached."""
        target = self.path(wanted.sha256)
        with self._lock(wanted.sha256):
            if target.exists():
                return target
            tmp = target.with_suffix(f".part{threading.get_ident()}")
            digest = hashlib.sha256()
            with open(tmp, "wb") as out:

                def write(block: bytes) -> None:
                    digest.update(block)
                    out.write(block)

                try:
                    ftp.retrbinary(f"RETR {remote}", write, blocksize=BLOCK)
                except (OSError, EOFError, ftplib.Error) as exc:
                    tmp.unlink(missing_ok=True)
                    raise TransferError(f"cannot fetch input {wanted.name!r}: {exc}") from None
            if digest.hexdigest() != wanted.sha256:
                tmp.unlink(missing_ok=True)
                raise TransferError(f"input {wanted.name!r} does not match its hash")
            tmp.chmod(0o555)
            tmp.replace(target)
            return target

    def add_inline(self, files: dict[str, str]) -> None:
        """Cache inputs that arrived inside the message, checking each hash."""
        for sha, text in files.items():
            target = self.path(sha)
            if target.exists():
                continue
            data = unpack_bytes(text)
            if hashlib.sha256(data).hexdigest() != sha:
                raise TransferError("an inline input does not match its hash")
            with self._lock(sha):
                tmp = target.with_suffix(f".part{threading.get_ident()}")
                tmp.write_bytes(data)
                tmp.chmod(0o555)
                tmp.replace(target)

    def missing(self, inputs: list[InputFile]) -> list[InputFile]:
        return [item for item in inputs if not self.path(item.sha256).exists()]

    def download(self, ftp: ftplib.FTP, inputs: list[InputFile]) -> None:
        for item in inputs:
            self.fetch(ftp, f"input/{item.sha256}", item)

    def link_into(self, inputs: list[InputFile], sandbox: Path) -> None:
        """Put every input into ``sandbox`` (hard links to the cache, read-only)."""
        for item in inputs:
            cached, dest = self.path(item.sha256), sandbox / item.name
            try:
                os.link(cached, dest)
            except OSError:  # another file system: copy instead
                shutil.copy2(cached, dest)


def upload(ftp: ftplib.FTP, local: Path, remote: str) -> None:
    try:
        with open(local, "rb") as f:
            ftp.storbinary(f"STOR {remote}", f, blocksize=BLOCK)
    except (OSError, EOFError, ftplib.Error) as exc:
        raise TransferError(f"cannot upload {local.name!r}: {exc}") from None
