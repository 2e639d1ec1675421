"""The queue's summary (scheduler/queue_summary.py) stays equal to a recount of the
jobs, whatever moves they make, with units that fail and across a restart: the
counts per cluster, user and state, and within a cluster its idle jobs per shape
and its held jobs per reason."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from core_fakes import FakeClock, close_state, open_state, register, user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import protocol as p
from scheduler import transitions as t
from scheduler.connection import RequestError
from scheduler.control_handlers import on_query_batches, on_query_jobs
from scheduler.explain import on_analyze_jobs, on_query_counts
from scheduler.job_control import on_edit_jobs
from scheduler.protocol import BatchInfo, JobSpec, JobState
from scheduler.queue_summary import NO_REASON, QueueSummary
from scheduler.starting import schedule_once
from scheduler.state import SchedulerState

OWNERS = ("ann", "bob")
OUTCOME: dict[str, object] = dict(wall_time=1.0, cpu_time=1.0, exit_code=0, exit_signal=None)


class Injected(Exception):
    """A failure in the middle of a unit."""


def recount(state: SchedulerState) -> tuple[list[tuple[object, ...]], dict[str, dict[str, int]]]:
    """The batches (one per cluster, none named) and per-user counts, from the jobs."""
    clusters: dict[int, Counter[str]] = {}
    for job in state.jobs.active.values():
        clusters.setdefault(job.cluster, Counter())[job.state.value] += 1
    lines = []
    for cluster in sorted(clusters):
        jobs = state.store.jobs(clusters=[cluster])
        everything = Counter(job.state.value for job in jobs)
        assert everything["idle"] == clusters[cluster]["idle"]
        lines.append(
            (
                cluster,
                jobs[0].owner,
                everything["completed"] + everything["removed"],
                everything["running"],
                everything["idle"],
                everything["held"],
                len(jobs),
                f"{cluster}.0" if len(jobs) == 1 else f"{cluster}.0-{len(jobs) - 1}",
            )
        )
    users: dict[str, dict[str, int]] = {}
    for job in state.jobs.active.values():
        counts = users.setdefault(job.owner, {"idle": 0, "running": 0, "held": 0})
        counts[job.state.value] += 1
    return lines, dict(sorted(users.items()))


def summarised(summary: QueueSummary) -> list[tuple[object, ...]]:
    return [
        (b.cluster, b.owner, b.done, b.running, b.idle, b.held, b.total, b.job_ids)
        for b in summary.batches()
    ]


def check(state: SchedulerState) -> None:
    lines, users = recount(state)
    assert summarised(state.summary) == lines
    assert state.summary.by_user() == users
    for owner in OWNERS:
        assert state.summary.by_state(owner) == users.get(
            owner, {"idle": 0, "running": 0, "held": 0}
        )
        assert [b.cluster for b in state.summary.batches(owner)] == [
            line[0] for line in lines if line[1] == owner
        ]
    totals = Counter[str]()
    for counts in users.values():
        totals.update(counts)
    assert state.summary.by_state() == {s: totals[s] for s in ("idle", "running", "held")}
    shapes_and_reasons(state)
    walked(state)


def shapes_and_reasons(state: SchedulerState) -> None:
    """Each cluster's idle jobs per spec object and held jobs per reason, as kept,
    equal those counted from the jobs."""
    idle: dict[int, Counter[int]] = {}
    held: dict[int, Counter[str]] = {}
    for job in state.jobs.active.values():
        if job.state is JobState.IDLE:
            idle.setdefault(job.cluster, Counter())[id(job.spec)] += 1
        elif job.state is JobState.HELD:
            held.setdefault(job.cluster, Counter())[job.hold_reason or NO_REASON] += 1
    for line in state.summary.batches():
        shapes = state.summary.idle_shapes(line.cluster)
        assert {id(job.spec): n for job, n in shapes} == idle.get(line.cluster, {})
        assert state.summary.hold_reasons(line.cluster) == held.get(line.cluster, {})


def walked(state: SchedulerState) -> None:
    """The queue read in pages of 3 is every job in it, in id order, once; the batch
    view's answer is the summary's."""
    admin = user("root", admin=True)
    for states in (["idle", "running", "held"], ["idle"], ["held", "running"]):
        ids: list[str] = []
        while True:
            query = p.QueryJobs(ids=[], states=states, all_users=True, limit=3,
                                after=ids[-1] if ids else "")  # fmt: skip
            reply = on_query_jobs(state, admin, query)
            assert isinstance(reply, p.JobList)
            ids += [job.id for job in reply.jobs]
            if not reply.more:
                break
        expected = sorted(
            (j for j in state.jobs.active.values() if j.state.value in states),
            key=lambda j: (j.cluster, j.proc),
        )
        assert ids == [j.id for j in expected]
    reply = on_query_batches(state, admin, p.QueryBatches(all_users=True))
    assert isinstance(reply, p.BatchList)
    assert [b.cluster for b in reply.batches] == [b.cluster for b in state.summary.batches()]
    assert sum(b.idle for b in reply.batches) == reply.totals["idle"] == reply.all_totals["idle"]
    counts = on_query_counts(state, user("ann"), p.QueryCounts())
    assert isinstance(counts, p.JobCounts)
    mine = Counter(j.state.value for j in state.jobs.active.values() if j.owner == "ann")
    assert counts.counts == {s.value: mine[s.value] for s in JobState}


def submit(state: SchedulerState, owner: str, count: int, first: int = 0) -> None:
    cluster = state.store.clusters.reserve_cluster(owner, state.clock())
    specs = [JobSpec(executable="job.sh") for _ in range(count)]
    with state.store.transaction():
        state.jobs.submit(cluster, owner, "job.sub", specs)


def pick(state: SchedulerState, wanted: JobState, n: int):  # type: ignore[no-untyped-def]
    jobs = sorted((j for j in state.jobs.active.values() if j.state is wanted), key=lambda j: j.id)
    return jobs[n % len(jobs)] if jobs else None


def apply(state: SchedulerState, op: str, n: int) -> None:
    """One move of the queue, chosen by ``op``, on the job ``n`` picks."""
    if op == "submit":
        submit(state, OWNERS[n % 2], 1 + n % 5)
    elif op == "schedule":
        schedule_once(state)
    elif op == "hold" and (job := pick(state, JobState.IDLE, n)):
        with state.store.transaction():
            t.hold(state, job, "by the test")
    elif op == "release" and (job := pick(state, JobState.HELD, n)):
        with state.store.transaction():
            t.release(state, job, "by the test")
    elif op == "remove" and (job := pick(state, JobState(("idle", "held")[n % 2]), n)):
        with state.store.transaction():
            t.remove(state, job, "by the test")
    elif op in ("finish", "retry") and (job := pick(state, JobState.RUNNING, n)):
        worker = state.workers.of_job(job.id)
        assert worker is not None
        with state.store.transaction():
            if op == "finish":
                t.finish(state, worker, job, "exit code 0", None, OUTCOME)
            else:
                t.retry(state, worker, job, "by the test", OUTCOME)
    elif op == "edit" and (job := pick(state, JobState(("idle", "held")[n % 2]), n)):
        ids = [job.id if n % 3 else str(job.cluster)]
        changes = {"request_memory": f"{1 + n % 3}GB"}
        on_edit_jobs(state, user(job.owner), p.EditJobs(ids=ids, changes=changes))
    elif op == "fail" and (job := pick(state, JobState.IDLE, n)):
        try:
            with state.store.transaction():
                submit(state, "ann", 2)
                edit = p.EditJobs(ids=[str(job.cluster)], changes={"request_cpus": "2"})
                on_edit_jobs(state, user(job.owner), edit)
                t.hold(state, job, "undone")
                raise Injected
        except Injected:
            pass


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["submit", "schedule", "hold", "release", "remove", "finish", "retry", "edit", "fail"]
        ),
        st.integers(0, 1000),
    ),
    max_size=40,
)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(OPS)
def test_the_counts_equal_a_recount_after_every_move(ops: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        state = open_state(home, clock)
        register(state, "w1", slots=3)
        for op, n in ops:
            apply(state, op, n)
            clock.advance(1)
            check(state)
        close_state(state)
        # A restart counts again from the database: the same counts.
        again = open_state(home, clock)
        assert summarised(again.summary) == summarised(state.summary)
        check(again)
        close_state(again)


def test_clusters_of_one_batch_name_make_one_line(tmp_path: Path) -> None:
    state = open_state(tmp_path / "home", FakeClock())
    for owner, name in (("ann", '"sweep"'), ("ann", '"sweep"'), ("bob", '"sweep"'), ("ann", "")):
        cluster = state.store.clusters.reserve_cluster(owner, state.clock())
        attributes = {"JobBatchName": name} if name else {}
        specs = [JobSpec(executable="job.sh", attributes=attributes) for _ in range(3)]
        state.jobs.submit(cluster, owner, "job.sub", specs)
    lines = state.summary.batches()
    assert [(b.owner, b.batch_name, b.idle, b.total) for b in lines] == [
        ("ann", "sweep", 6, 6),
        ("bob", "sweep", 3, 3),
        ("ann", None, 3, 3),
    ]
    assert lines[0].job_ids == "1.0 ... 2.2"
    # A batch named with dedit is shown under its new name.
    reply = on_edit_jobs(
        state, user("ann"), p.EditJobs(ids=["4"], changes={"+JobBatchName": '"late"'})
    )
    assert isinstance(reply, p.JobsChanged) and reply.changed
    assert state.summary.cluster(4) == BatchInfo(
        cluster=4, owner="ann", batch_name="late", submitted=lines[2].submitted,
        done=0, running=0, idle=3, held=0, total=3, job_ids="4.0-2",
    )  # fmt: skip
    close_state(state)


def test_analyze_cluster_counts_idle_jobs_per_reason(tmp_path: Path) -> None:
    state = open_state(tmp_path / "home", FakeClock())
    register(state, "w1", slots=1)
    cluster = state.store.clusters.reserve_cluster("ann", state.clock())
    specs = [JobSpec(executable="job.sh", request_memory=400 * 1024) for _ in range(5)]
    specs += [JobSpec(executable="job.sh") for _ in range(4)]
    jobs = state.jobs.submit(cluster, "ann", "job.sub", specs)
    with state.store.transaction():
        t.hold(state, jobs[0], "by the test")
    schedule_once(state)  # one small job takes the worker's one slot
    reply = on_analyze_jobs(state, user("ann"), p.AnalyzeJobs(ids=[str(cluster)], by_cluster=True))
    assert isinstance(reply, p.JobAnalyses) and reply.jobs == []
    [analysis] = reply.clusters
    assert (analysis.idle, analysis.running, analysis.held) == (7, 1, 1)
    assert analysis.idle_reasons == {
        "cannot run on any connected worker: no worker has 400 GB of memory; largest is 7.81 GB": 4,
        "waiting for room: 1 of 1 connected worker(s) could run it, none has room now": 3,
    }
    assert analysis.hold_reasons == {"by the test": 1}
    # Another user's cluster is not found; a job named alone is explained alone.
    with pytest.raises(RequestError):
        on_analyze_jobs(state, user("bob"), p.AnalyzeJobs(ids=[str(cluster)], by_cluster=True))
    one = on_analyze_jobs(state, user("ann"), p.AnalyzeJobs(ids=[f"{cluster}.8"], by_cluster=True))
    assert isinstance(one, p.JobAnalyses) and [a.id for a in one.jobs] == [f"{cluster}.8"]
    close_state(state)
