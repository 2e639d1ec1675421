"""Finished jobs a page at a time: ``dq`` with finished states (the socket request
and ``/api/jobs``) walks the queue and SQLite from where the page before ended, and
``dhistory`` answers at most a page per request, walked back by the end time and id
of the oldest job of the page before. Walking the pages gives every job once."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from core_fakes import FakeClock, register, submit, user

from scheduler import database as database_module
from scheduler import protocol as p
from scheduler import transitions as t
from scheduler.connection import RequestError
from scheduler.control_handlers import QUERY_PAGE, on_query_jobs
from scheduler.job_control import HISTORY_PAGE, on_query_history
from scheduler.schema import MIGRATIONS, PAGED_JOB_INDEXES
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState
from scheduler.store import Store

OUTCOME: dict[str, object] = dict(wall_time=1.0, cpu_time=1.0, exit_code=0, exit_signal=None)


def _queue(state: SchedulerState, clock: FakeClock) -> None:
    """ann's cluster 1 (40 jobs: 3 completed, every third removed), bob's cluster 2
    (5 jobs, two removed), ann's cluster 3 (4 idle); many jobs end at the same time."""
    register(state, "w1", slots=3)
    ann = submit(state, "ann", 40)
    bob = submit(state, "bob", 5)
    submit(state, "ann", 4)
    schedule_once(state)
    with state.store.transaction():
        for job in [j for j in state.jobs.active.values() if j.state is p.JobState.RUNNING]:
            worker = state.workers.of_job(job.id)
            assert worker is not None
            t.finish(state, worker, job, "exit code 0", None, {**OUTCOME, "end_time": clock()})
    clock.advance(1)
    with state.store.transaction():
        for job in [j for j in ann[5::3] + bob[3:] if j.state is p.JobState.IDLE]:
            t.remove(state, job, "by the test")
            if job.proc % 2:
                clock.advance(1)
    state.store.commit()


def _every(state: SchedulerState, owner: str | None, states: set[str]) -> list[str]:
    found = state.store.jobs(owner=owner, states=sorted(states))
    return [job.id for job in found]


@pytest.mark.parametrize(
    ("who", "states", "ids"),
    [
        ("ann", ["completed", "removed"], []),
        ("ann", [], []),
        ("ann", ["idle", "removed"], ["1"]),
        ("root", [], []),
        ("root", ["removed", "held"], ["2", "1"]),
    ],
)
def test_dq_pages_of_finished_jobs_walk_to_every_job_once(
    state: SchedulerState, clock: FakeClock, who: str, states: list[str], ids: list[str]
) -> None:
    _queue(state, clock)
    caller = user(who, admin=who == "root")
    pages: list[list[str]] = []
    while True:
        after = pages[-1][-1] if pages else ""
        query = p.QueryJobs(ids=ids, states=states, all_users=who == "root", limit=4, after=after)
        reply = on_query_jobs(state, caller, query)
        assert isinstance(reply, p.JobList)
        pages.append([job.id for job in reply.jobs])
        assert len(pages[-1]) <= 4
        if not reply.more:
            break
    owner = None if who == "root" else who
    expected = _every(state, owner, set(states) or {s.value for s in p.JobState})
    if ids:
        expected = [i for i in expected if i.split(".")[0] in ids]
    assert [i for page in pages for i in page] == expected
    assert len(expected) > 4 and len(pages) == -(-len(expected) // 4)  # no empty page


def test_history_answers_a_page_and_pages_back_to_the_oldest(
    state: SchedulerState, clock: FakeClock
) -> None:
    _queue(state, clock)
    removed = submit(state, "ann", HISTORY_PAGE + 30)
    with state.store.transaction():
        for job in removed:
            t.remove(state, job, "by the test")  # all at one time: the id decides
    everyone = _every(state, "ann", {"completed", "removed"})
    reply = on_query_history(state, user("ann"), p.QueryHistory(limit=100_000))
    assert isinstance(reply, p.JobList) and reply.more and len(reply.jobs) == HISTORY_PAGE
    seen: list[str] = []
    before: p.JobInfo | None = None
    while True:
        query = p.QueryHistory(
            limit=7,
            before_time=None if before is None else before.end_time,
            before_job="" if before is None else before.id,
        )
        reply = on_query_history(state, user("ann"), query)
        assert isinstance(reply, p.JobList) and len(reply.jobs) <= 7
        ended = [(job.end_time or 0.0, job.cluster, job.proc) for job in reply.jobs]
        assert ended == sorted(ended)  # each page: the most recent last
        seen[:0] = [job.id for job in reply.jobs]
        if not reply.more:
            break
        before = reply.jobs[0]
    assert sorted(seen) == sorted(everyone) and len(seen) == len(set(seen))
    with pytest.raises(RequestError, match="before_job"):
        on_query_history(state, user("ann"), p.QueryHistory(before_time=1.0, before_job="x"))


def test_a_database_from_before_the_state_and_id_index_migrates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = MIGRATIONS.index(PAGED_JOB_INDEXES)
    db_path = tmp_path / "dfarm.db"
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", MIGRATIONS[:added])
        Store(db_path).close()
    with closing(sqlite3.connect(db_path)) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "jobs_state_id" not in names
    store = Store(db_path)  # migrates
    try:
        page = store.jobs_page(owner="ann", clusters=[], states=["removed"], after=(0, 0), limit=5)
        assert page == []
        plan = store._query(
            "EXPLAIN QUERY PLAN SELECT cluster FROM jobs WHERE state=? AND"
            " (cluster, proc) > (?, ?) ORDER BY cluster, proc LIMIT 5",
            ("removed", 0, 0),
        )
        assert "jobs_state_id" in " ".join(str(r["detail"]) for r in plan)
    finally:
        store.close()


def test_a_dq_request_is_answered_with_a_page_at_most(state: SchedulerState) -> None:
    jobs = submit(state, "ann", QUERY_PAGE + 10)
    with state.store.transaction():
        for job in jobs[::2]:
            t.remove(state, job, "by the test")
    for states in (["idle"], ["removed", "idle"]):
        query = p.QueryJobs(states=states, limit=10 * QUERY_PAGE)
        reply = on_query_jobs(state, user("ann"), query)
        assert isinstance(reply, p.JobList)
        matching = sum(1 for j in state.store.jobs(owner="ann", states=states))
        assert len(reply.jobs) == min(QUERY_PAGE, matching)
        assert reply.more is (matching > QUERY_PAGE)
