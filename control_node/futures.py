"""``Client.submit(fn, *args, **kwargs)``: one call of a Python function as a job.

The call runs as a job of one item, as a map's (the same start script, runner and
warm interpreters, the same records: ``dq``, ``dhistory``, fair share, the results
store); :class:`Future` brings its result home. :func:`as_completed` yields
futures as their jobs end, and :func:`gather` collects them into
:class:`~control_node.mapping.MapResults` with ``keep_if`` and ``stop_when`` as
``Client.map`` has them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_node import map_collect, mapping, results
from control_node.connection import DfarmError
from control_node.job_await import await_job
from control_node.job_queries import query_jobs
from scheduler import protocol as p

if TYPE_CHECKING:
    from control_node.client import Client


class CancelledError(DfarmError):
    """The call's job was removed before it ran to its end."""


class Future:
    """A call of a function running as a job: ``id`` is the job's (``12.0``)."""

    def __init__(self, client: Client, job_id: str, awaited: bool = False):
        self.client = client
        self.id = job_id
        self._row: mapping.Row | None = None
        #: The scheduler pushes the end of the job's cluster unasked (it was
        #: submitted so), unless another reader of the connection took that push.
        self._awaited = awaited

    def __repr__(self) -> str:
        state = "finished" if self._row is not None else "pending"
        return f"<Future {self.id} {state}>"

    @property
    def stats(self) -> mapping.ItemStats | None:
        """Where, when and how long the call ran, once its result is home."""
        return self._row.stats if self._row is not None else None

    def done(self) -> bool:
        """Whether the job has ended (completed, held or removed)."""
        if self._row is not None:
            return True
        found = query_jobs(self.client.conn, [self.id], states=[])
        return not found or found[0].state in results.DONE_STATES

    def result(self, timeout: float | None = None) -> Any:
        """The call's return value, once its job has ended: what it raised is raised
        here (with the remote traceback as a note); :class:`MapJobFailed` if the job
        itself failed (held, a crash), :class:`CancelledError` if it was removed."""
        row = self._wait(timeout)
        if row.error is not None:
            raise row.error
        return row.value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """What the call raised (or why its job failed), None if it returned."""
        return self._wait(timeout).error

    def cancel(self) -> bool:
        """Remove the job, unless it has ended: whether it was removed."""
        if self.done():
            return False
        changed = self.client.remove([self.id], reason="its future was cancelled")
        return bool(changed.changed)

    def _wait(self, timeout: float | None) -> mapping.Row:
        """The call's row, once its job has ended: the scheduler pushes the end of
        the job's cluster (its only job), and one request brings its record and
        results together."""
        if self._row is not None:
            return self._row
        job, reply = await_job(self.client, self.id, self._awaited, timeout)
        return self._set(job, reply)

    def _set(self, job: p.JobInfo, reply: p.JobResults | None = None) -> mapping.Row:
        """Bring home the result of the ended ``job`` (once; ``reply``: the
        scheduler's answer to a fetch of its results, if already asked)."""
        if self._row is not None:
            return self._row
        if job.state == "removed":
            stats = mapping.ItemStats(0, job.id, job.worker, job.num_starts, 0.0, 0.0, True)
            error = CancelledError(f"job {job.id} was removed: {job.hold_reason or 'drm'}")
            self._row = mapping.Row(None, None, stats, error=error)
            return self._row
        dest = Path.cwd() / f"call-{job.id}"
        (row,) = mapping.rows_of(self.client, job, "keep", dest, None, [0], reply)
        args, _ = row.item if isinstance(row.item, tuple) else ((), {})
        row.item = args
        self._row = row
        return row


def submit(
    client: Client,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    resources: dict[str, str | int],
) -> Future:
    """Submit ``fn(*args, **kwargs)`` as a job of one item (see :meth:`Client.submit`)."""
    cluster = mapping.submit_chunks(
        client, fn, [[(0, (args, kwargs))]], resources, star=True, await_end=True
    )
    (job_id,) = cluster.job_ids
    return Future(client, job_id, awaited=True)


def as_completed(
    client: Client, futures: Iterable[Future], timeout: float | None = None
) -> Iterator[Future]:
    """Each future as soon as its job has ended, its result brought home."""
    by_id = {future.id: future for future in futures}
    done = [future for future in by_id.values() if future._row is not None]
    yield from done
    waiting = [job_id for job_id in by_id if by_id[job_id]._row is None]
    if not waiting:
        return
    for job, reply in map_collect.ended(client, waiting, timeout):
        future = by_id[job.id]
        future._set(job, reply)
        yield future


def gather(
    client: Client,
    futures: list[Future],
    *,
    keep_if: Callable[[Any], bool] | None = None,
    stop_when: Callable[[Any], bool] | None = None,
    errors: str = "raise",
    timeout: float | None = None,
) -> mapping.MapResults:
    """The futures' results keyed by their position in ``futures``, as
    :meth:`Client.map` gives them: ``stop_when(result)`` true removes the jobs not yet
    ended (``hit``, ``stopped_at`` and ``not_run`` say where it stopped); only results
    with ``keep_if(result)`` true are kept; an exception is raised, or kept in
    ``errors`` with ``errors="keep"``."""
    mapping.check_errors(errors)
    position = {future.id: n for n, future in enumerate(futures)}
    rows: list[mapping.Row] = []
    seen: set[int] = set()
    pending = set(position)
    stopped = False
    try:
        for future in as_completed(client, futures, timeout=timeout):
            pending.discard(future.id)
            row = future._wait(0)
            n = position[future.id]
            seen.add(n)
            if row.error is not None and errors == "raise":
                raise row.error
            stats = dataclasses.replace(row.stats, index=n)
            row = mapping.Row(n, row.value, stats, error=row.error, files=row.files)
            row.stop = row.error is None and stop_when is not None and bool(stop_when(row.value))
            if row.stop or row.error is not None or keep_if is None or keep_if(row.value):
                rows.append(row)
            if row.stop:
                stopped = True
                break
    finally:
        if stopped and pending:
            client.remove(sorted(pending), reason="the gather no longer needs it")
    found = mapping.collect(rows)
    if stop_when is not None:
        found.not_run = [n for n in range(len(futures)) if n not in seen]
    return found
