"""Jobs in the scheduler's core, with a fake clock and no sockets: users stopping
running jobs, fair-share usage over simulated days, and a restart on the same
database."""

from __future__ import annotations

from pathlib import Path

import pytest
from core_fakes import (
    TIMEOUT,
    FakeClock,
    close_state,
    open_state,
    register,
    runs,
    submit,
    user,
)

from scheduler import database as database_module
from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.explain import on_query_users
from scheduler.housekeeping import housekeeping
from scheduler.job_control import on_change_jobs
from scheduler.protocol import JobState
from scheduler.schema import MIGRATIONS, WORKER_INCARNATION
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.store import Store
from scheduler.worker_handlers import on_job_finished

DAY = 86400.0


@pytest.mark.parametrize("action, final", [("hold", JobState.HELD), ("remove", JobState.REMOVED)])
def test_stopping_a_running_job_kills_it_and_frees_its_slot(
    state: SchedulerState, action: str, final: JobState
) -> None:
    link = register(state, "w1", slots=1)
    running, waiting = submit(state, "ann", 2)
    schedule_once(state)
    link.sent.clear()
    reply = on_change_jobs(state, user("ann"), p.ChangeJobs(action=action, ids=[running.id]))
    assert isinstance(reply, p.JobsChanged) and reply.changed == [running.id]
    assert running.state is final
    [kill] = link.of(p.KillJob)
    assert (kill.job_id, kill.attempt) == (running.id, 1)
    worker = state.workers.named("w1")
    assert worker is not None and worker.slots.used_slots == 0 and not worker.grants
    assert state.workers.of_job(running.id) is None
    schedule_once(state)
    assert list(runs(link)) == [waiting.id]
    # The attempt's late report is stale: it changes nothing.
    on_job_finished(state, link, p.JobFinished(job_id=running.id, attempt=1, exit_code=0))
    assert running.state is final


def test_another_user_cannot_stop_a_job(state: SchedulerState) -> None:
    register(state, "w1")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    with pytest.raises(RequestError):
        on_change_jobs(state, user("bob"), p.ChangeJobs(action="remove", ids=[job.id]))
    reply = on_change_jobs(
        state, user("root", admin=True), p.ChangeJobs(action="hold", ids=[job.id])
    )
    assert isinstance(reply, p.JobsChanged) and job.state is JobState.HELD


def test_usage_decays_by_half_each_half_life(tmp_path: Path, clock: FakeClock) -> None:
    state = open_state(tmp_path / "home", clock, usage_halflife=DAY)
    try:
        link = register(state, "w1", slots=2)
        [job] = submit(state, "ann", 1, request_cpus=2)
        schedule_once(state)
        clock.advance(3600)
        queue = state.jobs.queue
        # While it runs, it counts as it runs: an hour of two cpus.
        assert queue.effective_usage("ann", clock()) == pytest.approx(7200)
        on_job_finished(state, link, p.JobFinished(job_id=job.id, attempt=1, exit_code=0,
                                                   wall_time=3600.0))  # fmt: skip
        assert job.state is JobState.COMPLETED
        for days in (1, 2, 3):
            clock.advance(DAY)
            expected = 7200 * 0.5**days
            assert queue.effective_usage("ann", clock()) == pytest.approx(expected)
            reply = on_query_users(state, user("ann"), p.QueryUsers())
            assert isinstance(reply, p.UserList)
            [ann] = reply.users
            assert ann.effective_usage == pytest.approx(expected, abs=0.001)
    finally:
        close_state(state)


def test_the_user_with_less_usage_goes_first(state: SchedulerState, clock: FakeClock) -> None:
    link = register(state, "w1", slots=1)
    [heavy] = submit(state, "ann", 1)
    schedule_once(state)
    clock.advance(DAY)
    on_job_finished(state, link, p.JobFinished(job_id=heavy.id, attempt=1, exit_code=0))
    link.sent.clear()
    # The slot went idle; ann's next job was queued before bob's.
    ann_next = submit(state, "ann", 1)[0]
    bob_job = submit(state, "bob", 1)[0]
    schedule_once(state)
    assert list(runs(link)) == [bob_job.id]
    assert ann_next.state is JobState.IDLE


def test_a_restart_recovers_jobs_and_usage_from_the_database(
    tmp_path: Path, clock: FakeClock
) -> None:
    home = tmp_path / "home"
    state = open_state(home, clock)
    link = register(state, "w1", slots=2)
    done, kept, lost = submit(state, "ann", 3)
    schedule_once(state)
    clock.advance(100)
    on_job_finished(state, link, p.JobFinished(job_id=done.id, attempt=1, exit_code=0))
    schedule_once(state)
    usage = state.jobs.queue.users["ann"].value
    close_state(state)

    clock.advance(10)
    again = open_state(home, clock)
    try:
        assert {j.id for j in again.jobs.running()} == {kept.id, lost.id}
        assert again.jobs.get(done.id) is None  # completed: in the history only
        assert again.jobs.queue.users["ann"].value == pytest.approx(usage)
        # The running jobs wait for their worker until the timeout.
        for job in (kept, lost):
            assert again.workers.awaited(job.id) == ("w1", clock() + TIMEOUT)
        back = register(again, "w1", slots=2, running=[f"{kept.id}:1"])
        assert [g.job_id for g in back.of(p.NewGrant)] == [kept.id]
        kept_again, lost_again = again.jobs.get(kept.id), again.jobs.get(lost.id)
        assert kept_again is not None and kept_again.state is JobState.RUNNING
        # The worker came back without the other: requeued now, and started again.
        assert lost_again is not None and lost_again.state is JobState.IDLE
        back.sent.clear()
        schedule_once(again)
        assert list(runs(back)) == [lost.id]
        clock.advance(TIMEOUT + 1)
        housekeeping(again, clock())
        assert kept_again.state is JobState.RUNNING
    finally:
        close_state(again)


@pytest.mark.parametrize("same_process", [True, False])
def test_a_job_its_worker_never_received_does_not_count_as_started(
    tmp_path: Path, clock: FakeClock, same_process: bool
) -> None:
    """The scheduler commits a job's start, then stops before its run_job leaves: the
    worker process that comes back without it never ran it; a new process may have."""
    home = tmp_path / "home"
    state = open_state(home, clock)
    register(state, "w1", slots=1, incarnation="first")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    assert job.num_starts == 1
    close_state(state)

    again = open_state(home, clock)
    try:
        register(again, "w1", slots=1, incarnation="first" if same_process else "second")
        back = again.jobs.get(job.id)
        assert back is not None and back.state is JobState.IDLE
        assert back.num_starts == (0 if same_process else 1)
        detail = again.store.events(job.cluster, job.proc)[-1].detail
        assert detail == (
            "sent to worker w1, which never received it"
            if same_process
            else "worker w1 came back without it"
        )
    finally:
        close_state(again)


def test_a_database_from_before_worker_incarnations_migrates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers known before the migration have no process recorded: the first one to
    register is taken as a new process."""
    added = MIGRATIONS.index(WORKER_INCARNATION)
    db_path = tmp_path / "dfarm.db"
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", MIGRATIONS[:added])
        old = Store(db_path)
        known = old.accounts.worker_id("w1", 1.0)
        old.close()
    store = Store(db_path)  # migrates
    try:
        assert store.accounts.worker_id("w1", 2.0) == known
        assert store.accounts.swap_incarnation(known, "first") == ""
        assert store.accounts.swap_incarnation(known, "second") == "first"
    finally:
        store.close()


def test_a_restart_without_the_worker_requeues_after_the_timeout(
    tmp_path: Path, clock: FakeClock
) -> None:
    home = tmp_path / "home"
    state = open_state(home, clock)
    register(state, "w1")
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    close_state(state)

    again = open_state(home, clock)
    try:
        housekeeping(again, clock())
        [recovered] = again.jobs.running()
        clock.advance(TIMEOUT + 1)
        housekeeping(again, clock())
        assert recovered.state is JobState.IDLE and recovered.num_starts == 1
        assert again.store.events(job.cluster, job.proc)[-1].event == "evicted"
    finally:
        close_state(again)
