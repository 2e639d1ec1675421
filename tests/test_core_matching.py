"""Matching, orphans and the clock in the scheduler's core, with a fake clock and no
sockets: the matcher decides without changing anything and gives out jobs in the
order the fair-share queue does; orphans wait in the worker registry until their
deadline; the services read the scheduler's clock."""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest
from core_fakes import TIMEOUT, FakeClock, metrics, register, submit
from pyftpdlib.authorizers import AuthenticationFailed
from reference_matcher import pop_fitting

from scheduler import protocol as p
from scheduler.departures import connection_closed
from scheduler.dispatch import Slots
from scheduler.fairshare import FairShareQueue
from scheduler.housekeeping import housekeeping
from scheduler.job_control import on_change_jobs
from scheduler.job_records import Job
from scheduler.matchmaker import Match, match
from scheduler.protocol import JobSpec, JobState
from scheduler.retention import USAGE_TTL
from scheduler.starting import run_message, schedule_once
from scheduler.state import SchedulerState
from scheduler.workers import WorkerRegistry

# ----------------------------------------------------------------------------- matching


def queue_snapshot(queue: FairShareQueue) -> object:
    """All the queue holds, comparable."""
    return (
        len(queue),
        {
            name: (u.value, u.stamp, u.running_cpus, u.started, u.idle, u.running,
                   {shape: list(heap) for shape, heap in u.heaps.items()})
            for name, u in queue.users.items()
        },
    )  # fmt: skip


def counters(slots: Slots) -> tuple[int, int, int, int]:
    return slots.used_slots, slots.used_cpus, slots.used_memory_mb, slots.used_gpus


def test_the_matcher_decides_and_changes_nothing(state: SchedulerState) -> None:
    first, second = register(state, "w1", slots=2), register(state, "w2", slots=1)
    ann = submit(state, "ann", 2)
    bob = submit(state, "bob", 2)
    queue, free = state.jobs.queue, state.workers.slots()
    before = queue_snapshot(queue), [counters(s) for s in free]
    events = len(state.store.events(ann[0].cluster, ann[0].proc))

    matches = match(queue, free, state.clock())

    assert (queue_snapshot(queue), [counters(s) for s in free]) == before
    assert all(job.state is JobState.IDLE for job in ann + bob)
    assert len(state.store.events(ann[0].cluster, ann[0].proc)) == events
    assert not first.of(p.RunJob) and not second.of(p.RunJob)
    w1, w2 = (state.workers.named(n) for n in ("w1", "w2"))
    assert w1 is not None and w2 is not None
    # Users take turns: ann (submitted first) and bob both have no usage.
    assert matches == [Match(w1.id, ann[0]), Match(w1.id, bob[0]), Match(w2.id, ann[1])]
    # Asked again, it answers the same: it remembered nothing.
    assert match(queue, free, state.clock()) == matches

    schedule_once(state)
    assert [m.job_id for m in first.of(p.RunJob)] == [ann[0].id, bob[0].id]
    assert [m.job_id for m in second.of(p.RunJob)] == [ann[1].id]
    assert (counters(w1.slots), counters(w2.slots)) == ((2, 2, 0, 0), (1, 1, 0, 0))


def random_queue(rng: random.Random) -> tuple[FairShareQueue, list[Slots]]:
    queue = FairShareQueue(halflife=100.0)
    users = [f"u{i}" for i in range(rng.randint(1, 4))]
    for name in users:
        queue.load_usage(name, rng.choice([0.0, 10.0, 50.0]), 0.0)
        for _ in range(rng.randint(0, 2)):  # running jobs count as they run
            running = Job(cluster=999, proc=0, owner=name, state=JobState.RUNNING,
                          spec=JobSpec(executable="x", request_cpus=rng.randint(1, 2)),
                          submit_time=0.0, start_time=rng.choice([0.0, 5.0]))  # fmt: skip
            queue.started(running)
    jobs = []
    for cluster in range(1, rng.randint(2, 6)):
        owner = rng.choice(users)
        for proc in range(rng.randint(1, 6)):
            spec = JobSpec(
                executable="x",
                request_cpus=rng.choice([1, 1, 2, 3]),
                request_gpus=rng.choice([0, 0, 1]),
                priority=rng.choice([0, 0, 5]),
            )
            job = Job(cluster=cluster, proc=proc, owner=owner, state=JobState.IDLE, spec=spec,
                      submit_time=0.0)  # fmt: skip
            jobs.append(job)
            queue.push(job)
    for job in rng.sample(jobs, len(jobs) // 4):  # stale entries: a priority edited
        queue.discard(job)
        job.spec = dataclasses.replace(job.spec, priority=rng.choice([-1, 9]))
        queue.push(job)
    for job in rng.sample(jobs, len(jobs) // 5):  # removed while idle
        queue.discard(job)
    free = [
        Slots(
            worker_id=i,
            name=f"w{i}",
            slots=rng.randint(1, 4),
            cpus=rng.randint(1, 6),
            memory_mb=1000,
            gpus=rng.choice([0, 1]),
            disk_free_mb=1000,
        )  # fmt: skip
        for i in range(1, rng.randint(2, 4))
    ]
    return queue, free


@pytest.mark.parametrize("seed", range(40))
def test_the_matcher_gives_out_jobs_as_the_queue_pops_them(seed: int) -> None:
    rng = random.Random(seed)
    queue, free = random_queue(rng)
    now = 20.0
    popped, slots_after = copy.deepcopy((queue, free))
    expected = []
    for slots in slots_after:  # one by one, each started as JobTable.start does
        while slots.free:
            job = pop_fitting(popped, slots, now)
            if job is None:
                break
            slots.take(job)
            job.start_time = now
            popped.started(job)
            expected.append((slots.worker_id, job.cluster, job.proc))
    got = [(m.worker_id, m.job.cluster, m.job.proc) for m in match(queue, free, now)]
    assert got == expected


def test_a_run_message_is_built_from_the_job_and_its_worker(state: SchedulerState) -> None:
    register(state, "w1", slots=2)
    head, job = submit(state, "ann", 2, arguments=["$$(TotalCpus)"])
    worker = state.workers.named("w1")
    assert worker is not None
    grant = p.FtpGrant(host="h", port=21, user="u", password="pw")
    message = run_message(job, worker.slots, worker.metrics, grant, {"ab": "data"}, after=head)
    assert (message.job_id, message.ftp, message.files) == (job.id, grant, {"ab": "data"})
    assert message.after == f"{head.id}:{head.attempt}"
    assert message.spec.arguments == ["2"]  # the worker's value put in
    assert run_message(job, worker.slots, worker.metrics, grant, {}).after == ""


# ----------------------------------------------------------------------------- orphans


def test_the_registry_keeps_orphans_until_their_deadline() -> None:
    registry = WorkerRegistry()
    registry.orphan("1.0", "w1", 100.0)
    registry.orphan("1.1", "w1", 200.0)
    registry.orphan("2.0", "w2", 100.0)
    assert registry.awaited("1.0") == ("w1", 100.0)
    assert registry.orphans_of("w1") == ["1.0", "1.1"]
    assert registry.orphans_due(99.0) == []
    assert registry.orphans_due(100.0) == [("1.0", "w1"), ("2.0", "w2")]
    assert registry.orphans_due(100.0) == [] and registry.awaited("1.0") is None
    assert registry.returned("1.1") and not registry.returned("1.1")
    assert registry.orphans_of("w1") == []


def test_orphans_are_requeued_at_the_fake_clocks_deadline(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    connection_closed(state, link)
    deadline = clock() + TIMEOUT
    assert state.workers.awaited(job.id) == ("w1", deadline)
    assert state.workers.of_job(job.id) is None
    clock.now = deadline - 0.001
    housekeeping(state, clock())
    assert job.state is JobState.RUNNING and state.workers.awaited(job.id) is not None
    clock.now = deadline
    housekeeping(state, clock())
    assert job.state is JobState.IDLE and state.workers.awaited(job.id) is None


def test_a_returning_worker_takes_its_job_back(state: SchedulerState, clock: FakeClock) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    connection_closed(state, link)
    clock.advance(TIMEOUT / 2)
    back = register(state, "w1", slots=1, running=[f"{job.id}:1"])
    worker = state.workers.named("w1")
    assert worker is not None
    assert [g.job_id for g in back.of(p.NewGrant)] == [job.id]
    assert state.workers.of_job(job.id) is worker and state.workers.awaited(job.id) is None
    assert worker.slots.used_slots == 1
    clock.advance(TIMEOUT)  # past the old deadline: nothing waits for it
    on_heartbeat_now(state, back)
    housekeeping(state, clock())
    assert job.state is JobState.RUNNING and job.worker == "w1"


def test_a_stopped_orphan_waits_no_longer(state: SchedulerState, clock: FakeClock) -> None:
    from core_fakes import user

    link = register(state, "w1")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    connection_closed(state, link)
    on_change_jobs(state, user("ann"), p.ChangeJobs(action="hold", ids=[job.id]))
    assert job.state is JobState.HELD and state.workers.awaited(job.id) is None
    back = register(state, "w1", running=[f"{job.id}:1"])
    assert [k.job_id for k in back.of(p.KillJob)] == [job.id]  # a stale attempt now


def on_heartbeat_now(state: SchedulerState, link: object) -> None:
    from scheduler.worker_handlers import on_heartbeat

    on_heartbeat(state, link, p.Heartbeat(metrics=metrics()))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the clock


def test_grants_expire_by_the_schedulers_clock(state: SchedulerState, clock: FakeClock) -> None:
    grant = state.spool.grant_job(1, 0, "127.0.0.1", 60.0)
    authorizer = state.spool.authorizer
    authorizer.validate_authentication(grant.user, grant.password, None)
    clock.advance(61)
    with pytest.raises(AuthenticationFailed):
        authorizer.validate_authentication(grant.user, grant.password, None)


def test_the_spool_size_is_measured_again_after_its_time(
    state: SchedulerState, clock: FakeClock
) -> None:
    before = state.retention.spool_bytes()
    (state.spool.root / "extra").write_bytes(b"x" * 1000)
    assert state.retention.spool_bytes() == before  # measured a moment ago
    clock.advance(USAGE_TTL + 1)
    assert state.retention.spool_bytes() == before + 1000


def test_events_are_dated_by_the_schedulers_clock(state: SchedulerState, clock: FakeClock) -> None:
    register(state, "w1")
    [job] = submit(state, "ann", 1)
    clock.advance(5)
    schedule_once(state)
    [*_, executing] = state.store.events(job.cluster, job.proc)
    assert (executing.event, executing.time) == ("executing", clock())
