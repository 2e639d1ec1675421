"""``Client.map``: a Python function over an iterable, run as jobs on the farm.

The function and the items travel with cloudpickle, one job per chunk of items
(:mod:`control_node.map_submit`). With ``chunk_size="auto"`` (the default)
:func:`run_map` first submits a job of :data:`PROBE_ITEMS` items per slot, and sizes
the chunks of the rest (a second cluster) from the run time of the first job to come
back (see :mod:`control_node.map_chunks`); ``map_async``, which cannot wait, cuts the
items into a few chunks per slot.

A job runs ``python -m control_node.map_runner`` with the worker's own Python
(``DFARM_PYTHON``), which must be able to import what the function needs. Results
come back as each job completes (:mod:`control_node.map_collect`); each job's
``result.pkl`` holds its items too, so that a map started with ``map_async`` is
collected later from its cluster id alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_node.connection import NotFound
from control_node.map_chunks import (
    ASYNC_CHUNKS_PER_SLOT,
    AUTO,
    CHUNK_SECONDS,
    PROBE_ITEMS,
    SMALL_MAP_PER_SLOT,
    ChunkSize,
    after_chunk_size,
    auto_chunk_size,
    check_chunk_size,
    cut_chunks,
    free_slots,
)
from control_node.map_collect import completed, rows_of
from control_node.map_records import (
    ItemStats,
    MapJobFailed,
    MapResults,
    RemoteError,
    Row,
    check_errors,
    collect,
)
from control_node.map_submit import RESULT_FILE, scratch, submit_chunks
from scheduler import protocol as p

if TYPE_CHECKING:
    from control_node.client import Client

__all__ = [
    "ASYNC_CHUNKS_PER_SLOT",
    "AUTO",
    "CHUNK_SECONDS",
    "PROBE_ITEMS",
    "RESULT_FILE",
    "SMALL_MAP_PER_SLOT",
    "ChunkSize",
    "ItemStats",
    "MapHandle",
    "MapJobFailed",
    "MapResults",
    "RemoteError",
    "Row",
    "auto_chunk_size",
    "check_errors",
    "collect",
    "collect_map",
    "rows_of",
    "run_map",
    "scratch",
    "start_map",
    "submit_chunks",
]


@dataclass(frozen=True)
class MapHandle:
    """A map running in the background (:meth:`Client.map_async`). ``id`` names it for
    :meth:`Client.map_results`, from this process or another, later: it is the cluster
    id of the map's jobs, and nothing else is needed to collect the results."""

    id: str
    items: int
    jobs: int
    #: Opens a client like the one that started the map (for :meth:`results`).
    connect: Callable[[], Client] = field(compare=False, repr=False)

    def __str__(self) -> str:
        return self.id

    def results(self, client: Client | None = None, **options: Any) -> MapResults:
        """:meth:`Client.map_results` of this map (with a new client if none is given)."""
        if client is not None:
            return client.map_results(self.id, **options)
        with self.connect() as own:
            return own.map_results(self.id, **options)


def run_map(
    client: Client,
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    chunk_size: ChunkSize = AUTO,
    stop_when: Callable[[Any], bool] | None = None,
    keep_if: Callable[[Any], bool] | None = None,
    resources: dict[str, str | int] | None = None,
    timeout: float | None = None,
    errors: str = "raise",
    files_dest: Path | None = None,
    seen: set[int] | None = None,
    after: list[int] | None = None,
) -> Iterator[Row]:
    """Yield a :class:`Row` per item as jobs complete, ``stop`` being true for the
    result that met ``stop_when`` (the last one); the position of every item whose
    outcome came back is added to ``seen``. With ``after`` (cluster or DAG ids) the
    jobs wait until each has succeeded; their items cannot be measured before they
    run, so ``chunk_size="auto"`` cuts them as :func:`start_map` does. See
    :meth:`Client.map`."""
    check_chunk_size(chunk_size)
    check_errors(errors)
    items = list(iterable)
    if not items:
        return
    pending: set[str] = set()
    deadline = None if timeout is None else time.monotonic() + timeout
    #: The positions of each job's items, by job id.
    chunks: dict[str, list[int]] = {}

    def submit(part: list[tuple[int, Any]], size: int, wave: str) -> Any:
        cut = cut_chunks(part, size)
        # A job alone in its cluster is awaited as a call's: its end pushed unasked.
        single = len(cut) == 1 and not after
        cluster = submit_chunks(
            client, fn, cut, resources or {}, after=after or [], await_end=single
        )
        if after:  # queued once the clusters waited for succeed, as procs 0, 1, ...
            cluster.job_ids = [f"{cluster.id}.{n}" for n in range(len(cut))]
        pending.update(cluster.job_ids)
        for job_id, chunk in zip(cluster.job_ids, cut, strict=True):
            chunks[job_id] = [index for index, _ in chunk]
        return cluster

    try:
        indexed = list(enumerate(items))
        auto = chunk_size == AUTO
        if after:  # nothing to measure before the clusters waited for succeed
            auto, chunk_size = False, after_chunk_size(client, chunk_size, len(indexed))
        # A map small even for one slot needs no count of the slots (a round trip).
        slots = free_slots(client) if auto and len(indexed) > SMALL_MAP_PER_SLOT else 1
        if auto and len(indexed) <= SMALL_MAP_PER_SLOT * slots:
            auto, size = False, 1
        else:
            size = PROBE_ITEMS if auto else int(chunk_size)
        first = indexed[: PROBE_ITEMS * slots] if auto else indexed
        rest = indexed[len(first) :]
        cluster = submit(first, size, "first")
        dest = files_dest or Path.cwd() / f"map-{cluster.id}"
        waves = [cluster.job_ids]
        while waves:
            wave = waves.pop(0)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            for job, reply in completed(client, wave, left, after):
                pending.discard(job.id)
                rows: Iterable[Row] = rows_of(
                    client, job, errors, dest, items, chunks.get(job.id), reply
                )
                if rest:
                    rows = list(rows)  # the first item back sizes the chunks of the others
                    size = auto_chunk_size(rows, len(rest), free_slots(client))
                    waves.append(submit(rest, size, "rest").job_ids)
                    rest = []
                for row in _kept(rows, seen, stop_when, keep_if):
                    yield row
                    if row.stop:
                        return
    finally:
        if pending:  # stopped early, failed, or the caller stopped reading
            _remove(client, sorted(pending), after)


def _kept(
    rows: Iterable[Row],
    seen: set[int] | None,
    stop_when: Callable[[Any], bool] | None,
    keep_if: Callable[[Any], bool] | None,
) -> Iterator[Row]:
    """The rows to give the caller, ``stop`` set on the one that met ``stop_when``
    (the last); every row's position is added to ``seen``."""
    for row in rows:
        if seen is not None:
            seen.add(row.stats.index)
        row.stop = row.error is None and stop_when is not None and bool(stop_when(row.value))
        if row.stop or row.error is not None or keep_if is None or keep_if(row.value):
            yield row
        if row.stop:
            return


def _remove(client: Client, job_ids: list[str], after: list[int] | None) -> None:
    """Remove the jobs a map no longer needs; those of a map still waiting for
    other clusters may not be queued yet, so its whole cluster is removed."""
    reason = "the map no longer needs it"
    if not after:
        client.remove(job_ids, reason=reason)
        return
    with contextlib.suppress(NotFound):  # never queued: what it waited for failed
        client.remove([str(p.parse_job_id(job_ids[0])[0])], reason=reason)


def start_map(
    client: Client,
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    chunk_size: ChunkSize = AUTO,
    resources: dict[str, str | int] | None = None,
    after: list[int] | None = None,
) -> MapHandle:
    """Submit a map and return at once (see :meth:`Client.map_async`); with
    ``chunk_size="auto"``, in :data:`ASYNC_CHUNKS_PER_SLOT` chunks per slot."""
    check_chunk_size(chunk_size)
    items = list(iterable)
    if not items:
        raise ValueError("map_async needs at least one item")
    if chunk_size == AUTO:
        chunks = free_slots(client) * ASYNC_CHUNKS_PER_SLOT
        chunk_size = -(-len(items) // chunks)
    cut = cut_chunks(list(enumerate(items)), int(chunk_size))
    cluster = submit_chunks(client, fn, cut, resources or {}, after=after or [])
    return MapHandle(str(cluster.id), len(items), len(cut), type(client))


def collect_map(
    client: Client,
    map_id: str,
    *,
    timeout: float | None = None,
    keep_if: Callable[[Any], bool] | None = None,
    errors: str = "raise",
    files_dest: Path | None = None,
) -> MapResults:
    """Wait for the jobs of map ``map_id``, then bring its results home (see
    :meth:`Client.map_results`)."""
    check_errors(errors)
    if not str(map_id).isdigit():
        raise ValueError(f"not the id of a map: {map_id!r}")
    jobs = client.wait([str(map_id)], timeout=timeout)
    if not jobs:
        raise NotFound(f"no job of yours in cluster {map_id}: no such map")
    dest = files_dest or Path.cwd() / f"map-{map_id}"
    rows = [row for job in jobs for row in rows_of(client, job, errors, dest, None)]
    return collect(r for r in rows if r.error is not None or keep_if is None or keep_if(r.value))
