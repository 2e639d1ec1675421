"""SQLite state of the scheduler: users, clusters, jobs and their events.

SQLite is the source of truth for everything that must survive a restart. The
database runs in WAL mode with ``synchronous=NORMAL``: a committed transaction
survives a crash of the scheduler process (``kill -9``); only a power loss can take
back the last few commits.

Writes go through units of work (:meth:`Store.transaction`, nestable): a unit is all
or nothing. When it raises, everything it wrote is undone (its SQL, through a
savepoint, and the job rows and events it queued in memory) and none of it is ever
committed, while the other units of its batch are kept. An outermost unit that
writes takes a savepoint at its first write; a nested unit takes none, as nearly
all succeed: one that fails having written rolls back to its outermost unit's
savepoint, and what its enclosing units wrote before it is written again. A
unit's caller may undo its own changes in memory with it: :meth:`Store.on_undo`
registers a callable that runs if the innermost open unit is rolled back (the
callables of a unit in the reverse order of their registration); when a nested
unit succeeds its callables pass to the enclosing unit, and when the outermost
unit succeeds they are dropped.
:meth:`Store.remember` does the same, and nothing outside every unit: the owners of
the scheduler's memory (see :mod:`scheduler.undo`) register each change with it, so
that a unit that fails (:func:`scheduler.units.run_unit`) leaves memory, as well as
the database, as it found them.

Units are grouped in batches, one transaction each, opened by the first write (or job
row queued) of a unit, so that a unit that only reads takes no write lock, and ended
by :meth:`Store.commit`
(the scheduler's event loop commits once per turn, :attr:`Store.on_batch_open`
telling it that a batch opened). A store with nobody to end its batches (no
``on_batch_open``: the command-line tools, a test) commits each outermost unit on
its own, as :meth:`Store.alone` does.

A batch's writes are also kept in memory until its commit: a commit that finds the
disk full makes SQLite drop the whole transaction, and the batch is then written
again into a new one, to be committed once there is room. The database never falls
behind what the scheduler holds in memory, and nothing is lost while the disk is
full.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import operator
import os
import re
import secrets
import sqlite3
import threading
import time
from _thread import get_ident
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from scheduler.disk_space import free_bytes
from scheduler.protocol import (
    JobEvent,
    JobInfo,
    JobSpec,
    JobState,
    format_job_id,
    from_wire,
    json_text,
    record,
    user_key,
)
from scheduler.protocol.scram import Verifier, make_verifier
from scheduler.schema import MIGRATIONS

log = logging.getLogger(__name__)

USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
WORKER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def new_secret(name: str) -> str:
    """A fresh token or worker credential for ``name``: ``NAME:SECRET``."""
    return f"{name}:{secrets.token_urlsafe(24)}"


def _columns(v: Verifier) -> tuple[bytes, int, bytes, bytes]:
    return v.salt, v.iterations, v.stored_key, v.server_key


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

    @functools.cached_property
    def id(self) -> str:
        """``CLUSTER.PROC``, made once: neither ever changes."""
        return format_job_id(self.cluster, self.proc)

    def info(self, result: JobResult | None = None) -> JobInfo:
        """The record users see, with its result (``result``, else the one it holds)."""
        fields = self.wire_info(result)
        fields["arguments"] = list(self.spec.arguments)
        fields["output_files"] = list(self.output_files)
        fields["params"] = dict(self.spec.params)
        return record(JobInfo, fields, wire=fields)

    def wire_info(self, result: JobResult | None = None) -> dict[str, Any]:
        """:meth:`info` as it goes on the wire (``to_wire``), built straight from the
        job (its lists are the job's own, not copies)."""
        result = result or self.result
        state = self.state
        spec = self.spec
        return {
            "id": self.id,
            "cluster": self.cluster,
            "proc": self.proc,
            "owner": self.owner,
            "state": state.value,
            "submit_time": self.submit_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
            # Where it ran last is not where it is (dq, dstat).
            "worker": None if state is JobState.IDLE or state is JobState.HELD else self.worker,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "wall_time": self.wall_time,
            "cpu_time": self.cpu_time,
            "num_starts": self.num_starts,
            "hold_reason": self.hold_reason,
            "executable": spec.executable,
            "arguments": spec.arguments,
            "output_files": self.output_files,
            "mail": "",
            "total_run_time": None,
            "params": spec.params,
            "result": None if result is None else result.value,
            "result_error": None if result is None else result.error,
        }


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
    return json_text(spec)


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


class UserRow(TypedDict):
    """A user as ``dfarm users`` lists them."""

    name: str
    email: str | None
    admin: bool
    created: float


class CredentialRow(TypedDict):
    """A worker credential as ``dfarm workers`` lists them."""

    name: str
    created: float


class StoreError(Exception):
    """A request the store refuses (unknown user, duplicate name, ...)."""


#: Free bytes below which a database that cannot be opened as usual is opened alone.
NO_ROOM = 2**20


def _no_room(folder: Path) -> bool:
    try:
        return free_bytes(folder) < NO_ROOM
    except OSError:
        return False


def _connect(path: Path, exclusive: bool = False) -> sqlite3.Connection:
    """The database in WAL mode. ``exclusive``: for this process alone, with WAL's
    index in memory instead of the shared ``-shm`` file, which a full disk has no
    room for; it can then be read, and written once there is room."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        if exclusive:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        db.close()
        raise
    return db


#: A write kept for replay: the statement, its parameters, and whether it ran once
#: per row of them (``executemany``).
Write = tuple[str, object, bool]
#: A job event as written: cluster, proc, time, event, detail.
_Event = tuple[int, int, float, str, str]


class _Unit:
    """An open unit of work: where its writes begin, and how to undo it in memory."""

    __slots__ = ("undo", "writes")

    def __init__(self, writes: int):
        self.writes = writes
        self.undo: list[Callable[[], None]] = []


class _Scope:
    """The ``with`` of one unit inside the open batch (see :meth:`Store.transaction`);
    ``kept``: where the undo callbacks of an outermost unit that succeeds go, instead
    of being dropped. A class, not a generator: units are the hot path."""

    __slots__ = ("_at", "_kept", "_store", "_unit")

    def __init__(self, store: Store, kept: list[Callable[[], None]] | None = None):
        self._store = store
        self._kept = kept

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        store._lock.acquire()
        try:
            self._at, self._unit = store._open_unit()
        except BaseException:
            store._lock.release()
            raise
        return store._recorder  # type: ignore[return-value]

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            self._store._close_unit(self._unit, self._at, kind is not None, self._kept)
        finally:
            self._store._lock.release()


def _run(undo: list[Callable[[], None]]) -> None:
    """Run a unit's undo callbacks, the last registered first; one that fails is
    logged and does not stop the others."""
    for callback in reversed(undo):
        try:
            callback()
        except Exception:
            log.exception("an undo callback of a failed unit of work failed")


def _in_transaction(db: sqlite3.Connection) -> bool:
    """Whether ``db`` has a transaction open (read again: statements change it)."""
    return db.in_transaction


class _Recorder:
    """The connection as a unit sees it: its writes are kept for replay."""

    def __init__(self, store: Store):
        self._store = store

    def execute(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        if sql.lstrip()[:6].upper() == "SELECT":
            return self._store._read(sql, tuple(args))
        return self._store._write(sql, tuple(args), False)

    def executemany(self, sql: str, rows: Iterable[Iterable[object]]) -> sqlite3.Cursor:
        return self._store._write(sql, rows if isinstance(rows, list) else list(rows), True)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store._db, name)


class Store:
    """The scheduler's database. One instance per process; thread-safe through a lock."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = path
        #: The time of what it records (the scheduler gives its own clock; the
        #: command-line tools that open the database read the system's).
        self.clock = clock
        self._lock = threading.RLock()
        # Created owner-only: SQLite gives its -wal and -shm files the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        #: Opened for this process alone (see :func:`_connect`).
        self.exclusive = False
        try:
            self._db = _connect(path)
        except sqlite3.OperationalError as exc:
            if not _no_room(path.parent):
                raise
            self._db = _connect(path, exclusive=True)
            self.exclusive = True
            log.warning(
                "%s opened for the scheduler alone: the disk has no room for its shared"
                " index (%s); shared again once there is room",
                path,
                exc,
            )
        #: Called when a batch opens, to have :meth:`commit` end it later; without
        #: it, each outermost unit is committed on its own.
        self.on_batch_open: Callable[[], None] | None = None
        self._recorder = _Recorder(self)
        #: The open units, outermost first.
        self._units: list[_Unit] = []
        #: The outermost unit has its savepoint (taken at its first write: a unit
        #: that only reads or queues rows needs none).
        self._saved = False
        #: The undo callbacks of the innermost open unit, where :meth:`remember`
        #: appends; None outside every unit and while undo callbacks run (the
        #: changes they make register nothing).
        self._top: list[Callable[[], None]] | None = None
        #: The thread that opened the outermost unit (the one holding the lock).
        self._owner = 0
        #: Every statement the open batch ran, in order, to run again if its
        #: transaction is lost; job rows (the latest of each job) and events queued,
        #: not yet written.
        self._writes: list[Write] = []
        self._pending: dict[tuple[int, int], list[object]] = {}
        self._events: list[_Event] = []
        #: The batch's transaction was dropped by SQLite (a failed commit or write)
        #: and not yet written again.
        self._lost = False
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def share(self) -> bool:
        """Open an :attr:`exclusive` database again as usual, shared with other
        processes (``dfarm user``, ``dfarm backup``); done between batches, once the
        disk has room. False when it cannot be yet."""
        with self._lock:
            if not self.exclusive or self._db.in_transaction or self._writes or self._lost:
                return False
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            try:
                self._db = _connect(self.path)
            except sqlite3.Error:
                self._db = _connect(self.path, exclusive=True)
                return False
            self.exclusive = False
            log.warning("%s is shared again", self.path)
            return True

    def _migrate(self) -> None:
        if self._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return  # up to date: no need to wait for the write lock
        with self.transaction() as db:
            done = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[done:], start=done + 1):
                if callable(script):
                    script(db)
                else:
                    for statement in filter(str.strip, script.split(";")):
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    # ------------------------------------------------------------------ units of work

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One unit of work, all or nothing (see the module's documentation); units
        nest. It joins the open batch, or, with no ``on_batch_open`` to have the
        batch committed later, is committed on its own (:meth:`alone`)."""
        return self.alone() if self.on_batch_open is None else self._unit()

    def on_undo(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` if the innermost open unit is rolled back (with those
        registered after it first); passed to the enclosing unit when that one
        succeeds, dropped when the outermost succeeds."""
        with self._lock:
            if not self._units:
                raise RuntimeError("on_undo outside a unit of work")
            self._units[-1].undo.append(callback)

    def remember(self, callback: Callable[[], None]) -> None:
        """As :meth:`on_undo` inside a unit; outside any, nothing: a change made
        outside every unit has nothing to be undone with. The hook that memory's
        owners (the job table, slots, the worker registry, connections) are given."""
        top = self._top
        if top is not None and self._owner == get_ident():
            top.append(callback)  # the lock is held: this thread opened the unit
            return
        with self._lock:  # another thread's unit: wait for it to end
            top = self._top
            if top is not None:
                top.append(callback)

    def _undo(self, callbacks: list[Callable[[], None]]) -> None:
        """Run a failed unit's undo callbacks; what they change is not registered."""
        top, self._top = self._top, None
        try:
            _run(callbacks)
        finally:
            self._top = top

    @contextlib.contextmanager
    def alone(self) -> Iterator[sqlite3.Connection]:
        """A unit committed on its own, at once (outside any other unit; inside one, it
        is a nested unit): if it cannot be (the disk is full), it raises and leaves
        nothing behind, its undo callbacks run, and its caller changes nothing in
        memory either."""
        with self._lock:
            if self._units:
                with self._unit() as db:
                    yield db
                return
            self.commit()  # the rest of the batch, which must not fail with it
            undo: list[Callable[[], None]] = []
            try:
                with self._unit(undo) as db:
                    yield db
                self.commit()
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._end_batch()
                self._undo(undo)
                raise

    def _unit(self, kept: list[Callable[[], None]] | None = None) -> _Scope:
        return _Scope(self, kept)

    def _open_unit(self) -> tuple[int, _Unit]:
        # The batch opens at the unit's first write: one that only reads (most
        # messages) takes no write lock.
        unit = _Unit(len(self._writes))
        units = self._units
        if not units:
            self._owner = get_ident()
        units.append(unit)
        self._top = unit.undo
        return len(units) - 1, unit

    def _close_unit(
        self, unit: _Unit, at: int, failed: bool, kept: list[Callable[[], None]] | None
    ) -> None:
        del self._units[at:]
        self._top = self._units[-1].undo if at else None
        if failed:
            self._roll_back(unit, at)
            return
        if at:
            self._units[-1].undo += unit.undo
            return
        if self._saved:
            self._saved = False
            try:
                self._db.execute("RELEASE u")
            except sqlite3.Error:
                self._drop()  # its writes are kept: written again with the batch's
        if kept is not None:
            kept += unit.undo

    def _roll_back(self, unit: _Unit, at: int) -> None:
        """Undo a unit that raised: its statements, its rows queued, then what its
        callbacks undo in memory."""
        wrote = len(self._writes) > unit.writes
        del self._writes[unit.writes :]
        if self._saved and (wrote or not at):
            try:
                self._db.execute("ROLLBACK TO u")
                if at:  # what the enclosing units wrote before this one opened
                    self._rewrite(self._units[0].writes, savepoint=False)
                else:
                    self._saved = False
                    self._db.execute("RELEASE u")
            except sqlite3.Error:  # SQLite dropped the whole transaction (disk full)
                self._drop()
        self._undo(unit.undo)
        if self._lost and not self._units:
            with contextlib.suppress(sqlite3.Error):
                self._restore()

    def _open_batch(self) -> None:
        if self._lost:
            self._restore()
        elif not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            if self.on_batch_open is not None:
                self.on_batch_open()

    def _write(self, sql: str, args: object, many: bool) -> sqlite3.Cursor:
        """Run a statement of the innermost unit, kept for replay."""
        self._before_write()
        try:
            run = self._db.executemany if many else self._db.execute
            cur = run(sql, args)  # type: ignore[arg-type]
        except sqlite3.Error:
            # Lost, or some rows of an executemany written: the batch is written
            # again, from what was kept, before the next statement.
            if many or not self._db.in_transaction:
                self._drop()
            raise
        self._writes.append((sql, args, many))
        return cur

    def _statement(self, sql: str, args: object, many: bool = False) -> sqlite3.Cursor:
        """One statement, a unit of its own. Inside an open unit it needs no savepoint
        of its own: a statement that fails leaves nothing (an ``executemany`` cut
        short is dropped by :meth:`_write`)."""
        with self._lock:
            if self._units:
                return self._write(sql, args, many)
            with self.transaction():
                return self._write(sql, args, many)

    def _before_write(self) -> None:
        """The batch opened (or written again if it was lost); a savepoint for each
        open unit."""
        self._open_batch()
        if not self._saved and self._units:
            self._db.execute("SAVEPOINT u")
            self._saved = True

    def _read(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        self._sync()
        return self._db.execute(sql, args)

    def _drop(self) -> None:
        """The batch's transaction is gone, or must be written again."""
        self._lost = True
        self._saved = False

    def commit(self) -> None:
        """End the open batch: everything written since is durable on return. When
        the commit fails (disk full), the batch is written again into a new
        transaction, for a later commit, and the error raised."""
        with self._lock:
            if self._units:
                raise RuntimeError("commit inside a unit of work")
            if self._lost:
                self._restore()
            self._write_pending()
            if self._db.in_transaction:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error:
                    if not _in_transaction(self._db):  # COMMIT failed and ended it
                        self._drop()
                        with contextlib.suppress(sqlite3.Error):
                            self._restore()
                    raise
            self._end_batch()

    def _end_batch(self) -> None:
        self._writes.clear()
        self._pending = {}
        self._events = []
        self._lost = False
        self._saved = False

    def _restore(self) -> None:
        """Write the open batch again, into a new transaction (the old one was lost),
        with the outermost open unit's savepoint where it was."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._rewrite(0, savepoint=True)
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._lost = False

    def _rewrite(self, start: int, savepoint: bool) -> None:
        """Run the batch's writes from ``start`` again; with ``savepoint``, taking the
        outermost open unit's savepoint before its first one."""
        point = self._units[0].writes if savepoint and self._units else -1
        for at in range(start, len(self._writes)):
            if at == point:
                self._db.execute("SAVEPOINT u")
                self._saved = True
            sql, args, many = self._writes[at]
            if many:
                self._db.executemany(sql, args)  # type: ignore[arg-type]
            else:
                self._db.execute(sql, args)  # type: ignore[arg-type]

    def _write_pending(self) -> None:
        """Write the queued job rows and events, in the innermost unit if one is open
        (its rollback queues them again)."""
        rows, events = self._pending, self._events
        if rows:
            self._write(_UPDATE_JOB, list(rows.values()), True)
            self._pending = {}
            if self._units:
                self._units[-1].undo.append(lambda: setattr(self, "_pending", rows))
        if events:
            self._write(_INSERT_EVENT, events, True)
            self._events = []
            if self._units:
                self._units[-1].undo.append(lambda: setattr(self, "_events", events))

    def query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        """Rows of a read, for modules that keep tables of their own (``mail``)."""
        return self._query(sql, args)

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._sync()  # a read sees every write queued before it
            return self._db.execute(sql, tuple(args)).fetchall()

    def _sync(self) -> None:
        """Put every write of the open batch in its transaction. Where the disk is too
        full for that, a unit fails; a read outside any unit sees what is committed."""
        try:
            if self._lost:
                self._restore()
            self._write_pending()
        except sqlite3.Error:
            if self._units:
                raise

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, *, email: str | None = None, admin: bool = False) -> str:
        """Create a user and return their token (shown once; only a verifier is kept)."""
        if not USER_NAME.fullmatch(name):
            raise StoreError(
                f"invalid user name {name!r}: use lower-case letters, digits, '_', '.', '-'"
            )
        token = new_secret(name)
        v = make_verifier(user_key(token))
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise StoreError(f"user {name!r} already exists")
            db.execute(
                "INSERT INTO users (name, salt, iterations, stored_key, server_key, email,"
                " admin, created) VALUES (?,?,?,?,?,?,?,?)",
                (name, *_columns(v), email, int(admin), self.clock()),
            )
        return token

    def new_token(self, name: str) -> str:
        """Replace a user's token; the old one stops working."""
        token = new_secret(name)
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE users SET salt=?, iterations=?, stored_key=?, server_key=? WHERE name=?",
                (*_columns(make_verifier(user_key(token))), name),
            )
            if cur.rowcount == 0:
                raise StoreError(f"no user {name!r}")
        return token

    def remove_user(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount == 0:
                raise StoreError(f"no user {name!r}")

    def user_verifier(self, name: str) -> Verifier | None:
        """The verifier of ``name``'s token, or None for no such user."""
        return self._verifier("users", name)

    def _verifier(self, table: str, name: str) -> Verifier | None:
        rows = self._query(
            f"SELECT salt, iterations, stored_key, server_key FROM {table} WHERE name=?",
            (name,),
        )
        if not rows:
            return None
        r = rows[0]
        return Verifier(
            bytes(r["salt"]), r["iterations"], bytes(r["stored_key"]), bytes(r["server_key"])
        )

    def stored_keys(self) -> dict[tuple[str, str], bytes]:
        """The StoredKey of every user ``("control", name)`` and worker credential
        ``("worker", name)``: a changed or missing one ends that identity's sessions."""
        rows = self._query(
            "SELECT 'control' AS role, name, stored_key FROM users"
            " UNION ALL SELECT 'worker', name, stored_key FROM worker_credentials"
        )
        return {(r["role"], r["name"]): bytes(r["stored_key"]) for r in rows}

    # ------------------------------------------------------------------ worker credentials

    def add_worker_credential(self, name: str, *, replace: bool = False) -> str:
        """Create worker ``name``'s credential and return it (shown once; only a
        verifier is kept); with ``replace``, one it had stops working."""
        if not WORKER_NAME.fullmatch(name):
            raise StoreError(
                f"invalid worker name {name!r}: use letters, digits, '_', '.', '-' (at most 64)"
            )
        credential = new_secret(name)
        v = make_verifier(user_key(credential))
        with self.transaction() as db:
            if (
                not replace
                and db.execute("SELECT 1 FROM worker_credentials WHERE name=?", (name,)).fetchone()
            ):
                raise StoreError(
                    f"worker {name!r} already has a credential (revoke it first to issue another)"
                )
            db.execute(
                "INSERT OR REPLACE INTO worker_credentials (name, salt, iterations, stored_key,"
                " server_key, created) VALUES (?,?,?,?,?,?)",
                (name, *_columns(v), self.clock()),
            )
            # The worker's id is given now, so that ids follow the order credentials
            # were issued in (w1 = ID 1), not the order of the first registrations.
            db.execute(
                "INSERT OR IGNORE INTO workers (name, first_seen, last_seen) VALUES (?,?,?)",
                (name, self.clock(), self.clock()),
            )
        return credential

    def revoke_worker_credential(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM worker_credentials WHERE name=?", (name,)).rowcount == 0:
                raise StoreError(f"no worker credential {name!r}")

    def worker_verifier(self, name: str) -> Verifier | None:
        """The verifier of worker ``name``'s credential, or None."""
        return self._verifier("worker_credentials", name)

    def worker_credentials(self) -> list[CredentialRow]:
        rows = self._query("SELECT name, created FROM worker_credentials ORDER BY name")
        return [CredentialRow(name=row["name"], created=row["created"]) for row in rows]

    def is_admin(self, name: str) -> bool:
        rows = self._query("SELECT admin FROM users WHERE name=?", (name,))
        return bool(rows and rows[0]["admin"])

    def users(self) -> list[UserRow]:
        rows = self._query("SELECT name, email, admin, created FROM users ORDER BY name")
        return [
            UserRow(name=r["name"], email=r["email"], admin=bool(r["admin"]), created=r["created"])
            for r in rows
        ]

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

    def reservations(self) -> list[int]:
        """Clusters reserved without any job queued."""
        rows = self._query(
            "SELECT id FROM clusters WHERE submitted IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)"
        )
        return [row["id"] for row in rows]

    def forget_reservation(self, cluster: int) -> bool:
        """Remove a reserved cluster that never had a job; whether it was one."""
        with self.transaction() as db:
            cur = db.execute(
                "DELETE FROM clusters WHERE id=? AND submitted IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)",
                (cluster,),
            )
            return cur.rowcount > 0

    def cluster_owner(self, cluster: int) -> tuple[str, bool] | None:
        """The owner of a cluster and whether its jobs were submitted."""
        rows = self._query("SELECT owner, submitted FROM clusters WHERE id=?", (cluster,))
        return (rows[0]["owner"], rows[0]["submitted"] is not None) if rows else None

    def insert_jobs(
        self, cluster: int, submit_file: str, jobs: list[Job], now: float, last: bool = True
    ) -> None:
        """Queue procs of a cluster in one transaction, committed at once; the ``last``
        part completes it. On a full disk it raises and nothing is queued."""
        with self.alone() as db:
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

    def _queue(self, key: tuple[int, int], row: list[object], event: _Event) -> None:
        self._open_batch()  # to be committed by the end of the turn
        before = self._pending.get(key)
        self._pending[key] = row
        self._events.append(event)
        self._units[-1].undo.append(lambda: self._unqueue(key, before))

    def _unqueue(self, key: tuple[int, int], before: list[object] | None) -> None:
        self._events.pop()
        if before is None:
            del self._pending[key]
        else:
            self._pending[key] = before

    def save_files(self, cluster: int, proc: int, files: dict[str, bytes]) -> None:
        """Small result files of a job's current attempt (see :meth:`clear_files`)."""
        if not files:
            return
        self._statement(
            "INSERT INTO job_files (cluster, proc, name, data) VALUES (?,?,?,?)",
            [(cluster, proc, name, data) for name, data in files.items()],
            many=True,
        )

    def save_result(self, cluster: int, proc: int, result: JobResult) -> None:
        """Record a finished job's result (replacing an earlier attempt's)."""
        value = None if result.value is None else json.dumps(result.value)
        self._statement(
            "INSERT OR REPLACE INTO job_results (cluster, proc, value, error, time)"
            " VALUES (?,?,?,?,?)",
            (cluster, proc, value, result.error, self.clock()),
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
        """Forget the small result files of an earlier attempt (and the hashes of its
        large ones)."""
        with self.transaction() as db:
            db.execute("DELETE FROM job_files WHERE cluster=? AND proc=?", (cluster, proc))
            db.execute("DELETE FROM result_hashes WHERE cluster=? AND proc=?", (cluster, proc))

    def save_hashes(self, cluster: int, proc: int, hashes: dict[str, tuple[str, int]]) -> None:
        """The SHA-256 and size of each large result file of a job, by name."""
        forget = "DELETE FROM result_hashes WHERE cluster=? AND proc=?"
        if not hashes:
            self._statement(forget, (cluster, proc))
            return
        with self.transaction() as db:
            db.execute(forget, (cluster, proc))
            db.executemany(
                "INSERT INTO result_hashes (cluster, proc, name, sha256, size) VALUES (?,?,?,?,?)",
                [(cluster, proc, name, sha, size) for name, (sha, size) in hashes.items()],
            )

    def hashes(self, cluster: int, proc: int) -> dict[str, tuple[str, int]]:
        """What :meth:`save_hashes` recorded for a job."""
        rows = self._query(
            "SELECT name, sha256, size FROM result_hashes WHERE cluster=? AND proc=?",
            (cluster, proc),
        )
        return {row["name"]: (row["sha256"], row["size"]) for row in rows}

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
            db.executemany("DELETE FROM result_hashes WHERE cluster=? AND proc=?", jobs)
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
        """The stable id of a worker name, assigned when its credential was issued
        (:meth:`add_worker_credential`), else at its first registration."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM workers WHERE name=?", (name,)).fetchone()
            if row:
                db.execute("UPDATE workers SET last_seen=? WHERE id=?", (now, row["id"]))
                return int(row["id"])
            cur = db.execute(
                "INSERT INTO workers (name, first_seen, last_seen) VALUES (?,?,?)", (name, now, now)
            )
            return int(cur.lastrowid or 0)
