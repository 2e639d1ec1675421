"""``Client.map``: a Python function over an iterable, run as jobs on the farm.

The function and the items travel with cloudpickle, one job per chunk of items.
With ``chunk_size="auto"`` (the default) :func:`run_map` first submits a job of
:data:`PROBE_ITEMS` items per slot, and sizes the chunks of the rest (a second
cluster) from the run time of the first job to come back (see
:func:`auto_chunk_size`); ``map_async``, which
cannot wait, cuts the items into a few chunks per slot.

A job runs ``python -m control_node.map_runner`` with the worker's own Python
(``DFARM_PYTHON``), which must be able to import what the function needs. Results
come back as each job completes; each job's ``result.pkl`` holds its items too, so
that a map started with ``map_async`` is collected later from its cluster id alone.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from control_node import results
from control_node.connection import DfarmError, NotFound
from control_node.job_await import await_job
from control_node.map_runner import RUNNER, Function, Outcome
from control_node.submit_small import submit_small
from scheduler import protocol as p

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

RESULT_FILE = "result.pkl"


class RemoteError(DfarmError):
    """``fn`` raised an exception that could not be brought back as itself."""


class MapJobFailed(DfarmError):
    """A job of a map did not complete (held, removed, or its Python failed)."""


@dataclass(frozen=True)
class ItemStats:
    """Where and how long one item ran."""

    index: int
    job_id: str
    worker: str | None
    #: How many times the job was started (1 unless it was rerun).
    attempt: int
    #: When ``fn(item)`` started on the worker (seconds since the epoch), and for how long.
    started: float
    seconds: float
    #: ``fn(item)`` raised (kept in :attr:`MapResults.errors` with ``errors="keep"``).
    failed: bool = False


@dataclass
class Row:
    """One item's outcome, brought home."""

    item: Any
    value: Any
    stats: ItemStats
    #: The result met ``stop_when``.
    stop: bool = False
    #: What ``fn(item)`` raised, with ``errors="keep"``.
    error: BaseException | None = None
    #: The files ``fn(item)`` wrote in its working directory, saved here.
    files: dict[str, Path] = field(default_factory=dict)


class MapResults(dict[Any, Any]):
    """Results keyed by item, in the order of the iterable (keyed by position when
    the items are not hashable).

    ``stats`` says where and how long each item ran; ``files`` holds, for each item
    whose ``fn`` wrote files in its working directory, those files (name -> local
    path); ``errors`` what ``fn`` raised, with ``errors="keep"``. After ``stop_when``
    met a result: ``stopped_at`` is its item, ``hit`` the result, and ``not_run``
    the items that never ran (their jobs were removed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[ItemStats] = []
        self.files: dict[Any, dict[str, Path]] = {}
        self.errors: dict[Any, BaseException] = {}
        self.stopped_at: Any = None
        self.hit: Any = None
        self.not_run: list[Any] = []

    def totals(self) -> dict[str, Any]:
        """Items, failures, total and mean run time of ``fn``, overall and per worker."""
        by_worker: dict[str, list[ItemStats]] = {}
        for s in self.stats:
            by_worker.setdefault(s.worker or "-", []).append(s)
        return {
            **_totals(self.stats),
            "not_run": len(self.not_run),
            "per_worker": [{"worker": w, **_totals(found)} for w, found in by_worker.items()],
        }

    def save_stats(self, path: str | Path) -> None:
        """Write the totals (:meth:`totals`) and each item's ``stats`` as JSON."""
        report = {**self.totals(), "items_stats": [asdict(s) for s in self.stats]}
        Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _totals(stats: list[ItemStats]) -> dict[str, Any]:
    total = sum(s.seconds for s in stats)
    return {
        "items": len(stats),
        "failures": sum(s.failed for s in stats),
        "total_seconds": round(total, 6),
        "mean_seconds": round(total / len(stats), 6) if stats else None,
    }


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
    _check_chunk_size(chunk_size)
    check_errors(errors)
    items = list(iterable)
    if not items:
        return
    pending: set[str] = set()
    deadline = None if timeout is None else time.monotonic() + timeout
    #: The positions of each job's items, by job id.
    chunks: dict[str, list[int]] = {}

    def submit(part: list[tuple[int, Any]], size: int, wave: str) -> Any:
        cut = _cut(part, size)
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
        slots = _free_slots(client) if auto and len(indexed) > SMALL_MAP_PER_SLOT else 1
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
            for job, reply in _completed(client, wave, left, after):
                pending.discard(job.id)
                rows: Iterable[Row] = rows_of(
                    client, job, errors, dest, items, chunks.get(job.id), reply
                )
                if rest:
                    rows = list(rows)  # the first item back sizes the chunks of the others
                    size = auto_chunk_size(rows, len(rest), _free_slots(client))
                    waves.append(submit(rest, size, "rest").job_ids)
                    rest = []
                for row in _kept(rows, seen, stop_when, keep_if):
                    yield row
                    if row.stop:
                        return
    finally:
        if pending:  # stopped early, failed, or the caller stopped reading
            _remove(client, sorted(pending), after)


def _completed(
    client: Client, job_ids: list[str], timeout: float | None, after: list[int] | None
) -> Iterator[tuple[Any, p.JobResults | None]]:
    """Each job as it completes, is removed or held, with its results when they came
    with it (a job alone in its cluster: its end was awaited when it was submitted)."""
    if after:
        jobs = await_after(client, p.parse_job_id(job_ids[0])[0], job_ids, timeout)
    elif len(job_ids) == 1:
        yield await_job(client, job_ids[0], True, timeout)
        return
    else:
        jobs = results.as_completed(client.conn, job_ids, timeout=timeout)
    for job in jobs:
        yield job, None


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


def after_chunk_size(client: Client, chunk_size: ChunkSize, items: int) -> int:
    """The chunk size of a map that waits for other clusters: with "auto", one item a
    job for a small map, else :data:`ASYNC_CHUNKS_PER_SLOT` chunks per slot."""
    if chunk_size != AUTO:
        return int(chunk_size)
    if items <= SMALL_MAP_PER_SLOT:
        return 1
    slots = _free_slots(client)
    if items <= SMALL_MAP_PER_SLOT * slots:
        return 1
    return -(-items // (slots * ASYNC_CHUNKS_PER_SLOT))


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
    for job in results.query_jobs(conn, job_ids, states=[]):
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
            found = results.query_jobs(conn, sorted(pending), states=[])
            for job in found:
                if job.state in results.DONE_STATES:
                    pending.discard(job.id)
                    yield job
            if pending:
                raise MapJobFailed(
                    f"map {cluster}: its jobs were never queued (a cluster it waited for"
                    " did not succeed)"
                )


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
    _check_chunk_size(chunk_size)
    items = list(iterable)
    if not items:
        raise ValueError("map_async needs at least one item")
    if chunk_size == AUTO:
        chunks = _free_slots(client) * ASYNC_CHUNKS_PER_SLOT
        chunk_size = -(-len(items) // chunks)
    cut = _cut(list(enumerate(items)), int(chunk_size))
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


def collect(found: Iterable[Row]) -> MapResults:
    """Gather rows into :class:`MapResults`, in the order of the items."""
    rows = sorted(found, key=lambda row: row.stats.index)
    out = MapResults()
    try:
        keys = [row.item for row in rows]
        distinct = len(set(keys)) == len(keys)
    except TypeError:  # an unhashable item
        distinct = False
    if not distinct:
        keys = [row.stats.index for row in rows]
    for key, row in zip(keys, rows, strict=True):
        if row.error is not None:
            out.errors[key] = row.error
        else:
            out[key] = row.value
        if row.files:
            out.files[key] = row.files
    out.stats = [row.stats for row in rows]
    stopped = next((row for row in rows if row.stop), None)
    if stopped is not None:
        out.stopped_at, out.hit = stopped.item, stopped.value
    return out


def auto_chunk_size(rows: list[Row], remaining: int, slots: int) -> int:
    """Items per job for the ``remaining`` items, from the run time of ``rows`` (the
    items of a job that ran; the fastest counts, the others may have paid imports):
    chunks of about :data:`CHUNK_SECONDS`, and never fewer chunks than ``slots`` (so
    that long items spread over every slot)."""
    seconds = min((row.stats.seconds for row in rows), default=0.0)
    wanted = int(CHUNK_SECONDS / seconds) if seconds > 0 else remaining
    return max(1, min(wanted, -(-remaining // max(1, slots))))


def _free_slots(client: Client) -> int:
    """The slots of the workers that take jobs now (at least 1)."""
    taking = [w for w in client.workers() if w.state in ("idle", "busy")]
    return max(1, sum(w.slots_total for w in taking))


def _check_chunk_size(chunk_size: ChunkSize) -> None:
    if chunk_size == AUTO:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be 'auto' or at least 1, not {chunk_size!r}")


def _cut(indexed: list[tuple[int, Any]], size: int) -> list[list[tuple[int, Any]]]:
    return [indexed[i : i + size] for i in range(0, len(indexed), size)]


def check_errors(errors: str) -> None:
    if errors not in ("raise", "keep"):
        raise ValueError(f"errors must be 'raise' or 'keep', not {errors!r}")


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
        outcomes = _outcomes(client, job, reply)
    except MapJobFailed as exc:
        if errors == "raise" or chunk is None or items is None:
            raise
        for index in chunk:
            stats = ItemStats(index, job.id, job.worker, job.num_starts, 0.0, 0.0, True)
            yield Row(items[index], None, stats, error=exc)
        return
    for outcome in outcomes:
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


def submit_chunks(
    client: Client,
    fn: Callable[[Any], Any],
    chunks: list[list[tuple[int, Any]]],
    resources: dict[str, str | int],
    star: bool = False,
    after: list[int] | None = None,
    await_end: bool = False,
) -> Any:
    """Submit one cluster of a map: a job per chunk of ``(index, item)`` (``star``:
    each item is ``(args, kwargs)`` of a call, ``Client.submit``). Its files are
    written to this process's :func:`scratch` folder under names of their own, and
    removed once submitted (their content is then in the spool). A small cluster
    goes in one request, which with ``await_end`` also awaits its end (the
    :class:`ClusterDone` is pushed with no request of its own)."""
    work = scratch()
    tag = f"{next(_submissions)}"
    written = [work / f"function-{tag}.pkl", work / f"{tag}.sub"]
    written[0].write_bytes(cloudpickle.dumps(Function.capture(fn, star)))
    for n, chunk in enumerate(chunks):
        written.append(work / f"chunk-{tag}-{n}.pkl")
        written[-1].write_bytes(cloudpickle.dumps(chunk))
    lines = [
        "executable = dfarm-map.sh",
        f"arguments = function-{tag}.pkl chunk-{tag}-$(Process).pkl {RESULT_FILE}",
        f"transfer_input_files = function-{tag}.pkl, chunk-{tag}-$(Process).pkl",
        f"transfer_output_files = {RESULT_FILE}",
        *(f"{key} = {value}" for key, value in resources.items()),
        f"queue {len(chunks)}",
    ]
    written[1].write_text("\n".join(lines) + "\n")
    try:
        if not after:  # one request (``await_end``: its end pushed, unasked)
            small = submit_small(client.conn, written[1], str(work), await_end)
            if small is not None:
                return client.cluster_of(small.cluster, small.job_ids, small.warnings)
        return client.submit(written[1], cwd=str(work), after=after or [])
    finally:
        for path in written:
            path.unlink(missing_ok=True)


#: Numbers the submissions of this process (the names of their files).
_submissions = itertools.count()
_scratch: Path | None = None
_scratch_lock = threading.Lock()


def scratch() -> Path:
    """This process's folder for the files of its maps (made once, with the map's
    start script, and removed at exit): a folder made and removed for each map or
    call costs milliseconds on some file systems, each time."""
    global _scratch
    with _scratch_lock:
        if _scratch is None or not (_scratch / "dfarm-map.sh").is_file():
            _scratch = Path(tempfile.mkdtemp(prefix="dfarm-map-"))
            atexit.register(shutil.rmtree, _scratch, True)
            (_scratch / "dfarm-map.sh").write_text(RUNNER)
            (_scratch / "dfarm-map.sh").chmod(0o755)
        return _scratch


def _outcomes(client: Client, job: Any, reply: p.JobResults | None = None) -> list[Outcome]:
    """The outcomes of a map's job, from the scheduler's reply to a fetch of its
    results (``reply``, if already asked) when they came inline (most do), else
    fetched into the scratch folder."""
    if reply is None:
        asked = client.conn.request(p.FetchResults(ids=[job.id]))
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
    outcomes: list[Outcome] = cloudpickle.loads(data)
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
