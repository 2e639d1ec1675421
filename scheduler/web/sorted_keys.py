"""A sorted list of job ids that stays cheap to change wherever the change falls:
ids in blocks of at most :data:`LOAD` (a plain list would move all the ids after
a removed one, and removing a deep cluster's jobs in order would cost the square
of its size). Finding, adding and removing an id cost O(log n + n / LOAD); so does
reading the id at a position, and a slice costs its length more."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator

Key = tuple[int, int]
#: Most ids in one block before it splits in two.
LOAD = 1000


class SortedKeys:
    def __init__(self, keys: Iterable[Key] = ()):
        self.fill(keys)

    def fill(self, keys: Iterable[Key]) -> None:
        """Hold ``keys`` and no others (sorted once, not added one by one)."""
        ordered = sorted(keys)
        self._blocks = [ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)]
        self._lasts = [block[-1] for block in self._blocks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Key]:
        for block in self._blocks:
            yield from block

    def add(self, key: Key) -> None:
        self._len += 1
        if not self._blocks:
            self._blocks.append([key])
            self._lasts.append(key)
            return
        if key > self._lasts[-1]:  # a new job: the usual case, at the end
            b = len(self._blocks) - 1
            self._blocks[b].append(key)
        else:
            b = bisect_left(self._lasts, key)
            insort(self._blocks[b], key)
        block = self._blocks[b]
        self._lasts[b] = block[-1]
        if len(block) > 2 * LOAD:
            self._blocks[b : b + 1] = [block[:LOAD], block[LOAD:]]
            self._lasts[b : b + 1] = [block[LOAD - 1], block[-1]]

    def discard(self, key: Key) -> None:
        b = bisect_left(self._lasts, key)
        if b == len(self._blocks):
            return
        block = self._blocks[b]
        i = bisect_left(block, key)
        if i == len(block) or block[i] != key:
            return
        del block[i]
        self._len -= 1
        if block:
            self._lasts[b] = block[-1]
        else:
            del self._blocks[b], self._lasts[b]

    def bisect_left(self, key: Key) -> int:
        b = bisect_left(self._lasts, key)
        before = sum(len(block) for block in self._blocks[:b])
        return before + (bisect_left(self._blocks[b], key) if b < len(self._blocks) else 0)

    def bisect_right(self, key: Key) -> int:
        b = bisect_right(self._lasts, key)
        before = sum(len(block) for block in self._blocks[:b])
        return before + (bisect_right(self._blocks[b], key) if b < len(self._blocks) else 0)

    def _locate(self, i: int) -> tuple[int, int]:
        """The block of position ``i`` and its place in it."""
        for b, block in enumerate(self._blocks):
            if i < len(block):
                return b, i
            i -= len(block)
        raise IndexError(i)

    def __getitem__(self, i: int) -> Key:
        b, j = self._locate(i)
        return self._blocks[b][j]

    def slice(self, start: int, stop: int) -> list[Key]:
        """The ids at positions ``start`` to ``stop`` (excluded)."""
        out: list[Key] = []
        if start >= stop or start >= self._len:
            return out
        b, j = self._locate(start)
        want = min(stop, self._len) - start
        while len(out) < want:
            block = self._blocks[b]
            out += block[j : j + want - len(out)]
            b, j = b + 1, 0
        return out
