"""The scheduler's database: the units of work (:class:`scheduler.database.Database`),
the job rows and their events, and the other tables as attributes."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from scheduler.accounts import Accounts
from scheduler.checkpoint_table import CheckpointTable
from scheduler.cluster_table import ClusterTable
from scheduler.database import Database
from scheduler.job_records import (
    _ALL_COLUMNS,
    _INSERT_EVENT,
    _JOB_COLUMNS,
    Job,
    _column,
    _jobs_from_rows,
    _mutable_values,
)
from scheduler.protocol import JobEvent, JobState
from scheduler.result_table import ResultTable


class Store(Database):
    """The scheduler's database: its units of work, the ``jobs`` and ``job_events``
    tables, and the other tables (:attr:`accounts`, :attr:`clusters`,
    :attr:`results`, :attr:`checkpoints`). One instance per process; thread-safe through a lock."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        super().__init__(path, clock)
        self.accounts = Accounts(self)
        self.clusters = ClusterTable(self)
        self.results = ResultTable(self)
        self.checkpoints = CheckpointTable(self)

    def insert_jobs(
        self, cluster: int, submit_file: str, jobs: list[Job], now: float, last: bool = True
    ) -> None:
        """Queue procs of a cluster in one transaction, committed at once; the ``last``
        part completes it. On a full disk it raises and nothing is queued."""
        self.insert_clusters([(cluster, submit_file, jobs)], now, last)

    def insert_clusters(
        self,
        parts: list[tuple[int, str, list[Job]]],
        now: float,
        last: bool = True,
        named: bool = False,
    ) -> None:
        """:meth:`insert_jobs` for several clusters (cluster, submit file, jobs) at once,
        in one transaction (the nodes of a DAG queued together). ``named``: the
        clusters' rows already name their submit file and are marked submitted (a
        DAG's node clusters), so they are not written again."""
        with self.alone() as db:
            if not named:
                db.executemany(
                    "UPDATE clusters SET submit_file=?, submitted=? WHERE id=?",
                    [
                        (submit_file, now if last else None, cluster)
                        for cluster, submit_file, _ in parts
                    ],
                )
            db.executemany(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({','.join('?' * len(_ALL_COLUMNS))})",
                [
                    tuple(_column(job, c) for c in _ALL_COLUMNS)
                    for _, _, jobs in parts
                    for job in jobs
                ],
            )
            db.executemany(
                _INSERT_EVENT,
                [
                    (j.cluster, j.proc, now, "submitted", f"from {submit_file}")
                    for _, submit_file, jobs in parts
                    for j in jobs
                ],
            )

    def save_job(self, job: Job, event: str, detail: str = "", now: float | None = None) -> None:
        """Write a job's changed row and one event, as part of the open unit (or of one
        of their own).

        Both are queued, as they are now, and written (with ``executemany``, each
        job's latest row once) before the next read or the commit: the database
        always ends a turn as memory does.
        """
        key = (job.cluster, job.proc)
        row = _mutable_values(job)
        row += key
        event_row = (job.cluster, job.proc, self.clock() if now is None else now, event, detail)
        with self._lock:
            if not self._units:
                with self.transaction():
                    self._queue(key, row, event_row)
                return
            self._queue(key, row, event_row)

    def cluster_has_others(self, cluster: int, proc: int) -> bool:
        """Whether the cluster holds a job besides ``proc`` (a sweep, not a lone job)."""
        rows = self._query(
            "SELECT 1 FROM jobs WHERE cluster = ? AND proc != ? LIMIT 1", (cluster, proc)
        )
        return bool(rows)

    def active_jobs(self) -> list[Job]:
        """Every job not yet completed or removed, in submit order."""
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN (?,?,?) ORDER BY cluster, proc",
            (JobState.IDLE.value, JobState.RUNNING.value, JobState.HELD.value),
        )
        return _jobs_from_rows(rows)

    def cluster_sizes(self, clusters: Iterable[int]) -> dict[int, int]:
        """The number of jobs each of ``clusters`` has, in any state."""
        wanted = sorted(set(clusters))
        sizes: dict[int, int] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            rows = self._query(
                f"SELECT cluster, COUNT(*) FROM jobs WHERE cluster IN ({','.join('?' * len(part))})"
                " GROUP BY cluster",
                tuple(part),
            )
            sizes.update((int(row[0]), int(row[1])) for row in rows)
        return sizes

    def jobs(
        self,
        *,
        owner: str | None = None,
        clusters: Iterable[int] = (),
        job_ids: Iterable[tuple[int, int]] = (),
        states: Iterable[str] = (),
    ) -> list[Job]:
        """Jobs matching every filter given (clusters and job ids are OR-ed together)."""
        where: list[str] = []
        args: list[object] = []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        by_cluster: dict[int, list[int]] = {}
        for cluster, proc in job_ids:
            by_cluster.setdefault(cluster, []).append(proc)
        picks: list[tuple[str, tuple[int, ...]]] = []
        whole = sorted(set(clusters))
        if whole:
            picks.append((f"cluster IN ({','.join('?' * len(whole))})", tuple(whole)))
        for cluster, procs in by_cluster.items():
            marks = ",".join("?" * len(procs))
            picks.append((f"(cluster=? AND proc IN ({marks}))", (cluster, *procs)))
        if picks:
            where.append("(" + " OR ".join(sql for sql, _ in picks) + ")")
            args.extend(a for _, values in picks for a in values)
        states = list(states)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        found = _jobs_from_rows(self._query(sql + " ORDER BY cluster, proc", args))
        self.checkpoints.attach(found)
        return found

    def jobs_page(
        self,
        *,
        owner: str | None,
        clusters: Collection[int],
        states: Iterable[str],
        after: tuple[int, int],
        limit: int,
    ) -> list[Job]:
        """The first ``limit`` jobs in ``states`` after the id ``after`` (cluster, proc),
        in id order, of ``owner`` (None: anyone's) and of ``clusters`` (none: any):
        one range of the (state, cluster, proc) index read per state."""
        found: list[Job] = []
        for state in states:
            where = ["state=?", "(cluster, proc) > (?, ?)"]
            args: list[object] = [state, *after]
            if owner is not None:
                where.append("+owner=?")  # the index's order, not the owner's index
                args.append(owner)
            if clusters:
                where.append(f"cluster IN ({','.join('?' * len(clusters))})")
                args.extend(sorted(clusters))
            sql = (
                f"SELECT {_JOB_COLUMNS} FROM jobs INDEXED BY jobs_state_id"
                f" WHERE {' AND '.join(where)} ORDER BY cluster, proc LIMIT ?"
            )
            found += _jobs_from_rows(self._query(sql, [*args, limit]))
        found.sort(key=lambda job: (job.cluster, job.proc))
        del found[limit:]
        self.checkpoints.attach(found)
        return found

    def save_spec(self, job: Job, event: str, detail: str) -> None:
        """Write an edited spec (``dedit``) and one event."""
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET spec=? WHERE cluster=? AND proc=?",
                (_column(job, "spec"), job.cluster, job.proc),
            )
            self.save_job(job, event, detail)

    def history(
        self,
        *,
        owner: str | None,
        job_ids: Iterable[str],
        since: float | None,
        limit: int,
        before: tuple[float, int, int] | None = None,
    ) -> list[Job]:
        """Finished jobs (completed or removed), the most recently ended ``limit``, the
        most recent last, of those that ended before the job ``before`` names (its end
        time, cluster and proc)."""
        where = ["state IN (?,?)"]
        args: list[object] = [JobState.COMPLETED.value, JobState.REMOVED.value]
        # Read back from where the page starts along an index in the page's order,
        # not every matching job sorted; jobs named by id are few, found by id.
        job_ids = list(job_ids)
        index = "" if job_ids else "jobs_ended" if owner is None else "jobs_owner_ended"
        if before is not None:
            where.append("(end_time, cluster, proc) < (?, ?, ?)")
            args.extend(before)
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if since is not None:
            where.append("end_time >= ?")
            args.append(since)
        picks = []
        for text in job_ids:
            cluster, _, proc = text.partition(".")
            picks.append("(cluster=? AND proc=?)" if proc else "cluster=?")
            args.extend([int(cluster), int(proc)] if proc else [int(cluster)])
        if picks:
            where.append("(" + " OR ".join(picks) + ")")
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs {f'INDEXED BY {index}' if index else ''}"
            f" WHERE {' AND '.join(where)}"
            " ORDER BY end_time DESC, cluster DESC, proc DESC LIMIT ?"
        )
        rows = self._query(sql, [*args, limit])
        found = _jobs_from_rows(reversed(rows))
        self.checkpoints.attach(found)
        return found

    def events_of(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], list[JobEvent]]:
        """The events of many jobs (their cluster and proc), a few queries in all."""
        by_cluster: dict[int, list[int]] = {}
        for cluster, proc in keys:
            by_cluster.setdefault(cluster, []).append(proc)
        found: dict[tuple[int, int], list[JobEvent]] = {}
        for cluster, procs in by_cluster.items():
            for at in range(0, len(procs), 500):
                chunk = procs[at : at + 500]
                for key in zip(itertools.repeat(cluster), chunk, strict=False):
                    found[key] = []
                rows = self._query(
                    "SELECT proc, time, event, detail FROM job_events WHERE cluster=?"
                    f" AND proc IN ({','.join('?' * len(chunk))}) ORDER BY seq",
                    (cluster, *chunk),
                )
                for r in rows:
                    found[(cluster, r["proc"])].append(
                        JobEvent(time=r["time"], event=r["event"], detail=r["detail"])
                    )
        return found

    def events(self, cluster: int, proc: int) -> list[JobEvent]:
        rows = self._query(
            "SELECT time, event, detail FROM job_events WHERE cluster=? AND proc=? ORDER BY seq",
            (cluster, proc),
        )
        return [JobEvent(time=r["time"], event=r["event"], detail=r["detail"]) for r in rows]
