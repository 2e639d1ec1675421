"""Writing a downloaded file while the next part of it arrives.

The socket, the disk and SHA-256 each release the GIL on large blocks: a thread that
writes and hashes each block as the caller receives the next makes a download take
about as long as the slowest of the three, not their sum. The blocks are a few
buffers received into in turn, not fresh ones: copying each block into a fresh
4 MiB buffer (a thousand new pages) took 13% of a fetch's samples.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import ftplib

#: Bytes received before a block is handed on to be written and hashed.
BLOCK = 4 << 20
#: Blocks in flight: one received into, one written, one waiting between them.
BLOCKS = 3
#: Bytes written at a time: fresh files grew several times slower by larger writes
#: on the file systems measured (bench/results_fetch.py).
WRITE_BLOCK = 1 << 20


class HashingWriter:
    """Writes blocks to ``f`` and hashes them, in a thread of its own; :meth:`close`
    waits for the last and returns the SHA-256 (or raises what the writing raised).
    :meth:`buffer` gives the next buffer to fill, :meth:`write` hands it over; the
    buffers are ``free``'s (from :func:`buffers`, kept for the next file)."""

    def __init__(self, f: BinaryIO, free: queue.Queue[bytearray] | None = None):
        self._file = f
        self._free = buffers() if free is None else free
        self._full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fetch-writer", daemon=True)
        self._thread.start()

    def buffer(self) -> bytearray:
        """A buffer of :data:`BLOCK` bytes, free to fill (waits for one)."""
        if self._error is not None:
            raise self._error
        return self._free.get()

    def write(self, buffer: bytearray, length: int) -> None:
        """Write and hash the first ``length`` bytes of ``buffer`` (from :meth:`buffer`),
        which comes back free once done."""
        if length:
            self._full.put((buffer, length))
        else:
            self._free.put(buffer)

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, length = item
            if self._error is None:
                try:
                    view = memoryview(buffer)[:length]
                    for at in range(0, length, WRITE_BLOCK):
                        self._file.write(view[at : at + WRITE_BLOCK])
                    self._digest.update(view)
                except BaseException as exc:  # told to the caller
                    self._error = exc
            self._free.put(buffer)  # also after an error, so that the caller never blocks

    def close(self) -> str:
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()


def buffers() -> queue.Queue[bytearray]:
    """The buffers one download at a time receives into."""
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(BLOCKS):
        free.put(bytearray(BLOCK))
    return free


def receive(
    ftp: ftplib.FTP, remote: str, f: BinaryIO, free: queue.Queue[bytearray] | None = None
) -> str:
    """Download ``remote`` into ``f`` through the buffers ``free`` (new ones when
    None); its SHA-256. Raises ``ftplib.error_perm`` when the spool has no such file."""
    writer = HashingWriter(f, free)
    try:
        ftp.voidcmd("TYPE I")  # binary: ASCII mode would rewrite line endings
        with ftp.transfercmd(f"RETR {remote}") as conn:
            while True:
                buffer = writer.buffer()
                view, filled = memoryview(buffer), 0
                while filled < BLOCK and (got := conn.recv_into(view[filled:])):
                    filled += got
                writer.write(buffer, filled)
                if filled < BLOCK:
                    break
        ftp.voidresp()
    finally:
        sha = writer.close()
    return sha
