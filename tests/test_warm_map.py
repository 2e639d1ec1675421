"""Warm interpreters (the default; ``--no-warm-map`` turns them off): a root worker
starts the jobs of a map as forks of the slot's launcher (already running as the
job's account, the map runner imported), on a real cluster; every other job starts
as before."""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from test_api import map_with_a_worker_killed

from control_node import Client
from control_node.local_cluster import worker_credential
from control_node.mapping import MapJobFailed

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="launchers, and so warm map jobs, are a root worker's"
)


def client_of(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def where_fn() -> Callable[[int], tuple[int, int, str, bool, str]]:
    """A function (sent by value) giving the item's square, its uid, the module its
    process was started with, whether the warm path is loaded, and its working
    directory."""

    def where(x: int) -> tuple[int, int, str, bool, str]:
        return (
            x * x,
            os.getuid(),
            sys.modules["__main__"].__spec__.name,
            "worker_node.warm_map" in sys.modules,
            os.getcwd(),
        )

    return where


def test_map_jobs_run_as_forks_of_the_launcher_by_default(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=2)
    with client_of(cluster) as client:
        found = client.map(where_fn(), range(8), chunk_size=1)
        assert [r[0] for r in found.values()] == [x * x for x in range(8)]
        assert all(r[1] != 0 for r in found.values())  # never root
        assert {(r[2], r[3]) for r in found.values()} == {("worker_node.launcher", True)}
        assert len({r[4] for r in found.values()}) >= 2  # each job in its own sandbox
        # An ordinary job of the same worker starts as before.
        write(tmp_path / "ps.sh", "#!/bin/sh\necho $$ started\n", executable=True)
        (job,) = client.submit({"executable": "ps.sh", "queue": 1}, cwd=str(tmp_path)).wait(60)
        assert job.state == "completed" and job.exit_code == 0


def test_an_exception_and_a_crash_fail_their_item_alone(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=2)

    def invert(x: int) -> float:
        return 1 / x

    def crash(x: int) -> int:
        if x == 3:
            os._exit(9)  # the job's process dies: the launcher must not
        return x

    with client_of(cluster) as client:
        with pytest.raises(ZeroDivisionError) as info:
            client.map(invert, [1, 0, 2], chunk_size=1)
        assert "return 1 / x" in "\n".join(info.value.__notes__)
        with pytest.raises(MapJobFailed, match="exit"):
            client.map(crash, range(5), chunk_size=1)
        assert dict(client.map(abs, range(-3, 3), chunk_size=1)) == {
            x: abs(x) for x in range(-3, 3)
        }


def test_with_no_warm_map_jobs_start_a_new_python(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--no-warm-map",))
    with client_of(cluster) as client:
        found = client.map(where_fn(), range(2), chunk_size=1)
    assert {(r[2], r[3]) for r in found.values()} == {("control_node.map_runner", False)}


def test_an_item_over_its_memory_fails_alone_in_a_kept_interpreter(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1)

    def hog(x: int) -> tuple[int, int]:
        if x == 2:
            block = b"x" * (300 * 2**20)  # written, so resident
            while block:  # until the worker's memory limit kills the job
                time.sleep(0.05)
        return x, os.getpid()

    with client_of(cluster) as client:
        found = client.map(
            hog, range(5), chunk_size=1, errors="keep", resources={"request_memory": "100MB"}
        )
        assert list(found.errors) == [2]
        assert isinstance(found.errors[2], MapJobFailed)
        assert "memory limit exceeded" in str(found.errors[2])
        assert {x: r[0] for x, r in found.items()} == {0: 0, 1: 1, 3: 3, 4: 4}
        before = {found[0][1], found[1][1]}
        after = {found[3][1], found[4][1]}
        assert len(before) == len(after) == 1 and before != after  # a new one after the kill
        assert dict(client.map(hog, [0, 3], chunk_size=1)) == {
            x: (x, next(iter(after))) for x in (0, 3)
        }


def test_an_item_over_its_memory_is_retried_per_max_retries_then_fails(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1)

    def hog(x: int) -> int:
        if x == 1:
            block = b"x" * (300 * 2**20)
            while block:
                time.sleep(0.05)
        return x

    with client_of(cluster) as client:
        found = client.map(
            hog, range(3), chunk_size=1, errors="keep",
            resources={"request_memory": "100MB", "max_retries": 1},
        )  # fmt: skip
        assert dict(found) == {0: 0, 2: 2} and list(found.errors) == [1]
        assert "memory limit exceeded" in str(found.errors[1])
        (failed,) = [s for s in found.stats if s.index == 1]
        (job,) = client.jobs([failed.job_id], states=[])
        # Run twice (the retry), then ended as failed: never held.
        assert failed.attempt == 2 and job.state == "completed" and job.exit_signal == 9


def test_a_lost_worker_s_items_run_again_elsewhere_once(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=2, scheduler_args=("--worker-timeout", "1"))
    found = map_with_a_worker_killed(cluster, tmp_path / "go", chunk_size=1)
    assert dict(found) == {x: x + 1 for x in range(6)}
    assert len(found.stats) == 6  # each item's result recorded once
    rerun = [s for s in found.stats if s.attempt == 2]
    assert rerun and {s.worker for s in rerun} == {"w2"}


def test_another_owner_s_map_runs_from_a_launcher_of_its_own_account(
    make_cluster: Callable[..., TestCluster],
) -> None:
    users = [pw for pw in pwd.getpwall() if 1000 <= pw.pw_uid < 65534]
    if not users:
        pytest.skip("no user account on this machine")
    cluster = make_cluster(workers=1)
    add = cluster.run("dfarm", "user", "add", users[0].pw_name, "--home", cluster.config.home)
    token = add.stdout.strip().splitlines()[-1]

    def who(x: int) -> tuple[int, int, str]:
        return os.getuid(), os.getppid(), sys.modules["__main__"].__spec__.name

    with client_of(cluster) as root_client:
        first = set(root_client.map(who, range(3), chunk_size=1).values())
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=token) as other:
        second = set(other.map(who, range(3), chunk_size=1).values())
    (root_uid, root_launcher, root_main), *_ = first
    (user_uid, user_launcher, user_main), *_ = second
    assert len(first) == len(second) == 1  # every job of a map: a fork of one launcher
    assert root_uid == pwd.getpwnam("nobody").pw_uid and user_uid == users[0].pw_uid
    assert root_launcher != user_launcher
    assert root_main == user_main == "worker_node.launcher"


def numpy_fn() -> Callable[[int], tuple[int, int, bool, int, float, float]]:
    """A function (sent by value) giving its process, whether numpy was imported
    before this call, how many calls its process made, and a draw of ``random``
    and of numpy's global generator (item 0 seeds both, fixed)."""

    def with_numpy(x: int, calls: list[int] = []) -> tuple[int, int, bool, int, float, float]:  # noqa: B006
        imported = "numpy" in sys.modules
        import random

        import numpy

        calls.append(x)
        if x == 0:
            random.seed(1234)
            numpy.random.seed(1234)
            random.random(), numpy.random.random()
        return x, os.getpid(), imported, len(calls), random.random(), numpy.random.random()

    return with_numpy


def test_a_warm_interpreter_runs_the_jobs_of_a_map_until_its_limit_of_items(
    make_cluster: Callable[..., TestCluster],
) -> None:
    pytest.importorskip("numpy")
    cluster = make_cluster(workers=1, worker_args=("--warm-map-items", "4"))
    with client_of(cluster) as client:
        found = client.map(numpy_fn(), range(10), chunk_size=1)
    by_pid: dict[int, list[tuple[int, int, bool, int, float, float]]] = {}
    for row in found.values():
        by_pid.setdefault(row[1], []).append(row)
    assert sorted(len(rows) for rows in by_pid.values()) == [2, 4, 4]  # recycled after 4
    for rows in by_pid.values():
        rows.sort(key=lambda row: row[3])
        assert [row[3] for row in rows] == list(range(1, len(rows) + 1))  # one process
        assert [row[2] for row in rows] == [False] + [True] * (len(rows) - 1)  # numpy once
    import random

    import numpy

    random.seed(1234)
    numpy.random.seed(1234)
    random.random(), numpy.random.random()
    seeded = (random.random(), numpy.random.random())
    after_zero = [row for row in found.values() if row[0] == 1]
    assert after_zero and (after_zero[0][4], after_zero[0][5]) != seeded  # reseeded per job
    assert len({row[4] for row in found.values()}) == 10


def test_a_crash_fails_its_item_alone_and_the_next_runs_in_a_new_interpreter(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1)

    def crash(x: int) -> tuple[int, int]:
        if x == 2:
            os._exit(9)
        return x, os.getpid()

    with client_of(cluster) as client:
        handle = client.map_async(crash, range(5), chunk_size=1)
        with pytest.raises(MapJobFailed, match="exit code 9"):
            client.map_results(handle.id, timeout=120)
        jobs = client.cluster_jobs(int(handle.id))
        assert {job.state for job in jobs} == {"completed"}
        assert sorted(job.exit_code or 0 for job in jobs) == [0, 0, 0, 0, 9]
        found = client.map(crash, [0, 1, 3], chunk_size=1)
    assert [x for x, _ in found.values()] == [0, 1, 3]
    assert len({pid for _, pid in found.values()}) == 1  # a new warm interpreter, kept


def test_a_crashed_item_is_retried_per_max_retries(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1)

    def crash_once(x: int) -> tuple[int, str]:
        if x == 2 and os.environ["DFARM_ATTEMPT"] == "1":
            os._exit(9)
        return x, os.environ["DFARM_ATTEMPT"]

    with client_of(cluster) as client:
        found = client.map(crash_once, range(4), chunk_size=1, resources={"max_retries": 1})
        assert dict(found) == {0: (0, "1"), 1: (1, "1"), 2: (2, "2"), 3: (3, "1")}
        assert [s.attempt for s in found.stats] == [1, 1, 2, 1]


def test_the_same_account_s_other_owner_never_gets_the_first_owner_s_interpreter(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1)
    add = cluster.run("dfarm", "user", "add", "nolocalaccount", "--home", cluster.config.home)
    token = add.stdout.strip().splitlines()[-1]

    def who(x: int) -> tuple[int, int]:
        return os.getuid(), os.getpid()

    with client_of(cluster) as root_client:
        first = set(root_client.map(who, range(3), chunk_size=1).values())
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=token) as other:
        second = set(other.map(who, range(3), chunk_size=1).values())
    with client_of(cluster) as root_client:
        third = set(root_client.map(who, range(3), chunk_size=1).values())
    assert len(first) == len(second) == len(third) == 1  # one warm interpreter each
    assert {uid for uid, _ in first | second} == {pwd.getpwnam("nobody").pw_uid}
    assert first != second and second != third  # same account, other owner: another one


def ended(pid: int) -> bool:
    """Whether process ``pid`` has exited (gone, or a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_a_warm_interpreter_serves_one_function(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=1)

    def pid_of(x: int) -> int:
        return os.getpid()

    def other_pid_of(x: int) -> tuple[int, int]:
        return x, os.getpid()

    with client_of(cluster) as client:
        (first,) = set(client.map(pid_of, range(3), chunk_size=1).values())
        (again,) = set(client.map(pid_of, range(3), chunk_size=1).values())
        assert again == first  # the same function: the same interpreter
        (other,) = {pid for _, pid in client.map(other_pid_of, range(3), chunk_size=1).values()}
        assert other != first and ended(first)  # another function: another interpreter


def test_a_warm_interpreter_ends_when_idle(make_cluster: Callable[..., TestCluster]) -> None:
    # Only the exit is awaited: with an idle time of 1 s, a loaded machine may recycle
    # the interpreter between two items too, which the test above must not see.
    cluster = make_cluster(workers=1, worker_args=("--warm-map-idle", "1"))

    def pid_of(x: int) -> int:
        return os.getpid()

    with client_of(cluster) as client:
        pids = set(client.map(pid_of, range(2), chunk_size=1).values())
        for pid in pids:
            wait_until(lambda pid=pid: ended(pid), what="the idle warm interpreter's exit")
        later = set(client.map(pid_of, range(1), chunk_size=1).values())
        assert later.isdisjoint(pids)  # the next item gets a new interpreter


def test_a_worker_that_is_not_root_runs_maps_warm_as_itself(
    make_cluster: Callable[..., TestCluster],
) -> None:
    python = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin"
    )
    if python is None:
        pytest.skip("no system Python of this version for a worker run by nobody")
    cluster = make_cluster(workers=0)
    nobody = pwd.getpwnam("nobody")
    packages = [str(Path(__file__).resolve().parent.parent), *site.getsitepackages()]
    work = Path(tempfile.mkdtemp(prefix="dfarm-nobody-"))
    try:
        credential = work / "worker.credential"
        shutil.copy(worker_credential(cluster.home, "wn"), credential)
        for path in (work, credential):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        fd = os.open(cluster.logs / "wn.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            cluster.processes["wn"] = subprocess.Popen(
                [python, "-m", "worker_node", "--scheduler",
                 f"127.0.0.1:{cluster.access.port}", "--credential-file", str(credential),
                 "--name", "wn", "--slots", "1", "--work-dir", str(work / "work")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, user=nobody.pw_uid, group=nobody.pw_gid,
                extra_groups=[], cwd=work,
                env={**cluster.env(), "HOME": str(work), "PYTHONPATH": os.pathsep.join(packages)},
            )  # fmt: skip
        cluster.wait_for_workers(1)

        def who(x: int) -> tuple[int, int, str]:
            return os.getuid(), os.getpid(), sys.modules["__main__"].__spec__.name

        with client_of(cluster) as client:
            found = set(client.map(who, range(6), chunk_size=1).values())
            (plain,) = client.submit({"executable": "/bin/true", "queue": 1}).wait(60)
        assert found == {(nobody.pw_uid, next(iter(found))[1], "worker_node.launcher")}
        assert plain.state == "completed" and plain.exit_code == 0  # started directly
    finally:
        cluster.stop(grace=5)
        shutil.rmtree(work, ignore_errors=True)
