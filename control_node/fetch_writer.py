"""Writing a downloaded file while the next part of it arrives.

The socket, the disk and SHA-256 each release the GIL on large blocks: a thread that
writes and hashes each block as the caller receives the next makes a download take
about as long as the slowest of the three, not their sum.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import BinaryIO

#: Bytes written at a time: fresh files grew several times slower by larger writes
#: on the file systems measured (bench/results_fetch.py).
WRITE_BLOCK = 1 << 20


class HashingWriter:
    """Writes blocks to ``f`` and hashes them, in a thread of its own; :meth:`close`
    waits for the last and returns the SHA-256 (or raises what the writing raised)."""

    def __init__(self, f: BinaryIO):
        self._file = f
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fetch-writer", daemon=True)
        self._thread.start()

    def write(self, block: memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._blocks.put(bytes(block))  # the caller reuses its buffer

    def _run(self) -> None:
        while (data := self._blocks.get()) is not None:
            if self._error is not None:
                continue  # drained, so that the caller never blocks
            try:
                view = memoryview(data)
                for at in range(0, len(data), WRITE_BLOCK):
                    self._file.write(view[at : at + WRITE_BLOCK])
                self._digest.update(data)
            except BaseException as exc:  # told to the caller
                self._error = exc

    def close(self) -> str:
        self._blocks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()
