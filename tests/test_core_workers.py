"""Workers in the scheduler's core, with a fake clock and no sockets: registration,
dispatch, a job's end, loss, return and draining."""

from __future__ import annotations

import pytest
from core_fakes import (
    TIMEOUT,
    FakeClock,
    metrics,
    register,
    runs,
    submit,
    user,
)

from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.control_handlers import on_await_clusters, on_subscribe
from scheduler.departures import connection_closed
from scheduler.housekeeping import housekeeping
from scheduler.job_control import on_tail_job
from scheduler.protocol import JobState
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.worker_control import on_draining
from scheduler.worker_handlers import on_heartbeat, on_job_finished


def test_a_registered_worker_is_answered_and_known_by_name(state: SchedulerState) -> None:
    link = register(state, "w1", slots=3)
    [reply] = link.of(p.Registered)
    worker = state.workers.named("w1")
    assert worker is not None and worker.id == reply.worker_id
    assert state.workers.of_link(link) is worker and worker.slots.slots == 3
    with pytest.raises(RequestError, match="already connected"):
        register(state, "w1")


def test_idle_jobs_go_to_free_slots_and_the_index_knows_where(state: SchedulerState) -> None:
    link = register(state, "w1", slots=2)
    jobs = submit(state, "ann", 3)
    schedule_once(state)
    assert list(runs(link)) == [jobs[0].id, jobs[1].id]
    worker = state.workers.named("w1")
    assert worker is not None and worker.slots.used_slots == 2
    assert state.workers.of_job(jobs[0].id) is worker
    assert state.workers.of_job(jobs[2].id) is None
    assert [j.state for j in jobs] == [JobState.RUNNING, JobState.RUNNING, JobState.IDLE]
    assert jobs[0].start_time == state.clock()


def test_a_finished_job_frees_its_slot_for_the_next(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1", slots=1)
    first, second = submit(state, "ann", 2)
    schedule_once(state)
    clock.advance(60)
    link.sent.clear()
    reply = on_job_finished(state, link, p.JobFinished(job_id=first.id, attempt=1, exit_code=0,
                                                       wall_time=60.0))  # fmt: skip
    assert isinstance(reply, p.Ok)
    assert first.state is JobState.COMPLETED and first.end_time == clock.now
    assert list(runs(link)) == [second.id]
    assert state.workers.of_job(first.id) is None
    assert state.store.events(first.cluster, first.proc)[-1].event == "terminated"
    # A stale report of the same attempt changes nothing.
    assert isinstance(on_job_finished(state, link, p.JobFinished(job_id=first.id, attempt=1)),
                      p.Ok)  # fmt: skip
    assert first.state is JobState.COMPLETED


def test_a_lost_workers_jobs_are_requeued_after_the_timeout(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    connection_closed(state, link)
    assert state.workers.named("w1") is None and state.workers.of_job(job.id) is None
    clock.advance(TIMEOUT - 1)
    housekeeping(state, clock())
    assert job.state is JobState.RUNNING  # its worker may still come back
    clock.advance(2)
    housekeeping(state, clock())
    assert job.state is JobState.IDLE and job.worker is None
    assert state.store.events(job.cluster, job.proc)[-1].detail == "worker w1 was lost"


def test_a_silent_worker_is_declared_lost(state: SchedulerState, clock: FakeClock) -> None:
    link = register(state, "w1")
    clock.advance(TIMEOUT / 2)
    on_heartbeat(state, link, p.Heartbeat(metrics=metrics()))
    clock.advance(TIMEOUT - 1)
    housekeeping(state, clock())
    assert not link.closed  # heard from within the timeout
    clock.advance(2)
    housekeeping(state, clock())
    assert link.closed


def test_a_returning_worker_keeps_the_jobs_it_still_runs(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1")
    kept, dropped = submit(state, "ann", 2)
    schedule_once(state)
    connection_closed(state, link)
    clock.advance(TIMEOUT / 2)
    back = register(state, "w1", running=[f"{kept.id}:1", "99.0:1"])
    [grant] = back.of(p.NewGrant)
    assert grant.job_id == kept.id
    [kill] = back.of(p.KillJob)  # an attempt the scheduler knows nothing of
    assert kill.job_id == "99.0"
    worker = state.workers.named("w1")
    assert worker is not None and state.workers.of_job(kept.id) is worker
    assert kept.state is JobState.RUNNING and state.workers.awaited(kept.id) is None
    # What it no longer runs is requeued at once, not at the deadline.
    assert dropped.state is JobState.IDLE
    assert worker.slots.used_slots == 1


def test_a_job_sent_as_the_connection_broke_is_requeued_unstarted(
    state: SchedulerState,
) -> None:
    link = register(state, "w1", slots=1, incarnation="one")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    connection_closed(state, link)  # before the worker read its run_job
    register(state, "w1", slots=1, incarnation="one")
    assert job.state is JobState.IDLE and job.num_starts == 0
    # Run again by the same process: its first start.
    schedule_once(state)
    assert job.state is JobState.RUNNING and job.num_starts == 1


def test_a_draining_worker_gives_back_its_jobs(state: SchedulerState) -> None:
    link = register(state, "w1", slots=2)
    first, second = submit(state, "ann", 2)
    schedule_once(state)
    assert isinstance(on_draining(state, link, p.Draining(requeue=[f"{first.id}:1"])), p.Ok)
    worker = state.workers.named("w1")
    assert worker is not None and worker.slots.draining
    assert first.state is JobState.IDLE and state.workers.of_job(first.id) is None
    assert second.state is JobState.RUNNING and worker.slots.used_slots == 1
    link.sent.clear()
    schedule_once(state)
    assert list(runs(link)) == []  # a draining worker takes no new job


def test_an_output_request_to_a_lost_worker_is_answered(state: SchedulerState) -> None:
    link = register(state, "w1")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    ann = user("ann")
    tail = p.TailJob(id=7, job_id=job.id, stream="stdout", offset=0, limit=100)
    assert on_tail_job(state, ann, tail) is None  # asked of the worker
    [read] = link.of(p.ReadOutput)
    assert read.job_id == job.id
    connection_closed(state, link)
    [error] = ann.of(p.Error)
    assert (error.id, error.code) == (7, "gone") and not state.tails


def test_watchers_hear_of_their_clusters_jobs(state: SchedulerState) -> None:
    link = register(state, "w1")
    [job] = submit(state, "ann", 1)
    ann, bob = user("ann"), user("bob")
    for caller in (ann, bob):
        on_subscribe(state, caller, p.Subscribe(clusters=[job.cluster]))
    on_await_clusters(state, ann, p.AwaitClusters(clusters=[job.cluster]))
    schedule_once(state)
    on_job_finished(state, link, p.JobFinished(job_id=job.id, attempt=1, exit_code=0))
    states = [m.job.state for m in ann.of(p.JobUpdate)]
    assert states == ["running", "completed"]
    assert [m.cluster for m in ann.of(p.ClusterDone)] == [job.cluster]
    assert bob.of(p.JobUpdate) == []  # another user's job: not told
    connection_closed(state, ann)
    assert all(ann not in subs for subs in state.subscribers.values())
