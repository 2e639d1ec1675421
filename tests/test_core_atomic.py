"""Every kind of unit of work is all or nothing: a unit that fails at its very end,
after it made all its changes, leaves the database, the scheduler's memory, the
spool's files and the wire as they were, and answers only its caller, with an error.

Each case builds a pool with workers, running, queued-behind, idle and held jobs
(which ask for mail), runs one unit through the wrapper the shell uses
(:func:`scheduler.units.run_unit`) with a failure injected after its last step, and
compares the rows, a fingerprint of memory (with the FTP grants' expiries, the
mailer's notes and the effects deferred), the spool's files, the frames sent and
the connections closed with those from before. Run again without the failure, the
unit carries out its effects (files removed, connections closed) after its commit."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from core_fakes import (
    FakeClock,
    FakeConnection,
    close_state,
    metrics,
    open_state,
    register,
    submit,
    user,
)

from scheduler import protocol as p
from scheduler.clusters import expire_reservations, upload_failed
from scheduler.config import SchedulerConfig
from scheduler.connection import Connection
from scheduler.control_handlers import (
    on_await_clusters,
    on_new_cluster,
    on_submit_jobs,
    on_subscribe,
)
from scheduler.departures import connection_closed
from scheduler.handshake import BY_POOL_SECRET
from scheduler.housekeeping import close_silent, requeue_orphans
from scheduler.identities import check_identities
from scheduler.job_control import on_change_jobs, on_edit_jobs, on_output_chunk, on_tail_job
from scheduler.job_records import Job
from scheduler.mail import MailConfig
from scheduler.policies import periodic_pass
from scheduler.protocol import JobSpec, JobState, Role
from scheduler.server import Scheduler
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.units import run_unit
from scheduler.worker_handlers import _finish

TABLES = (
    "clusters", "jobs", "job_events", "job_files", "job_results", "usage", "workers", "mail",
    "expired",
)  # fmt: skip
#: Every job asks for mail on each of its changes.
MAIL = {"notify_user": "owner@example.org", "notification": "Always"}


class Injected(Exception):
    """The failure injected at the end of a unit."""


@dataclass
class Pool:
    """A scheduler's state with workers and jobs, and every link that may be sent to."""

    state: SchedulerState
    clock: FakeClock
    w1: FakeConnection
    w2: FakeConnection
    ann: FakeConnection
    bob: FakeConnection
    jobs: list[Job]
    links: list[FakeConnection] = field(default_factory=list)
    #: What must hold once the unit, run again without the failure, has committed
    #: and its effects were carried out (a file removed, a connection closed).
    after: list[tuple[str, Callable[[], bool]]] = field(default_factory=list)

    def removes(self, path: Path) -> Path:
        """``path`` (a folder made here if there is none) is removed by the unit's
        effects."""
        if not path.exists():
            path.mkdir(parents=True)
            (path / "stdout").write_bytes(b"kept until the unit commits")
        self.after.append((f"{path} removed", lambda: not path.exists()))
        return path

    def closes(self, conn: FakeConnection) -> None:
        """``conn`` is closed by the unit's effects."""
        self.after.append((f"{conn.name} closed", lambda: conn.closed))

    def link(self, conn: FakeConnection) -> FakeConnection:
        """``conn``, its frames undone with a failed unit, and watched by the test."""
        conn.undo = self.state.store.remember
        self.links.append(conn)
        return conn

    def running_on(self, link: FakeConnection) -> Job:
        """A job that runs (not queued) on ``link``'s worker."""
        worker = self.state.workers.of_link(link)
        assert worker is not None
        return next(j for j in worker.running.values() if j.start_time is not None)

    def queued(self) -> Job:
        return next(j for j in self.jobs if j.state is JobState.RUNNING and j.start_time is None)

    def idle(self) -> Job:
        return next(j for j in self.jobs if j.state is JobState.IDLE)

    def held(self) -> Job:
        return next(j for j in self.jobs if j.state is JobState.HELD)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    clock = FakeClock()
    mail = MailConfig(host="mail.invalid", sender="farm@example.org")
    state = open_state(tmp_path / "home", clock, mail=mail)
    w1 = register(state, "w1", slots=2)
    w2 = register(state, "w2", slots=1)
    ann_jobs = submit(state, "ann", 8, **MAIL)
    bob_jobs = submit(state, "bob", 3, max_retries=2, **MAIL)
    state.mailer.submitted(ann_jobs)  # as a submission has the mailer watch them
    state.mailer.submitted(bob_jobs)
    # Ann's jobs are short: some are queued on the workers behind running ones.
    state.run_times.record(ann_jobs[0].cluster, 0.01)
    schedule_once(state)
    ann, bob = user("ann"), user("bob")
    on_change_jobs(state, bob, p.ChangeJobs(action="hold", ids=[bob_jobs[-1].id]))
    register(state, "w3", slots=1)  # a free slot for a scheduling pass
    state.store.commit()
    found = Pool(state, clock, w1, w2, ann, bob, ann_jobs + bob_jobs)
    for conn in (w1, w2, ann, bob):
        found.link(conn)
        conn.sent.clear()
    for worker in state.workers:
        found.link(worker.link)  # type: ignore[arg-type]
    yield found
    close_state(state)


def rows(state: SchedulerState) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: sorted(tuple(row) for row in state.store.query(f"SELECT * FROM {table}"))
        for table in TABLES
    }


def memory(pool: Pool) -> object:
    """Every piece of scheduling state a unit may change, as plain values."""
    state = pool.state
    jobs = {j.id: sorted((k, repr(v)) for k, v in vars(j).items()) for j in pool.jobs}
    for job in state.jobs.active.values():
        jobs[job.id] = sorted((k, repr(v)) for k, v in vars(job).items())
    queue = state.jobs.queue
    users = {
        name: (s.idle, s.running, s.running_cpus, s.started, s.value, s.stamp)
        for name, s in queue.users.items()
    }
    order = sorted((entry[0], entry[1], entry[2]) for entry in queue._queued.values())
    workers = {
        w.name: (
            repr(w.slots),
            sorted(w.running),
            sorted((job, g.user) for job, g in w.grants.items()),
            sorted(w.sent_inputs),
            repr(w.metrics),
            w.last_heartbeat,
        )
        for w in state.workers
    }
    registry = state.workers
    index = (
        sorted(registry._by_id),
        sorted(w.name for w in registry._by_link.values()),
        sorted((job, w.name) for job, w in registry._of_job.items()),
    )
    return (
        jobs,
        sorted(state.jobs.active),
        dict(state.jobs.unfinished),
        users,
        order,
        workers,
        index,
        dict(state.workers._orphans),
        {c: {conn.name: s for conn, s in subs.items()} for c, subs in state.subscribers.items()},
        {c: sorted(conn.name for conn in waiting) for c, waiting in state.awaiting.items()},
        {c: (n, getattr(s, "name", s)) for c, (n, s) in state.partial_clusters.items()},
        sorted(state.tails),
        sorted(state.run_times._mean.items()),
        sorted(state.reservations._expires.items()),
        sorted(state.spool.authorizer._grants),
        sorted(state.spool.authorizer._expires.items()),
        sorted(state.spool._uploads.items()),
        state.known_users,
        mailer(state),
        state.retention._last_sweep,
        [name for name, _ in state.effects._queue],
    )


def mailer(state: SchedulerState) -> object:
    """What the mailer noted of the jobs it watches and the mails it queued."""
    m = state.mailer
    return (
        sorted((key, s.value) for key, s in m._seen.items()),
        sorted(m._unfinished.items()),
        sorted(m._watched.items()),
        sorted(m._size.items()),
        sorted(m._coming),
        sorted(m._due.items()),
        m._any_mail,
    )


def files(state: SchedulerState) -> list[str]:
    """Every path in the spool."""
    root = state.spool.root
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def sent(pool: Pool) -> dict[int, tuple[list[p.Message], bool, bool]]:
    """The frames sent to each link, and whether it was closed (and revoked)."""
    return {conn.id: (list(conn.sent), conn.closed, conn.revoked) for conn in pool.links}


def snapshot(pool: Pool) -> tuple[object, ...]:
    state = pool.state
    return (rows(state), memory(pool), sent(pool), files(state))


def fails_whole(pool: Pool, name: str, unit: Callable[[], object]) -> p.Error:
    """Run ``unit`` as the unit ``name``, failing after its last step; check that it
    changed something before failing and left nothing behind."""
    state = pool.state
    before = snapshot(pool)
    changed: list[bool] = []

    def body() -> object:
        unit()
        state.store._write_pending()  # its rows and events written, not only queued
        changed.append(snapshot(pool) != before)
        raise Injected(name)

    reply = run_unit(state, name, body)
    assert changed == [True], f"unit {name} changed nothing: the case tests nothing"
    assert isinstance(reply, p.Error) and reply.code == "internal"
    after = snapshot(pool)
    assert after[0] == before[0], "rows"
    assert after[1] == before[1], "memory"
    assert after[2] == before[2], "frames and closed connections"
    # Nothing removed or renamed (a folder made for an upload may stay, empty).
    assert set(before[3]) <= set(after[3]), "spool files"
    return reply


def message(pool: Pool, link: FakeConnection, msg: p.Message) -> Callable[[], object]:
    """The unit that handles ``msg`` from ``link``, by the route the shell takes."""
    from scheduler.server import ROUTES

    route = ROUTES[type(msg)]
    return lambda: route(pool.state, link, msg)


def finished(job: Job, **fields: object) -> p.JobFinished:
    return p.JobFinished(job_id=job.id, attempt=job.attempt, wall_time=0.01, **fields)  # type: ignore[arg-type]


# Each case: the unit's name and what it runs, given the pool (set up as it needs).
Case = Callable[[Pool], tuple[str, Callable[[], object]]]


def register_new(pool: Pool) -> tuple[str, Callable[[], object]]:
    link = pool.link(FakeConnection("w4"))
    msg = p.Register(slots=2, cpus=2, memory_mb=8000, gpus=0, metrics=metrics())
    return "register", message(pool, link, msg)


def register_returning(pool: Pool) -> tuple[str, Callable[[], object]]:
    """w1 lost its connection; it comes back still running one of its jobs."""
    kept = pool.running_on(pool.w1)
    connection_closed(pool.state, pool.w1)  # type: ignore[arg-type]
    pool.state.store.commit()
    link = pool.link(FakeConnection("w1"))
    msg = p.Register(slots=2, cpus=2, memory_mb=8000, gpus=0, metrics=metrics(),
                     running=[f"{kept.id}:{kept.attempt}", "9999.0:1"])  # fmt: skip
    return "register", message(pool, link, msg)


def heartbeat(pool: Pool) -> tuple[str, Callable[[], object]]:
    """w1 is heard from: the grants of its jobs are renewed."""
    pool.clock.advance(5)
    worker = pool.state.workers.of_link(pool.w1)
    assert worker is not None and worker.grants
    authorizer = pool.state.spool.authorizer
    renewed = pool.clock() + pool.state.config.job_grant_ttl
    pool.after.append(
        ("grants renewed", lambda: all(authorizer._expires[g.user] == renewed
                                       for g in worker.grants.values()))
    )  # fmt: skip
    return "heartbeat", message(pool, pool.w1, p.Heartbeat(metrics=metrics(disk_free_mb=7)))


def completed(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.running_on(pool.w1)
    return "job_finished", message(pool, pool.w1, finished(job, exit_code=0))


def held(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.running_on(pool.w1)
    return "job_finished", message(pool, pool.w1, finished(job, failure="cannot stage"))


def retried(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = next(j for j in pool.jobs if j.owner == "bob" and j.state is JobState.RUNNING)
    link = pool.state.workers.of_job(job.id).link  # type: ignore[union-attr]
    return "job_finished", message(pool, link, finished(job, exit_code=3))  # type: ignore[arg-type]


def requeued(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.running_on(pool.w1)
    msg = finished(job, failure="disk full on the worker", disk_full=True)
    return "job_finished", message(pool, pool.w1, msg)


def requeued_spooled(pool: Pool) -> tuple[str, Callable[[], object]]:
    """The worker's disk filled up as it put a job's results in the spool: the
    attempt's folder is dropped."""
    job = pool.running_on(pool.w1)
    pool.removes(pool.state.spool.attempt_dir(job.cluster, job.proc, job.attempt))
    msg = finished(job, failure="disk full on the worker", disk_full=True, spooled=True)
    return "job_finished", message(pool, pool.w1, msg)


def stale_spooled(pool: Pool) -> tuple[str, Callable[[], object]]:
    """A worker reports an attempt that no longer counts, its results in the spool:
    they are dropped, and that is all the unit does."""
    job = pool.idle()
    pool.removes(pool.state.spool.attempt_dir(job.cluster, job.proc, 7))
    msg = p.JobFinished(job_id=job.id, attempt=7, wall_time=0.01, exit_code=0, spooled=True)
    return "job_finished", message(pool, pool.w1, msg)


def retried_restarted(pool: Pool) -> tuple[str, Callable[[], object]]:
    """Bob's job fails and is retried at once on its worker: the folder its first
    attempt left is cleared."""
    job = next(j for j in pool.jobs if j.owner == "bob" and j.state is JobState.RUNNING)
    worker = pool.state.workers.of_job(job.id)
    assert worker is not None
    pool.removes(pool.state.spool.job_dir(job.cluster, job.proc))
    pool.after.append(("restarted", lambda: job.attempt == 2))
    return "job_finished", lambda: _finish(pool.state, worker, finished(job, exit_code=3), {}, None)


def completion_after_hashing(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.running_on(pool.w2)
    worker = pool.state.workers.of_link(pool.w2)
    assert worker is not None
    return "job_finished", lambda: _finish(pool.state, worker, finished(job, exit_code=0), {}, None)


def new_cluster(pool: Pool) -> tuple[str, Callable[[], object]]:
    return "new_cluster", message(pool, pool.ann, p.NewCluster())


def _reserved(pool: Pool) -> int:
    created = on_new_cluster(pool.state, pool.ann, p.NewCluster())
    assert isinstance(created, p.ClusterCreated)
    pool.state.store.commit()
    return created.cluster


SCRIPT = b"#!/bin/sh\n"
SCRIPT_SHA = hashlib.sha256(SCRIPT).hexdigest()
SPEC = JobSpec(
    executable="x", inputs=[p.InputFile(name="x", sha256=SCRIPT_SHA, size=len(SCRIPT))], **MAIL
)


def part(cluster: int, count: int, first: int = 0, last: bool = True) -> p.SubmitJobs:
    """A part of a cluster of jobs running ``x``, sent inline."""
    return p.SubmitJobs(cluster=cluster, submit_file="s", jobs=[SPEC] * count, first_proc=first,
                        last=last, files={SCRIPT_SHA: p.pack_bytes(SCRIPT)})  # fmt: skip


def submit_jobs(pool: Pool) -> tuple[str, Callable[[], object]]:
    cluster = _reserved(pool)
    return "submit_jobs", message(pool, pool.ann, part(cluster, 3))


def submit_jobs_part(pool: Pool) -> tuple[str, Callable[[], object]]:
    """The last part of a cluster submitted in two, awaited by its submitter."""
    cluster = _reserved(pool)
    assert isinstance(
        on_submit_jobs(pool.state, pool.ann, part(cluster, 2, last=False)), p.Submitted
    )
    on_await_clusters(pool.state, pool.ann, p.AwaitClusters(clusters=[cluster]))
    pool.state.store.commit()
    pool.ann.sent.clear()
    msg = p.SubmitJobs(cluster=cluster, submit_file="s", jobs=[], first_proc=2)
    return "submit_jobs", message(pool, pool.ann, msg)


def change(action: str, which: Callable[[Pool], Job]) -> Case:
    def case(pool: Pool) -> tuple[str, Callable[[], object]]:
        job = which(pool)
        owner = pool.ann if job.owner == "ann" else pool.bob
        return "change_jobs", message(pool, owner, p.ChangeJobs(action=action, ids=[job.id]))

    case.__name__ = f"{action}_{getattr(which, '__name__', 'job')}"
    return case


def running(pool: Pool) -> Job:
    return pool.running_on(pool.w1)


def queued(pool: Pool) -> Job:
    return pool.queued()


def idle(pool: Pool) -> Job:
    return pool.idle()


def held_job(pool: Pool) -> Job:
    return pool.held()


def remove_cluster(pool: Pool) -> tuple[str, Callable[[], object]]:
    """Every job of ann's cluster, running, queued and idle, removed at once; she
    awaits and watches the cluster."""
    cluster = pool.jobs[0].cluster
    on_subscribe(pool.state, pool.ann, p.Subscribe(clusters=[cluster]))
    on_await_clusters(pool.state, pool.ann, p.AwaitClusters(clusters=[cluster]))
    pool.state.store.commit()
    pool.ann.sent.clear()
    msg = p.ChangeJobs(action="remove", ids=[str(cluster)])
    return "change_jobs", message(pool, pool.ann, msg)


def edit_held(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.held()
    msg = p.EditJobs(ids=[job.id], changes={"request_memory": "64"})
    return "edit_jobs", message(pool, pool.bob, msg)


def edit_idle(pool: Pool) -> tuple[str, Callable[[], object]]:
    msg = p.EditJobs(ids=[pool.idle().id], changes={"request_cpus": "2"})
    return "edit_jobs", message(pool, pool.ann, msg)


def draining(pool: Pool) -> tuple[str, Callable[[], object]]:
    worker = pool.state.workers.of_link(pool.w1)
    assert worker is not None
    entries = [f"{j.id}:{j.attempt}" for j in worker.running.values()]
    return "draining", message(pool, pool.w1, p.Draining(requeue=entries))


def drain_worker(pool: Pool) -> tuple[str, Callable[[], object]]:
    operator = pool.link(FakeConnection("operator", auth=BY_POOL_SECRET))
    return "drain_worker", message(pool, operator, p.DrainWorker(name="w1", grace=5))


def subscribe(pool: Pool) -> tuple[str, Callable[[], object]]:
    cluster = pool.jobs[0].cluster
    on_subscribe(pool.state, pool.bob, p.Subscribe(clusters=[cluster]))
    msg = p.Subscribe(clusters=[cluster, pool.jobs[-1].cluster], states=["held"])
    return "subscribe", message(pool, pool.ann, msg)


def await_clusters(pool: Pool) -> tuple[str, Callable[[], object]]:
    clusters = [pool.jobs[0].cluster, 9999]
    return "await_clusters", message(pool, pool.ann, p.AwaitClusters(clusters=clusters))


def tail_job(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.running_on(pool.w1)
    return "tail_job", message(pool, pool.ann, p.TailJob(job_id=job.id))


def output_chunk(pool: Pool) -> tuple[str, Callable[[], object]]:
    job = pool.running_on(pool.w1)
    assert on_tail_job(pool.state, pool.ann, p.TailJob(job_id=job.id, id=7)) is None
    pool.state.store.commit()
    [read] = pool.w1.take(p.ReadOutput)
    chunk = p.OutputChunk(id=read.id, job_id=job.id, offset=0, data="", running=False)
    return "output_chunk", lambda: on_output_chunk(pool.state, pool.w1, chunk)  # type: ignore[arg-type]


def scheduling_pass(pool: Pool) -> tuple[str, Callable[[], object]]:
    return "scheduling pass", lambda: schedule_once(pool.state)


def orphan_requeue(pool: Pool) -> tuple[str, Callable[[], object]]:
    connection_closed(pool.state, pool.w1)  # type: ignore[arg-type]
    pool.state.store.commit()
    pool.clock.advance(pool.state.config.worker_timeout + 1)
    return "orphan requeue", lambda: requeue_orphans(pool.state, pool.clock())


def worker_departure(pool: Pool) -> tuple[str, Callable[[], object]]:
    # An output request waits for the departing worker: it is answered.
    job = pool.running_on(pool.w1)
    on_tail_job(pool.state, pool.ann, p.TailJob(job_id=job.id, id=3))
    pool.state.store.commit()
    pool.ann.sent.clear()
    pool.w1.sent.clear()
    return "departure", lambda: connection_closed(pool.state, pool.w1)  # type: ignore[arg-type]


def user_departure(pool: Pool) -> tuple[str, Callable[[], object]]:
    """A user who watches and awaits clusters while submitting one in parts leaves."""
    cluster = _reserved(pool)
    assert isinstance(
        on_submit_jobs(pool.state, pool.ann, part(cluster, 1, last=False)), p.Submitted
    )
    on_subscribe(pool.state, pool.ann, p.Subscribe(clusters=[pool.jobs[0].cluster]))
    on_await_clusters(pool.state, pool.ann, p.AwaitClusters(clusters=[pool.jobs[0].cluster]))
    pool.state.store.commit()
    pool.ann.sent.clear()
    pool.removes(uploaded(pool, cluster))
    return "departure", lambda: connection_closed(pool.state, pool.ann)  # type: ignore[arg-type]


def uploaded(pool: Pool, cluster: int) -> Path:
    """An upload into ``cluster``'s inputs never named as one (its part not sent)."""
    upload = pool.state.spool.input_dir(cluster) / "part-1"
    upload.write_bytes(b"an input")
    return upload


def upload_failure(pool: Pool) -> tuple[str, Callable[[], object]]:
    """An input of a cluster whose first part is queued never arrives."""
    cluster = _reserved(pool)
    assert isinstance(
        on_submit_jobs(pool.state, pool.ann, part(cluster, 2, last=False)), p.Submitted
    )
    pool.state.store.commit()
    pool.ann.sent.clear()
    pool.removes(uploaded(pool, cluster))
    return "upload failure", lambda: upload_failed(pool.state, cluster, "an upload failed")


def identity_check(pool: Pool) -> tuple[str, Callable[[], object]]:
    """Nobody's token is in the database: every queued job's owner is gone, and the
    connections of ann and bob are closed."""
    for conn in (pool.ann, pool.bob):
        pool.state.peers[conn.id] = conn  # type: ignore[assignment]
        pool.closes(conn)
    return "identity check", lambda: check_identities(pool.state)


def silent_workers(pool: Pool) -> tuple[str, Callable[[], object]]:
    """No worker was heard from within the timeout: each connection is closed."""
    pool.clock.advance(pool.state.config.worker_timeout + 1)
    for worker in pool.state.workers:
        pool.closes(worker.link)  # type: ignore[arg-type]
    return "silent workers", lambda: close_silent(pool.state, pool.clock())


def retention(pool: Pool) -> tuple[str, Callable[[], object]]:
    """The results of a job that completed long ago are cleaned: its folder too."""
    state = pool.state
    job = pool.running_on(pool.w2)
    worker = state.workers.of_link(pool.w2)
    assert worker is not None
    done = run_unit(state, "job_finished", lambda: _finish(state, worker, finished(job), {}, None))
    assert not isinstance(done, p.Error)
    state.store.commit()
    pool.removes(state.spool.job_dir(job.cluster, job.proc))
    pool.clock.advance(state.config.result_retention + 1)
    return "retention", lambda: state.retention.expire(pool.clock(), state.jobs.active)


def reservation_expiry(pool: Pool) -> tuple[str, Callable[[], object]]:
    """A cluster reserved is never submitted: its folder goes."""
    cluster = _reserved(pool)
    pool.removes(pool.state.spool.root / str(cluster))
    pool.clock.advance(pool.state.config.reservation_ttl + 1)
    return "reservation expiry", lambda: expire_reservations(pool.state, pool.clock())


def job_policies(pool: Pool) -> tuple[str, Callable[[], object]]:
    """A running job's periodic_hold holds it (its attempt killed, its slot refilled)
    and an idle job's periodic_remove removes it."""
    state = pool.state
    running = pool.running_on(pool.w1)
    running.spec = dataclasses.replace(running.spec, attributes={"PeriodicHold": "JobStatus == 2"})
    state.policies.note(running)
    msg = p.EditJobs(ids=[pool.idle().id], changes={"+PeriodicRemove": "JobStatus == 1"})
    assert isinstance(on_edit_jobs(state, pool.ann, msg), p.JobsChanged)
    state.store.commit()
    pool.ann.sent.clear()
    return "job policies", lambda: periodic_pass(state)


CASES: list[Case] = [
    register_new,
    register_returning,
    heartbeat,
    completed,
    held,
    retried,
    requeued,
    requeued_spooled,
    stale_spooled,
    retried_restarted,
    completion_after_hashing,
    new_cluster,
    submit_jobs,
    submit_jobs_part,
    change("remove", idle),
    change("remove", running),
    change("remove", queued),
    change("hold", idle),
    change("hold", running),
    change("hold", queued),
    change("release", held_job),
    remove_cluster,
    edit_held,
    edit_idle,
    draining,
    drain_worker,
    subscribe,
    await_clusters,
    tail_job,
    output_chunk,
    scheduling_pass,
    orphan_requeue,
    worker_departure,
    user_departure,
    reservation_expiry,
    upload_failure,
    identity_check,
    silent_workers,
    retention,
    job_policies,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_a_unit_that_fails_at_its_end_leaves_nothing(
    pool: Pool, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    name, unit = case(pool)
    caplog.set_level(logging.ERROR, "scheduler.server")
    error = fails_whole(pool, name, unit)
    assert error.message == f"internal error handling {name!r}"
    assert f"unit {name} failed" in caplog.text and "Injected" in caplog.text
    caplog.clear()
    for what, done in pool.after:
        assert not done(), f"{what} before the unit committed"
    # What is left works: the same unit, run again without the failure, succeeds and
    # carries out its effects once committed.
    assert not isinstance(run_unit(pool.state, name, unit), p.Error)
    assert len(pool.state.effects) == 0
    for what, done in pool.after:
        assert done(), f"{what} after the unit committed"


def test_a_failed_write_in_the_middle_of_a_pass_undoes_the_jobs_started_before(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduling pass whose second start cannot be written starts none."""
    state = pool.state
    for job in pool.jobs:
        if job.owner == "bob" and job.state is JobState.HELD:
            on_change_jobs(state, pool.bob, p.ChangeJobs(action="release", ids=[job.id]))
    register(state, "w5", slots=2)
    state.store.commit()
    before = (rows(state), memory(pool), sent(pool))
    save = state.store.save_job
    calls: list[Job] = []

    def failing(job: Job, event: str, detail: str = "") -> None:
        calls.append(job)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        save(job, event, detail)

    monkeypatch.setattr(state.store, "save_job", failing)
    reply = run_unit(state, "scheduling pass", lambda: schedule_once(state))
    assert isinstance(reply, p.Error) and reply.code == "disk_full"
    assert len(calls) == 2
    assert (rows(state), memory(pool), sent(pool)) == before


def test_a_refused_request_keeps_its_code_and_undoes_what_it_did(pool: Pool) -> None:
    state = pool.state
    before = (rows(state), memory(pool), sent(pool))
    job = pool.idle()

    def refused() -> object:
        on_change_jobs(state, pool.ann, p.ChangeJobs(action="hold", ids=[job.id]))
        on_change_jobs(state, pool.ann, p.ChangeJobs(action="hold", ids=["9999.0"]))
        return None

    reply = run_unit(state, "change_jobs", refused)
    assert isinstance(reply, p.Error) and reply.code == "not_found"
    assert job.state is JobState.IDLE
    assert (rows(state), memory(pool), sent(pool)) == before


def test_a_connection_drops_the_frames_of_a_failed_unit(pool: Pool) -> None:
    conn = Connection(1, None, None, "10.0.0.9:1", "127.0.0.1", role=Role.CONTROL)  # type: ignore[arg-type]
    conn.undo = pool.state.store.remember
    conn.send(p.Ok())

    def unit() -> None:
        conn.send(p.ClusterDone(cluster=1))
        conn.send(p.ClusterDone(cluster=2), urgent=False)
        raise Injected("frames")

    assert isinstance(run_unit(pool.state, "await_clusters", unit), p.Error)
    assert conn.outbox == [p.encode(p.Ok())]


def committed_clusters(path: Path) -> int:
    """The clusters another reader of the database sees: those committed."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM clusters").fetchone()[0])
    finally:
        db.close()


def broken() -> None:
    raise RuntimeError("an effect that fails")


def test_effects_run_in_order_once_their_unit_committed(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a shell (each unit committed as it closes), a unit's effects follow its
    commit, in the order deferred; one that fails is logged, the others run."""
    state = pool.state
    path = state.config.db_path
    before = committed_clusters(path)
    done: list[object] = []

    def unit() -> None:
        state.store.clusters.reserve_cluster("ann", state.clock())
        state.effects.defer("first", lambda: done.append(("first", committed_clusters(path))))
        state.effects.defer("broken", broken)
        state.effects.defer("last", lambda: done.append("last"))
        assert done == []

    caplog.set_level(logging.ERROR, "scheduler.server")
    assert run_unit(state, "reserve", unit) is None
    assert done == [("first", before + 1), "last"]
    assert "effect 'broken' of a committed unit failed" in caplog.text
    assert "an effect that fails" in caplog.text
    assert len(state.effects) == 0


def test_a_nested_unit_that_fails_takes_back_its_effects_alone(pool: Pool) -> None:
    state = pool.state
    done: list[str] = []

    def inner() -> None:
        state.effects.defer("inner", lambda: done.append("inner"))
        raise Injected("inner")

    def outer() -> None:
        state.effects.defer("before", lambda: done.append("before"))
        with pytest.raises(Injected), state.store.transaction():
            inner()
        state.effects.defer("after", lambda: done.append("after"))

    assert run_unit(state, "outer", outer) is None
    assert done == ["before", "after"]


class RecordingWriter:
    """A connection's writer that notes, in ``seen``, each write to the socket."""

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    def write(self, data: bytes) -> None:
        self.seen.append("frame")

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.seen.append("closed")


def test_the_shell_carries_out_effects_after_its_commit_and_before_its_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shell ends a turn by committing its batch, carrying out the effects its
    units deferred (in order, one that fails logged), then sending its frames; a unit
    that fails leaves none, and one that only defers still gets its turn ended. While
    the disk is too full to commit, the effects wait for the commit."""
    scheduler = Scheduler(SchedulerConfig(home=tmp_path / "home", host="127.0.0.1", port=0))
    state, path = scheduler.state, scheduler.config.db_path
    seen: list[object] = []
    conn = Connection(1, None, RecordingWriter(seen), "10.0.0.9:1", "127.0.0.1",  # type: ignore[arg-type]
                      role=Role.CONTROL, on_output=scheduler._output,
                      undo=scheduler.store.remember)  # fmt: skip

    def unit() -> None:
        state.store.clusters.reserve_cluster("ann", state.clock())
        state.effects.defer("first", lambda: seen.append(("first", committed_clusters(path))))
        state.effects.defer("broken", broken)
        state.effects.defer("last", lambda: seen.append("last"))
        conn.send(p.Ok())

    def failing() -> None:
        state.effects.defer("never", lambda: seen.append("never"))
        raise Injected("failing")

    def defer(name: str) -> None:
        state.effects.defer(name, lambda: seen.append(name))

    def commit_fails() -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async def turns() -> None:
        caplog.set_level(logging.ERROR, "scheduler.server")
        assert run_unit(state, "reserve", unit) is None
        assert isinstance(run_unit(state, "failing", failing), p.Error)
        assert seen == []
        await asyncio.sleep(0)  # the turn ends
        assert seen == [("first", 1), "last", "frame"]
        assert "effect 'broken' of a committed unit failed" in caplog.text
        assert run_unit(state, "defers only", lambda: defer("alone")) is None
        await asyncio.sleep(0)
        assert seen[-1] == "alone"
        commit = scheduler.store.commit
        scheduler.store.commit = commit_fails  # type: ignore[method-assign]
        assert run_unit(state, "held", lambda: defer("held")) is None
        await asyncio.sleep(0)
        assert seen[-1] == "alone"  # its commit failed: it waits
        scheduler.store.commit = commit  # type: ignore[method-assign]
        scheduler.end_turn()  # as the housekeeping loop does once there is room
        assert seen[-1] == "held" and "never" not in seen

    try:
        asyncio.run(turns())
    finally:
        scheduler.spool.stop()
        scheduler.store.close()
