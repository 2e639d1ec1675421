"""Each move of a job (scheduler/transitions.py) with a fake clock and no sockets:
its state and event, and all it means besides, the worker's slot freed or handed
on, the grant revoked, the attempt killed, watchers told, usage charged."""

from __future__ import annotations

import pytest
from core_fakes import TIMEOUT, FakeClock, FakeConnection, register, runs, submit, user

from scheduler import protocol as p
from scheduler import transitions as t
from scheduler.control_handlers import on_subscribe
from scheduler.job_records import Job
from scheduler.jobstate import InvalidTransition
from scheduler.protocol import JobState
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.workers import WorkerState

OUTCOME: dict[str, object] = dict(wall_time=100.0, cpu_time=90.0, exit_code=1, exit_signal=None)


def on_worker(
    state: SchedulerState, count: int = 1, slots: int = 1, **spec: object
) -> tuple[FakeConnection, WorkerState, list[Job]]:
    """A worker ``w1`` with ``slots`` slots, and ``count`` jobs of ann's submitted
    and scheduled on it; what it was sent so far is forgotten."""
    link = register(state, "w1", slots=slots)
    jobs = submit(state, "ann", count, **spec)
    schedule_once(state)
    link.sent.clear()
    worker = state.workers.named("w1")
    assert worker is not None
    return link, worker, jobs


def last_event(state: SchedulerState, job: Job) -> tuple[str, str]:
    event = state.store.events(job.cluster, job.proc)[-1]
    return event.event, event.detail


def granted(state: SchedulerState, worker: WorkerState, job: Job) -> str:
    """The FTP user of ``job``'s grant, checked to be live now."""
    user_name = worker.grants[job.id].user
    assert state.spool.authorizer.has_user(user_name)
    return user_name


def watched(state: SchedulerState, job: Job) -> FakeConnection:
    watcher = user("ann")
    on_subscribe(state, watcher, p.Subscribe(clusters=[job.cluster]))
    return watcher


def assert_left(state: SchedulerState, worker: WorkerState, job: Job, grant_user: str) -> None:
    """``job`` runs on ``worker`` no more and its grant is revoked."""
    assert job.id not in worker.running and job.id not in worker.grants
    assert state.workers.of_job(job.id) is None
    assert not state.spool.authorizer.has_user(grant_user)


def test_finish_completes_the_job_and_gives_its_slot_to_the_next(
    state: SchedulerState, clock: FakeClock
) -> None:
    link, worker, (job, waiting) = on_worker(state, 2)
    grant_user = granted(state, worker, job)
    watcher = watched(state, job)
    clock.advance(100)
    with state.store.transaction():
        t.finish(state, worker, job, "exit code 0", None, dict(OUTCOME, exit_code=0))
    assert job.state is JobState.COMPLETED and job.exit_code == 0
    assert last_event(state, job) == ("terminated", "exit code 0")
    assert state.jobs.get(job.id) is None
    assert_left(state, worker, job, grant_user)
    assert list(runs(link)) == [waiting.id] and not link.of(p.KillJob)
    assert worker.slots.used_slots == 1 and waiting.state is JobState.RUNNING
    assert [m.job.state for m in watcher.of(p.JobUpdate)] == ["completed", "running"]
    # A hundred seconds of one cpu, charged when it stopped counting as it runs.
    assert state.jobs.queue.users["ann"].value == pytest.approx(100)


def test_retry_queues_the_job_again_with_its_outcome(
    state: SchedulerState, clock: FakeClock
) -> None:
    link, worker, [job] = on_worker(state)
    grant_user = granted(state, worker, job)
    clock.advance(50)
    with state.store.transaction():
        t.retry(state, worker, job, "exit code 1: retry 1 of 2", OUTCOME)
    assert not state.spool.authorizer.has_user(grant_user)
    events = [(e.event, e.detail) for e in state.store.events(job.cluster, job.proc)]
    assert events[-2] == ("retrying", "exit code 1: retry 1 of 2")
    assert events[-1] == ("executing", "on worker w1 (attempt 2)")
    # The freed slot took the job again, at once, with a grant of its own.
    assert list(runs(link)) == [job.id] and job.attempt == 2 and job.exit_code == 1
    assert granted(state, worker, job) != grant_user
    assert state.jobs.queue.users["ann"].value == pytest.approx(50)


def test_evict_requeues_without_fault_and_a_draining_worker_takes_nothing(
    state: SchedulerState,
) -> None:
    link, worker, (job, waiting) = on_worker(state, 2)
    grant_user = granted(state, worker, job)
    worker.slots.draining = True
    with state.store.transaction():
        t.evict(state, worker, job, "worker w1 shut down")
    assert job.state is JobState.IDLE and job.worker is None and job.num_starts == 1
    assert last_event(state, job) == ("evicted", "worker w1 shut down")
    assert_left(state, worker, job, grant_user)
    assert worker.slots.used_slots == 0 and link.sent == []
    assert {j.id for j in state.jobs.queue.jobs_of("ann")} == {job.id, waiting.id}


def test_hold_failed_logs_the_termination_first_and_refills_the_slot(
    state: SchedulerState,
) -> None:
    link, worker, (job, waiting) = on_worker(state, 2)
    grant_user = granted(state, worker, job)
    with state.store.transaction():
        t.hold_failed(state, worker, job, "output missing", OUTCOME, terminated="exit code 1")
    assert job.state is JobState.HELD and job.hold_reason == "output missing"
    events = [(e.event, e.detail) for e in state.store.events(job.cluster, job.proc)]
    assert events[-2:] == [("terminated", "exit code 1"), ("held", "output missing")]
    assert job.end_time is not None
    assert_left(state, worker, job, grant_user)
    assert list(runs(link)) == [waiting.id] and not link.of(p.KillJob)


def test_the_slot_of_a_job_that_ends_goes_to_the_one_queued_behind_it(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1", slots=1)
    head, behind = submit(state, "ann", 2)
    state.run_times.record(head.cluster, 0.001)  # short: queued behind one another
    schedule_once(state)
    assert [m.after for m in link.of(p.RunJob)] == ["", f"{head.id}:1"]
    assert (behind.state, behind.start_time) == (JobState.RUNNING, None)
    worker = state.workers.named("w1")
    assert worker is not None
    link.sent.clear()
    clock.advance(1)
    with state.store.transaction():
        t.finish(state, worker, head, "exit code 0", None, dict(OUTCOME, exit_code=0))
    # It began in its place: the slot stays taken, and nothing new is sent.
    assert behind.start_time == clock() and worker.slots.used_slots == 1
    assert link.sent == []


@pytest.mark.parametrize("move", ["hold", "remove"])
def test_stopping_a_running_job_kills_its_attempt_and_frees_its_slot(
    state: SchedulerState, clock: FakeClock, move: str
) -> None:
    link, worker, (job, waiting) = on_worker(state, 2)
    grant_user = granted(state, worker, job)
    watcher = watched(state, job)
    clock.advance(30)
    with state.store.transaction():
        if move == "hold":
            t.hold(state, job, "held by ann")
        else:
            t.remove(state, job, "by ann", kill="removed by ann")
    final, event, detail, reason = {
        "hold": (JobState.HELD, "held", "held by ann", "held by ann"),
        "remove": (JobState.REMOVED, "removed", "by ann", "removed by ann"),
    }[move]
    assert job.state is final and job.end_time == clock()
    assert last_event(state, job) == (event, detail)
    [kill] = link.of(p.KillJob)
    assert (kill.job_id, kill.attempt, kill.reason) == (job.id, 1, reason)
    assert_left(state, worker, job, grant_user)
    # Freed, not refilled: the pass after the change starts the next job.
    assert worker.slots.used_slots == 0 and waiting.state is JobState.IDLE
    assert [m.job.state for m in watcher.of(p.JobUpdate)] == [final.value]
    assert state.jobs.queue.users["ann"].value == pytest.approx(30)


def test_remove_kills_for_its_detail_by_default(state: SchedulerState) -> None:
    link, _, [job] = on_worker(state)
    with state.store.transaction():
        t.remove(state, job, "the submission was interrupted")
    [kill] = link.of(p.KillJob)
    assert kill.reason == "the submission was interrupted"


def test_idle_and_held_jobs_move_without_a_worker(state: SchedulerState) -> None:
    [job] = submit(state, "ann", 1)
    with state.store.transaction():
        t.hold(state, job, "held by ann")
    assert (job.state, job.hold_reason) == (JobState.HELD, "held by ann")
    assert not list(state.jobs.queue.jobs_of("ann"))
    with state.store.transaction():
        t.release(state, job, "by ann")
    assert (job.state, job.hold_reason) == (JobState.IDLE, None)
    assert last_event(state, job) == ("released", "by ann")
    assert list(state.jobs.queue.jobs_of("ann")) == [job]
    with state.store.transaction():
        t.remove(state, job, "user ann was removed")
    assert job.state is JobState.REMOVED and state.jobs.get(job.id) is None
    assert last_event(state, job) == ("removed", "user ann was removed")
    assert job.cluster not in state.jobs.unfinished


def test_a_lost_workers_jobs_wait_for_it_then_are_requeued(
    state: SchedulerState, clock: FakeClock
) -> None:
    link, worker, (job, queued) = on_worker(state, 2, slots=2)
    grant_user = granted(state, worker, job)
    t.worker_lost(state, worker)
    assert state.workers.named("w1") is None
    assert job.state is JobState.RUNNING
    assert state.workers.awaited(job.id) == ("w1", clock() + TIMEOUT)
    assert not state.spool.authorizer.has_user(grant_user)
    with state.store.transaction():
        t.requeue_lost(state, job, "worker w1 was lost")
        t.requeue_lost(state, queued, "queued on worker w1, which dropped it", started=False)
    assert last_event(state, job) == ("evicted", "worker w1 was lost")
    assert (job.state, job.worker, job.num_starts) == (JobState.IDLE, None, 1)
    assert (queued.state, queued.num_starts) == (JobState.IDLE, 0)
    assert state.workers.awaited(job.id) is None and state.workers.awaited(queued.id) is None
    assert link.sent == []


def test_a_revoked_worker_is_not_waited_for(state: SchedulerState, clock: FakeClock) -> None:
    link, worker, [job] = on_worker(state)
    link.revoked = True
    t.worker_lost(state, worker)
    assert state.workers.awaited(job.id) == ("w1", clock())


def test_holding_an_orphan_stops_the_wait_for_its_worker(state: SchedulerState) -> None:
    _, worker, [job] = on_worker(state)
    t.worker_lost(state, worker)
    with state.store.transaction():
        t.hold(state, job, "held by ann")
    assert job.state is JobState.HELD and state.workers.awaited(job.id) is None


def test_a_move_the_table_does_not_allow_is_refused(state: SchedulerState) -> None:
    _, worker, (job, idle) = on_worker(state, 2)
    with pytest.raises(InvalidTransition):
        t.finish(state, worker, idle, "exit code 0", None, dict(OUTCOME, exit_code=0))
    with state.store.transaction():
        t.finish(state, worker, job, "exit code 0", None, dict(OUTCOME, exit_code=0))
    with pytest.raises(InvalidTransition):
        t.remove(state, job, "by ann")
    assert (job.state, idle.state) == (JobState.COMPLETED, JobState.RUNNING)
