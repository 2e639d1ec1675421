"""The Python API of dfarm; the commands are thin layers over it.

from control_node import Client

client = Client()                        # finds the scheduler like the commands do
cluster = client.submit("job.sub")
jobs = cluster.wait()
for result in cluster.results(dest="results"):
    print(result.job.id, result.job.exit_code, result.stdout_text())
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from control_node import job_queries, results
from control_node.connection import Connection, Endpoint, find_endpoint
from control_node.handles import Cluster, DagRun, cluster_id
from control_node.results_file import ResultRecord, read_results
from scheduler import protocol as p

if TYPE_CHECKING:
    from control_node import futures, mapping
    from control_node.dag_builder import DagBuilder
    from control_node.dag_model import Dag

# Submitting, mapping, sweeps and drawing are imported where used: a command that only
# asks the scheduler something starts without them (see tests/test_startup.py).

#: Finished jobs asked for in one request: the most the scheduler answers with
#: (scheduler/job_control.py, HISTORY_PAGE).
HISTORY_PAGE = 100


class Client:
    """A connection to the scheduler as one user."""

    def __init__(
        self,
        scheduler: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        max_frame: int = p.DEFAULT_MAX_FRAME,
    ):
        """``max_frame``: the largest reply taken, in bytes; queries ask for pages of
        jobs that fit in it."""
        self.endpoint: Endpoint = find_endpoint(scheduler, token)
        self.conn = Connection(self.endpoint, timeout=timeout, max_frame=max_frame)

    @property
    def user(self) -> str:
        return self.conn.user

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def submit(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        cwd: str | None = None,
        strict: bool = False,
        *,
        after: Iterable[Cluster | DagRun | int] = (),
        after_any: Iterable[Cluster | DagRun | int] = (),
    ) -> Cluster: ...

    @overload
    def submit(
        self,
        source: Callable[..., Any],
        *args: Any,
        resources: Mapping[str, str | int] | None = None,
        **kwargs: Any,
    ) -> futures.Future: ...

    def submit(
        self,
        source: Any,
        *args: Any,
        resources: Mapping[str, str | int] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Submit a submit file (a path), submit-file text (a string with a newline) or a
        dict of submit keys (see :mod:`control_node.submit_dict`). Relative paths in it
        start from ``cwd`` (default: the current directory). ``strict`` refuses a key
        that is neither HTCondor's nor used as a macro (else only a warning).

        ``after``: the jobs wait until every cluster (or DAG) named has succeeded, every
        job exiting 0 (Slurm's afterok; one that fails means these never run);
        ``after_any``: until each has ended, however (afterany).

        ``submit(fn, *args, **kwargs)`` runs the call ``fn(*args, **kwargs)`` as a job
        the way :meth:`map` runs an item (warm interpreters, the same records), with
        ``resources`` as submit keys (``{"max_retries": 2}``), and returns a
        :class:`~control_node.futures.Future` at once (``result()``, ``exception()``,
        ``done()``, ``cancel()``; see :meth:`as_completed` and :meth:`gather`)."""
        if callable(source):
            from control_node import futures

            return futures.submit(self, source, args, kwargs, dict(resources or {}))
        if resources is not None:
            raise TypeError("resources= is for submit(fn, ...); put submit keys in the file")
        return self._submit_file(source, *args, **kwargs)

    def _submit_file(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        cwd: str | None = None,
        strict: bool = False,
        *,
        after: Iterable[Cluster | DagRun | int] = (),
        after_any: Iterable[Cluster | DagRun | int] = (),
    ) -> Cluster:
        from control_node.submit import SubmitError, submit_file
        from control_node.submit_dict import submit_text

        waits = [cluster_id(c) for c in after], [cluster_id(c) for c in after_any]
        if waits[0] or waits[1]:
            return self._submit_after(source, cwd, *waits, strict=strict)
        if isinstance(source, Mapping):
            try:
                text = submit_text(source)
            except ValueError as exc:
                raise SubmitError(str(exc), "<dict>") from None
            sub = submit_file(self.conn, Path("<dict>"), cwd=cwd, text=text, strict=strict)
        elif isinstance(source, str) and "\n" in source:
            sub = submit_file(self.conn, Path("<text>"), cwd=cwd, text=source, strict=strict)
        else:
            sub = submit_file(self.conn, Path(source), cwd=cwd, strict=strict)
        return Cluster(self, sub.cluster, sub.job_ids, sub.warnings)

    def _submit_after(
        self,
        source: str | os.PathLike[str] | Mapping[str, Any],
        cwd: str | None,
        after: list[int],
        after_any: list[int],
        strict: bool = False,
    ) -> Cluster:
        from control_node.dag_submit import submit_after
        from control_node.submit import SubmitError
        from control_node.submit_dict import submit_text

        if isinstance(source, Mapping):
            try:
                path, text = Path("<dict>"), submit_text(source)
            except ValueError as exc:
                raise SubmitError(str(exc), "<dict>") from None
        elif isinstance(source, str) and "\n" in source:
            path, text = Path("<text>"), source
        else:
            path, text = Path(source), None
        cluster, warnings = submit_after(self.conn, path, text, cwd, after, after_any, strict)
        return Cluster(self, cluster, [], warnings)

    def cluster_of(self, cluster: int, job_ids: list[str], warnings: list[str]) -> Cluster:
        """A handle on a cluster already queued (by :mod:`control_node.mapping`'s one
        request for a small cluster)."""
        return Cluster(self, cluster, job_ids, warnings)

    def submit_dag(
        self, source: str | os.PathLike[str] | Dag | DagBuilder, cwd: str | None = None
    ) -> DagRun:
        """Submit a workflow: a DAG file (HTCondor's format), a :class:`Dag`, or what
        :meth:`dag` built. Every node's submit file is read now; nothing is queued if
        any is wrong."""
        from control_node.dag_builder import DagBuilder
        from control_node.dag_file import read_dag
        from control_node.dag_submit import submit_dag

        if isinstance(source, DagBuilder):
            dag = source.dag
        elif isinstance(source, (str, os.PathLike)):
            dag = read_dag(Path(source))
        else:
            dag = source
        reply = submit_dag(self.conn, dag, cwd)
        return DagRun(self, reply.dag, reply.clusters, reply.warnings)

    def dag(self, folder: str | os.PathLike[str] | None = None) -> DagBuilder:
        """A workflow to build node by node (``.job(name, submit_file, after=[...])``),
        then hand to :meth:`submit_dag`."""
        from control_node.dag_builder import DagBuilder

        return DagBuilder(None if folder is None else Path(folder))

    def dags(
        self,
        ids: list[int] | None = None,
        all_users: bool = False,
        running: bool = False,
        nodes: bool = True,
    ) -> list[p.DagInfo]:
        """DAGs by id (default: the caller's; ``running``: those not ended), with their
        nodes (or only their counts)."""
        query = p.QueryDags(dags=ids or [], all_users=all_users, running=running, nodes=nodes)
        reply = self.conn.request(query)
        assert isinstance(reply, p.DagList)
        return reply.dags

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunk_size: int | str = "auto",
        stop_when: Callable[[Any], bool] | None = None,
        keep_if: Callable[[Any], bool] | None = None,
        resources: Mapping[str, str | int] | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        errors: str = "raise",
        files_dest: str | os.PathLike[str] | None = None,
        after: Iterable[Cluster | DagRun | int] = (),
    ) -> Any:
        """Run ``fn(item)`` for every item on the workers, ``chunk_size`` items per job:
        by default (``"auto"``) as many as run in about 0.3 s, measured on the first
        items, and never fewer jobs than slots.

        Returns :class:`~control_node.mapping.MapResults` (results keyed by item, in
        order, with ``stats``, ``files`` and ``totals()``), or with ``ordered=False`` an
        iterator of ``(item, result)`` as jobs complete. ``stop_when(result)`` true ends
        the run (the remaining jobs are removed; ``hit`` is that result, ``not_run`` the
        items that did not run); only results with ``keep_if(result)`` true are kept.
        ``resources`` are submit keys such as ``{"request_memory": "2GB"}``. An
        exception in ``fn`` is raised here, with the remote traceback as a note, or with
        ``errors="keep"`` kept in ``errors`` while the other items go on. Files ``fn``
        writes in its working directory come back under ``files_dest`` (default
        ``./map-<cluster>/``), one folder per item position. ``after``: the jobs wait
        until every cluster (or DAG) named has succeeded, as :meth:`submit`'s do; if
        one fails, the map raises :class:`~control_node.mapping.MapJobFailed`.
        """
        from control_node import mapping

        items = list(iterable)
        seen: set[int] = set()
        found = mapping.run_map(
            self, fn, items, chunk_size=chunk_size, stop_when=stop_when, keep_if=keep_if,
            resources=dict(resources or {}), timeout=timeout, errors=errors,
            files_dest=Path(files_dest) if files_dest is not None else None, seen=seen,
            after=[cluster_id(c) for c in after],
        )  # fmt: skip
        if not ordered:
            return ((row.item, row.value if row.error is None else row.error) for row in found)
        out = mapping.collect(found)
        if stop_when is not None and len(seen) < len(items):
            out.not_run = [item for i, item in enumerate(items) if i not in seen]
        return out

    def map_async(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunk_size: int | str = "auto",
        resources: Mapping[str, str | int] | None = None,
        after: Iterable[Cluster | DagRun | int] = (),
    ) -> mapping.MapHandle:
        """Submit ``fn`` over ``iterable`` as :meth:`map` does and return at once: a
        :class:`~control_node.mapping.MapHandle` whose ``id`` gives the results later,
        to :meth:`map_results` in this process or another (the jobs run on, whatever
        becomes of this client); ``after`` as for :meth:`map`."""
        from control_node import mapping

        return mapping.start_map(
            self, fn, iterable, chunk_size=chunk_size, resources=dict(resources or {}),
            after=[cluster_id(c) for c in after],
        )  # fmt: skip

    def map_results(
        self,
        map_id: str | int | mapping.MapHandle,
        *,
        timeout: float | None = None,
        keep_if: Callable[[Any], bool] | None = None,
        errors: str = "raise",
        files_dest: str | os.PathLike[str] | None = None,
    ) -> mapping.MapResults:
        """Wait for a map started with :meth:`map_async` (its handle or ``id``) to
        finish, and return its :class:`~control_node.mapping.MapResults` as :meth:`map`
        does. Its results stay on the scheduler as long as any job's results."""
        from control_node import mapping

        return mapping.collect_map(
            self, str(map_id), timeout=timeout, keep_if=keep_if, errors=errors,
            files_dest=Path(files_dest) if files_dest is not None else None,
        )  # fmt: skip

    @overload
    def as_completed(self, ids: list[str], timeout: float | None = None) -> Iterator[p.JobInfo]: ...

    @overload
    def as_completed(
        self, ids: list[futures.Future], timeout: float | None = None
    ) -> Iterator[futures.Future]: ...

    def as_completed(self, ids: list[Any], timeout: float | None = None) -> Iterator[Any]:
        """Each job's record as soon as it is completed, removed or held; given the
        futures of :meth:`submit`, each future as its job ends, its result home."""
        if ids and not isinstance(ids[0], str):
            from control_node import futures

            return futures.as_completed(self, ids, timeout=timeout)
        return results.as_completed(self.conn, ids, timeout=timeout)

    def gather(
        self,
        calls: list[futures.Future],
        *,
        keep_if: Callable[[Any], bool] | None = None,
        stop_when: Callable[[Any], bool] | None = None,
        errors: str = "raise",
        timeout: float | None = None,
    ) -> mapping.MapResults:
        """The results of the futures of :meth:`submit`, keyed by their position in
        ``calls``, with ``keep_if``, ``stop_when`` and ``errors`` as :meth:`map` has
        them (``stop_when`` removes the jobs not yet ended)."""
        from control_node import futures

        return futures.gather(
            self, calls, keep_if=keep_if, stop_when=stop_when, errors=errors, timeout=timeout
        )

    def jobs(
        self,
        ids: list[str] | None = None,
        states: list[str] | None = None,
        all_users: bool = False,
        limit: int = 0,
    ) -> list[p.JobInfo]:
        """Jobs by id (``42`` or ``42.0``) and state; default: your jobs in the queue.

        Asked for a page at a time, so that no reply outgrows a frame; ``limit``
        stops after that many jobs (0: all)."""
        return job_queries.query_jobs(self.conn, list(ids or []), states, all_users, limit)

    def job_pages(
        self,
        ids: list[str] | None = None,
        states: list[str] | None = None,
        all_users: bool = False,
        limit: int = 0,
        page: int = job_queries.PAGE,
    ) -> Iterator[list[p.JobInfo]]:
        """As :meth:`jobs`, a page of at most ``page`` jobs at a time, each asked for
        when the one before has been used (memory stays flat for any queue)."""
        return job_queries.job_pages(self.conn, list(ids or []), states, all_users, limit, page)

    def wire_pages(
        self,
        ids: list[str] | None = None,
        states: list[str] | None = None,
        all_users: bool = False,
        limit: int = 0,
        page: int = job_queries.PAGE,
    ) -> Iterator[list[dict[str, Any]]]:
        """As :meth:`job_pages`, each record as the JSON object it came as (what
        ``dq --json`` writes), the next page asked for while this one is used."""
        return job_queries.wire_pages(self.conn, list(ids or []), states, all_users, limit, page)

    def batches(self, clusters: list[int] | None = None, all_users: bool = False) -> p.BatchList:
        """The batch view: per batch (cluster, or ``JobBatchName``) its jobs done,
        running, idle and held, counted by the scheduler (no job is sent)."""
        reply = self.conn.request(
            p.QueryBatches(all_users=all_users, clusters=list(clusters or []))
        )
        assert isinstance(reply, p.BatchList)
        return reply

    def cluster_jobs(self, cluster: int, page: int = 2000) -> list[p.JobInfo]:
        """Every job of one of your clusters, in any state, asked for ``page`` procs at
        a time so that a reply stays small whatever the cluster's size."""
        jobs: list[p.JobInfo] = []
        while True:
            first = len(jobs)
            ids = [f"{cluster}.{proc}" for proc in range(first, first + page)]
            batch = self.jobs(ids, states=[])
            jobs += batch
            if len(batch) < page:  # procs are numbered 0..N-1: this was the last page
                return jobs

    def workers(self) -> list[p.WorkerInfo]:
        return self.pool().workers

    def pool(self) -> p.WorkerList:
        """The workers, the spool's disk use and how long results are kept."""
        reply = self.conn.request(p.QueryWorkers())
        assert isinstance(reply, p.WorkerList)
        return reply

    def wait(
        self,
        ids: list[str],
        timeout: float | None = None,
        on_update: Callable[[dict[str, p.JobInfo]], None] | None = None,
    ) -> list[p.JobInfo]:
        """Block until the jobs (``42.0``, or every job of cluster ``42``) are
        completed, removed or held."""
        return results.wait(self.conn, ids, timeout=timeout, on_update=on_update)

    def fetch(
        self,
        ids: list[str],
        dest: str | os.PathLike[str] | None = None,
        submit_paths: bool = True,
        unfinished: list[p.JobInfo] | None = None,
        per_job: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[results.FetchedJob]:
        """Download the results of finished jobs (see :mod:`control_node.results`): each
        cluster's results file, and a ``<cluster>.<proc>/`` folder only for a job with
        files worth one (with ``per_job=True``, for every job), as ``dfetch`` does; the
        records of those named that have not finished go to ``unfinished``. A job's
        ``stdout_text()`` is what it printed, from its folder or its line."""
        where = Path(dest) if dest is not None else None
        return results.fetch(self.conn, ids, where, submit_paths, unfinished, per_job, progress)

    def wait_and_fetch(
        self,
        ids: list[str],
        dest: str | os.PathLike[str] | None = None,
        per_job: bool = False,
        timeout: float | None = None,
        on_update: Callable[[dict[str, p.JobInfo]], None] | None = None,
    ) -> tuple[list[p.JobInfo], list[results.FetchedJob]]:
        """Wait for the jobs, fetching each one's results soon after it finishes (see
        :mod:`control_node.fetch_stream`); their last records and what was fetched."""
        from control_node.fetch_stream import wait_and_fetch

        where = Path(dest) if dest is not None else None
        return wait_and_fetch(
            self.conn, ids, where, per_job=per_job, timeout=timeout, on_update=on_update
        )

    @staticmethod
    def read_results(path: str | os.PathLike[str]) -> list[ResultRecord]:
        """The records of a cluster's results file (``<cluster>.results.jsonl``)."""
        return read_results(path)

    # -- job control: each returns which jobs changed and why the others did not

    def remove(
        self, ids: list[str] | None = None, all_jobs: bool = False, reason: str = ""
    ) -> p.JobsChanged:
        """Remove jobs (``42.0``, cluster ``42``, or every job of yours with ``all_jobs``);
        running ones are killed on their worker."""
        return self._change("remove", ids, all_jobs, reason)

    def hold(
        self, ids: list[str] | None = None, all_jobs: bool = False, reason: str = ""
    ) -> p.JobsChanged:
        """Hold jobs: they do not run until released; running ones are killed and held."""
        return self._change("hold", ids, all_jobs, reason)

    def release(self, ids: list[str] | None = None, all_jobs: bool = False) -> p.JobsChanged:
        """Put held jobs back in the queue."""
        return self._change("release", ids, all_jobs, "")

    def _change(
        self, action: str, ids: list[str] | None, all_jobs: bool, reason: str
    ) -> p.JobsChanged:
        reply = self.conn.request(
            p.ChangeJobs(action=action, ids=list(ids or []), all_jobs=all_jobs, reason=reason)
        )
        assert isinstance(reply, p.JobsChanged)
        return reply

    def users(self) -> p.UserList:
        """Every user's fair-share usage, share and jobs idle and running."""
        reply = self.conn.request(p.QueryUsers())
        assert isinstance(reply, p.UserList)
        return reply

    def analyze(self, ids: list[str]) -> list[p.JobAnalysis]:
        """Why your jobs (``42`` or ``42.0``) are not running, in words and numbers."""
        reply = self.conn.request(p.AnalyzeJobs(ids=list(ids)))
        assert isinstance(reply, p.JobAnalyses)
        return reply.jobs

    def analyze_clusters(self, ids: list[str]) -> p.JobAnalyses:
        """As :meth:`analyze`, but each cluster named whole (``42``) is summarised:
        how many of its jobs are idle for which reason, held for which reason."""
        reply = self.conn.request(p.AnalyzeJobs(ids=list(ids), by_cluster=True))
        assert isinstance(reply, p.JobAnalyses)
        return reply

    def counts(self, all_users: bool = False) -> dict[str, int]:
        """How many of your (or everyone's) jobs are in each state of the queue."""
        reply = self.conn.request(p.QueryCounts(all_users=all_users))
        assert isinstance(reply, p.JobCounts)
        return reply.counts

    def edit(self, ids: list[str], changes: dict[str, str]) -> p.JobsChanged:
        """Change requests or limits of idle or held jobs: ``{"request_memory": "4GB"}``."""
        reply = self.conn.request(p.EditJobs(ids=list(ids), changes=dict(changes)))
        assert isinstance(reply, p.JobsChanged)
        return reply

    def history(
        self,
        ids: list[str] | None = None,
        user: str | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[p.JobInfo]:
        """The ``limit`` most recently ended of the finished and removed jobs, oldest
        first: yours, ``user``'s, or everyone's (``user="*"``); ``since`` is a Unix
        time. Asked for a page at a time (see :meth:`history_pages`)."""
        pages: list[list[p.JobInfo]] = []
        wanted = max(1, limit)
        for page in self.history_pages(ids, user, since, page=min(wanted, HISTORY_PAGE)):
            pages.append(page[-wanted:])
            wanted -= len(pages[-1])
            if wanted <= 0:
                break
        return [job for page in reversed(pages) for job in page]

    def history_pages(
        self,
        ids: list[str] | None = None,
        user: str | None = None,
        since: float | None = None,
        page: int = HISTORY_PAGE,
    ) -> Iterator[list[p.JobInfo]]:
        """As :meth:`history`, a page (at most ``page`` jobs, and no more than the
        scheduler gives in one answer) at a time from the newest back to the oldest
        (each page oldest first), each asked for once the one before is used."""
        before_time: float | None = None
        before_job = ""
        while True:
            message = p.QueryHistory(
                ids=list(ids or []), user=user or "", since=since, limit=page,
                before_time=before_time, before_job=before_job,
            )  # fmt: skip
            reply = self.conn.request(message)
            assert isinstance(reply, p.JobList)
            if not reply.jobs:
                return
            yield reply.jobs
            oldest = reply.jobs[0]
            if not reply.more or oldest.end_time is None:
                return
            before_time, before_job = oldest.end_time, oldest.id

    def tail(
        self, job_id: str, stderr: bool = False, offset: int = 0, limit: int = 1 << 20
    ) -> p.OutputChunk:
        """Up to ``limit`` bytes a running job has written to stdout (or stderr) from
        ``offset``; ``size`` in the reply is how much it has written in all."""
        stream = "stderr" if stderr else "stdout"
        reply = self.conn.request(
            p.TailJob(job_id=job_id, stream=stream, offset=offset, limit=limit)
        )
        assert isinstance(reply, p.OutputChunk)
        return reply

    def follow(
        self, job_id: str, stderr: bool = False, interval: float = 0.5, offset: int = 0
    ) -> Iterator[bytes]:
        """A running job's output from ``offset`` as it grows, until the job stops running."""
        while True:
            chunk = self.tail(job_id, stderr, offset)
            data = p.unpack_bytes(chunk.data)
            if data:
                offset += len(data)
                yield data
            if not chunk.running:
                return
            if offset >= chunk.size:
                time.sleep(interval)
