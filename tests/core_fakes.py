"""The scheduler's core without sockets or processes: a state on a real database in a
temporary directory, a clock the test moves, and connections that record what they
were sent."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

with warnings.catch_warnings():  # pyftpdlib imports asyncore, deprecated in 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler.staging import Spool

from scheduler import protocol as p
from scheduler.config import SchedulerConfig
from scheduler.core import build_state
from scheduler.job_records import Job
from scheduler.protocol import JobSpec, Role
from scheduler.state import SchedulerState
from scheduler.store import Store
from scheduler.undo import UndoHook, no_undo

M = TypeVar("M", bound=p.Message)
_ids = itertools.count(1)
TIMEOUT = 30.0


class FakeClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWriter:
    """What the scheduler closes of a connection: its writer, which here only
    remembers it was closed."""

    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    def is_closing(self) -> bool:
        return self.conn.closed

    def close(self) -> None:
        self.conn.closed = True


@dataclass(eq=False)
class FakeConnection:
    """A peer: what handlers read of a connection, and every message it was sent."""

    name: str
    role: Role = Role.WORKER
    auth: str = "credential"
    admin: bool = False
    local_host: str = "127.0.0.1"
    revoked: bool = False
    closed: bool = False
    stored_key: bytes = b""
    id: int = field(default_factory=lambda: next(_ids))
    sent: list[p.Message] = field(default_factory=list)
    #: As a connection's: a frame sent in a unit that fails is dropped.
    undo: UndoHook = no_undo

    @property
    def peer(self) -> str:
        return f"10.0.0.{self.id}:4000"

    @property
    def writer(self) -> FakeWriter:
        return FakeWriter(self)

    def send(self, message: p.Message, urgent: bool = True) -> None:
        queued = len(self.sent)
        self.sent.append(message)
        self.undo(lambda: self.sent.__delitem__(slice(queued, None)))

    def close(self) -> None:
        self.closed = True

    def of(self, kind: type[M]) -> list[M]:
        """The messages of one type it was sent, in order."""
        return [m for m in self.sent if isinstance(m, kind)]

    def take(self, kind: type[M]) -> list[M]:
        """As :meth:`of`, forgetting everything sent so far."""
        found = self.of(kind)
        self.sent.clear()
        return found


def open_state(home: Path, clock: FakeClock, **settings: object) -> SchedulerState:
    """A scheduler's state on the database in ``home`` (created or reopened)."""
    config = SchedulerConfig(home=home, host="127.0.0.1", worker_timeout=TIMEOUT, **settings)  # type: ignore[arg-type]
    home.mkdir(mode=0o700, exist_ok=True)
    store = Store(config.db_path)
    spool = Spool(config.spool_dir)
    return build_state(config, store, spool, b"pool secret of the tests", clock)


def close_state(state: SchedulerState) -> None:
    state.store.commit()
    state.spool.stop()
    state.store.close()


def metrics(disk_free_mb: int = 100_000) -> p.WorkerMetrics:
    return p.WorkerMetrics(
        cores=4, threads=4, memory_total_mb=8000, memory_available_mb=8000,
        disk_total_mb=200_000, disk_free_mb=disk_free_mb, load_avg=[0.0, 0.0, 0.0],
    )  # fmt: skip


def register(
    state: SchedulerState,
    name: str,
    slots: int = 2,
    running: list[str] | None = None,
    incarnation: str = "",
) -> FakeConnection:
    """A worker connects and registers (with the attempts it still runs; as the
    process ``incarnation``)."""
    from scheduler.worker_handlers import on_register

    link = FakeConnection(name)
    message = p.Register(slots=slots, cpus=slots, memory_mb=8000, gpus=0, metrics=metrics(),
                         running=running or [], incarnation=incarnation)  # fmt: skip
    on_register(state, link, message)
    return link


def submit(state: SchedulerState, owner: str, count: int, **spec: object) -> list[Job]:
    """Queue a cluster of ``count`` jobs of ``owner``."""
    cluster = state.store.clusters.reserve_cluster(owner, state.clock())
    specs = [JobSpec(executable="job.sh", **spec) for _ in range(count)]  # type: ignore[arg-type]
    return state.jobs.submit(cluster, owner, "job.sub", specs)


def user(name: str, admin: bool = False) -> FakeConnection:
    return FakeConnection(name, role=Role.CONTROL, auth="token", admin=admin)


def runs(link: FakeConnection) -> Iterator[str]:
    """The ids of the jobs a worker was told to run."""
    return (m.job_id for m in link.of(p.RunJob))
