"""Uploading a submission's large inputs while they are hashed.

Each large input goes to the spool under a temporary name (``part-<n>``) in a
helper thread, while this thread reads it a second time to hash it. The hash is
ready long before the upload ends (SHA-256 runs several times faster than a
network copy), so the jobs are queued while the upload still runs: the
scheduler names the upload by its hash and workers start reading it as it
arrives (see ``scheduler.arrivals``). The submission completes once every
upload has ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Protocol

from scheduler import protocol as p
from scheduler.transport.ftp import FTP_ERRORS, ftp_session

BLOCK = 1 << 20
#: Where each input went: its local path -> (sha256, size).
Digests = dict[str, tuple[str, int]]


class UploadError(Exception):
    """An upload failed; the message says which file and why."""


class LargeInputs(Protocol):
    """Large inputs stored for a cluster, or on their way."""

    #: local path -> (sha256, size)
    digests: Digests
    #: sha256 -> the name of its upload, for the scheduler to name by its hash
    uploads: dict[str, str]

    def ended(self) -> bool:
        """Whether every upload has ended (well or not)."""
        ...

    def finish(self) -> None:
        """Wait for the uploads to end; raise :class:`UploadError` if one failed."""
        ...

    def cancel(self) -> None:
        """Stop the uploads (the submission failed) and wait for them to end."""
        ...


@dataclass
class Stored:
    """Large inputs already stored under their hash."""

    digests: Digests
    uploads: dict[str, str] = field(default_factory=dict)

    def ended(self) -> bool:
        return True

    def finish(self) -> None:
        pass

    def cancel(self) -> None:
        pass


class Upload:
    """Large inputs uploading in a helper thread while they are hashed here."""

    def __init__(self, grant: p.FtpGrant, paths: list[str]):
        self.digests: Digests = {}
        self.uploads: dict[str, str] = {}
        self._paths = paths
        self._started = [threading.Event() for _ in paths]
        self._error: str | None = None
        #: The data connection of the running upload, for :meth:`cancel`.
        self._conn: socket.socket | None = None
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._send, args=(grant,), name="upload", daemon=True
        )

    def run(self) -> Upload:
        """Start the uploads and hash each file; returns once every hash is known
        and every upload has begun (so the scheduler can name it). Raises
        :class:`UploadError`."""
        if not self._paths:
            return self  # no FTP session at all
        self._thread.start()
        try:
            self._hash_all()
        except BaseException:
            self.cancel()
            raise
        return self

    def _hash_all(self) -> None:
        for number, path in enumerate(self._paths):
            sha, size = _hash(path)
            # An upload begins once the one before it ends: several large inputs
            # overlap only the last one's transfer with the jobs' start.
            while not self._started[number].wait(0.5):
                if not self._thread.is_alive():
                    break
            if not self._started[number].is_set():
                self.finish()  # raises: the thread ended before this upload began
                raise UploadError("the upload ended early")
            self.digests[path] = (sha, size)
            self.uploads.setdefault(sha, f"part-{number}")

    def ended(self) -> bool:
        return not self._thread.is_alive()

    def finish(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise UploadError(self._error)

    def cancel(self) -> None:
        self._cancelled = True
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # the sending thread fails at once
        with contextlib.suppress(UploadError):
            self.finish()

    def _send(self, grant: p.FtpGrant) -> None:
        path = "the inputs"
        try:
            with ftp_session(grant) as ftp:
                ftp.voidcmd("TYPE I")
                for number, path in enumerate(self._paths):
                    if self._cancelled:
                        raise UploadError("the submission failed")
                    with open(path, "rb") as f, ftp.transfercmd(f"STOR part-{number}") as conn:
                        self._conn = conn
                        self._started[number].set()
                        conn.sendfile(f)  # through TLS, sendfile falls back to send
                        if isinstance(conn, ssl.SSLSocket):
                            conn.unwrap()  # a clean end of TLS, as ftplib's storbinary does
                    ftp.voidresp()
        except UploadError as exc:
            self._error = str(exc)
        except OSError as exc:
            self._error = f"cannot upload {path}: {exc.strerror or exc}"
        except FTP_ERRORS as exc:
            self._error = f"uploading {path} failed: {exc}"


def _hash(path: str) -> tuple[str, int]:
    """The sha256 and size of a file, read in blocks."""
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            while block := f.read(4 * BLOCK):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise UploadError(f"cannot read input {path}: {exc.strerror}") from None
    return digest.hexdigest(), size
