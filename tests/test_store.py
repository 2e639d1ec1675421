"""Unit tests for the scheduler's state: the SQLite store, the transition table,
the live job table and the matching of jobs to worker slots."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

import scheduler.database as database_module
from scheduler.accounts import StoreError
from scheduler.dispatch import Slots
from scheduler.job_records import Job
from scheduler.jobs import JobTable
from scheduler.jobstate import ALLOWED, InvalidTransition, check_transition
from scheduler.protocol import FINAL_STATES, JobSpec, JobState, holds, token_user, user_key
from scheduler.schema import MIGRATIONS, _result_bytes
from scheduler.store import Store

S = JobState


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "dfarm.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def raw(db_path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read the database through a connection of its own (sees committed data only)."""
    with closing(sqlite3.connect(db_path)) as db:
        return db.execute(sql, args).fetchall()


def count(db_path: Path, table: str) -> int:
    return raw(db_path, f"SELECT COUNT(*) FROM {table}")[0][0]


def make_job(cluster: int, proc: int, owner: str = "alice", **spec: object) -> Job:
    return Job(
        cluster=cluster,
        proc=proc,
        owner=owner,
        state=S.IDLE,
        spec=JobSpec(executable="run.sh", **spec),  # type: ignore[arg-type]
        submit_time=1000.0 + proc,
    )


def queue_cluster(store: Store, owner: str, procs: int, **spec: object) -> int:
    cluster = store.clusters.reserve_cluster(owner, 1000.0)
    jobs = [make_job(cluster, p, owner, **spec) for p in range(procs)]
    store.insert_jobs(cluster, f"{owner}.sub", jobs, 1000.0)
    return cluster


def ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


# ----------------------------------------------------------------------------- migrations


def test_migrations_set_user_version_and_wal(store: Store, db_path: Path) -> None:
    assert raw(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert raw(db_path, "PRAGMA journal_mode")[0][0].lower() == "wal"
    tables = {r[0] for r in raw(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "clusters", "jobs", "job_events", "workers"} <= tables


def test_reopen_keeps_data(db_path: Path) -> None:
    first = Store(db_path)
    token = first.accounts.add_user("alice")
    cluster = queue_cluster(first, "alice", 2)
    first.close()
    second = Store(db_path)
    try:
        assert holds(second.accounts.user_verifier("alice"), user_key(token))
        assert ids(second.active_jobs()) == [f"{cluster}.0", f"{cluster}.1"]
        assert second.clusters.reserve_cluster("alice", 2000.0) == cluster + 1
        assert raw(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    finally:
        second.close()


def test_new_migration_runs_once_on_existing_database(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db_path).close()
    extra = "CREATE TABLE extra (x INTEGER); INSERT INTO extra (x) VALUES (1)"
    monkeypatch.setattr(database_module, "MIGRATIONS", [*MIGRATIONS, extra])
    for _ in range(3):
        Store(db_path).close()
    assert raw(db_path, "PRAGMA user_version") == [(len(MIGRATIONS) + 1,)]
    assert raw(db_path, "SELECT x FROM extra") == [(1,)]


# ----------------------------------------------------------------------------- users


def test_add_user_returns_token_whose_key_is_stored(store: Store) -> None:
    token = store.accounts.add_user("alice", email="alice@example.org", admin=True)
    name, _, secret = token.partition(":")
    assert name == "alice"
    assert token_user(token) == "alice"
    assert len(secret) >= 24
    assert holds(store.accounts.user_verifier("alice"), user_key(token))
    users = store.accounts.users()
    assert [(u["name"], u["email"], u["admin"]) for u in users] == [
        ("alice", "alice@example.org", 1)
    ]


def test_tokens_differ_between_users(store: Store) -> None:
    a, b = store.accounts.add_user("alice"), store.accounts.add_user("bob")
    assert a.partition(":")[2] != b.partition(":")[2]
    assert store.accounts.user_verifier("alice") != store.accounts.user_verifier("bob")


def _db_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def test_token_is_not_stored(store: Store, db_path: Path) -> None:
    tokens = [store.accounts.add_user("alice"), store.accounts.add_user("bob")]
    tokens.append(store.accounts.new_token("alice"))
    assert (db_path.parent / (db_path.name + "-wal")).exists()
    data = _db_bytes(db_path)
    assert b"alice" in data  # the files are readable and hold the rows
    for token in tokens:
        assert user_key(token) not in data  # what was the key is not stored either
        secret = token.partition(":")[2].encode()
        assert secret not in data
        assert token.encode() not in data
    store.close()
    data = _db_bytes(db_path)
    for token in tokens:
        assert token.partition(":")[2].encode() not in data


def test_duplicate_user(store: Store) -> None:
    token = store.accounts.add_user("alice")
    with pytest.raises(StoreError, match="already exists"):
        store.accounts.add_user("alice")
    assert holds(store.accounts.user_verifier("alice"), user_key(token))


@pytest.mark.parametrize(
    "name", ["Alice", "ALICE", "al ice", " alice", "../x", "", "a/b", "a:b", "x" * 33, "1abc"]
)
def test_invalid_user_names(store: Store, name: str) -> None:
    with pytest.raises(StoreError, match="invalid user name"):
        store.accounts.add_user(name)
    assert store.accounts.users() == []


def test_user_name_with_trailing_newline_is_invalid(store: Store) -> None:
    with pytest.raises(StoreError, match="invalid user name"):
        store.accounts.add_user("alice\n")


def test_valid_user_names(store: Store) -> None:
    for name in ("a", "_svc", "bob.smith", "x-1", "x" * 32):
        assert token_user(store.accounts.add_user(name)) == name
    assert len(store.accounts.users()) == 5


def test_new_token_invalidates_old(store: Store) -> None:
    old = store.accounts.add_user("alice")
    new = store.accounts.new_token("alice")
    assert new != old
    assert token_user(new) == "alice"
    assert holds(store.accounts.user_verifier("alice"), user_key(new))
    assert not holds(store.accounts.user_verifier("alice"), user_key(old))


def test_remove_user_and_unknown_users(store: Store) -> None:
    store.accounts.add_user("alice")
    store.accounts.add_user("bob")
    store.accounts.remove_user("alice")
    assert store.accounts.user_verifier("alice") is None
    assert [u["name"] for u in store.accounts.users()] == ["bob"]
    with pytest.raises(StoreError, match="no user 'alice'"):
        store.accounts.remove_user("alice")
    with pytest.raises(StoreError, match="no user 'carol'"):
        store.accounts.new_token("carol")
    assert store.accounts.user_verifier("carol") is None
    # The name is free again.
    assert token_user(store.accounts.add_user("alice")) == "alice"


# ----------------------------------------------------------------------------- clusters and jobs


def test_reserve_cluster_ids_increase(store: Store) -> None:
    got = [store.clusters.reserve_cluster(owner, 1.0) for owner in ("alice", "bob", "alice")]
    assert got == sorted(got)
    assert len(set(got)) == 3
    assert got[0] >= 1
    assert store.clusters.cluster_owner(got[1]) == ("bob", False)
    assert store.clusters.cluster_owner(got[2] + 100) is None


def test_insert_jobs(store: Store, db_path: Path) -> None:
    cluster = store.clusters.reserve_cluster("alice", 1.0)
    jobs = [make_job(cluster, p, arguments=[str(p)], priority=p) for p in range(3)]
    store.insert_jobs(cluster, "/home/alice/job.sub", jobs, 500.0)
    assert store.clusters.cluster_owner(cluster) == ("alice", True)
    assert raw(db_path, "SELECT submit_file, submitted FROM clusters WHERE id=?", (cluster,)) == [
        ("/home/alice/job.sub", 500.0)
    ]
    assert store.active_jobs() == jobs
    for p in range(3):
        [event] = store.events(cluster, p)
        assert (event.time, event.event, event.detail) == (
            500.0,
            "submitted",
            "from /home/alice/job.sub",
        )


def test_insert_jobs_is_all_or_nothing(store: Store, db_path: Path) -> None:
    cluster = store.clusters.reserve_cluster("alice", 1.0)
    jobs = [make_job(cluster, 0), make_job(cluster, 1), make_job(cluster, 1)]
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_jobs(cluster, "job.sub", jobs, 2.0)
    assert store.clusters.cluster_owner(cluster) == ("alice", False)
    assert count(db_path, "jobs") == 0
    assert count(db_path, "job_events") == 0


def _set_state(store: Store, cluster: int, proc: int, state: JobState) -> None:
    [job] = store.jobs(job_ids=[(cluster, proc)])
    job.state = state
    store.save_job(job, state.value)


@pytest.fixture
def populated(store: Store) -> tuple[Store, int, int, int]:
    """alice: c1 (3 procs), c3 (1 proc); bob: c2 (2 procs); in various states."""
    c1 = queue_cluster(store, "alice", 3)
    c2 = queue_cluster(store, "bob", 2)
    c3 = queue_cluster(store, "alice", 1)
    _set_state(store, c1, 1, S.RUNNING)
    _set_state(store, c1, 2, S.RUNNING)
    _set_state(store, c1, 2, S.COMPLETED)
    _set_state(store, c2, 0, S.HELD)
    _set_state(store, c3, 0, S.REMOVED)
    return store, c1, c2, c3


def test_active_jobs(populated) -> None:
    store, c1, c2, _ = populated
    active = store.active_jobs()
    assert ids(active) == [f"{c1}.0", f"{c1}.1", f"{c2}.0", f"{c2}.1"]
    assert [j.state for j in active] == [S.IDLE, S.RUNNING, S.HELD, S.IDLE]


def test_jobs_filters(populated) -> None:
    store, c1, c2, c3 = populated
    all_ids = [f"{c1}.0", f"{c1}.1", f"{c1}.2", f"{c2}.0", f"{c2}.1", f"{c3}.0"]
    assert ids(store.jobs()) == all_ids
    assert ids(store.jobs(owner="alice")) == [f"{c1}.0", f"{c1}.1", f"{c1}.2", f"{c3}.0"]
    assert ids(store.jobs(owner="carol")) == []
    assert ids(store.jobs(clusters=[c2])) == [f"{c2}.0", f"{c2}.1"]
    assert ids(store.jobs(job_ids=[(c1, 2)])) == [f"{c1}.2"]
    assert ids(store.jobs(job_ids=[(c1, 9)])) == []
    # Clusters and job ids are OR-ed ...
    assert ids(store.jobs(clusters=[c2], job_ids=[(c1, 1), (c3, 0)])) == [
        f"{c1}.1",
        f"{c2}.0",
        f"{c2}.1",
        f"{c3}.0",
    ]
    # ... and AND-ed with the owner and the states.
    assert ids(store.jobs(owner="alice", clusters=[c2], job_ids=[(c1, 1)])) == [f"{c1}.1"]
    assert ids(store.jobs(owner="bob", job_ids=[(c1, 1)])) == []
    assert ids(store.jobs(clusters=[c1, c2], states=["idle"])) == [f"{c1}.0", f"{c2}.1"]
    assert ids(store.jobs(states=["completed", "removed"])) == [f"{c1}.2", f"{c3}.0"]
    assert ids(store.jobs(owner="alice", clusters=[c1], states=["running", "held"])) == [f"{c1}.1"]
    assert ids(store.jobs(states=iter(["held"]))) == [f"{c2}.0"]


def test_events_in_order(store: Store) -> None:
    cluster = queue_cluster(store, "alice", 2)
    [job] = store.jobs(job_ids=[(cluster, 1)])
    story = [("executing", "on w1", 10.0), ("evicted", "lost", 5.0), ("executing", "on w2", 7.0)]
    for event, detail, when in story:
        store.save_job(job, event, detail, now=when)
    events = store.events(cluster, 1)
    assert [(e.event, e.detail, e.time) for e in events] == [
        ("submitted", "from alice.sub", 1000.0),
        *story,
    ]
    assert [e.event for e in store.events(cluster, 0)] == ["submitted"]
    assert store.events(cluster, 5) == []
    # Many jobs' events at once: each job's as events() gives them, none for an unknown.
    other = queue_cluster(store, "bob", 1)
    keys = [(other, 0), (cluster, 1), (cluster, 0), (cluster, 5)]
    assert store.events_of(keys) == {key: store.events(*key) for key in keys}


def test_save_job_persists_every_mutable_field(db_path: Path) -> None:
    store = Store(db_path)
    cluster = queue_cluster(store, "alice", 2, request_cpus=2)
    [job] = store.jobs(job_ids=[(cluster, 1)])
    job.state = S.HELD
    job.start_time = 1234.5
    job.end_time = 1240.25
    job.worker = "w7"
    job.attempt = 3
    job.num_starts = 2
    job.exit_code = 17
    job.exit_signal = 9
    job.wall_time = 5.75
    job.cpu_time = 4.5
    job.hold_reason = "output missing: a.txt"
    job.output_files = ["stdout", "outputs/a b.txt"]
    store.save_job(job, "held", "output missing")
    store.close()
    store = Store(db_path)
    try:
        [again] = store.jobs(job_ids=[(cluster, 1)])
        assert again == job
        [other] = store.jobs(job_ids=[(cluster, 0)])
        assert other == make_job(cluster, 0, request_cpus=2)
        # Back to None / empty values.
        job.state = S.IDLE
        job.end_time = job.worker = job.exit_code = job.exit_signal = None
        job.wall_time = job.cpu_time = job.hold_reason = None
        job.output_files = []
        store.save_job(job, "released")
        assert store.jobs(job_ids=[(cluster, 1)]) == [job]
    finally:
        store.close()


# ----------------------------------------------------------------------------- transactions


def test_transaction_rolls_back_everything(store: Store, db_path: Path) -> None:
    store.accounts.add_user("bob")
    cluster = queue_cluster(store, "bob", 1)
    before = {t: count(db_path, t) for t in ("users", "clusters", "jobs", "job_events")}
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.accounts.add_user("alice")
        new = store.clusters.reserve_cluster("alice", 1.0)
        store.insert_jobs(new, "a.sub", [make_job(new, 0), make_job(new, 1)], 2.0)
        [job] = store.jobs(job_ids=[(cluster, 0)])
        job.state = S.HELD
        store.save_job(job, "held")
        store.accounts.remove_user("bob")
        raise RuntimeError("boom")
    assert {t: count(db_path, t) for t in before} == before
    assert store.accounts.user_verifier("alice") is None
    assert store.accounts.user_verifier("bob") is not None
    assert [j.state for j in store.jobs()] == [S.IDLE]
    # The store is usable afterwards.
    store.accounts.add_user("alice")
    assert count(db_path, "users") == 2


def test_store_error_inside_transaction_rolls_back(store: Store) -> None:
    store.accounts.add_user("alice")
    with pytest.raises(StoreError), store.transaction():
        store.accounts.add_user("bob")
        store.accounts.add_user("alice")
    assert [u["name"] for u in store.accounts.users()] == ["alice"]


def test_nested_units_commit_with_the_outer_one(store: Store, db_path: Path) -> None:
    with store.transaction():
        with store.transaction():
            store.accounts.add_user("alice")
        # The inner one did not commit on its own.
        assert count(db_path, "users") == 0
        assert store.accounts.user_verifier("alice") is not None
    assert count(db_path, "users") == 1

    with pytest.raises(ValueError), store.transaction():
        with store.transaction():
            store.accounts.add_user("bob")
        store.clusters.reserve_cluster("bob", 1.0)
        raise ValueError
    assert store.accounts.user_verifier("bob") is None
    assert count(db_path, "clusters") == 0


# ----------------------------------------------------------------------------- transitions

EXPECTED_ALLOWED = {
    (S.IDLE, S.RUNNING),
    (S.IDLE, S.HELD),
    (S.IDLE, S.REMOVED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.IDLE),
    (S.RUNNING, S.HELD),
    (S.RUNNING, S.REMOVED),
    (S.HELD, S.IDLE),
    (S.HELD, S.REMOVED),
}


def test_allowed_table() -> None:
    assert set(ALLOWED) == set(JobState)
    assert {(old, new) for old, news in ALLOWED.items() for new in news} == EXPECTED_ALLOWED
    for state in FINAL_STATES:
        assert ALLOWED[state] == frozenset()


@pytest.mark.parametrize(("old", "new"), list(itertools.product(JobState, JobState)))
def test_check_transition_every_pair(old: JobState, new: JobState) -> None:
    calls: list[int] = []

    def story() -> list[str]:
        calls.append(1)
        return ["submitted", "executing"]

    if new in ALLOWED[old]:
        assert (old, new) in EXPECTED_ALLOWED
        check_transition("3.1", old, new, story)
        assert calls == []  # the story is read only on failure
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition("3.1", old, new, story)
        assert calls == [1]
        exc = info.value
        assert (exc.job_id, exc.old, exc.new) == ("3.1", old, new)
        assert str(exc) == (
            f"job 3.1: {old.value} -> {new.value} is not allowed (submitted; executing)"
        )


def test_invalid_transition_message_story() -> None:
    with pytest.raises(InvalidTransition, match=r"\(no events\)"):
        check_transition("1.0", S.COMPLETED, S.RUNNING, lambda: [])
    story = [f"e{i}" for i in range(8)]
    with pytest.raises(InvalidTransition) as info:
        check_transition("1.0", S.REMOVED, S.IDLE, lambda: story)
    assert str(info.value).endswith("(e3; e4; e5; e6; e7)")
    assert info.value.story == story


# ----------------------------------------------------------------------------- job table


def worker(
    worker_id: int = 1,
    name: str = "w1",
    slots: int = 8,
    cpus: int = 8,
    memory_mb: int = 16000,
    gpus: int = 0,
    disk_free_mb: int = 100_000,
) -> Slots:
    return Slots(
        worker_id=worker_id,
        name=name,
        slots=slots,
        cpus=cpus,
        memory_mb=memory_mb,
        gpus=gpus,
        disk_free_mb=disk_free_mb,
    )


@pytest.fixture
def table(store: Store) -> JobTable:
    return JobTable(store)


def submit(table: JobTable, *specs: JobSpec, owner: str = "alice") -> list[Job]:
    cluster = table.store.clusters.reserve_cluster(owner, 1.0)
    return table.submit(cluster, owner, f"{owner}.sub", list(specs))


def spec(**kwargs: object) -> JobSpec:
    return JobSpec(executable="run.sh", **kwargs)  # type: ignore[arg-type]


def assigned(pairs: list[tuple[Slots, Job]]) -> list[tuple[str, str]]:
    return [(slots.name, job.id) for slots, job in pairs]


def stored_state(store: Store, job: Job) -> JobState:
    [row] = store.jobs(job_ids=[(job.cluster, job.proc)])
    return row.state


def test_submit_stores_and_queues(table: JobTable) -> None:
    changes: list[str] = []
    table.on_change = lambda job: changes.append(job.id)
    jobs = submit(table, spec(), spec(arguments=["b"]))
    assert [j.state for j in jobs] == [S.IDLE, S.IDLE]
    assert [j.proc for j in jobs] == [0, 1]
    assert len(table.queue) == 2
    assert table.get(jobs[1].id) is jobs[1]
    assert table.get(str(jobs[1].cluster)) is None
    assert table.store.active_jobs() == jobs
    assert changes == [jobs[0].id, jobs[1].id]


def test_submit_failure_changes_nothing(table: JobTable) -> None:
    [first] = submit(table, spec())
    with pytest.raises(sqlite3.IntegrityError):
        table.submit(first.cluster, "alice", "again.sub", [spec()])
    assert list(table.active) == [(first.cluster, 0)]
    assert len(table.queue) == 1


def test_queue_order_is_priority_then_cluster_then_proc(table: JobTable) -> None:
    a = submit(table, spec(), spec())
    b = submit(table, spec(priority=5), spec(), spec(priority=5))
    c = submit(table, spec(priority=-1))
    d = submit(table, spec(priority=1))
    got = assigned(table.assign([worker(slots=100)]))
    expected = [b[0], b[2], d[0], a[0], a[1], b[1], c[0]]
    assert [job_id for _, job_id in got] == [j.id for j in expected]


def test_assign_marks_jobs_running_durably(table: JobTable) -> None:
    [job] = submit(table, spec())
    [(slots, got)] = table.assign([worker(name="w3", worker_id=3)])
    assert got is job
    assert slots.used_slots == 1
    assert job.state is S.RUNNING
    assert (job.worker, job.attempt, job.num_starts) == ("w3", 1, 1)
    assert job.start_time is not None
    assert table.running() == [job]
    assert len(table.queue) == 0
    [row] = table.store.jobs()
    assert row == job
    last = table.store.events(job.cluster, job.proc)[-1]
    assert (last.event, last.detail) == ("executing", "on worker w3 (attempt 1)")


def test_assign_respects_slots(table: JobTable) -> None:
    jobs = submit(table, *[spec() for _ in range(5)])
    w = worker(slots=2)
    got = table.assign([w])
    assert [job for _, job in got] == jobs[:2]
    assert w.used_slots == 2
    assert table.assign([w]) == []
    assert len(table.queue) == 3
    assert [j.state for j in jobs] == [S.RUNNING] * 2 + [S.IDLE] * 3


def test_assign_respects_cpus_and_skips_to_a_job_that_fits(table: JobTable) -> None:
    jobs = submit(table, spec(request_cpus=3), spec(request_cpus=3), spec(request_cpus=1))
    w = worker(cpus=4)
    got = table.assign([w])
    assert [job.proc for _, job in got] == [0, 2]
    assert w.used_cpus == 4
    assert jobs[1].state is S.IDLE
    assert stored_state(table.store, jobs[1]) is S.IDLE


def test_assign_respects_memory(table: JobTable) -> None:
    jobs = submit(table, spec(request_memory=3000), spec(request_memory=2000), spec())
    w = worker(memory_mb=4000)
    got = table.assign([w])
    assert [job.proc for _, job in got] == [0, 2]
    assert w.used_memory_mb == 3000
    assert jobs[1].state is S.IDLE


def test_assign_respects_gpus(table: JobTable) -> None:
    jobs = submit(table, spec(request_gpus=1), spec(request_gpus=1), spec(request_gpus=2))
    cpu_only, gpu = worker(1, "cpu", gpus=0), worker(2, "gpu", gpus=2)
    got = table.assign([cpu_only, gpu])
    assert assigned(got) == [("gpu", jobs[0].id), ("gpu", jobs[1].id)]
    assert gpu.used_gpus == 2
    assert jobs[2].state is S.IDLE


def test_assign_respects_disk(table: JobTable) -> None:
    jobs = submit(table, spec(request_disk=2048 * 1024), spec(request_disk=1024))
    got = table.assign([worker(disk_free_mb=1024)])
    assert [job for _, job in got] == [jobs[1]]


def test_assign_machine_pinning_by_name_and_id(table: JobTable) -> None:
    jobs = submit(
        table,
        spec(machine="node-b"),
        spec(machine="1"),
        spec(machine="7"),
        spec(machine="nowhere"),
        spec(),
    )
    a, b = worker(1, "node-a", slots=5), worker(7, "node-b", slots=5)
    got = assigned(table.assign([a, b]))
    assert sorted(got) == sorted(
        [
            ("node-a", jobs[1].id),
            ("node-a", jobs[4].id),
            ("node-b", jobs[0].id),
            ("node-b", jobs[2].id),
        ]
    )
    assert jobs[3].state is S.IDLE
    assert len(table.queue) == 1


def test_job_that_fits_no_worker_stays_queued(table: JobTable) -> None:
    [big] = submit(table, spec(request_cpus=64))
    assert table.assign([worker(cpus=8), worker(2, "w2", cpus=16)]) == []
    assert big.state is S.IDLE
    assert stored_state(table.store, big) is S.IDLE
    assert len(table.queue) == 1
    # It is still dispatched once a big enough worker comes.
    assert assigned(table.assign([worker(3, "huge", cpus=64)])) == [("huge", big.id)]


def test_draining_worker_gets_nothing(table: JobTable) -> None:
    submit(table, spec())
    w = worker()
    w.draining = True
    assert table.assign([w]) == []
    assert len(table.queue) == 1


def test_requeue_makes_job_dispatchable_again(table: JobTable) -> None:
    [job] = submit(table, spec())
    w1 = worker()
    table.assign([w1])
    table.transition(job, S.IDLE, "evicted", "worker w1 lost", worker=None)
    assert job.state is S.IDLE
    assert job.worker is None
    assert stored_state(table.store, job) is S.IDLE
    assert len(table.queue) == 1
    assert table.running() == []
    last = table.store.events(job.cluster, job.proc)[-1]
    assert (last.event, last.detail) == ("evicted", "worker w1 lost")
    got = table.assign([worker(2, "w2")])
    assert assigned(got) == [("w2", job.id)]
    assert (job.state, job.worker, job.attempt, job.num_starts) == (S.RUNNING, "w2", 2, 2)


def test_requeue_of_idle_job_is_refused(table: JobTable) -> None:
    [job] = submit(table, spec())
    with pytest.raises(InvalidTransition):
        table.transition(job, S.IDLE, "evicted", "nothing to requeue")
    assert job.state is S.IDLE
    assert len(table.queue) == 1


def test_hold_then_transitions(table: JobTable) -> None:
    running, idle = submit(table, spec(), spec())
    table.assign([worker(slots=1)])
    assert (running.state, idle.state) == (S.RUNNING, S.IDLE)
    for job, reason in ((idle, "held by user"), (running, "output missing")):
        table.transition(job, S.HELD, "held", reason, hold_reason=reason, end_time=5.0)
    for job, reason in ((idle, "held by user"), (running, "output missing")):
        assert job.state is S.HELD
        assert job.hold_reason == reason
        assert job.end_time is not None
        [row] = table.store.jobs(job_ids=[(job.cluster, job.proc)])
        assert (row.state, row.hold_reason) == (S.HELD, reason)
        assert table.store.events(job.cluster, job.proc)[-1].event == "held"
    assert len(table.queue) == 0
    assert table.running() == []
    assert table.assign([worker(2, "w2")]) == []
    # Held jobs cannot run or complete without being released first.
    with pytest.raises(InvalidTransition):
        table.transition(idle, S.RUNNING, "executing")
    with pytest.raises(InvalidTransition):
        table.transition(idle, S.COMPLETED, "terminated")
    assert idle.state is S.HELD
    assert stored_state(table.store, idle) is S.HELD
    table.transition(idle, S.IDLE, "released")
    assert len(table.queue) == 1
    [(_, job)] = table.assign([worker(2, "w2")])
    assert job is idle
    assert job.hold_reason is None
    table.transition(running, S.REMOVED, "removed")
    assert (running.cluster, running.proc) not in table.active
    assert stored_state(table.store, running) is S.REMOVED


def test_completed_job_leaves_active(table: JobTable) -> None:
    changes: list[tuple[str, JobState]] = []
    table.on_change = lambda job: changes.append((job.id, job.state))
    [job, other] = submit(table, spec(), spec())
    table.assign([worker(slots=1)])
    table.transition(job, S.COMPLETED, "terminated", "exit 0", exit_code=0, end_time=5.0)
    assert table.get(job.id) is None
    assert (job.cluster, job.proc) not in table.active
    assert table.running() == []
    assert list(table.active.values()) == [other]
    [row] = table.store.jobs(job_ids=[(job.cluster, job.proc)])
    assert (row.state, row.exit_code, row.end_time) == (S.COMPLETED, 0, 5.0)
    assert changes[-1] == (job.id, S.COMPLETED)
    with pytest.raises(InvalidTransition) as info:
        table.transition(job, S.RUNNING, "executing")
    assert "submitted; executing; terminated" in str(info.value)
    assert stored_state(table.store, job) is S.COMPLETED


def test_procs_with_one_spec_share_it_after_a_restart(db_path: Path) -> None:
    store = Store(db_path)
    table = JobTable(store)
    jobs = submit(table, spec(), spec(), spec(priority=3), spec())
    assert jobs[0].spec is jobs[1].spec is not jobs[2].spec  # equal runs, as submitted
    store.close()
    store = Store(db_path)
    try:
        again = sorted(store.active_jobs(), key=lambda j: j.proc)
        assert [j.spec for j in again] == [j.spec for j in jobs]
        assert again[0].spec is again[1].spec is again[3].spec is not again[2].spec
    finally:
        store.close()


def test_restart_reloads_active_jobs_and_queue(db_path: Path) -> None:
    store = Store(db_path)
    table = JobTable(store)
    jobs = submit(table, spec(), spec(), spec(), spec(), spec(priority=3))
    table.assign([worker(slots=2)])  # 4 (priority 3) and 0
    assert {j.proc for j in table.running()} == {0, 4}
    cluster = jobs[0].cluster
    assert table.unfinished == {cluster: 5}
    table.transition(jobs[4], S.COMPLETED, "terminated", exit_code=0)
    table.transition(jobs[1], S.HELD, "held", "held by user", hold_reason="held by user")
    assert table.unfinished == {cluster: 3}  # a held job is not counted
    store.close()

    store = Store(db_path)
    try:
        again = JobTable(store)
        assert sorted(again.active) == [(jobs[0].cluster, p) for p in (0, 1, 2, 3)]
        assert {k[1]: j.state for k, j in again.active.items()} == {
            0: S.RUNNING,
            1: S.HELD,
            2: S.IDLE,
            3: S.IDLE,
        }
        [running] = again.running()
        assert (running.proc, running.worker, running.attempt) == (0, "w1", 1)
        assert again.get(jobs[1].id).hold_reason == "held by user"
        assert again.unfinished == {cluster: 3}
        assert len(again.queue) == 2
        got = again.assign([worker(2, "w2", slots=10)])
        assert [job.proc for _, job in got] == [2, 3]
        assert len(again.queue) == 0
        assert again.unfinished == {cluster: 3}
        again.transition(again.get(jobs[1].id), S.IDLE, "released")
        for proc in (0, 2, 3):
            again.transition(again.get(f"{cluster}.{proc}"), S.REMOVED, "removed")
        assert again.unfinished == {cluster: 1}  # the released job
        again.transition(again.get(jobs[1].id), S.REMOVED, "removed")
        assert again.unfinished == {}  # a cluster with none left is absent
    finally:
        store.close()


# ----------------------------------------------------------------------------- slots


def test_slot_accounting() -> None:
    w = worker(slots=2, cpus=4, memory_mb=1000, gpus=1)
    small = make_job(1, 0, request_cpus=2, request_memory=500, request_gpus=1)
    assert w.fits(small)
    w.take(small)
    assert (w.used_slots, w.used_cpus, w.used_memory_mb, w.used_gpus) == (1, 2, 500, 1)
    assert not w.fits(small)  # busy now
    w.give_back(small)
    assert (w.used_slots, w.used_cpus, w.used_memory_mb, w.used_gpus) == (0, 0, 0, 0)
    assert w.fits(small)
    w.draining = True
    assert not w.fits(small)
    assert not w.free


@pytest.mark.parametrize(
    "kwargs",
    [
        {"request_cpus": 5},
        {"request_memory": 1001},
        {"request_gpus": 2},
        {"machine": "elsewhere"},
        {"machine": "2"},
    ],
)
def test_never_fits(kwargs: dict) -> None:
    w = worker(worker_id=1, name="w1", slots=2, cpus=4, memory_mb=1000, gpus=1)
    job = make_job(1, 0, **kwargs)
    assert not w.fits(job)


@pytest.mark.parametrize("machine", ["w1", "1", None])
def test_pinned_job_fits_its_machine(machine: str | None) -> None:
    w = worker(worker_id=1, name="w1")
    job = make_job(1, 0, machine=machine)
    assert w.fits(job)


def test_slots_full() -> None:
    w = worker(slots=1)
    w.take(make_job(1, 0))
    assert not w.free
    assert not w.fits(make_job(1, 1))


def test_small_result_files_per_attempt(store: Store) -> None:
    store.results.save_files(3, 0, {})  # nothing to keep: no write at all
    assert store.results.files(3, 0) == {}
    store.results.save_files(3, 0, {"stdout": b"one\n", "outputs/a.txt": b"\x00\x01"})
    assert store.results.files(3, 0) == {"outputs/a.txt": b"\x00\x01", "stdout": b"one\n"}
    store.results.clear_files(3, 0)  # a new attempt starts from nothing
    assert store.results.files(3, 0) == {}
    store.results.save_files(3, 0, {"stdout": b"two\n"})
    assert store.results.files(3, 0) == {"stdout": b"two\n"}


def test_batched_writes_wait_for_commit(tmp_path: Path) -> None:
    """In batching mode units are savepoints; nothing is visible to others before commit,
    and a failed unit is undone without undoing the rest of the batch."""
    store = Store(tmp_path / "batch.db")
    opened: list[int] = []
    store.on_batch_open = lambda: opened.append(1)
    first = store.clusters.reserve_cluster("alice", 1.0)
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("INSERT INTO clusters (owner, created) VALUES ('bob', 2.0)")
        raise RuntimeError("undo this unit only")
    second = store.clusters.reserve_cluster("carol", 3.0)
    reader = sqlite3.connect(tmp_path / "batch.db")

    def owners() -> list[str]:
        return [row[0] for row in reader.execute("SELECT owner FROM clusters ORDER BY id")]

    assert owners() == []  # not committed yet
    assert Store(tmp_path / "batch.db").accounts.users() == []  # opening needs no write lock
    store.commit()
    assert opened == [1]
    assert owners() == ["alice", "carol"]
    assert store.clusters.cluster_owner(first) == ("alice", False)
    assert store.clusters.cluster_owner(second) == ("carol", False)
    reader.close()
    store.close()


def test_result_bytes_follow_the_files_of_each_owner(store: Store) -> None:
    """What each owner keeps in small results, as the quota reads it: kept up as files
    are saved, replaced for a new attempt, and expired."""
    alice, bob = queue_cluster(store, "alice", 2), queue_cluster(store, "bob", 1)
    store.results.save_files(alice, 0, {"stdout": b"12345", "stderr": b"67"})
    store.results.save_files(alice, 1, {"stdout": b"1"})
    store.results.save_files(bob, 0, {"stdout": b"1234"})
    assert (store.results.results_bytes("alice"), store.results.results_bytes("bob")) == (8, 4)
    assert store.results.results_bytes() == 12 and store.results.results_bytes("carol") == 0
    store.results.clear_files(alice, 0)
    store.results.expire_results([(bob, 0)], 2000.0)
    assert (store.results.results_bytes("alice"), store.results.results_bytes("bob")) == (1, 0)


def test_a_database_from_before_result_bytes_migrates_with_each_owners_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration that keeps each owner's result bytes, from a database its previous
    schema wrote: the sums of the files already there, and kept up from then on."""
    from old_schema import insert_jobs

    added = MIGRATIONS.index(_result_bytes)
    db_path = tmp_path / "dfarm.db"
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", MIGRATIONS[:added])
        old = Store(db_path)
        old.accounts.add_user("alice")
        clusters = [old.clusters.reserve_cluster(user, 1000.0) for user in ("alice", "bob")]
        old.close()
    for cluster, owner in zip(clusters, ("alice", "bob"), strict=True):
        insert_jobs(db_path, cluster, f"{owner}.sub", [make_job(cluster, 0, owner)], 1000.0)
    with closing(sqlite3.connect(db_path)) as db, db:
        db.executemany(
            "INSERT INTO job_files (cluster, proc, name, data) VALUES (?, 0, ?, ?)",
            [(clusters[0], "stdout", b"abc"), (clusters[0], "stderr", b"de"),
             (clusters[1], "stdout", b"x")],
        )  # fmt: skip
    store = Store(db_path)  # migrates
    try:
        assert [j.id for j in store.jobs()] == [f"{clusters[0]}.0", f"{clusters[1]}.0"]
        assert store.results.results_bytes("alice") == 5
        assert store.results.results_bytes("bob") == 1
        store.results.clear_files(clusters[0], 0)
        assert store.results.results_bytes("alice") == 0
    finally:
        store.close()
