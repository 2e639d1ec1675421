"""The units of work on one SQLite file: all or nothing, batched, replayed if lost.

SQLite is the source of truth for everything that must survive a restart. The
database runs in WAL mode with ``synchronous=NORMAL``: a committed transaction
survives a crash of the scheduler process (``kill -9``); only a power loss can take
back the last few commits.

Writes go through units of work (:meth:`Database.transaction`, nestable): a unit is all
or nothing. When it raises, everything it wrote is undone (its SQL, through a
savepoint, and the job rows and events it queued in memory) and none of it is ever
committed, while the other units of its batch are kept. An outermost unit that
writes takes a savepoint at its first write; a nested unit takes none, as nearly
all succeed: one that fails having written rolls back to its outermost unit's
savepoint, and what its enclosing units wrote before it is written again. A
unit's caller may undo its own changes in memory with it: :meth:`Database.on_undo`
registers a callable that runs if the innermost open unit is rolled back (the
callables of a unit in the reverse order of their registration); when a nested
unit succeeds its callables pass to the enclosing unit, and when the outermost
unit succeeds they are dropped.
:meth:`Database.remember` does the same, and nothing outside every unit: the owners of
the scheduler's memory (see :mod:`scheduler.undo`) register each change with it, so
that a unit that fails (:func:`scheduler.units.run_unit`) leaves memory, as well as
the database, as it found them.

Units are grouped in batches, one transaction each, opened by the first write (or job
row queued) of a unit, so that a unit that only reads takes no write lock, and ended
by :meth:`Database.commit`
(the scheduler's event loop commits once per turn, :attr:`Database.on_batch_open`
telling it that a batch opened). A database with nobody to end its batches (no
``on_batch_open``: the command-line tools, a test) commits each outermost unit on
its own, as :meth:`Database.alone` does.

A batch's writes are also kept in memory until its commit: a commit that finds the
disk full makes SQLite drop the whole transaction, and the batch is then written
again into a new one, to be committed once there is room. The database never falls
behind what the scheduler holds in memory, and nothing is lost while the disk is
full.

Of the scheduler's tables it knows one: the job rows and events that
:meth:`scheduler.store.Store.save_job` queues (each job's latest row, written with
``executemany`` before the next read or the commit) are part of the batch it keeps
and writes again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from _thread import get_ident
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path

from scheduler.disk_space import free_bytes
from scheduler.job_records import _INSERT_EVENT, _UPDATE_JOB
from scheduler.schema import MIGRATIONS

log = logging.getLogger(__name__)


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
    """The ``with`` of one unit inside the open batch (see :meth:`Database.transaction`);
    ``kept``: where the undo callbacks of an outermost unit that succeeds go, instead
    of being dropped. A class, not a generator: units are the hot path."""

    __slots__ = ("_at", "_kept", "_store", "_unit")

    def __init__(self, store: Database, kept: list[Callable[[], None]] | None = None):
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

    def __init__(self, store: Database):
        self._store = store

    def execute(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        if sql.lstrip()[:6].upper() == "SELECT":
            return self._store._read(sql, tuple(args))
        return self._store._write(sql, tuple(args), False)

    def executemany(self, sql: str, rows: Iterable[Iterable[object]]) -> sqlite3.Cursor:
        return self._store._write(sql, rows if isinstance(rows, list) else list(rows), True)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store._db, name)


class Database:
    """One SQLite file and its units of work. One instance per process; thread-safe
    through a lock."""

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
        #: Rows to replace, by statement and row key (see :meth:`replace_later`).
        self._replacing: dict[str, dict[Hashable, tuple[object, ...]]] = {}
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

    def statement(self, sql: str, args: object, many: bool = False) -> sqlite3.Cursor:
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
        self._replacing = {}
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
        replacing = self._replacing
        if replacing:
            for sql, by_key in replacing.items():
                self._write(sql, list(by_key.values()), True)
            self._replacing = {}
            if self._units:
                self._units[-1].undo.append(lambda: setattr(self, "_replacing", replacing))

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

    def _queue(self, key: tuple[int, int], row: list[object], event: _Event) -> None:
        self._open_batch()  # to be committed by the end of the turn
        before = self._pending.get(key)
        self._pending[key] = row
        self._events.append(event)
        self._units[-1].undo.append(lambda: self._unqueue(key, before))

    def replace_later(self, sql: str, key: Hashable, args: tuple[object, ...]) -> None:
        """Write one row (``sql`` is an ``INSERT OR REPLACE``, or an ``UPDATE`` of the
        row ``key`` names), as part of the open unit (or of one of its own): queued
        like a job's row, and written before the next read or the commit, once for
        each ``key`` however often it changed (a user's usage changes with each of
        their jobs that ends)."""
        with self._lock:
            if not self._units:
                with self.transaction():
                    self._replace_later(sql, key, args)
                return
            self._replace_later(sql, key, args)

    def _replace_later(self, sql: str, key: Hashable, args: tuple[object, ...]) -> None:
        self._open_batch()
        rows = self._replacing.setdefault(sql, {})
        before = rows.get(key)
        rows[key] = args
        self._units[-1].undo.append(lambda: self._unreplace(sql, key, before))

    def _unreplace(self, sql: str, key: Hashable, before: tuple[object, ...] | None) -> None:
        rows = self._replacing.setdefault(sql, {})
        if before is None:
            rows.pop(key, None)
        else:
            rows[key] = before

    def _unqueue(self, key: tuple[int, int], before: list[object] | None) -> None:
        self._events.pop()
        if before is None:
            del self._pending[key]
        else:
            self._pending[key] = before
