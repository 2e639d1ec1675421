"""``Client.map``: a Python function over an iterable, run as jobs on the farm.

The function and the items travel with cloudpickle: one cluster, one job per
``chunk_size`` items. A job runs ``python -m control_node.map_runner`` with the
worker's own Python (``DFARM_PYTHON``), which must be able to import what the
function needs. Results come back as each job completes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from control_node import results
from control_node.connection import DfarmError
from control_node.map_runner import Function, Outcome

if TYPE_CHECKING:
    from control_node.client import Client

RUNNER = '#!/bin/sh\nexec "${DFARM_PYTHON:-python3}" -m control_node.map_runner "$@"\n'
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


class MapResults(dict):  # type: ignore[type-arg]
    """Results keyed by item, in the order of the iterable (keyed by position when
    the items are not hashable). ``stats`` says where and how long each item ran;
    ``stopped_at`` is the item whose result met ``stop_when``, if one did."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[ItemStats] = []
        self.stopped_at: Any = None

    def save_stats(self, path: str | Path) -> None:
        """Write ``stats`` as a JSON list."""
        Path(path).write_text(json.dumps([asdict(s) for s in self.stats], indent=2) + "\n")


def run_map(
    client: Client,
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    *,
    chunk_size: int = 1,
    stop_when: Callable[[Any], bool] | None = None,
    keep_if: Callable[[Any], bool] | None = None,
    resources: dict[str, str | int] | None = None,
    timeout: float | None = None,
) -> Iterator[tuple[Any, Any, ItemStats, bool]]:
    """Yield ``(item, result, stats, stopped)`` as jobs complete, ``stopped`` being
    true for the result that met ``stop_when`` (the last one); see :meth:`Client.map`."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    items = list(iterable)
    if not items:
        return
    work = Path(tempfile.mkdtemp(prefix="dfarm-map-"))
    pending: set[str] = set()
    try:
        cluster = _submit(client, work, fn, items, chunk_size, resources or {})
        pending = set(cluster.job_ids)
        for job in results.as_completed(client.conn, cluster.job_ids, timeout=timeout):
            pending.discard(job.id)
            for outcome in _outcomes(client, job, work):
                if outcome.failed:
                    raise _remote_exception(outcome, job)
                assert outcome.value is not None
                value = cloudpickle.loads(outcome.value)
                stats = ItemStats(
                    outcome.index, job.id, job.worker, job.num_starts,
                    outcome.started, round(outcome.seconds, 6),
                )  # fmt: skip
                stop = stop_when is not None and bool(stop_when(value))
                if stop or keep_if is None or keep_if(value):
                    yield items[outcome.index], value, stats, stop
                if stop:
                    return
    finally:
        if pending:  # stopped early, failed, or the caller stopped reading
            client.remove(sorted(pending), reason="the map no longer needs it")
        shutil.rmtree(work, ignore_errors=True)


def collect(found: Iterator[tuple[Any, Any, ItemStats, bool]]) -> MapResults:
    """Gather ``run_map`` into :class:`MapResults`, in the order of the items."""
    rows = sorted(found, key=lambda row: row[2].index)
    out = MapResults()
    try:
        out.update((item, value) for item, value, _, _ in rows)
        distinct = len(out) == len(rows)
    except TypeError:  # an unhashable item
        distinct = False
    if not distinct:
        out.clear()
        out.update((stats.index, value) for _, value, stats, _ in rows)
    out.stats = [row[2] for row in rows]
    out.stopped_at = next((item for item, _, _, stop in rows if stop), None)
    return out


def _submit(
    client: Client,
    work: Path,
    fn: Callable[[Any], Any],
    items: list[Any],
    chunk_size: int,
    resources: dict[str, str | int],
) -> Any:
    (work / "function.pkl").write_bytes(cloudpickle.dumps(Function.capture(fn)))
    indexed = list(enumerate(items))
    chunks = [indexed[i : i + chunk_size] for i in range(0, len(indexed), chunk_size)]
    for n, chunk in enumerate(chunks):
        (work / f"chunk-{n}.pkl").write_bytes(cloudpickle.dumps(chunk))
    (work / "dfarm-map.sh").write_text(RUNNER)
    (work / "dfarm-map.sh").chmod(0o755)
    lines = [
        "executable = dfarm-map.sh",
        f"arguments = function.pkl chunk-$(Process).pkl {RESULT_FILE}",
        "transfer_input_files = function.pkl, chunk-$(Process).pkl",
        f"transfer_output_files = {RESULT_FILE}",
        *(f"{key} = {value}" for key, value in resources.items()),
        f"queue {len(chunks)}",
    ]
    (work / "map.sub").write_text("\n".join(lines) + "\n")
    return client.submit(work / "map.sub", cwd=str(work))


def _outcomes(client: Client, job: Any, work: Path) -> list[Outcome]:
    if results.failed(job):
        fetched = client.fetch([job.id], dest=work / "results")
        stderr = fetched[0].stderr.read_text(errors="replace")[-2000:] if fetched else ""
        raise MapJobFailed(f"job {job.id} {results.describe_status(job)}\n{stderr}".rstrip())
    fetched = client.fetch([job.id], dest=work / "results")
    path = next(p for p in fetched[0].outputs if p.name == RESULT_FILE)
    outcomes: list[Outcome] = cloudpickle.loads(path.read_bytes())
    shutil.rmtree(path.parent, ignore_errors=True)
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
