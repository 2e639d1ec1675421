"""How many items each job of a map takes: explicit sizes, and ``chunk_size="auto"``
sized from the run time of the first items (see :func:`auto_chunk_size`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control_node.map_records import Row

if TYPE_CHECKING:
    from control_node.client import Client

#: ``chunk_size``: a number of items per job, or "auto".
ChunkSize = int | str
AUTO = "auto"
#: How long an automatic chunk aims to run: a job's start-up is small beside it.
CHUNK_SECONDS = 0.3
#: Items per job of the first wave of ``chunk_size="auto"``: the first call of ``fn``
#: in a job often pays its imports, the next one shows its own run time.
PROBE_ITEMS = 2
#: Chunks per slot of ``map_async`` with ``chunk_size="auto"``.
ASYNC_CHUNKS_PER_SLOT = 4
#: With ``chunk_size="auto"``, a map of at most this many items per slot runs one
#: item a job, in one cluster: nothing to batch would pay for a wave that measures
#: the items first, and each item takes a slot as soon as one is free (beside a
#: long map of another owner, fair share gives it the next slots).
SMALL_MAP_PER_SLOT = 8


def after_chunk_size(client: Client, chunk_size: ChunkSize, items: int) -> int:
    """The chunk size of a map that waits for other clusters: with "auto", one item a
    job for a small map, else :data:`ASYNC_CHUNKS_PER_SLOT` chunks per slot."""
    if chunk_size != AUTO:
        return int(chunk_size)
    if items <= SMALL_MAP_PER_SLOT:
        return 1
    slots = free_slots(client)
    if items <= SMALL_MAP_PER_SLOT * slots:
        return 1
    return -(-items // (slots * ASYNC_CHUNKS_PER_SLOT))


def auto_chunk_size(rows: list[Row], remaining: int, slots: int) -> int:
    """Items per job for the ``remaining`` items, from the run time of ``rows`` (the
    items of a job that ran; the fastest counts, the others may have paid imports):
    chunks of about :data:`CHUNK_SECONDS`, and never fewer chunks than ``slots`` (so
    that long items spread over every slot)."""
    seconds = min((row.stats.seconds for row in rows), default=0.0)
    wanted = int(CHUNK_SECONDS / seconds) if seconds > 0 else remaining
    return max(1, min(wanted, -(-remaining // max(1, slots))))


def free_slots(client: Client) -> int:
    """The slots of the workers that take jobs now (at least 1)."""
    taking = [w for w in client.workers() if w.state in ("idle", "busy")]
    return max(1, sum(w.slots_total for w in taking))


def check_chunk_size(chunk_size: ChunkSize) -> None:
    """Refuse (ValueError) a ``chunk_size`` that is neither "auto" nor a count."""
    if chunk_size == AUTO:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be 'auto' or at least 1, not {chunk_size!r}")


def cut_chunks(indexed: list[tuple[int, Any]], size: int) -> list[list[tuple[int, Any]]]:
    """``indexed`` in chunks of ``size`` items (the last one shorter)."""
    return [indexed[i : i + size] for i in range(0, len(indexed), size)]
