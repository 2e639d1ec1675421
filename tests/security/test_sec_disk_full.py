"""Full disks lose nothing: the scheduler's home or a worker's work directory fills up
(a small tmpfs, filled with a ballast file), and no job is lost, recorded twice, or
comes back completed with its outputs cut short; both resume on their own once there
is room again."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node import Client
from control_node.local_cluster import local_user_token
from scheduler.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")

MiB = 2**20


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted on ``path`` (private to root), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a ballast file at ``path`` until its file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (MiB, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return path


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Callable[..., TestCluster]]:
    """Factory of a real cluster whose logs lie outside the disks the test fills."""
    made: list[TestCluster] = []

    def create(
        home: Path, workers: dict[str, tuple[str, ...]], scheduler_args: tuple[str, ...] = ()
    ) -> TestCluster:
        cluster = TestCluster(home)
        made.append(cluster)
        cluster.logs = tmp_path / f"logs{len(made)}"
        cluster.logs.mkdir()
        cluster.token = local_user_token(cluster.home)
        cluster.start_scheduler(*scheduler_args)
        for name, args in workers.items():
            cluster.add_worker(name, *args)
        cluster.wait_for_workers(len(workers))
        return cluster

    yield create
    for cluster in made:
        for name in cluster.processes:  # shown with a failure
            print(f"--- {name}.log (end)\n{cluster.log(name)[-3000:]}")
        crashed = cluster.crashed()
        cluster.stop(grace=5)
        assert not crashed, f"crashed: {crashed}"
        for name in cluster.processes:
            log = cluster.log(name)
            assert "Traceback" not in log, f"{name}:\n{log[-3000:]}"


def client(cluster: TestCluster) -> Client:
    assert cluster.access is not None
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def state(c: Client, job_id: str) -> str:
    (job,) = c.jobs([job_id], states=["idle", "running", "held", "completed", "removed"])
    return job.state


def events_of(home: Path) -> dict[str, list[str]]:
    """Every job's events, from the scheduler's database."""
    store = Store(home / "dfarm.db")
    try:
        rows = store.query("SELECT cluster, proc, event FROM job_events ORDER BY seq")
    finally:
        store.close()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(f"{row['cluster']}.{row['proc']}", []).append(row["event"])
    return found


def test_a_full_scheduler_disk_refuses_submissions_and_loses_nothing(
    start_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "home", 20) as home:
        cluster = start_cluster(home, {"w1": ("--slots", "2")}, ("--min-free-space", "2MB"))
        gate = tmp_path / "go"
        # Job 1.0 prints 1 MB (its stdout goes to the spool), the others a line.
        write(tmp_path / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
              '[ "$DFARM_PROC" = 0 ] && head -c 1048576 /dev/zero | tr "\\0" x && echo\n'
              "echo $DFARM_PROC\n", True)  # fmt: skip
        write(tmp_path / "job.sub", "executable = job.sh\nqueue 3\n")
        assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
        with client(cluster) as c:
            wait_until(lambda: state(c, "1.1") == "running", what="1.0 and 1.1 running")

        ballast = fill(home / "ballast")
        refused = cluster.run("dsub", "job.sub", cwd=tmp_path)
        assert refused.returncode != 0
        assert "scheduler disk full: " in refused.stderr, refused.stderr
        assert f"{home} has " in refused.stderr and " bytes free" in refused.stderr
        assert "Traceback" not in refused.stderr
        stat = cluster.run("dstat")
        assert stat.returncode == 0 and "scheduler disk full" in stat.stdout, stat.stdout
        assert "scheduler disk full" in cluster.log("scheduler")

        # The running jobs end while the disk is full: the one whose results fit in the
        # database completes; the other's cannot be kept, and it waits to run again,
        # as does the queued one.
        gate.touch()
        with client(cluster) as c:
            wait_until(lambda: state(c, "1.1") == "completed", what="1.1 completed")
            wait_until(lambda: state(c, "1.0") == "idle", what="1.0 back in the queue")
            assert state(c, "1.2") == "idle"

            ballast.unlink()  # room again: it resumes on its own
            jobs = c.wait(["1"], timeout=60)
            assert [(j.id, j.state, j.exit_code) for j in jobs] == [
                ("1.0", "completed", 0), ("1.1", "completed", 0), ("1.2", "completed", 0),
            ]  # fmt: skip
        assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
        assert (tmp_path / "1.0" / "stdout").stat().st_size == MiB + 3  # whole: x..x, 0
        again = cluster.run("dsub", "job.sub", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        with client(cluster) as c:
            assert all(j.state == "completed" for j in c.wait(["2"], timeout=60))
        assert "scheduler disk full" not in cluster.run("dstat").stdout
        cluster.stop(grace=5)
        # Nothing lost, nothing recorded twice, no trace of the refused cluster.
        events = events_of(home)
        assert sorted(events) == ["1.0", "1.1", "1.2", "2.0", "2.1", "2.2"]
        for job, seen in events.items():
            assert seen.count("submitted") == 1 and seen.count("terminated") == 1, (job, seen)
        assert events["1.0"].count("evicted") == 1, events["1.0"]


def test_a_full_worker_disk_never_completes_a_job(
    start_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with tmpfs(tmp_path / "work", 20) as work:
        work.chmod(0o711)  # jobs run as another account, in a sandbox below
        cluster = start_cluster(home, {}, ())
        cluster.add_worker("w1", "--work-dir", str(work), "--min-free-space", "1MB")
        cluster.wait_for_workers(1)
        # 30 MB of output on a 20 MB disk: the writes fail part way.
        write(tmp_path / "big.sh", "#!/bin/sh\nhead -c 31457280 /dev/zero > out\n", True)
        write(tmp_path / "big.sub", "executable = big.sh\nqueue\n")
        assert cluster.run("dsub", "big.sub", cwd=tmp_path).returncode == 0
        with client(cluster) as c:
            (job,) = c.wait(["1"], timeout=90)
            assert job.state == "held", job
            assert job.hold_reason.startswith("disk full on worker w1"), job.hold_reason
        listing = cluster.run("dq", "-l", "1.0")
        assert "disk full on worker w1" in listing.stdout, listing.stdout
        events = events_of(home)["1.0"]
        assert "terminated" not in events and events.count("evicted") == 2, events

        # Filled from outside: the worker reports itself full and takes no job.
        ballast = fill(work / "ballast")
        wait_until(lambda: "disk full" in cluster.run("dstat").stdout, what="w1 full")
        write(tmp_path / "small.sh", "#!/bin/sh\necho 42\n", True)
        write(tmp_path / "small.sub", "executable = small.sh\nqueue\n")
        assert cluster.run("dsub", "small.sub", cwd=tmp_path).returncode == 0
        with client(cluster) as c:
            assert state(c, "2.0") == "idle"
            ballast.unlink()
            (job,) = c.wait(["2"], timeout=60)
        assert (job.state, job.exit_code, job.num_starts) == ("completed", 0, 1)
        stat = json.loads(cluster.run("dstat", "--json").stdout)
        assert [w["state"] for w in stat] == ["idle"]
        assert "disk full: " in cluster.log("w1")


def test_a_scheduler_started_on_a_full_disk_serves_what_it_can(
    start_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "home", 20) as home:
        cluster = start_cluster(home, {}, ("--min-free-space", "2MB"))
        write(tmp_path / "job.sh", "#!/bin/sh\necho $DFARM_PROC\n", True)
        write(tmp_path / "job.sub", "executable = job.sh\nqueue 3\n")
        assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
        cluster.stop(grace=5)
        ballast = fill(home / "ballast")
        # Restarted on the same port: the access record written before stays valid.
        assert cluster.access is not None
        cluster._spawn("scheduler", [
            "scheduler", "--home", str(home), "--host", "127.0.0.1",
            "--port", str(cluster.access.port), "--log-file", "-", "--min-free-space", "2MB",
        ])  # fmt: skip
        wait_until(lambda: cluster.log("scheduler").count("scheduler listening") == 2)
        log = cluster.log("scheduler")
        assert "opened for the scheduler alone" in log and "cannot write" in log, log
        queue = cluster.run("dq", "--json")
        assert [job["state"] for job in json.loads(queue.stdout)] == ["idle"] * 3, queue
        refused = cluster.run("dsub", "job.sub", cwd=tmp_path)
        assert refused.returncode != 0 and "scheduler disk full: " in refused.stderr
        assert "scheduler disk full" in cluster.run("dstat").stdout

        ballast.unlink()
        wait_until(lambda: "is shared again" in cluster.log("scheduler"), what="shared again")
        users = cluster.run("dfarm", "user", "list", "--home", home)  # the database is shared
        assert users.returncode == 0, users.stderr
        assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
        cluster.add_worker("w1")
        with client(cluster) as c:
            jobs = c.wait(["1", "2"], timeout=60)
        assert [(j.id, j.state) for j in jobs] == [
            (f"{cluster_id}.{proc}", "completed") for cluster_id in (1, 2) for proc in range(3)
        ]
        cluster.stop(grace=5)
        events = events_of(home)
        assert all(seen.count("terminated") == 1 for seen in events.values()), events


def test_a_submission_the_database_has_no_room_for_leaves_nothing(
    start_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    # No free space kept: the disk is found full only when SQLite finds no room.
    with tmpfs(tmp_path / "home", 20) as home:
        cluster = start_cluster(home, {}, ("--min-free-space", "0"))
        write(tmp_path / "job.sh", "#!/bin/sh\necho $DFARM_PROC\n", True)
        write(tmp_path / "many.sub", "executable = job.sh\narguments = " + "x" * 500 +
              "\nqueue 5000\n")  # fmt: skip
        ballast = fill(home / "ballast")
        # Room for the cluster's reservation and its script in the spool, not its jobs.
        os.truncate(ballast, ballast.stat().st_size - 32768)
        refused = cluster.run("dsub", "many.sub", cwd=tmp_path)
        assert refused.returncode != 0, refused.stdout
        assert "scheduler disk full: " in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert "database or disk is full" in refused.stderr  # SQLite's, not the spool's
        with client(cluster) as c:
            # The parts queued before the one that found no room are removed with it.
            listed = c.jobs(states=["idle", "running", "held", "completed", "removed"])
            assert {j.state for j in listed} <= {"removed"}
        ballast.unlink()
        wait_until(lambda: "scheduler disk full" not in cluster.run("dstat").stdout)
        write(tmp_path / "one.sub", "executable = job.sh\nqueue\n")
        assert cluster.run("dsub", "one.sub", cwd=tmp_path).returncode == 0
        cluster.add_worker("w1")
        with client(cluster) as c:
            (job,) = c.wait(["2"], timeout=60)
            assert job.state == "completed"
            assert [j.id for j in c.jobs(states=["idle", "completed"])] == ["2.0"]
