"""Units of work of the store, on a real SQLite file: a unit that raises leaves
nothing of what it wrote, SQL or rows queued in memory, while the other units of its
batch are kept; units nest; undo callbacks run, in reverse, for a unit rolled back."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from scheduler.job_records import Job
from scheduler.protocol import JobSpec, JobState
from scheduler.store import Store


def _job(cluster: int, proc: int) -> Job:
    return Job(cluster=cluster, proc=proc, owner="alice", state=JobState.IDLE,
               spec=JobSpec(executable="job.sh"), submit_time=1.0)  # fmt: skip


def _committed(path: Path, sql: str) -> list[tuple]:
    """What another connection (a crash, then a restart) would find."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


STATES = "SELECT proc, state FROM jobs ORDER BY proc"
EVENTS = "SELECT proc, event FROM job_events ORDER BY seq"
FILES = "SELECT proc, name FROM job_files ORDER BY proc, name"


@pytest.fixture(params=["batch", "alone"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store as the scheduler runs it (a batch per turn, committed by ``commit``),
    and as the command-line tools do (each unit committed on its own)."""
    store = Store(tmp_path / "dfarm.db")
    if request.param == "batch":
        store.on_batch_open = lambda: None
    yield store
    store.close()


def _queued(store: Store, procs: int) -> tuple[int, list[Job]]:
    cluster = store.clusters.reserve_cluster("alice", 1.0)
    jobs = [_job(cluster, proc) for proc in range(procs)]
    store.insert_jobs(cluster, "a.sub", jobs, 1.0)
    return cluster, jobs


def _start(store: Store, job: Job, worker: str) -> None:
    job.state, job.worker = JobState.RUNNING, worker
    store.save_job(job, "executing", f"on worker {worker}")


def test_a_unit_that_raises_leaves_nothing_and_its_batch_keeps_the_rest(store: Store) -> None:
    cluster, jobs = _queued(store, 2)
    with store.transaction():
        _start(store, jobs[0], "w1")
        store.results.save_files(cluster, 0, {"stdout": b"first\n"})
    with pytest.raises(RuntimeError, match="handler failed"), store.transaction():
        _start(store, jobs[1], "w2")
        store.results.save_files(cluster, 1, {"stdout": b"second\n"})
        raise RuntimeError("handler failed")
    store.commit()
    assert _committed(store.path, STATES) == [(0, "running"), (1, "idle")]
    assert _committed(store.path, EVENTS) == [(0, "submitted"), (1, "submitted"),
                                              (0, "executing")]  # fmt: skip
    assert _committed(store.path, FILES) == [(0, "stdout")]
    assert [j.state for j in store.jobs()] == [JobState.RUNNING, JobState.IDLE]


def test_a_failed_unit_undoes_rows_it_queued_over_an_earlier_units(store: Store) -> None:
    """A job saved by an earlier unit and again by the failed one keeps the earlier row,
    even though the failed unit changed the job in memory and the row was queued."""
    _, [job] = _queued(store, 1)
    with store.transaction():
        _start(store, job, "w1")
    with pytest.raises(RuntimeError), store.transaction():
        job.state, job.hold_reason = JobState.HELD, "no"
        store.save_job(job, "held", "no")
        store.jobs()  # a read writes what is queued, inside the unit
        raise RuntimeError
    store.commit()
    assert _committed(store.path, "SELECT state, worker, hold_reason FROM jobs") == [
        ("running", "w1", None)
    ]
    assert _committed(store.path, EVENTS) == [(0, "submitted"), (0, "executing")]


def test_a_nested_unit_that_fails_is_undone_alone(store: Store) -> None:
    cluster, jobs = _queued(store, 3)
    with store.transaction():
        _start(store, jobs[0], "w1")
        with pytest.raises(RuntimeError), store.transaction():
            _start(store, jobs[1], "w1")
            store.results.save_files(cluster, 1, {"stdout": b"lost\n"})
            raise RuntimeError
        store.results.save_files(cluster, 0, {"stdout": b"kept\n"})
        _start(store, jobs[2], "w2")
    store.commit()
    assert _committed(store.path, STATES) == [(0, "running"), (1, "idle"), (2, "running")]
    assert _committed(store.path, FILES) == [(0, "stdout")]
    assert [e for e in _committed(store.path, EVENTS) if e[1] == "executing"] == [
        (0, "executing"), (2, "executing")
    ]  # fmt: skip


def test_a_deeply_nested_unit_that_fails_keeps_what_the_units_around_it_wrote(
    store: Store,
) -> None:
    """A nested unit has no savepoint of its own: one that fails rolls back to its
    outermost unit's and what that unit and its other nested units wrote is written
    again, before and after it; an earlier unit of the batch is untouched."""
    cluster, _ = _queued(store, 1)
    with store.transaction():
        store.results.save_files(cluster, 0, {"earlier": b"0"})
    with store.transaction():
        store.results.save_files(cluster, 0, {"outer": b"1"})
        with store.transaction():
            store.results.save_files(cluster, 0, {"sibling": b"2"})
        with store.transaction():
            store.results.save_files(cluster, 0, {"middle": b"3"})
            with pytest.raises(RuntimeError), store.transaction():
                store.results.save_files(cluster, 0, {"inner": b"4"})
                raise RuntimeError
            assert set(store.results.files(cluster, 0)) == {"earlier", "outer", "sibling", "middle"}
            store.results.save_files(cluster, 0, {"after": b"5"})
    store.commit()
    assert _committed(store.path, FILES) == [
        (0, "after"), (0, "earlier"), (0, "middle"), (0, "outer"), (0, "sibling")
    ]  # fmt: skip


def test_a_nested_unit_that_succeeds_goes_with_its_outer_unit(store: Store) -> None:
    cluster, jobs = _queued(store, 1)
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            _start(store, jobs[0], "w1")
            store.results.save_files(cluster, 0, {"stdout": b"x"})
        assert _committed(store.path, FILES) == []  # not committed on its own
        raise RuntimeError
    store.commit()
    assert _committed(store.path, STATES) == [(0, "idle")]
    assert _committed(store.path, FILES) == []


def test_a_statement_cut_short_inside_a_unit_leaves_none_of_its_rows(store: Store) -> None:
    cluster, _ = _queued(store, 1)
    store.results.save_files(cluster, 0, {"b": b"old"})
    with store.transaction():
        with pytest.raises(sqlite3.IntegrityError):
            store.results.save_files(cluster, 0, {"a": b"written, then undone", "b": b"refused"})
        store.results.save_files(cluster, 0, {"c": b"kept"})
    store.commit()
    assert _committed(store.path, FILES) == [(0, "b"), (0, "c")]


def test_a_nested_unit_rolls_back_alone_after_its_batch_was_written_again(store: Store) -> None:
    """A statement cut short has the batch written again, savepoints included, so that
    the nested unit open then still rolls back alone."""
    cluster, _ = _queued(store, 1)
    with store.transaction():
        store.results.save_files(cluster, 0, {"outer": b"1"})
        with pytest.raises(RuntimeError), store.transaction():
            store.results.save_files(cluster, 0, {"inner": b"2"})
            with pytest.raises(sqlite3.IntegrityError):
                store.results.save_files(cluster, 0, {"a": b"", "outer": b""})
            store.results.save_files(cluster, 0, {"after": b"3"})
            assert set(store.results.files(cluster, 0)) == {"outer", "inner", "after"}
            raise RuntimeError
        store.results.save_files(cluster, 0, {"last": b"4"})
    store.commit()
    assert _committed(store.path, FILES) == [(0, "last"), (0, "outer")]


def test_undo_callbacks_run_in_reverse_and_pass_to_the_outer_unit(store: Store) -> None:
    undone: list[str] = []

    def undo(name: str) -> Callable[[], None]:
        return lambda: undone.append(name)

    with pytest.raises(RuntimeError), store.transaction():
        store.on_undo(undo("a"))
        with store.transaction():
            store.on_undo(undo("b"))
            store.on_undo(undo("c"))
        assert undone == []  # a nested unit that succeeds undoes nothing
        store.on_undo(undo("d"))
        raise RuntimeError
    assert undone == ["d", "c", "b", "a"]


def test_undo_callbacks_of_a_failed_nested_unit_run_alone(store: Store) -> None:
    undone: list[str] = []
    with store.transaction():
        store.on_undo(lambda: undone.append("outer"))
        with pytest.raises(RuntimeError), store.transaction():
            store.on_undo(lambda: undone.append("inner"))
            raise RuntimeError
        assert undone == ["inner"]
    assert undone == ["inner"]
    # The outermost unit succeeded: its callbacks are dropped, not run by a later failure.
    with pytest.raises(RuntimeError), store.transaction():
        raise RuntimeError
    store.commit()
    assert undone == ["inner"]


def test_an_undo_callback_that_fails_does_not_stop_the_others(store: Store) -> None:
    undone: list[str] = []

    def broken() -> None:
        raise ValueError("broken undo")

    with pytest.raises(RuntimeError, match="the unit's own"), store.transaction():
        store.on_undo(lambda: undone.append("first"))
        store.on_undo(broken)
        store.on_undo(lambda: undone.append("last"))
        raise RuntimeError("the unit's own")
    assert undone == ["last", "first"]


def test_on_undo_needs_an_open_unit(store: Store) -> None:
    with pytest.raises(RuntimeError, match="unit"):
        store.on_undo(lambda: None)


# ----------------------------------------------------------------------------- full disk


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")
def test_a_unit_that_fails_after_a_full_disk_replay_is_undone_alone(tmp_path: Path) -> None:
    from security.test_sec_disk_full import fill, tmpfs

    with tmpfs(tmp_path / "home", 4) as home:
        store = Store(home / "dfarm.db")
        store.on_batch_open = lambda: None
        cluster, jobs = _queued(store, 3)
        ballast = fill(home / "ballast")
        with store.transaction():
            _start(store, jobs[0], "w1")
            store.results.save_files(cluster, 0, {"stdout": b"x" * 2**20})
        with pytest.raises(sqlite3.OperationalError):
            store.commit()  # refused: the batch is written again, to commit later
        undone: list[str] = []
        with pytest.raises(RuntimeError), store.transaction():
            store.on_undo(lambda: undone.append("memory"))
            _start(store, jobs[1], "w2")
            store.results.save_files(cluster, 1, {"stdout": b"y"})
            raise RuntimeError
        assert undone == ["memory"]
        with store.transaction():
            _start(store, jobs[2], "w3")
        ballast.unlink()
        store.commit()
        assert _committed(store.path, STATES) == [(0, "running"), (1, "idle"), (2, "running")]
        assert _committed(store.path, EVENTS) == [
            (0, "submitted"), (1, "submitted"), (2, "submitted"),
            (0, "executing"), (2, "executing"),
        ]  # fmt: skip
        assert _committed(store.path, FILES) == [(0, "stdout")]
        store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")
def test_a_unit_alone_that_the_full_disk_refuses_runs_its_undo_callbacks(
    tmp_path: Path,
) -> None:
    from security.test_sec_disk_full import fill, tmpfs

    with tmpfs(tmp_path / "home", 4) as home:
        store = Store(home / "dfarm.db")  # each unit committed on its own
        cluster, [job] = _queued(store, 1)
        ballast = fill(home / "ballast")
        undone: list[str] = []
        with pytest.raises(sqlite3.OperationalError), store.transaction():
            store.on_undo(lambda: undone.append("memory"))
            _start(store, job, "w1")
            store.results.save_files(cluster, 0, {"stdout": b"x" * 2**20})
        assert undone == ["memory"]
        ballast.unlink()
        with store.transaction():
            store.results.save_files(cluster, 0, {"stdout": b"z"})
        assert _committed(store.path, STATES) == [(0, "idle")]
        assert _committed(store.path, FILES) == [(0, "stdout")]
        store.close()
