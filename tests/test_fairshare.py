"""Fair share with real processes: a user with one job does not wait behind another
user's fifty, usage decays with the configured half-life, and ``dfarm users`` /
``dq --users`` show it. The queue's order itself is unit-tested at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from reference_matcher import pop_fitting

from control_node import Client
from scheduler.dispatch import Slots
from scheduler.fairshare import FairShareQueue
from scheduler.job_records import Job
from scheduler.protocol import JobSpec, JobState


def add_user(cluster: TestCluster, name: str) -> dict[str, str]:
    """A second user; returns the environment their commands run with."""
    added = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dfarm", "user", "--home",
         str(cluster.config.home), "add", name],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return cluster.env(DFARM_TOKEN=added.stdout.strip().splitlines()[-1])


def client(cluster: TestCluster, token: str | None = None) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=token or cluster.token)


def test_one_job_of_another_user_runs_before_the_rest_of_fifty(
    make_cluster, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, slots=1)
    bob_env = add_user(cluster, "bob")
    gate = tmp_path / "go"
    write(
        tmp_path / "a" / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n", True
    )
    write(tmp_path / "a" / "job.sub", "executable = job.sh\nqueue 50\n")
    write(tmp_path / "b" / "job.sh", "#!/bin/sh\necho bob\n", True)
    write(tmp_path / "b" / "job.sub", "executable = job.sh\nqueue\n")
    a = cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path / "a")
    assert a.returncode == 0, a.stderr
    a_cluster = a.stdout.strip()
    with client(cluster) as me:
        wait_until(lambda: me.jobs([f"{a_cluster}.0"])[0].state == "running", what="A's first")
    b = cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path / "b", env=bob_env)
    assert b.returncode == 0, b.stderr
    b_job = f"{b.stdout.strip()}.0"
    users = json.loads(cluster.run("dfarm", "users", "--json").stdout)
    by_name = {u["user"]: u for u in users}
    assert by_name["bob"]["idle"] == 1 and by_name["bob"]["rank"] == 1
    assert by_name[cluster.token.split(":")[0]]["idle"] == 49
    gate.touch()
    token = bob_env["DFARM_TOKEN"]
    with client(cluster, token) as bob:
        [done] = bob.wait([b_job], timeout=60)
    assert done.state == "completed"
    with client(cluster) as me:
        mine = me.jobs([a_cluster], states=[])
        started_before = [j.id for j in mine if j.start_time and j.start_time < done.start_time]
        assert started_before == [f"{a_cluster}.0"], started_before
        me.remove([a_cluster])
    table = cluster.run("dq", "--users")
    assert table.returncode == 0, table.stderr
    assert "bob" in table.stdout and "half-life of 24 h" in table.stdout


def test_the_configured_half_life_reaches_the_scheduler(make_cluster, tmp_path: Path) -> None:
    """How usage decays over time is checked with a fake clock in test_core_jobs.py;
    here, that ``--usage-halflife`` is the one the scheduler uses and reports."""
    cluster = make_cluster(
        workers=1, slots=2, worker_args=("--cpus", "2"), scheduler_args=("--usage-halflife", "3")
    )
    write(tmp_path / "job.sh", "#!/bin/sh\nsleep 1\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nrequest_cpus = 2\nqueue\n")
    result = cluster.run("dsub", "--wait", "--json", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with client(cluster) as me:
        first = me.users()
        [user] = first.users
        assert first.halflife == 3
        # Slot time is wall seconds x requested cpus: a bit over 2 cpu-seconds.
        assert 1.0 < user.effective_usage < 2 * 10


def test_half_life_must_be_positive(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scheduler", "--home", str(tmp_path), "--usage-halflife", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--usage-halflife must be greater than 0" in out.stderr
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- the queue


def job(owner: str, cluster: int, proc: int, **spec: object) -> Job:
    return Job(cluster=cluster, proc=proc, owner=owner, state=JobState.IDLE,
               spec=JobSpec(executable="x", **spec), submit_time=0.0)  # fmt: skip


def slot(cpus: int = 4, gpus: int = 0) -> Slots:
    return Slots(worker_id=1, name="w1", slots=99, cpus=cpus, memory_mb=1000, gpus=gpus,
                 disk_free_mb=1000)  # fmt: skip


def test_least_usage_first_then_priority_then_submit_order() -> None:
    q = FairShareQueue(halflife=100)
    q.load_usage("ann", 50.0, 0.0)
    for proc in range(3):
        q.push(job("ann", 1, proc))
    q.push(job("bob", 2, 0))
    q.push(job("bob", 2, 1, priority=5))
    q.push(job("bob", 3, 0, priority=5))
    order = [(j.owner, j.cluster, j.proc) for j in iter(lambda: pop_fitting(q, slot(), 0.0), None)]
    # bob has no usage: his jobs first, priority 5 first, then submit order.
    assert order == [("bob", 2, 1), ("bob", 3, 0), ("bob", 2, 0),
                     ("ann", 1, 0), ("ann", 1, 1), ("ann", 1, 2)]  # fmt: skip
    assert len(q) == 0


def test_running_jobs_count_as_they_run_and_usage_decays() -> None:
    q = FairShareQueue(halflife=10)
    running = job("ann", 1, 0, request_cpus=2)
    running.start_time = 100.0
    q.started(running)
    assert q.effective_usage("ann", 105.0) == pytest.approx(10.0)  # 5 s x 2 cpus
    q.stopped(running, 100.0, 110.0)
    assert q.effective_usage("ann", 110.0) == pytest.approx(20.0)
    assert q.effective_usage("ann", 120.0) == pytest.approx(10.0)  # one half-life later
    q.push(job("ann", 2, 0))
    q.push(job("bob", 3, 0))
    assert pop_fitting(q, slot(), 120.0).owner == "bob"


def test_a_job_that_does_not_fit_lets_the_next_user_through() -> None:
    q = FairShareQueue()
    q.push(job("ann", 1, 0, request_gpus=1))
    q.push(job("bob", 2, 0))
    picked = pop_fitting(q, slot(gpus=0), 0.0)
    assert picked.owner == "bob"
    assert pop_fitting(q, slot(gpus=0), 0.0) is None
    assert pop_fitting(q, slot(gpus=1), 0.0).owner == "ann"


def test_edited_priority_reorders_and_discard_is_final() -> None:
    q = FairShareQueue()
    a, b = job("ann", 1, 0), job("ann", 1, 1)
    q.push(a)
    q.push(b)
    q.discard(b)
    b.spec = JobSpec(executable="x", priority=9)
    q.push(b)
    q.discard(a)
    assert [pop_fitting(q, slot(), 0.0), pop_fitting(q, slot(), 0.0)] == [b, None]


def test_usage_survives_a_restart_and_running_jobs_count_again(tmp_path: Path) -> None:
    from scheduler.jobs import JobTable
    from scheduler.store import Store

    store = Store(tmp_path / "dfarm.db")
    table = JobTable(store, halflife=1e9)
    cluster = store.clusters.reserve_cluster("ann", 1.0)
    specs = [JobSpec(executable="x", request_cpus=2)] * 2
    first, second = table.submit(cluster, "ann", "a.sub", specs)
    table.assign([slot()])
    first.start_time = second.start_time = time.time() - 10  # ran ten seconds
    table.transition(first, JobState.COMPLETED, "terminated", exit_code=0)
    charged = table.queue.users["ann"].value
    assert 19.0 < charged < 25.0  # 10 s x 2 cpus
    store.save_job(second, "test")
    store.close()

    store = Store(tmp_path / "dfarm.db")
    try:
        again = JobTable(store, halflife=1e9)
        ann = again.queue.users["ann"]
        assert ann.value == pytest.approx(charged)
        assert (ann.running, ann.running_cpus) == (1, 2)  # the job still running
        assert again.queue.effective_usage("ann", time.time()) > charged + 19.0
    finally:
        store.close()
