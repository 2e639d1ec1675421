"""Content hashes of staged files, computed while the bytes move.

Inputs are named by their SHA-256 everywhere (the spool, the worker cache). A
worker hashes each download in the pass that moves it. A client hashes a large
upload in a pass of its own that runs alongside the transfer and ends long
before it, so that the jobs can be queued early (``control_node.upload``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

__all__ = ["HashingReader", "HashingWriter"]

#: Blocks from this size on are hashed in a helper thread while they are written.
PARALLEL_MIN = 1 << 20


class HashingReader:
    """A file wrapper that hashes what is read through it (for uploads)."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.digest.update(block)
        self.size += len(block)
        return block


class HashingWriter:
    """Writes blocks through ``write`` and hashes them (for downloads).

    A large block is hashed in a helper thread while it is written: ``hashlib`` and
    file writes both release the GIL, so a download that writes as fast as the disk
    takes it spends no time of its own on the hash. Use as a context manager.
    """

    def __init__(self, write: Callable[[memoryview], object]):
        self._write = write
        self.digest = hashlib.sha256()
        self._helper: ThreadPoolExecutor | None = None

    def __call__(self, block: memoryview) -> None:
        if len(block) < PARALLEL_MIN:
            self.digest.update(block)
            self._write(block)
            return
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="hash")
        hashed = self._helper.submit(self.digest.update, block)
        try:
            self._write(block)
        finally:
            hashed.result()  # the caller reuses the block once this returns

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._helper is not None:
            self._helper.shutdown()
