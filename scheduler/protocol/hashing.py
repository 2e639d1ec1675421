"""Content hashes of staged files, computed while the bytes move.

Inputs are named by their SHA-256 everywhere (the spool, the worker cache), and
each copy is hashed in the same pass that moves it, never in a pass of its own.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

__all__ = ["HashingReader"]


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
