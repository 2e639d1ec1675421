"""The registered workers' scheduling state, off their sockets.

A :class:`WorkerState` is what the scheduler knows of one registered worker: its
slots, the jobs it runs with their FTP grants, the inputs it already holds, its
last metrics and heartbeat, and the link to send it messages. The
:class:`WorkerRegistry` holds them by worker id and by link, and indexes each
running job's worker, so that finding where a job runs is a lookup, not a scan.
It alone knows where each running job is: on a registered worker, or *orphaned*,
waiting until a deadline for its worker (gone, or not yet back after a restart)
to return with it.
Each change registers its undo with the open unit of work (see
:mod:`scheduler.undo`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from scheduler import protocol as p
from scheduler.callers import Link
from scheduler.connection import RequestError
from scheduler.dispatch import Slots
from scheduler.job_records import Job
from scheduler.undo import UndoDict, UndoHook, no_undo


@dataclass(eq=False)
class WorkerState:
    """One registered worker."""

    slots: Slots
    link: Link
    metrics: p.WorkerMetrics
    last_heartbeat: float
    connected_since: float
    #: Its jobs (running or queued behind running ones), by id ...
    running: dict[str, Job] = field(default_factory=dict)
    #: ... and the FTP grant of each.
    grants: dict[str, p.FtpGrant] = field(default_factory=dict)
    #: Hashes of small inputs already sent inline to it (it caches them).
    sent_inputs: set[str] = field(default_factory=set)

    @property
    def id(self) -> int:
        return self.slots.worker_id

    @property
    def name(self) -> str:
        return self.slots.name

    def send(self, message: p.Message) -> None:
        self.link.send(message)


class WorkerRegistry:
    """The registered workers, by id and by link, the worker of each job, and the
    jobs waiting for a worker that is away."""

    def __init__(self, undo: UndoHook = no_undo) -> None:
        self.undo = undo
        self._by_id: dict[int, WorkerState] = {}
        #: By link: a link is hashed by identity (a connection is equal only to itself).
        self._by_link: dict[object, WorkerState] = {}
        self._of_job: dict[str, WorkerState] = {}
        #: Orphans: the worker each waits for, by name, and until when.
        self._orphans: UndoDict[str, tuple[str, float]] = UndoDict(undo)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[WorkerState]:
        return iter(list(self._by_id.values()))

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._by_id

    def _keep(self) -> None:
        """Register the undo of a change to the indexes: a snapshot of them."""
        saved = (dict(self._by_id), dict(self._by_link), dict(self._of_job))

        def restore() -> None:
            self._by_id, self._by_link, self._of_job = saved

        self.undo(restore)

    def _keep_jobs(self, worker: WorkerState, job_id: str) -> None:
        """Register the undo of a change to where ``job_id`` runs."""
        entries = (
            worker.running.get(job_id),
            worker.grants.get(job_id),
            self._of_job.get(job_id),
        )

        def restore() -> None:
            job, grant, where = entries
            _put(worker.running, job_id, job)
            _put(worker.grants, job_id, grant)
            _put(self._of_job, job_id, where)

        self.undo(restore)

    def add(self, worker: WorkerState) -> None:
        self._keep()
        worker.slots.undo = self.undo
        self._by_id[worker.id] = worker
        self._by_link[worker.link] = worker

    def remove(self, worker: WorkerState) -> None:
        """Forget a worker and the index entries of its jobs (it keeps its own)."""
        self._keep()
        if self._by_id.get(worker.id) is worker:
            del self._by_id[worker.id]
        if self._by_link.get(worker.link) is worker:
            del self._by_link[worker.link]
        for job_id in worker.running:
            if self._of_job.get(job_id) is worker:
                del self._of_job[job_id]

    def get(self, worker_id: int) -> WorkerState:
        return self._by_id[worker_id]

    def of_link(self, link: object) -> WorkerState | None:
        """The registered worker that ``link`` connects, if any."""
        return self._by_link.get(link)

    def registered(self, link: object) -> WorkerState:
        """The worker ``link`` registered; a worker that did not is refused."""
        worker = self.of_link(link)
        if worker is None:
            raise RequestError("register first")
        return worker

    def named(self, name: str) -> WorkerState | None:
        return next((w for w in self._by_id.values() if w.name == name), None)

    def of_job(self, job_id: str) -> WorkerState | None:
        """The worker that runs (or has queued) job ``job_id``."""
        return self._of_job.get(job_id)

    def slots(self) -> list[Slots]:
        """What each registered worker offers."""
        return [w.slots for w in self._by_id.values()]

    def attach(self, worker: WorkerState, job: Job, grant: p.FtpGrant) -> None:
        """``job`` runs on ``worker`` (given to it, or adopted), with ``grant``."""
        self._keep_jobs(worker, job.id)
        worker.running[job.id] = job
        worker.grants[job.id] = grant
        self._of_job[job.id] = worker

    def detach(self, worker: WorkerState, job_id: str) -> p.FtpGrant | None:
        """``job_id`` no longer runs on ``worker``: its grant, to be revoked."""
        self._keep_jobs(worker, job_id)
        worker.running.pop(job_id, None)
        if self._of_job.get(job_id) is worker:
            del self._of_job[job_id]
        return worker.grants.pop(job_id, None)

    # ------------------------------------------------------------------ orphans

    def orphan(self, job_id: str, worker_name: str, deadline: float) -> None:
        """Running job ``job_id`` waits for its worker ``worker_name``, away, until
        ``deadline``; then it is requeued (see :meth:`orphans_due`)."""
        self._orphans[job_id] = (worker_name, deadline)

    def awaited(self, job_id: str) -> tuple[str, float] | None:
        """The worker an orphan waits for, by name, and until when; None if it is
        no orphan."""
        return self._orphans.get(job_id)

    def orphans_of(self, worker_name: str) -> list[str]:
        """The orphans that wait for ``worker_name``."""
        return [job_id for job_id, (name, _) in self._orphans.items() if name == worker_name]

    def orphans_due(self, now: float) -> list[tuple[str, str]]:
        """The orphans whose deadline passed by ``now``, with the worker each waited
        for: they wait no longer."""
        due = [(job_id, name) for job_id, (name, end) in self._orphans.items() if end <= now]
        for job_id, _ in due:
            del self._orphans[job_id]
        return due

    def returned(self, job_id: str) -> bool:
        """``job_id`` waits for no worker any more (its worker came back with it, or
        without it, or the job was stopped); whether it was waiting."""
        return self._orphans.pop(job_id, None) is not None


T = TypeVar("T")


def _put(table: dict[str, T], key: str, value: T | None) -> None:
    """Set ``key`` to ``value``, or remove it for None."""
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value
