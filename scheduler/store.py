"""SQLite state of the scheduler: users, clusters, jobs and their events.

SQLite is the source of truth for everything that must survive a restart. The
connection is in autocommit mode; writes go through :meth:`Store.transaction`,
which opens ``BEGIN IMMEDIATE`` and rolls back on error. The database runs in
WAL mode with ``synchronous=NORMAL``: a committed transaction survives a crash
of the scheduler process (``kill -9``); only a power loss can take back the last
few commits.
"""

from __future__ import annotations

import contextlib
import json
import operator
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.protocol import (
    JobEvent,
    JobInfo,
    JobSpec,
    JobState,
    format_job_id,
    from_wire,
    to_wire,
    user_key,
)
from scheduler.schema import MIGRATIONS

USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced: its numbers, or why there are none."""

    value: dict[str, float] | None
    error: str | None


@dataclass
class Job:
    """A job as the scheduler holds it; a row of the ``jobs`` table."""

    cluster: int
    proc: int
    owner: str
    state: JobState
    spec: JobSpec
    submit_time: float
    start_time: float | None = None
    end_time: float | None = None
    worker: str | None = None
    attempt: int = 0
    num_starts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    wall_time: float | None = None
    cpu_time: float | None = None
    hold_reason: str | None = None
    output_files: list[str] = field(default_factory=list)
    #: Set when the job completes (kept in ``job_results``, not in this row).
    result: JobResult | None = None

    @property
    def id(self) -> str:
        return format_job_id(self.cluster, self.proc)

    def info(self, result: JobResult | None = None) -> JobInfo:
        """The record users see, with its result (``result``, else the one it holds)."""
        result = result or self.result
        return JobInfo(
            id=self.id,
            state=self.state.value,
            executable=self.spec.executable,
            arguments=list(self.spec.arguments),
            output_files=list(self.output_files),
            params=dict(self.spec.params),
            result=None if result is None else result.value,
            result_error=None if result is None else result.error,
            **{name: getattr(self, name) for name in _INFO_FIELDS},
        )


#: Fields a job and its public record share unchanged.
_INFO_FIELDS = [
    "cluster",
    "proc",
    "owner",
    "submit_time",
    "start_time",
    "end_time",
    "worker",
    "exit_code",
    "exit_signal",
    "wall_time",
    "cpu_time",
    "num_starts",
    "hold_reason",
]
#: Columns that change after submission; the others are written once.
_MUTABLE_COLUMNS = [
    "state",
    "start_time",
    "end_time",
    "worker",
    "attempt",
    "num_starts",
    "exit_code",
    "exit_signal",
    "wall_time",
    "cpu_time",
    "hold_reason",
    "output_files",
]
_ALL_COLUMNS = ["cluster", "proc", "owner", "spec", "submit_time", *_MUTABLE_COLUMNS]
_JOB_COLUMNS = ", ".join(_ALL_COLUMNS)
_INSERT_EVENT = "INSERT INTO job_events (cluster, proc, time, event, detail) VALUES (?,?,?,?,?)"
_UPDATE_JOB = (
    f"UPDATE jobs SET {', '.join(f'{c}=?' for c in _MUTABLE_COLUMNS)} WHERE cluster=? AND proc=?"
)


_MUTABLE_GET = operator.attrgetter(*_MUTABLE_COLUMNS)
_STATE_AT = _MUTABLE_COLUMNS.index("state")
_OUTPUTS_AT = _MUTABLE_COLUMNS.index("output_files")


def _mutable_values(job: Job) -> list[object]:
    """The changing columns of a job's row, as stored (the hot path of every change)."""
    values = list(_MUTABLE_GET(job))
    values[_STATE_AT] = job.state.value
    values[_OUTPUTS_AT] = json.dumps(job.output_files)
    return values


def _column(job: Job, name: str) -> object:
    """A job attribute as stored in SQLite."""
    value = getattr(job, name)
    if name == "state":
        return value.value
    if name == "spec":
        return _spec_text(value)
    if name == "output_files":
        return json.dumps(value)
    return value


def _spec_text(spec: JobSpec) -> str:
    """A spec as stored, made once per spec object (the procs of a cluster mostly
    share one: see :func:`scheduler.protocol.shared_specs`)."""
    text: str | None = spec.__dict__.get("_text")
    if text is None:
        text = json.dumps(to_wire(spec), separators=(",", ":"))
        object.__setattr__(spec, "_text", text)
    return text


def _jobs_from_rows(rows: Iterable[sqlite3.Row]) -> list[Job]:
    """Jobs from their rows; those whose specs were stored as the same text (the
    procs of most clusters) share one spec object, as they did when submitted."""
    specs: dict[str, JobSpec] = {}
    return [_job_from_row(row, specs) for row in rows]


def _job_from_row(row: sqlite3.Row, specs: dict[str, JobSpec]) -> Job:
    text = row["spec"]
    spec = specs.get(text)
    if spec is None:
        spec = specs[text] = from_wire(JobSpec, json.loads(text), "spec")
    return Job(
        cluster=row["cluster"],
        proc=row["proc"],
        owner=row["owner"],
        state=JobState(row["state"]),
        spec=spec,
        submit_time=row["submit_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        worker=row["worker"],
        attempt=row["attempt"],
        num_starts=row["num_starts"],
        exit_code=row["exit_code"],
        exit_signal=row["exit_signal"],
        wall_time=row["wall_time"],
        cpu_time=row["cpu_time"],
        hold_reason=row["hold_reason"],
        output_files=json.loads(row["output_files"]),
    )


class StoreError(Exception):
    """A request the store refuses (unknown user, duplicate name, ...)."""


class Store:
    """The scheduler's database. One instance per process; thread-safe through a lock."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._depth = 0
        #: When set, writes accumulate in one transaction (a batch) until
        #: :meth:`commit`; this is called when a batch opens, to schedule that.
        self.on_batch_open: Callable[[], None] | None = None
        self._pending_jobs: dict[tuple[int, int], Job] = {}
        self._pending_events: list[tuple[int, int, float, str, str]] = []
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return  # up to date: no need to wait for the write lock
        with self.transaction() as db:
            done = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[done:], start=done + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One unit of writes: all or nothing. Nested calls join the outer one.

        Without batching it commits at the end. With batching (:attr:`on_batch_open`
        set) it is a savepoint inside the open batch, which :meth:`commit` ends.
        """
        with self._lock:
            if self._depth:
                yield self._db
                return
            batching = self.on_batch_open is not None
            self._open_batch()
            if batching:
                self._db.execute("SAVEPOINT unit")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO unit" if batching else "ROLLBACK")
                raise
            finally:
                self._depth = 0
                if batching:
                    self._db.execute("RELEASE unit")
            if not batching:
                self._db.execute("COMMIT")

    def commit(self) -> None:
        """End the open batch: everything written since is durable on return."""
        with self._lock:
            self._write_pending()
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        """Rows of a read, for modules that keep tables of their own (``mail``)."""
        return self._query(sql, args)

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._write_pending()  # a read sees every write queued before it
            return self._db.execute(sql, tuple(args)).fetchall()

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, *, email: str | None = None, admin: bool = False) -> str:
        """Create a user and return their token (shown once; only its hash is kept)."""
        if not USER_NAME.fullmatch(name):
            raise StoreError(
                f"invalid user name {name!r}: use lower-case letters, digits, '_', '.', '-'"
            )
        token = f"{name}:{secrets.token_urlsafe(24)}"
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise StoreError(f"user {name!r} already exists")
            db.execute(
                "INSERT INTO users (name, key_hash, email, admin, created) VALUES (?,?,?,?,?)",
                (name, user_key(token), email, int(admin), time.time()),
            )
        return token

    def new_token(self, name: str) -> str:
        """Replace a user's token; the old one stops working."""
        token = f"{name}:{secrets.token_urlsafe(24)}"
        with self.transaction() as db:
            cur = db.execute("UPDATE users SET key_hash=? WHERE name=?", (user_key(token), name))
            if cur.rowcount == 0:
                raise StoreError(f"no user {name!r}")
        return token

    def remove_user(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount == 0:
                raise StoreError(f"no user {name!r}")

    def user_key(self, name: str) -> bytes | None:
        rows = self._query("SELECT key_hash FROM users WHERE name=?", (name,))
        return bytes(rows[0]["key_hash"]) if rows else None

    def is_admin(self, name: str) -> bool:
        rows = self._query("SELECT admin FROM users WHERE name=?", (name,))
        return bool(rows and rows[0]["admin"])

    def users(self) -> list[dict[str, object]]:
        rows = self._query("SELECT name, email, admin, created FROM users ORDER BY name")
        return [dict(row) for row in rows]

    # ------------------------------------------------------------------ clusters and jobs

    def reserve_cluster(self, owner: str, now: float) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO clusters (owner, created) VALUES (?, ?)", (owner, now))
            return int(cur.lastrowid or 0)

    def close_cluster(self, cluster: int, now: float) -> None:
        """No more parts of ``cluster`` are taken."""
        with self.transaction() as db:
            db.execute("UPDATE clusters SET submitted=? WHERE id=?", (now, cluster))

    def incomplete_clusters(self) -> list[int]:
        """Clusters with jobs queued whose last part never came."""
        rows = self._query(
            "SELECT id FROM clusters WHERE submitted IS NULL"
            " AND EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)"
        )
        return [row["id"] for row in rows]

    def cluster_owner(self, cluster: int) -> tuple[str, bool] | None:
        """The owner of a cluster and whether its jobs were submitted."""
        rows = self._query("SELECT owner, submitted FROM clusters WHERE id=?", (cluster,))
        return (rows[0]["owner"], rows[0]["submitted"] is not None) if rows else None

    def insert_jobs(
        self, cluster: int, submit_file: str, jobs: list[Job], now: float, last: bool = True
    ) -> None:
        """Queue procs of a cluster in one transaction; the ``last`` part completes it."""
        with self.transaction() as db:
            db.execute(
                "UPDATE clusters SET submit_file=?, submitted=? WHERE id=?",
                (submit_file, now if last else None, cluster),
            )
            db.executemany(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({','.join('?' * len(_ALL_COLUMNS))})",
                [tuple(_column(job, c) for c in _ALL_COLUMNS) for job in jobs],
            )
            db.executemany(
                _INSERT_EVENT,
                [(j.cluster, j.proc, now, "submitted", f"from {submit_file}") for j in jobs],
            )

    def save_job(self, job: Job, event: str, detail: str = "", now: float | None = None) -> None:
        """Write a job's changed row and one event.

        When batching, both are queued and written (with ``executemany``, each
        job's row once, in its latest state) before the next read or the commit:
        the database always ends a turn as memory does. Otherwise they are
        written now, in the caller's transaction or one of their own.
        """
        row = (job.cluster, job.proc, time.time() if now is None else now, event, detail)
        if self.on_batch_open is not None:
            with self._lock:
                self._open_batch()
                self._pending_jobs[(job.cluster, job.proc)] = job
                self._pending_events.append(row)
            return
        with self.transaction() as db:
            db.execute(_UPDATE_JOB, (*_mutable_values(job), job.cluster, job.proc))
            db.execute(_INSERT_EVENT, row)

    def _open_batch(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            if self.on_batch_open is not None:
                self.on_batch_open()

    def _write_pending(self) -> None:
        """Write the queued job rows and events (inside the open batch)."""
        if self._pending_jobs:
            rows = [(*_mutable_values(j), j.cluster, j.proc) for j in self._pending_jobs.values()]
            self._pending_jobs.clear()
            self._db.executemany(_UPDATE_JOB, rows)
        if self._pending_events:
            self._db.executemany(_INSERT_EVENT, self._pending_events)
            self._pending_events.clear()

    def save_files(self, cluster: int, proc: int, files: dict[str, bytes]) -> None:
        """Small result files of a job's current attempt (see :meth:`clear_files`)."""
        if not files:
            return
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO job_files (cluster, proc, name, data) VALUES (?,?,?,?)",
                [(cluster, proc, name, data) for name, data in files.items()],
            )

    def save_result(self, cluster: int, proc: int, result: JobResult) -> None:
        """Record a finished job's result (replacing an earlier attempt's)."""
        value = None if result.value is None else json.dumps(result.value)
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO job_results (cluster, proc, value, error, time)"
                " VALUES (?,?,?,?,?)",
                (cluster, proc, value, result.error, time.time()),
            )

    def cluster_has_others(self, cluster: int, proc: int) -> bool:
        """Whether the cluster holds a job besides ``proc`` (a sweep, not a lone job)."""
        rows = self._query(
            "SELECT 1 FROM jobs WHERE cluster = ? AND proc != ? LIMIT 1", (cluster, proc)
        )
        return bool(rows)

    def results(self, clusters: Iterable[int]) -> dict[tuple[int, int], JobResult]:
        """The recorded results of these clusters' jobs, by (cluster, proc)."""
        wanted = sorted(set(clusters))
        rows: list[sqlite3.Row] = []
        for at in range(0, len(wanted), 500):  # within SQLite's limit on parameters
            chunk = wanted[at : at + 500]
            rows += self._query(
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

    def clear_files(self, cluster: int, proc: int) -> None:
        """Forget the small result files of an earlier attempt."""
        with self.transaction() as db:
            db.execute("DELETE FROM job_files WHERE cluster=? AND proc=?", (cluster, proc))

    def files(self, cluster: int, proc: int) -> dict[str, bytes]:
        rows = self._query(
            "SELECT name, data FROM job_files WHERE cluster=? AND proc=? ORDER BY name",
            (cluster, proc),
        )
        return {row["name"]: bytes(row["data"]) for row in rows}

    def active_jobs(self) -> list[Job]:
        """Every job not yet completed or removed, in submit order."""
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN (?,?,?) ORDER BY cluster, proc",
            (JobState.IDLE.value, JobState.RUNNING.value, JobState.HELD.value),
        )
        return _jobs_from_rows(rows)

    def jobs(
        self,
        *,
        owner: str | None = None,
        clusters: Iterable[int] = (),
        job_ids: Iterable[tuple[int, int]] = (),
        states: Iterable[str] = (),
    ) -> list[Job]:
        """Jobs matching every filter given (clusters and job ids are OR-ed together)."""
        where, args = [], []
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
        return _jobs_from_rows(self._query(sql + " ORDER BY cluster, proc", args))

    def save_spec(self, job: Job, event: str, detail: str) -> None:
        """Write an edited spec (``dedit``) and one event."""
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET spec=? WHERE cluster=? AND proc=?",
                (_column(job, "spec"), job.cluster, job.proc),
            )
        self.save_job(job, event, detail)

    def history(
        self, *, owner: str | None, job_ids: Iterable[str], since: float | None, limit: int
    ) -> list[Job]:
        """Finished jobs (completed or removed), the most recently ended ``limit``."""
        where = ["state IN (?,?)"]
        args: list[object] = [JobState.COMPLETED.value, JobState.REMOVED.value]
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
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
            " ORDER BY end_time DESC, cluster DESC, proc DESC LIMIT ?"
        )
        rows = self._query(sql, [*args, limit])
        return _jobs_from_rows(reversed(rows))

    def expired_results(self, before: float) -> list[tuple[int, int]]:
        """Finished jobs that ended before ``before`` and still keep results."""
        rows = self._query(
            "SELECT cluster, proc FROM jobs WHERE state IN (?,?) AND end_time < ?"
            " AND (cluster, proc) NOT IN (SELECT cluster, proc FROM expired)",
            (JobState.COMPLETED.value, JobState.REMOVED.value, before),
        )
        return [(row["cluster"], row["proc"]) for row in rows]

    def expire_results(self, jobs: list[tuple[int, int]], now: float) -> None:
        """Forget the results of these jobs (their rows and events stay, for history)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM job_files WHERE cluster=? AND proc=?", jobs)
            db.executemany(
                "INSERT OR IGNORE INTO expired (cluster, proc, time) VALUES (?,?,?)",
                [(c, p, now) for c, p in jobs],
            )

    def expired_jobs(self, clusters: Iterable[int]) -> set[tuple[int, int]]:
        """The jobs of these clusters whose results were cleaned."""
        whole = sorted(set(clusters))
        rows = self._query(
            f"SELECT cluster, proc FROM expired WHERE cluster IN ({','.join('?' * len(whole))})",
            whole,
        )
        return {(row["cluster"], row["proc"]) for row in rows}

    def results_bytes(self, owner: str | None = None) -> int:
        """Bytes of small results kept in the database (of ``owner``'s jobs only)."""
        if owner is None:
            rows = self._query("SELECT COALESCE(SUM(LENGTH(data)), 0) AS n FROM job_files")
        else:
            rows = self._query(
                "SELECT COALESCE(SUM(LENGTH(f.data)), 0) AS n FROM job_files f"
                " JOIN jobs j ON j.cluster = f.cluster AND j.proc = f.proc WHERE j.owner=?",
                (owner,),
            )
        return int(rows[0]["n"])

    def events(self, cluster: int, proc: int) -> list[JobEvent]:
        rows = self._query(
            "SELECT time, event, detail FROM job_events WHERE cluster=? AND proc=? ORDER BY seq",
            (cluster, proc),
        )
        return [JobEvent(time=r["time"], event=r["event"], detail=r["detail"]) for r in rows]

    # ------------------------------------------------------------------ workers

    def worker_id(self, name: str, now: float) -> int:
        """The stable id of a worker name, assigned at its first registration."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM workers WHERE name=?", (name,)).fetchone()
            if row:
                db.execute("UPDATE workers SET last_seen=? WHERE id=?", (now, row["id"]))
                return int(row["id"])
            cur = db.execute(
                "INSERT INTO workers (name, first_seen, last_seen) VALUES (?,?,?)", (name, now, now)
            )
            return int(cur.lastrowid or 0)
