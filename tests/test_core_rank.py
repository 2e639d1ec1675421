"""``rank``: a job goes to the free worker it ranks highest (fake clock, no sockets)."""

from __future__ import annotations

from core_fakes import register, runs, submit, user

from scheduler import protocol as p
from scheduler.job_control import on_change_jobs
from scheduler.matchmaker import match
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.worker_handlers import on_job_finished


def pool(state: SchedulerState, **speeds: int) -> dict[str, int]:
    """Workers of 2 slots named as given, each advertising ``Speed``; their ids."""
    ids = {}
    for name, speed in speeds.items():
        register(state, name, slots=2)
        worker = state.workers.named(name)
        assert worker is not None
        worker.slots.attributes["speed"] = speed
        ids[name] = worker.id
    return ids


def placed(state: SchedulerState) -> list[tuple[str, int]]:
    """Where the matcher would start each job now: (worker name, proc)."""
    names = {s.worker_id: s.name for s in state.workers.slots()}
    free = state.workers.slots()
    return [(names[m.worker_id], m.job.proc) for m in match(state.jobs.queue, free, state.clock())]


def test_a_ranked_job_goes_to_the_worker_it_ranks_highest(state: SchedulerState) -> None:
    pool(state, slow=1, fast=10, medium=5)
    submit(state, "ann", 5, attributes={"Rank": "TARGET.Speed"})
    assert placed(state) == [("fast", 0), ("fast", 1), ("medium", 2), ("medium", 3), ("slow", 4)]


def test_a_rank_preferring_the_other_worker_sends_the_jobs_there(state: SchedulerState) -> None:
    pool(state, slow=1, fast=10)
    submit(state, "ann", 3, attributes={"rank": "-TARGET.Speed"})
    assert placed(state) == [("slow", 0), ("slow", 1), ("fast", 2)]


def test_without_a_rank_or_on_a_tie_the_order_is_unchanged(state: SchedulerState) -> None:
    pool(state, slow=1, fast=10)
    submit(state, "ann", 2)
    submit(state, "ann", 2, attributes={"Rank": "TARGET.NoSuchAttribute"})  # 0.0 everywhere
    assert placed(state) == [("slow", 0), ("slow", 1), ("fast", 0), ("fast", 1)]


def test_the_requirements_still_decide_where_a_ranked_job_may_go(state: SchedulerState) -> None:
    pool(state, slow=1, fast=10)
    submit(state, "ann", 3, attributes={"Rank": "TARGET.Speed"}, requirements="TARGET.Speed < 5")
    assert placed(state) == [("slow", 0), ("slow", 1)]


def test_rank_orders_workers_not_users(state: SchedulerState) -> None:
    """Fair share still chooses which job goes next; rank only where it goes."""
    pool(state, slow=1, fast=10)
    ann = submit(state, "ann", 2, attributes={"Rank": "TARGET.Speed"})
    bob = submit(state, "bob", 2)
    free = state.workers.slots()
    before = [(s.used_slots, s.used_cpus) for s in free]
    matches = match(state.jobs.queue, free, state.clock())
    assert [m.job for m in matches] == [ann[0], bob[0], ann[1], bob[1]]
    ids = {s.name: s.worker_id for s in free}
    assert [m.worker_id for m in matches] == [ids[n] for n in ("fast", "slow", "fast", "slow")]
    assert [(s.used_slots, s.used_cpus) for s in free] == before  # it decided, changed nothing


def test_a_freed_slot_gives_a_ranked_job_to_a_better_free_worker(state: SchedulerState) -> None:
    """A completion refills its own slot, unless the job next in line ranks another
    free worker higher."""
    slow_link, fast_link = register(state, "slow", slots=1), register(state, "fast", slots=1)
    slow, fast = state.workers.named("slow"), state.workers.named("fast")
    assert slow is not None and fast is not None
    slow.slots.attributes["speed"], fast.slots.attributes["speed"] = 1, 10
    [on_slow] = submit(state, "ann", 1, machine="slow")
    [on_fast] = submit(state, "ann", 1, machine="fast")
    schedule_once(state)
    [ranked] = submit(state, "ann", 1, attributes={"Rank": "TARGET.Speed"})
    # The job on the fast worker is removed: its slot is free, and nothing refills it yet.
    on_change_jobs(state, user("ann"), p.ChangeJobs(action="remove", ids=[on_fast.id]))
    assert fast.slots.free and [ranked.state] == [p.JobState.IDLE]

    on_job_finished(state, slow_link, p.JobFinished(job_id=on_slow.id, attempt=1, exit_code=0))

    assert ranked.state is p.JobState.RUNNING
    assert ranked.id in list(runs(fast_link))
    assert slow.slots.free and not fast.slots.free


def test_ranked_jobs_are_never_queued_behind_a_running_job(state: SchedulerState) -> None:
    """Short jobs are queued on a worker behind running ones; a ranked job is not
    (it starts where it ranks best when a worker is free), neither behind a ranked
    job nor behind another."""
    pool(state, slow=1, fast=10)
    ranked = submit(state, "ann", 10, attributes={"Rank": "TARGET.Speed"})
    state.run_times.record(ranked[0].cluster, 0.01)
    schedule_once(state)
    assert [job.state for job in ranked].count(p.JobState.RUNNING) == 4
    assert not any(worker.slots.leader_of for worker in state.workers)

    short = submit(state, "bob", 10)
    state.run_times.record(short[0].cluster, 0.01)
    for job in ranked[:4]:
        link = state.workers.of_job(job.id).link  # type: ignore[union-attr]
        on_job_finished(state, link, p.JobFinished(job_id=job.id, attempt=1, exit_code=0))
    queued = set().union(*(worker.slots.leader_of for worker in state.workers))
    assert queued and queued <= {job.id for job in short}
