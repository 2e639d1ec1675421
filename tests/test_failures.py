"""Nothing is lost when a worker or the scheduler dies mid-job (real processes, kill -9)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import TestCluster, wait_until, write

from control_node import Client
from scheduler import protocol as p
from worker_node.runner import Attempt


def gated_job(tmp_path: Path) -> Path:
    """A job that waits for a gate file, then says where it ran."""
    gate = tmp_path / "go"
    write(tmp_path / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
          "echo ran as attempt $DFARM_ATTEMPT\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    return gate


def running_on(cluster: TestCluster) -> str | None:
    jobs = json.loads(cluster.run("dq", "--json").stdout)
    return jobs[0]["worker"] if jobs and jobs[0]["state"] == "running" else None


def test_a_job_on_a_lost_worker_runs_elsewhere(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, scheduler_args=("--worker-timeout", "2"))
    gate = gated_job(tmp_path)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    assert wait_until(lambda: running_on(cluster)) == "w1"
    cluster.expected_exits.add("w1")
    cluster.processes["w1"].send_signal(signal.SIGKILL)
    cluster.processes["w1"].wait()
    cluster.add_worker("w2")
    gate.touch()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=60)
    assert (job.state, job.exit_code, job.worker, job.num_starts) == ("completed", 0, "w2", 2)
    assert cluster.run("dfetch", "--per-job", "1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "1.0" / "stdout").read_text() == "ran as attempt 2\n"


def test_a_running_job_survives_a_scheduler_kill(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    gate = gated_job(tmp_path)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    assert wait_until(lambda: running_on(cluster)) == "w1"
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    gate.touch()  # the job ends while the scheduler is down; its worker keeps the result
    cluster.start_scheduler()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=60)
    assert (job.state, job.exit_code, job.worker, job.num_starts) == ("completed", 0, "w1", 1)
    assert cluster.run("dfetch", "--per-job", "1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "1.0" / "stdout").read_text() == "ran as attempt 1\n"
    assert "still runs job 1.0: adopted" in cluster.log("scheduler")


def test_dwait_waits_through_a_scheduler_restart(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, scheduler_args=("--log-level", "DEBUG"))
    gate = gated_job(tmp_path)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    assert wait_until(lambda: running_on(cluster)) == "w1"
    with subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dwait", "--per-job", "1", "--timeout", "120"],
        cwd=tmp_path, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    ) as waiter:  # fmt: skip
        # Kill the scheduler only once dwait is connected (and past its handshake).
        port = cluster.access.port
        ours = wait_until(lambda: [
            c.laddr.port for c in psutil.Process(waiter.pid).net_connections()
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        ], what="dwait to connect")  # fmt: skip
        welcomed = re.compile(rf"authenticated \(.*\) from \S+:{ours[0]}\b")
        wait_until(lambda: welcomed.search(cluster.log("scheduler")), what="dwait's handshake")
        cluster.processes["scheduler"].send_signal(signal.SIGKILL)
        cluster.processes["scheduler"].wait()
        time.sleep(1)
        cluster.start_scheduler()
        gate.touch()
        out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert "trying again" in err and "1.0: exit code 0" in out
    assert (tmp_path / "1.0" / "stdout").read_text() == "ran as attempt 1\n"


@pytest.mark.parametrize("ends", ["after the restart", "while the scheduler is down"])
def test_large_results_of_a_worker_over_ftp_survive_a_scheduler_kill(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    ends: str,
) -> None:
    # Results over the inline limit go up by FTP, with a grant the killed scheduler
    # took with it: the restarted one gives a new grant when it takes the job back.
    cluster = make_cluster(workers=1, worker_args=("--always-ftp",))
    gate = gated_job(tmp_path)
    size = p.INLINE_LIMIT * 3
    write(tmp_path / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
          f"head -c {size} /dev/zero | tr '\\0' x > big.out\necho done\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_output_files = big.out\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    assert wait_until(lambda: running_on(cluster)) == "w1"
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    if ends == "while the scheduler is down":
        gate.touch()
        wait_until(lambda: "files wait for it" in cluster.log("w1"), what="the upload to wait")
    cluster.start_scheduler()
    wait_until(lambda: "still runs job 1.0: adopted" in cluster.log("scheduler"))
    gate.touch()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=60)
    assert (job.state, job.exit_code, job.hold_reason, job.num_starts) == (
        "completed", 0, None, 1
    )  # fmt: skip
    assert cluster.run("dfetch", "--per-job", "1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "1.0" / "big.out").read_bytes() == b"x" * size


def grant_wait() -> tuple[Attempt, p.FtpGrant]:
    grant = p.FtpGrant(host="127.0.0.1", port=1, user="u", password="pw")
    spec = p.JobSpec(executable="x")
    return Attempt(msg=p.RunJob(job_id="1.0", attempt=1, owner="a", spec=spec, ftp=grant)), grant


def later(action) -> threading.Thread:  # noqa: ANN001
    thread = threading.Thread(target=lambda: (time.sleep(0.1), action()))
    thread.start()
    return thread


def test_a_failed_transfer_waits_for_a_new_grant_only_when_the_scheduler_was_lost() -> None:
    # Connected, nothing changes: the failure is the transfer's own, after the settle time.
    attempt, grant = grant_wait()
    assert attempt.await_new_grant(grant, settle=0.05) is False
    # The connection drops (within the settle time), then a new grant comes: try again.
    attempt, grant = grant_wait()
    newer = p.FtpGrant(host="127.0.0.1", port=2, user="v", password="pw")
    attempt.connection_lost()
    thread = later(lambda: attempt.new_grant(newer))
    assert attempt.await_new_grant(grant, settle=5) is True
    thread.join()
    assert (attempt.ftp, attempt.connected) == (newer, True)
    # Lost, and killed rather than taken back (the job went elsewhere): give up.
    attempt, grant = grant_wait()
    attempt.connection_lost()
    thread = later(lambda: attempt.kill("stale attempt"))
    assert attempt.await_new_grant(grant, settle=5) is False
    thread.join()


@pytest.mark.slow
def test_200_jobs_survive_a_scheduler_kill_and_none_runs_twice(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=2, slots=4, scheduler_args=("--worker-timeout", "5"))
    markers = tmp_path / "markers"
    write(tmp_path / "job.sh", f"#!/bin/sh\nsleep 0.1\necho $DFARM_JOB_ID >> {markers}\n"
          "echo marker $DFARM_JOB_ID\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\nqueue 200\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: markers.exists() and len(markers.read_text().split()) >= 40, timeout=120)
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    time.sleep(1)  # jobs finish while the scheduler is down
    cluster.start_scheduler("--worker-timeout", "5")
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        jobs = client.wait(["1"], timeout=300)
        fetched = client.fetch(["1"], dest=tmp_path / "results")
    assert len(jobs) == 200
    bad = [
        (j.id, j.state, j.exit_code, j.num_starts)
        for j in jobs
        if (j.state, j.exit_code, j.num_starts) != ("completed", 0, 1)
    ]
    assert not bad, bad
    ends = markers.read_text().split()
    assert sorted(ends) == sorted(f"1.{i}" for i in range(200))  # each ran once
    assert all(f.stdout_text() == f"marker {f.job.id}\n" for f in fetched)
    for job_id in ("1.0", "1.199"):  # each result recorded once
        assert client_events(cluster, job_id).count("terminated") == 1


def client_events(cluster: TestCluster, job_id: str) -> list[str]:
    """The events of a job, read from the scheduler's database."""
    cluster_id, proc = job_id.split(".")
    db = sqlite3.connect(cluster.config.db_path)
    try:
        rows = db.execute(
            "SELECT event FROM job_events WHERE cluster=? AND proc=? ORDER BY seq",
            (int(cluster_id), int(proc)),
        ).fetchall()
    finally:
        db.close()
    return [row[0] for row in rows]
