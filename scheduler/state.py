"""The scheduler's state: its services and what it knows of jobs, workers and users.

One :class:`SchedulerState` is what every handler and transition works on. It holds
no socket and starts no task: the I/O shell (:mod:`scheduler.server`) gives it a
clock and the hooks to wake the scheduling loop and to end the loop's turn (commit,
then send), and the core's tests give it a fake clock and fake connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from scheduler import protocol as p
from scheduler.callers import Caller, Replier
from scheduler.config import SchedulerConfig
from scheduler.connection import Connection, RequestError
from scheduler.dag_book import DagBook
from scheduler.disk_space import DiskSpace, full_message
from scheduler.effects import Effects
from scheduler.handshake_guard import HandshakeGuard
from scheduler.jobs import JobTable
from scheduler.loop_lag import LoopLag
from scheduler.mail import Mailer
from scheduler.policy_index import PolicyIndex
from scheduler.protocol.scram import Verifier
from scheduler.queue_ahead import RunTimes
from scheduler.queue_summary import QueueSummary
from scheduler.quota import Quota
from scheduler.reservations import Reservations
from scheduler.retention import Retention
from scheduler.staging import Spool
from scheduler.store import Store
from scheduler.tls_setup import Certificate
from scheduler.undo import UndoDict
from scheduler.workers import WorkerRegistry


def _nothing() -> None:
    return None


class SchedulerState:
    """Services, scheduling state, the clock and the shell's hooks."""

    config: SchedulerConfig
    store: Store
    spool: Spool
    #: What units leave to do once they have committed (files removed, connections
    #: closed): carried out by the shell after its commit.
    effects: Effects
    mailer: Mailer
    quota: Quota
    retention: Retention
    reservations: Reservations
    guard: HandshakeGuard
    disk: DiskSpace
    #: The TLS certificate of the socket protocol, FTP and the dashboard (None: no TLS).
    tls: Certificate | None
    #: How late the loop runs its callbacks (started by the shell on its loop).
    loop_lag: LoopLag
    #: The pool secret (decoy salts derive from it) and its verifier.
    secret: bytes
    pool_verifier: Verifier
    #: Seconds since the epoch: every "now" of the scheduler's logic.
    clock: Callable[[], float]
    #: The shell's hooks: run a scheduling pass soon; end this turn now.
    wake: Callable[[], None]
    end_turn: Callable[[], None]

    jobs: JobTable
    workers: WorkerRegistry
    #: Live connections (any role), by connection id; kept by the shell.
    peers: dict[int, Connection]
    #: Connected users, by connection id.
    controls: dict[int, Connection]
    #: Callers watching each cluster, with the states they want (empty: all).
    subscribers: UndoDict[int, dict[Replier, frozenset[str]]]
    #: Callers to tell once each cluster has no idle or running job left.
    awaiting: UndoDict[int, set[Replier]]
    #: Clusters of one job whose end carries its results to those awaiting it (a
    #: call's, a one-item map's: see :mod:`scheduler.pushed_results`).
    push_results: UndoDict[int, bool]
    #: Clusters submitted in parts: the proc number their next part starts at, and
    #: the caller (a connection or dashboard user) sending them.
    partial_clusters: UndoDict[int, tuple[int, object]]
    #: Output requests (``dtail``) waiting for a worker: the asking caller, its
    #: request id and the worker's link, by the id of the request to the worker.
    tails: UndoDict[int, tuple[Replier, int | None, object]]
    #: Hashing of large results under way, in threads (see scheduler/result_hashes.py).
    hashing: set[asyncio.Task[None]]
    #: The FTP probes (``dfarm doctor``) each caller holds, by directory name.
    probes: dict[Caller, list[str]]
    #: Mean run time of each cluster's jobs, for queueing short jobs on workers.
    run_times: RunTimes
    #: The user names seen at the last identity check (None: not checked yet).
    known_users: frozenset[str] | None
    #: The jobs with periodic policies (see :mod:`scheduler.policies`).
    policies: PolicyIndex
    #: Counts of the queue per cluster, user and state (the job table's).
    summary: QueueSummary
    #: The workflows not yet ended (see :mod:`scheduler.dags`).
    dags: DagBook

    def __init__(
        self,
        config: SchedulerConfig,
        store: Store,
        spool: Spool,
        secret: bytes,
        pool_verifier: Verifier,
        clock: Callable[[], float],
        wake: Callable[[], None] = _nothing,
        end_turn: Callable[[], None] = _nothing,
        disk: DiskSpace | None = None,
    ):
        self.config, self.store, self.spool = config, store, spool
        self.tls = None
        self.loop_lag = LoopLag()
        self.secret, self.pool_verifier = secret, pool_verifier
        self.clock, self.wake, self.end_turn = clock, wake, end_turn
        # Every time the services record or compare is the scheduler's.
        store.clock = clock
        spool.use_clock(clock)
        # A heartbeat's renewal of grants is undone with a unit that fails.
        spool.authorizer.undo = store.remember
        self.effects = Effects(store.remember)
        self.disk = disk or DiskSpace(config.home, config.min_free_space, wall=clock)
        self.mailer = Mailer(config.mail, store, spool.job_dir, clock)
        self.quota = Quota(
            store, spool, config.upload_limit, config.spool_quota, busy=self._may_grow
        )
        self.retention = Retention(
            store, spool, config.result_retention, clock, self.effects, self.quota.forget
        )
        self.reservations = Reservations(config.reservation_ttl, clock=clock, undo=store.remember)
        self.guard = HandshakeGuard(config.auth_failure_limit, config.auth_failure_window)
        self.jobs = JobTable(store, halflife=config.usage_halflife, clock=clock)
        self.mailer.resume(self.jobs.active.values())
        self.policies = PolicyIndex(self.jobs.active.values())
        self.summary = self.jobs.summary
        self.dags = DagBook(store)
        # The scheduling state below undoes its changes with a unit that fails (see
        # scheduler/undo.py); peers, controls and probes follow connections, which
        # are no unit's to undo.
        undo = store.remember
        self.workers = WorkerRegistry(undo)
        self.peers = {}
        self.controls = {}
        self.subscribers = UndoDict(undo)
        self.awaiting = UndoDict(undo)
        self.push_results = UndoDict(undo)
        self.partial_clusters = UndoDict(undo)
        self.tails = UndoDict(undo)
        self.hashing = set()
        self.probes = {}
        self.run_times = RunTimes(undo)
        self.known_users = None

    def _may_grow(self, cluster: int) -> bool:
        """Whether files may still be added to ``cluster``'s folder: a reservation, a
        cluster still being submitted, one with jobs in the queue, or a running DAG's."""
        return (
            cluster in self.reservations
            or cluster in self.partial_clusters
            or self.summary.last_proc(cluster) is not None
            or cluster in self.dags.runs
        )


def disk_full_error(state: SchedulerState, exc: BaseException) -> p.Error:
    """The reply to a request undone because a write of it found no room."""
    state.disk.write_failed(exc)
    message = state.disk.problem or full_message(state.config.home, state.disk.free)
    return p.Error(message=message, code="disk_full")


def refuse_if_disk_full(state: SchedulerState) -> None:
    """Refuse new work (a submission) while the scheduler's disk is full."""
    problem = state.disk.refusal()
    if problem is not None:
        raise RequestError(problem, "disk_full")
