"""Job policies (scheduler/policies.py) with a fake clock and no sockets: the order
HTCondor evaluates them in, their reasons, the periodic pass over the jobs that have
any, and the end of an attempt."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from core_fakes import (
    FakeClock,
    FakeConnection,
    close_state,
    open_state,
    register,
    submit,
    user,
)

from scheduler import policies
from scheduler import protocol as p
from scheduler.job_control import on_change_jobs, on_edit_jobs
from scheduler.job_records import Job
from scheduler.matching.classad import UNDEFINED, Value
from scheduler.matching.job_status import status_ad
from scheduler.policies import decide, periodic_pass, policy_round
from scheduler.protocol import JobState
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.units import run_unit
from scheduler.worker_handlers import _finish

RUNNING: dict[str, Value] = {"jobstatus": 2, "numjobstarts": 1}


def test_hold_comes_before_remove_and_remove_before_the_exit_policies() -> None:
    both = {"periodichold": "true", "periodicremove": "true", "onexithold": "true"}
    verdict = decide(both, RUNNING, JobState.RUNNING, ended=True)
    assert verdict is not None and verdict.action == "hold"
    assert verdict.reason == "The job attribute PeriodicHold expression 'true' evaluated to TRUE"
    verdict = decide({"periodicremove": "1", "onexithold": "true"}, RUNNING, JobState.RUNNING, True)
    assert verdict is not None and (verdict.action, verdict.attribute) == (
        "remove",
        "PeriodicRemove",
    )
    # A held job is not held again; the exit policies wait for an attempt's end.
    assert decide(both, {"jobstatus": 5}, JobState.HELD) == decide(
        {"periodicremove": "true"}, {"jobstatus": 5}, JobState.HELD
    )
    assert decide({"onexithold": "true"}, RUNNING, JobState.RUNNING) is None


def test_on_exit_remove_requeues_when_false_and_is_true_when_not_set() -> None:
    policies = {"onexitremove": "ExitCode == 0"}
    verdict = decide(policies, {**RUNNING, "exitcode": 3}, JobState.RUNNING, ended=True)
    assert verdict is not None and verdict.action == "requeue"
    assert verdict.reason.endswith("'ExitCode == 0' evaluated to FALSE")
    assert decide(policies, {**RUNNING, "exitcode": 0}, JobState.RUNNING, ended=True) is None
    assert decide({"onexithold": "false"}, RUNNING, JobState.RUNNING, ended=True) is None


def test_release_ignores_a_job_its_user_held() -> None:
    policies = {"periodicrelease": "NumJobStarts < 3"}
    by_policy: dict[str, Value] = {"jobstatus": 5, "holdreasoncode": 3, "numjobstarts": 1}
    verdict = decide(policies, by_policy, JobState.HELD)
    assert verdict is not None and verdict.action == "release"
    assert decide(policies, {**by_policy, "holdreasoncode": 1}, JobState.HELD) is None
    assert decide(policies, {**by_policy, "numjobstarts": 3}, JobState.HELD) is None


def test_reason_and_subcode_come_from_their_attributes() -> None:
    ad: dict[str, Value] = {
        **RUNNING,
        "periodicholdreason": "ran too long",
        "periodicholdsubcode": 42,
    }
    verdict = decide({"periodichold": "JobStatus == 2"}, ad, JobState.RUNNING)
    assert verdict is not None and (verdict.reason, verdict.subcode) == ("ran too long", 42)
    # A subcode that is no 32-bit integer is 0.
    subcodes: list[Value] = [math.inf, -math.inf, 2**31, "7", UNDEFINED]
    for subcode in subcodes:
        verdict = decide({"periodichold": "true"}, {"periodicholdsubcode": subcode}, JobState.IDLE)
        assert verdict is not None and verdict.subcode == 0, subcode
    # An empty or non-string reason gives HTCondor's own.
    verdict = decide({"periodichold": "true"}, {"periodicholdreason": ""}, JobState.IDLE)
    assert verdict is not None and verdict.reason.startswith("The job attribute PeriodicHold")


def test_undefined_stops_the_evaluation_and_does_nothing() -> None:
    policies = {"periodichold": "NoSuchAttribute > 3", "periodicremove": "true"}
    verdict = decide(policies, RUNNING, JobState.RUNNING)
    assert verdict is not None and (verdict.action, verdict.attribute) == (
        "undefined",
        "PeriodicHold",
    )
    for text in ('"a string"', "1 / 0", "((", "ifThenElse(x, 1, 2)"):
        verdict = decide({"periodicremove": text}, RUNNING, JobState.RUNNING)
        assert verdict is not None and verdict.action == "undefined", text
    # Written UNDEFINED is false, as HTCondor reads it.
    assert decide({"periodicremove": "undefined", "periodichold": "UNDEFINED"}, RUNNING,
                  JobState.RUNNING) is None  # fmt: skip


# ----------------------------------------------------------------------------- the pass


def passes(state: SchedulerState) -> int:
    moved = run_unit(state, "job policies", lambda: periodic_pass(state))
    assert isinstance(moved, int), moved
    return moved


def last_event(state: SchedulerState, job: Job) -> tuple[str, str]:
    event = state.store.events(job.cluster, job.proc)[-1]
    return event.event, event.detail


def test_periodic_remove_on_time_in_state_uses_the_scheduler_clock(
    state: SchedulerState, clock: FakeClock
) -> None:
    text = "(time() - EnteredCurrentStatus) > 100"
    [job] = submit(state, "ann", 1, attributes={"PeriodicRemove": text})
    clock.advance(100)
    assert passes(state) == 0 and job.state is JobState.IDLE
    clock.advance(1)
    assert passes(state) == 1 and job.state is JobState.REMOVED
    reason = f"The job attribute PeriodicRemove expression '{text}' evaluated to TRUE"
    assert last_event(state, job) == ("removed", reason)
    assert passes(state) == 0 and len(state.policies) == 0  # the finished job is forgotten


def test_a_pass_comes_every_interval_and_goes_on_in_chunks(
    state: SchedulerState, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policies, "CHUNK", 2)
    jobs = submit(state, "ann", 5, attributes={"PeriodicRemove": "QDate < time()"})
    clock.advance(1)

    def removed() -> int:
        policy_round(state, clock())
        return sum(job.state is JobState.REMOVED for job in jobs)

    assert removed() == 0  # the first pass comes one interval after the start
    clock.advance(state.config.policy_interval - 1)
    assert removed() == 0
    clock.advance(1)
    assert [removed() for _ in range(4)] == [2, 4, 5, 5]


def test_periodic_hold_of_a_running_job_kills_its_attempt(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1", slots=1)
    policy = {"PeriodicHold": "JobStatus == 2 && RemoteWallClockTime > 60",
              "PeriodicHoldReason": '"ran for more than a minute"',
              "PeriodicHoldSubCode": "7"}  # fmt: skip
    [job] = submit(state, "ann", 1, attributes=policy)
    schedule_once(state)
    assert job.state is JobState.RUNNING
    clock.advance(60)
    assert passes(state) == 0
    clock.advance(1)
    assert passes(state) == 1 and job.state is JobState.HELD
    assert job.hold_reason == "ran for more than a minute"
    assert (job.hold_code, job.hold_subcode) == (3, 7)
    ad = status_ad(job.info())
    assert (ad["holdreasoncode"], ad["holdreasonsubcode"]) == (3, 7)
    assert [k.job_id for k in link.of(p.KillJob)] == [job.id]


def test_periodic_release_after_a_policy_hold_until_three_starts(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1", slots=1)
    policy = {"PeriodicHold": "JobStatus == 2", "PeriodicRelease": "NumJobStarts < 3"}
    [job] = submit(state, "ann", 1, attributes=policy)
    story = []
    for _ in range(3):
        schedule_once(state)
        story.append((job.state.value, job.hold_code))
        passes(state)
        story.append((job.state.value, job.hold_code))
        passes(state)
        story.append((job.state.value, job.hold_code))
    # Released after its first and second starts; the third hold stays. A release
    # clears the hold's code.
    once = [("running", None), ("held", 3), ("idle", None)]
    assert story == once * 2 + [("running", None), ("held", 3), ("held", 3)]
    assert job.state is JobState.HELD and job.num_starts == 3
    assert link.of(p.KillJob)


def test_a_job_its_user_held_is_not_released_by_its_policy(state: SchedulerState) -> None:
    [job] = submit(state, "ann", 1, attributes={"PeriodicRelease": "true"})
    on_change_jobs(state, user("ann"), p.ChangeJobs(action="hold", ids=[job.id]))
    assert passes(state) == 0 and job.state is JobState.HELD


def test_plain_jobs_are_not_looked_at(state: SchedulerState) -> None:
    submit(state, "ann", 2000)
    submit(state, "ann", 10, attributes={"JobFlavour": '"espresso"'})
    [job] = submit(state, "bob", 1, attributes={"periodic" + "remove": "false"})
    assert state.policies.listed() == [(job.cluster, job.proc)]


def test_an_edit_that_adds_a_policy_is_evaluated(state: SchedulerState) -> None:
    [job] = submit(state, "ann", 1)
    msg = p.EditJobs(ids=[job.id], changes={"+PeriodicHold": "QDate > 0"})
    assert isinstance(on_edit_jobs(state, user("ann"), msg), p.JobsChanged)
    assert passes(state) == 1 and job.state is JobState.HELD


def test_an_undefined_policy_is_logged_once(
    state: SchedulerState, caplog: pytest.LogCaptureFixture
) -> None:
    [job] = submit(state, "ann", 1, attributes={"PeriodicRemove": "NoSuch > 1"})
    with caplog.at_level(logging.WARNING, logger="scheduler.server"):
        for _ in range(3):
            assert passes(state) == 0
    assert job.state is JobState.IDLE
    assert sum("PeriodicRemove" in r.getMessage() for r in caplog.records) == 1


def test_a_restarted_scheduler_finds_the_jobs_with_policies(
    tmp_path: Path, clock: FakeClock
) -> None:
    first = open_state(tmp_path / "restarted", clock)
    [job] = submit(first, "ann", 1, attributes={"PeriodicRemove": "true"})
    close_state(first)
    again = open_state(tmp_path / "restarted", clock)
    try:
        assert again.policies.listed() == [(job.cluster, job.proc)]
        assert passes(again) == 1
    finally:
        close_state(again)


# ----------------------------------------------------------------------------- at exit


def ended(
    state: SchedulerState, link: FakeConnection, job: Job, exit_code: int | None = None,
    exit_signal: int | None = None,
) -> None:  # fmt: skip
    worker = state.workers.of_link(link)
    assert worker is not None
    msg = p.JobFinished(job_id=job.id, attempt=job.attempt, wall_time=5.0, exit_code=exit_code,
                        exit_signal=exit_signal)  # fmt: skip
    reply = run_unit(state, "job_finished", lambda: _finish(state, worker, msg, {}, None))
    assert isinstance(reply, p.Ok), reply


def test_on_exit_hold_holds_a_failing_job_with_its_reason(state: SchedulerState) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1, attributes={"OnExitHold": "ExitCode != 0"})
    schedule_once(state)
    ended(state, link, job, exit_code=2)
    assert job.state is JobState.HELD and job.exit_code == 2
    reason = "The job attribute OnExitHold expression 'ExitCode != 0' evaluated to TRUE"
    assert job.hold_reason == reason and (job.hold_code, job.hold_subcode) == (3, 0)
    events = [e.event for e in state.store.events(job.cluster, job.proc)]
    assert events[-2:] == ["terminated", "held"]


def test_on_exit_remove_runs_the_job_again_until_it_succeeds(state: SchedulerState) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1, attributes={"OnExitRemove": "ExitCode == 0"})
    schedule_once(state)
    ended(state, link, job, exit_code=1)
    # Requeued and, its slot free, started again in the same unit.
    assert job.state is JobState.RUNNING and job.num_starts == 2
    assert "requeued" in [e.event for e in state.store.events(job.cluster, job.proc)]
    ended(state, link, job, exit_signal=9)  # ExitCode is UNDEFINED: nothing, it completes
    assert job.state is JobState.COMPLETED


def test_max_retries_folded_into_on_exit_remove_counts_completions(
    state: SchedulerState,
) -> None:
    link = register(state, "w1", slots=1)
    folded = "NumJobCompletions > JobMaxRetries || ExitCode is 0 || ExitCode == 5"
    attributes = {"OnExitRemove": folded, "JobMaxRetries": "1"}
    [job] = submit(state, "ann", 1, attributes=attributes, max_retries=1)
    msg = p.EditJobs(ids=[job.id], changes={"max_retries": "2"})  # JobMaxRetries: 2
    assert isinstance(on_edit_jobs(state, user("ann"), msg), p.JobsChanged)
    schedule_once(state)
    for starts in (2, 3):  # completions 1 and 2 of at most 2 + 1: run again
        ended(state, link, job, exit_code=1)
        assert job.state is JobState.RUNNING and job.num_starts == starts
    ended(state, link, job, exit_code=1)
    assert job.state is JobState.COMPLETED and job.exit_code == 1
    events = [e.event for e in state.store.events(job.cluster, job.proc)]
    assert events.count("requeued") == 2 and "retrying" not in events


def test_on_exit_remove_sees_exit_by_signal(state: SchedulerState) -> None:
    link = register(state, "w1", slots=1)
    policy = {"OnExitRemove": "ExitBySignal == false || ExitSignal != 11"}
    [job] = submit(state, "ann", 1, attributes=policy)
    schedule_once(state)
    ended(state, link, job, exit_signal=11)
    assert job.state is JobState.RUNNING and job.num_starts == 2
    ended(state, link, job, exit_code=0)
    assert job.state is JobState.COMPLETED and job.exit_code == 0


def test_periodic_remove_fires_at_exit_before_the_exit_policies(
    state: SchedulerState, clock: FakeClock
) -> None:
    link = register(state, "w1", slots=1)
    policy = {"PeriodicRemove": "RemoteWallClockTime > 30", "OnExitHold": "true"}
    [job] = submit(state, "ann", 1, attributes=policy)
    schedule_once(state)
    clock.advance(31)
    ended(state, link, job, exit_code=0)
    assert job.state is JobState.REMOVED and job.exit_code == 0
    assert state.workers.of_job(job.id) is None and not link.of(p.KillJob)


# ----------------------------------------------------------------------------- migration


def test_a_database_from_before_hold_codes_migrates_and_keeps_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration that adds ``hold_code``/``hold_subcode``, from a database its
    previous schema wrote: idle, running and held jobs are kept as they were, and a
    held one's code is still derived from its reason (1: held by its user)."""
    from old_schema import insert_jobs

    from scheduler import database as database_module
    from scheduler.schema import MIGRATIONS
    from scheduler.store import Store

    added = next(i for i, m in enumerate(MIGRATIONS) if isinstance(m, str) and "hold_code" in m)
    db_path = tmp_path / "dfarm.db"
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", MIGRATIONS[:added])
        old = Store(db_path)
        old.accounts.add_user("alice")
        cluster = old.clusters.reserve_cluster("alice", 1000.0)
        old.close()
    spec = p.JobSpec(executable="run.sh", attributes={"PeriodicRemove": "JobStatus == 5"})
    jobs = [
        Job(cluster=cluster, proc=0, owner="alice", state=JobState.IDLE, spec=spec,
            submit_time=1000.0),
        Job(cluster=cluster, proc=1, owner="alice", state=JobState.RUNNING, spec=spec,
            submit_time=1000.0, start_time=1001.0, worker="w1", attempt=1, num_starts=1),
        Job(cluster=cluster, proc=2, owner="alice", state=JobState.HELD, spec=spec,
            submit_time=1000.0, hold_reason="held by alice", end_time=1002.0),
    ]  # fmt: skip
    insert_jobs(db_path, cluster, "alice.sub", jobs, 1000.0)

    store = Store(db_path)  # migrates
    try:
        kept = {job.proc: job for job in store.jobs()}
        assert [(j.proc, j.state, j.worker) for j in kept.values()] == [
            (0, JobState.IDLE, None),
            (1, JobState.RUNNING, "w1"),
            (2, JobState.HELD, None),
        ]
        assert all(j.hold_code is None and j.hold_subcode is None for j in kept.values())
        assert kept[2].spec.attributes == {"PeriodicRemove": "JobStatus == 5"}
        assert status_ad(kept[2].info())["holdreasoncode"] == 1
        assert [e.event for e in store.events(cluster, 1)] == ["submitted"]
    finally:
        store.close()


# ------------------------------------------------- success_exit_code and retry_until


def derived(tmp_path: Path, lines: str) -> dict[str, object]:
    """The spec fields dsub gives a job with these submit ``lines``."""
    from control_node.submit_file import parse_submit_text

    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    text = f"executable = job.sh\n{lines}\nqueue\n"
    [proc] = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(tmp_path)).procs
    return {"max_retries": proc.max_retries, "attributes": proc.attributes}


def attempts(state: SchedulerState, job: Job) -> list[str]:
    return [e.event for e in state.store.events(job.cluster, job.proc) if e.event != "submitted"]


def test_success_exit_code_is_a_success_and_zero_a_failure(
    state: SchedulerState, tmp_path: Path
) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1, **derived(tmp_path, "success_exit_code = 2"))
    schedule_once(state)
    ended(state, link, job, exit_code=0)  # not the success code: run again
    assert job.state is JobState.RUNNING and job.num_starts == 2
    ended(state, link, job, exit_code=2)
    assert job.state is JobState.COMPLETED and job.exit_code == 2 and job.num_starts == 2


def test_retry_until_stops_retrying_when_true(state: SchedulerState, tmp_path: Path) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1, **derived(tmp_path, "retry_until = ExitCode == 7"))
    schedule_once(state)
    ended(state, link, job, exit_code=1)
    assert job.state is JobState.RUNNING and job.num_starts == 2
    ended(state, link, job, exit_code=7)  # retry_until is true: it ends there
    assert job.state is JobState.COMPLETED and job.exit_code == 7
    assert attempts(state, job).count("requeued") == 1


def test_retry_until_an_exit_code_and_the_default_of_two_retries(
    state: SchedulerState, tmp_path: Path
) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1, **derived(tmp_path, "retry_until = 3"))
    assert job.spec.max_retries == 2
    schedule_once(state)
    for _ in range(2):
        ended(state, link, job, exit_code=1)
        assert job.state is JobState.RUNNING
    ended(state, link, job, exit_code=1)  # the third run: JobMaxRetries (2) retries done
    assert job.state is JobState.COMPLETED and job.num_starts == 3
    assert attempts(state, job).count("requeued") == 2
    assert "retrying" not in attempts(state, job)  # the policy, not max_retries on top


# ----------------------------------------------------------------------------- MemoryUsage


def test_memory_usage_reported_by_the_worker_fires_periodic_hold(state: SchedulerState) -> None:
    import dataclasses

    from core_fakes import metrics

    from scheduler.worker_handlers import on_heartbeat

    link = register(state, "w1", slots=1)
    policy = {"PeriodicHold": "MemoryUsage > RequestMemory"}
    [job] = submit(state, "ann", 1, request_memory=100, attributes=policy)
    schedule_once(state)
    assert passes(state) == 0  # not measured yet: MemoryUsage is UNDEFINED

    def heartbeat(peak: int) -> None:
        usage = {f"{job.id}:{job.attempt}": peak}
        beat = p.Heartbeat(metrics=dataclasses.replace(metrics(), job_memory_mb=usage))
        run_unit(state, "heartbeat", lambda: on_heartbeat(state, link, beat))

    heartbeat(80)
    assert job.info().memory_usage == 80 and passes(state) == 0
    heartbeat(130)
    assert status_ad(job.info())["memoryusage"] == 130
    assert passes(state) == 1 and job.state is JobState.HELD
    expected = "The job attribute PeriodicHold expression 'MemoryUsage > RequestMemory'"
    assert job.hold_reason is not None and job.hold_reason.startswith(expected)


def test_the_peak_of_an_ended_attempt_is_its_memory_usage(state: SchedulerState) -> None:
    link = register(state, "w1", slots=1)
    [job] = submit(state, "ann", 1)
    schedule_once(state)
    worker = state.workers.of_link(link)
    assert worker is not None
    msg = p.JobFinished(job_id=job.id, attempt=job.attempt, wall_time=1.0, exit_code=0,
                        memory_usage_mb=42)  # fmt: skip
    run_unit(state, "job_finished", lambda: _finish(state, worker, msg, {}, None))
    assert job.state is JobState.COMPLETED and job.info().memory_usage == 42


def test_on_exit_remove_with_max_retries_is_bounded_by_them(
    state: SchedulerState, tmp_path: Path
) -> None:
    """As condor_submit folds them: the job's own on_exit_remove FALSE runs it again,
    but only JobMaxRetries times."""
    link = register(state, "w1", slots=1)
    lines = "max_retries = 1\non_exit_remove = (ExitBySignal == False) && (ExitCode == 0)"
    spec = derived(tmp_path, lines)
    [job] = submit(state, "ann", 1, **spec)
    schedule_once(state)
    ended(state, link, job, exit_code=3)
    assert job.state is JobState.RUNNING and job.num_starts == 2
    ended(state, link, job, exit_code=3)
    assert job.state is JobState.COMPLETED and job.exit_code == 3
