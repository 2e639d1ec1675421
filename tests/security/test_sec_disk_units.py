"""The parts that keep a full disk from losing anything, on a real SQLite database on a
real full file system (a small tmpfs): a commit the disk refuses is kept and made
later; a submission the disk refuses leaves nothing; the disk's state clears on its
own once there is room; a worker's attempt that saw its disk full is its failure."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from test_sec_disk_full import fill, tmpfs

from scheduler.disk_space import DiskSpace, is_disk_full
from scheduler.job_records import Job
from scheduler.protocol import JobFinished, JobSpec, JobState
from scheduler.store import Store
from worker_node.disk import DiskWatch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


def _job(cluster: int, proc: int) -> Job:
    spec = JobSpec(executable="job.sh")
    return Job(cluster=cluster, proc=proc, owner="alice", state=JobState.IDLE, spec=spec,
               submit_time=1.0)  # fmt: skip


def _committed(path: Path, sql: str) -> list[tuple]:
    """What another connection (a crash, then a restart) would find."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_commit_the_full_disk_refuses_is_kept_until_there_is_room(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "home", 4) as home:
        store = Store(home / "dfarm.db")
        store.on_batch_open = lambda: None  # batching, as the scheduler runs it
        cluster = store.clusters.reserve_cluster("alice", 1.0)
        jobs = [_job(cluster, proc) for proc in range(3)]
        store.insert_jobs(cluster, "a.sub", jobs, 1.0)  # committed at once
        ballast = fill(home / "ballast")
        # One turn of the loop: a job runs, another completes with 1 MB of results.
        jobs[0].state, jobs[0].worker = JobState.RUNNING, "w1"
        store.save_job(jobs[0], "executing", "on worker w1")
        store.results.save_files(cluster, 1, {"stdout": b"x" * 2**20})
        jobs[1].state = JobState.COMPLETED
        store.save_job(jobs[1], "terminated", "exit code 0")
        with pytest.raises(sqlite3.OperationalError) as refused:
            store.commit()
        assert is_disk_full(refused.value)
        # Nothing of it is durable yet, and this connection still sees all of it.
        states = "SELECT proc, state FROM jobs ORDER BY proc"
        assert _committed(home / "dfarm.db", states) == [(0, "idle"), (1, "idle"), (2, "idle")]
        assert [j.state for j in store.jobs()] == [
            JobState.RUNNING, JobState.COMPLETED, JobState.IDLE
        ]  # fmt: skip
        assert len(store.results.files(cluster, 1)["stdout"]) == 2**20
        # A submission meanwhile is refused whole, and takes nothing else with it.
        other = store.clusters.reserve_cluster("alice", 2.0)
        with pytest.raises(sqlite3.OperationalError):
            store.insert_jobs(other, "b.sub", [_job(other, p) for p in range(2000)], 2.0)
        assert store.jobs(clusters=[other]) == []
        ballast.unlink()
        store.commit()
        assert _committed(home / "dfarm.db", states) == [
            (0, "running"), (1, "completed"), (2, "idle")
        ]  # fmt: skip
        events = "SELECT proc, event FROM job_events ORDER BY seq"
        assert _committed(home / "dfarm.db", events) == [
            (0, "submitted"), (1, "submitted"), (2, "submitted"),
            (0, "executing"), (1, "terminated"),
        ]  # fmt: skip
        store.close()


def test_the_scheduler_disk_state_clears_on_its_own() -> None:
    free = {"bytes": 10}
    now = {"t": 0.0}
    disk = DiskSpace(Path("/home"), 100, clock=lambda: now["t"], free=lambda _: free["bytes"],
                     wall=lambda: 1000 + now["t"])  # fmt: skip
    rooms = []
    disk.on_room = lambda: rooms.append(now["t"])
    assert disk.refusal() == "scheduler disk full: /home has 10 bytes free"
    free["bytes"] = 500
    now["t"] = 0.5
    assert disk.check()  # looked at less than a second ago: still full
    now["t"] = 1.0
    assert not disk.check() and disk.refusal() is None and rooms == [1.0]
    assert disk.full_since(1000) and not disk.full_since(1000.5)
    disk.write_failed(OSError(28, "No space left on device"))
    assert disk.full and "No space left on device" in (disk.problem or "")
    now["t"] = 2.0
    assert not disk.check()


def test_an_attempt_that_saw_the_worker_disk_full_fails_as_the_workers() -> None:
    free = {"bytes": 10}
    now = {"t": 0.0}
    disk = DiskWatch(Path("/work"), 100, "w2", free=lambda _: free["bytes"],
                     clock=lambda: now["t"])  # fmt: skip
    assert disk.problem() == "disk full on worker w2: /work had 10 bytes free"
    free["bytes"], now["t"] = 500, 5.0
    assert disk.problem() is None
    assert disk.problem(since=-1.0) is not None  # full during an attempt begun before
    assert disk.problem(since=1.0) is None
    done = JobFinished(job_id="1.0", attempt=1, exit_code=1, files={"stdout": ""})
    assert disk.judge(done) == done
    staged = JobFinished(job_id="1.0", attempt=1, failure="could not stage inputs: "
                         "[Errno 28] No space left on device")  # fmt: skip
    judged = disk.judge(staged)
    assert judged.disk_full and judged.failure.startswith("disk full on worker w2: ")
    # Results the scheduler's full spool refused are no fault of this worker's disk.
    refused = JobFinished(job_id="1.0", attempt=1, failure="could not transfer results: "
                          "cannot upload '0/stdout': 451 No space left on device")  # fmt: skip
    assert disk.judge(refused) == refused
    assert disk.judge(done, OSError(28, "No space left on device")).disk_full
