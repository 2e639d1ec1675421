"""What finished jobs left in the database: small result files (``job_files``),
results (``job_results``), the hashes of large files and the versions hashed
(``result_hashes``), and which jobs' results expired (``expired``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator

from scheduler.database import Database
from scheduler.job_records import JobResult
from scheduler.protocol import JobState
from scheduler.result_hashes import FileHash, FileVersion


class ResultTable:
    """The results of finished jobs, kept until they expire."""

    def __init__(self, database: Database):
        self._database = database

    def save_files(self, cluster: int, proc: int, files: dict[str, bytes]) -> None:
        """Small result files of a job's current attempt (see :meth:`clear_files`)."""
        if not files:
            return
        self._database.statement(
            "INSERT INTO job_files (cluster, proc, name, data) VALUES (?,?,?,?)",
            [(cluster, proc, name, data) for name, data in files.items()],
            many=True,
        )

    def save_result(self, cluster: int, proc: int, result: JobResult) -> None:
        """Record a finished job's result (replacing an earlier attempt's)."""
        value = None if result.value is None else json.dumps(result.value)
        self._database.statement(
            "INSERT OR REPLACE INTO job_results (cluster, proc, value, error, time)"
            " VALUES (?,?,?,?,?)",
            (cluster, proc, value, result.error, self._database.clock()),
        )

    def of_clusters(self, clusters: Iterable[int]) -> dict[tuple[int, int], JobResult]:
        """The recorded results of these clusters' jobs, by (cluster, proc)."""
        wanted = sorted(set(clusters))
        rows: list[sqlite3.Row] = []
        for at in range(0, len(wanted), 500):  # within SQLite's limit on parameters
            chunk = wanted[at : at + 500]
            rows += self._database.query(
                f"SELECT cluster, proc, value, error FROM job_results"
                f" WHERE cluster IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        return {
            (r["cluster"], r["proc"]): JobResult(
                None if r["value"] is None else json.loads(r["value"]), r["error"]
            )
            for r in rows
        }

    def files_of(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], dict[str, bytes]]:
        """:meth:`files` of many jobs, a query per cluster and 500 procs."""
        found: dict[tuple[int, int], dict[str, bytes]] = {}
        rows = self._rows_of("SELECT proc, name, data FROM job_files", keys, " ORDER BY proc, name")
        for cluster, row in rows:
            found.setdefault((cluster, row["proc"]), {})[row["name"]] = bytes(row["data"])
        return found

    def hashes_of(
        self, keys: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], dict[str, tuple[str, int]]]:
        """:meth:`hashes` of many jobs (only those that have some), a few queries."""
        found: dict[tuple[int, int], dict[str, tuple[str, int]]] = {}
        for cluster, row in self._rows_of(
            "SELECT proc, name, sha256, size FROM result_hashes", keys
        ):
            found.setdefault((cluster, row["proc"]), {})[row["name"]] = (row["sha256"], row["size"])
        return found

    def of_jobs(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], JobResult]:
        """The recorded results of these jobs, by (cluster, proc)."""
        found: dict[tuple[int, int], JobResult] = {}
        for cluster, r in self._rows_of("SELECT proc, value, error FROM job_results", keys):
            value = None if r["value"] is None else json.loads(r["value"])
            found[(cluster, r["proc"])] = JobResult(value, r["error"])
        return found

    def clear_files(self, cluster: int, proc: int) -> None:
        """Forget the small result files of an earlier attempt (and the hashes of its
        large ones)."""
        with self._database.transaction() as db:
            db.execute("DELETE FROM job_files WHERE cluster=? AND proc=?", (cluster, proc))
            db.execute("DELETE FROM result_hashes WHERE cluster=? AND proc=?", (cluster, proc))

    def save_hashes(self, cluster: int, proc: int, hashes: dict[str, FileHash]) -> None:
        """The SHA-256, size and version hashed of each large result file of a job, by
        name."""
        forget = "DELETE FROM result_hashes WHERE cluster=? AND proc=?"
        if not hashes:
            self._database.statement(forget, (cluster, proc))
            return
        with self._database.transaction() as db:
            db.execute(forget, (cluster, proc))
            db.executemany(
                "INSERT INTO result_hashes (cluster, proc, name, sha256, size, device, inode,"
                " mtime_ns, ctime_ns) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (cluster, proc, name, found.sha256, found.size, *_version_columns(found))
                    for name, found in hashes.items()
                ],
            )

    def versions_of(self, keys: Iterable[tuple[int, int]]) -> list[tuple[FileVersion, str]]:
        """The version of each large result file of these jobs that its recorded hash
        was taken from, with that hash (files recorded without one are left out)."""
        rows = self._rows_of(
            "SELECT device, inode, size, mtime_ns, ctime_ns, sha256 FROM result_hashes",
            keys,
            " AND ctime_ns IS NOT NULL",
        )
        return [(FileVersion(*tuple(row)[:5]), row["sha256"]) for _, row in rows]

    def _rows_of(
        self, select: str, keys: Iterable[tuple[int, int]], tail: str = ""
    ) -> Iterator[tuple[int, sqlite3.Row]]:
        """Each row of ``select`` (``SELECT ... FROM table``) for these jobs, with its
        cluster: a query per cluster and 500 procs; ``tail`` ends each query."""
        for cluster, chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            query = f"{select} WHERE cluster=? AND proc IN ({marks}){tail}"
            for row in self._database.query(query, (cluster, *chunk)):
                yield cluster, row

    def hashes(self, cluster: int, proc: int) -> dict[str, tuple[str, int]]:
        """What :meth:`save_hashes` recorded for a job."""
        rows = self._database.query(
            "SELECT name, sha256, size FROM result_hashes WHERE cluster=? AND proc=?",
            (cluster, proc),
        )
        return {row["name"]: (row["sha256"], row["size"]) for row in rows}

    def files(self, cluster: int, proc: int) -> dict[str, bytes]:
        rows = self._database.query(
            "SELECT name, data FROM job_files WHERE cluster=? AND proc=? ORDER BY name",
            (cluster, proc),
        )
        return {row["name"]: bytes(row["data"]) for row in rows}

    def expired_results(self, before: float) -> list[tuple[int, int]]:
        """Finished jobs that ended before ``before`` and still keep results."""
        rows = self._database.query(
            "SELECT cluster, proc FROM jobs WHERE state IN (?,?) AND end_time < ?"
            " AND (cluster, proc) NOT IN (SELECT cluster, proc FROM expired)",
            (JobState.COMPLETED.value, JobState.REMOVED.value, before),
        )
        return [(row["cluster"], row["proc"]) for row in rows]

    def expire_results(self, jobs: list[tuple[int, int]], now: float) -> None:
        """Forget the results of these jobs (their rows and events stay, for history)."""
        with self._database.transaction() as db:
            db.executemany("DELETE FROM job_files WHERE cluster=? AND proc=?", jobs)
            db.executemany("DELETE FROM result_hashes WHERE cluster=? AND proc=?", jobs)
            db.executemany(
                "INSERT OR IGNORE INTO expired (cluster, proc, time) VALUES (?,?,?)",
                [(c, p, now) for c, p in jobs],
            )

    def expired_jobs(self, clusters: Iterable[int]) -> set[tuple[int, int]]:
        """The jobs of these clusters whose results were cleaned."""
        whole = sorted(set(clusters))
        rows = self._database.query(
            f"SELECT cluster, proc FROM expired WHERE cluster IN ({','.join('?' * len(whole))})",
            whole,
        )
        return {(row["cluster"], row["proc"]) for row in rows}

    def results_bytes(self, owner: str | None = None) -> int:
        """Bytes of small results kept in the database (of ``owner``'s jobs only)."""
        if owner is None:
            rows = self._database.query("SELECT COALESCE(SUM(bytes), 0) AS n FROM result_bytes")
        else:
            rows = self._database.query(
                "SELECT COALESCE(SUM(bytes), 0) AS n FROM result_bytes WHERE owner=?", (owner,)
            )
        return int(rows[0]["n"])


def _version_columns(found: FileHash) -> tuple[int | None, ...]:
    """The columns ``device, inode, mtime_ns, ctime_ns`` of a hash (its size has its own)."""
    v = found.version
    return (None,) * 4 if v is None else (v.device, v.inode, v.mtime_ns, v.ctime_ns)


def _chunks(keys: Iterable[tuple[int, int]], size: int = 500) -> Iterator[tuple[int, list[int]]]:
    """Jobs grouped by cluster, at most ``size`` procs a group (SQLite's limit on
    parameters)."""
    by_cluster: dict[int, list[int]] = {}
    for cluster, proc in keys:
        by_cluster.setdefault(cluster, []).append(proc)
    for cluster, procs in sorted(by_cluster.items()):
        for at in range(0, len(procs), size):
            yield cluster, procs[at : at + size]
