"""Bringing a map's results home: each job as it ends, its outcomes read from the
scheduler's reply (most come inline), one :class:`~control_node.map_records.Row` per item."""

from __future__ import annotations

import select
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from control_node import results
from control_node.connection import Connection
from control_node.job_await import await_job
from control_node.job_queries import query_jobs
from control_node.map_records import ItemStats, MapJobFailed, RemoteError, Row
from control_node.map_runner import Outcome
from control_node.map_submit import RESULT_FILE, scratch
from scheduler import protocol as p

if TYPE_CHECKING:
    from control_node.client import Client


def completed(
    client: Client, job_ids: list[str], timeout: float | None, after: list[int] | None
) -> Iterator[tuple[Any, p.JobResults | None]]:
    """Each job as it completes, is removed or held, with its results when they came
    with it: a job alone in its cluster (its end was awaited when it was submitted),
    or the jobs of a wave, whose results are asked for together (see :func:`ended`)."""
    if after:
        for job in await_after(client, p.parse_job_id(job_ids[0])[0], job_ids, timeout):
            yield job, None
    elif len(job_ids) == 1:
        yield await_job(client, job_ids[0], True, timeout)
    else:
        yield from ended(client, job_ids, timeout)


def ended(
    client: Client, job_ids: list[str], timeout: float | None
) -> Iterator[tuple[p.JobInfo, p.JobResults | None]]:
    """Each job as it completes, is removed or held, with the reply that brought its
    results: the ends the scheduler pushed while the last reply was read are asked
    for in one request, so that short jobs ending together cost one round trip."""
    conn = client.conn
    clusters = sorted({p.parse_job_id(job_id)[0] for job_id in job_ids})
    conn.request(p.Subscribe(clusters=clusters, states=sorted(results.DONE_STATES)))
    pending = set(job_ids)
    done = [job for job in query_jobs(conn, job_ids, states=[]) if job.state in results.DONE_STATES]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pending.difference_update(job.id for job in done)
        # Jobs that ended together are given in item order, whatever order their ends
        # were read in (a stop_when hit in an earlier chunk comes first).
        done.sort(key=lambda job: p.parse_job_id(job.id))
        for start in range(0, len(done), BATCH_JOBS):
            yield from _with_results(conn, done[start : start + BATCH_JOBS])
        if not pending:
            return
        done = []
        left = 5.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"jobs still running after {timeout} s")
        pushed = conn.next_update(min(left, 5.0))
        while pushed is not None:
            if (
                isinstance(pushed, p.JobUpdate)
                and pushed.job.id in pending
                and pushed.job.state in results.DONE_STATES
                and all(job.id != pushed.job.id for job in done)
            ):
                done.append(pushed.job)
            pushed = _ready_update(conn)


#: Most jobs whose results one request asks for.
BATCH_JOBS = 200


def _with_results(
    conn: Connection, jobs: list[p.JobInfo]
) -> Iterator[tuple[p.JobInfo, p.JobResults | None]]:
    """Each of ``jobs`` (ended) with the reply that brought its results, all asked for
    in one request; a job the reply left out comes alone (its results asked later)."""
    if not jobs:
        return
    reply = conn.request(p.FetchResults(ids=[job.id for job in jobs], brief=True))
    assert isinstance(reply, p.JobResults)
    sent = {job.id: job for job in reply.jobs}
    for job in jobs:
        if job.id in sent:
            yield sent[job.id], reply
        else:
            yield job, None


def _ready_update(conn: Connection) -> Any:
    """A pushed message already here (kept, or readable on the socket), else None:
    never waits for one."""
    if conn.updates:
        return conn.updates.popleft()
    sock = conn.sock
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
    if (pending is not None and pending() > 0) or select.select([sock], [], [], 0)[0]:
        return conn.next_update(conn.timeout)
    return None


def await_after(
    client: Client, cluster: int, job_ids: list[str], timeout: float | None
) -> Iterator[Any]:
    """Each job of a map that waits for other clusters, as it completes, is removed or
    is held (its jobs may not be queued yet). :class:`MapJobFailed` once the cluster
    is done with some of them never queued: a cluster waited for did not succeed."""
    conn = client.conn
    conn.request(p.Subscribe(clusters=[cluster], states=sorted(results.DONE_STATES)))
    conn.request(p.AwaitClusters(clusters=[cluster]))
    pending = set(job_ids)
    done = False
    for job in query_jobs(conn, job_ids, states=[]):
        if job.state in results.DONE_STATES and job.id in pending:
            pending.discard(job.id)
            yield job
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        left = 5.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"map {cluster} still running after {timeout} s")
        pushed = conn.next_update(min(left, 5.0))
        if isinstance(pushed, p.JobUpdate) and pushed.job.id in pending:
            if pushed.job.state in results.DONE_STATES:
                pending.discard(pushed.job.id)
                yield pushed.job
        elif isinstance(pushed, p.ClusterDone) and pushed.cluster == cluster:
            done = True
        if done and pending:
            # Updates sent before the cluster's end came first; what is left never ran.
            found = query_jobs(conn, sorted(pending), states=[])
            for job in found:
                if job.state in results.DONE_STATES:
                    pending.discard(job.id)
                    yield job
            if pending:
                raise MapJobFailed(
                    f"map {cluster}: its jobs were never queued (a cluster it waited for"
                    " did not succeed)"
                )


def rows_of(
    client: Client,
    job: Any,
    errors: str,
    dest: Path,
    items: list[Any] | None,
    chunk: list[int] | None = None,
    reply: p.JobResults | None = None,
) -> Iterator[Row]:
    """The rows of one finished job of a map (``items``: the map's items, if known;
    ``chunk``: the positions of the job's items, if known). A job that failed as a
    whole raises :class:`MapJobFailed`, or with ``errors="keep"`` and its ``chunk``
    known, gives each of its items that error."""
    try:
        found = outcomes_of(client, job, reply)
    except MapJobFailed as exc:
        if errors == "raise" or chunk is None or items is None:
            raise
        for index in chunk:
            stats = ItemStats(index, job.id, job.worker, job.num_starts, 0.0, 0.0, True)
            yield Row(items[index], None, stats, error=exc)
        return
    for outcome in found:
        error = _remote_exception(outcome, job) if outcome.failed else None
        if error is not None and errors == "raise":
            raise error
        if items is not None:
            item = items[outcome.index]
        else:
            item = cloudpickle.loads(outcome.item) if outcome.item is not None else outcome.index
        stats = ItemStats(
            outcome.index, job.id, job.worker, job.num_starts,
            outcome.started, round(outcome.seconds, 6), error is not None,
        )  # fmt: skip
        value = None if outcome.value is None else cloudpickle.loads(outcome.value)
        saved = _save_files(dest / str(outcome.index), getattr(outcome, "files", {}))
        yield Row(item, value, stats, error=error, files=saved)


def _save_files(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write the files an item's ``fn`` wrote (plain names only) into ``folder``."""
    saved = {}
    for name, data in files.items():
        if name != Path(name).name or name in ("", ".", ".."):
            continue  # never a path: the files stay inside their folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        saved[name] = folder / name
    return saved


def outcomes_of(client: Client, job: Any, reply: p.JobResults | None = None) -> list[Outcome]:
    """The outcomes of a map's job, from the scheduler's reply to a fetch of its
    results (``reply``, if already asked) when they came inline (most do), else
    fetched into the scratch folder."""
    if reply is None:
        asked = client.conn.request(p.FetchResults(ids=[job.id], brief=True))
        assert isinstance(asked, p.JobResults)
        reply = asked
    inline = reply.files.get(job.id, {})
    if results.failed(job):
        stderr = ""
        if "stderr" in inline:
            stderr = p.unpack_bytes(inline["stderr"]).decode(errors="replace")
        elif reply.download is not None:
            fetched = client.fetch([job.id], dest=scratch() / "results")
            err = fetched[0].stderr if fetched else None
            stderr = err.read_text(errors="replace") if err is not None else ""
            shutil.rmtree(scratch() / "results" / job.id, ignore_errors=True)
        raise MapJobFailed(
            f"job {job.id} {results.describe_status(job)}\n{stderr[-2000:]}".rstrip()
        )
    name = f"outputs/{RESULT_FILE}"
    if name in inline:
        data = p.unpack_bytes(inline[name])
    elif RESULT_FILE in job.output_files:
        fetched = client.fetch([job.id], dest=scratch() / "results")
        path = next((f for f in fetched[0].outputs if f.name == RESULT_FILE), None)
        data = path.read_bytes() if path is not None and path.is_file() else b""
        shutil.rmtree(scratch() / "results" / job.id, ignore_errors=True)
    else:
        raise MapJobFailed(f"job {job.id} brought back no {RESULT_FILE}: it is not a job of a map")
    if not data:
        raise MapJobFailed(f"job {job.id} ended before its items did: its {RESULT_FILE} is empty")
    try:  # each value is a pickle of its own: only a cut-short file fails here
        outcomes: list[Outcome] = cloudpickle.loads(data)
    except Exception as exc:
        raise MapJobFailed(f"job {job.id} left a damaged {RESULT_FILE}: {exc}") from None
    return outcomes


def _remote_exception(outcome: Outcome, job: Any) -> BaseException:
    where = f"item {outcome.index}, job {job.id} on worker {job.worker}"
    if outcome.error is not None:
        try:
            exc = cloudpickle.loads(outcome.error)
        except Exception:
            exc = None
        if isinstance(exc, BaseException):
            exc.add_note(f"Remote traceback ({where}):\n{outcome.error_text}")
            return exc
    return RemoteError(f"{where} failed:\n{outcome.error_text}")
