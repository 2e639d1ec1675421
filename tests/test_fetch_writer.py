"""Writing and hashing downloaded blocks through a few reused buffers."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from control_node.fetch_writer import BLOCKS, HashingWriter, buffers


def test_blocks_are_written_and_hashed_in_order_and_the_buffers_come_back() -> None:
    free = buffers()
    data = os.urandom(3 * 1024 * 1024 + 17)
    for _ in range(2):  # a second file through the same buffers
        out = io.BytesIO()
        writer = HashingWriter(out, free)
        for at in range(0, len(data), 1000_000):
            block = data[at : at + 1000_000]
            buffer = writer.buffer()
            buffer[: len(block)] = block
            writer.write(buffer, len(block))
        writer.write(writer.buffer(), 0)  # the end of a download: nothing received
        assert writer.close() == hashlib.sha256(data).hexdigest()
        assert out.getvalue() == data
        assert free.qsize() == BLOCKS


def test_a_failed_write_is_raised_and_never_blocks_the_receiver() -> None:
    class Full(io.BytesIO):
        def write(self, block: object) -> int:
            raise OSError(28, "No space left on device")

    writer = HashingWriter(Full(), buffers())
    with pytest.raises(OSError, match="No space"):
        for _ in range(10 * BLOCKS):  # more blocks than buffers
            writer.write(writer.buffer(), 1)
    with pytest.raises(OSError, match="No space"):
        writer.close()
