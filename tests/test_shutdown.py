"""Graceful worker shutdown (SIGTERM, dfarm worker --drain), a lost worker that comes
back, and results kept for a limited time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node import Client
from worker_node.__main__ import defer_stop_signals
from worker_node.__main__ import run as run_worker
from worker_node.cgroups import _hierarchies
from worker_node.daemon import Worker
from worker_node.metrics import Sampler
from worker_node.worker_config import WorkerConfig


def gated(tmp_path: Path, count: int = 1) -> Path:
    gate = tmp_path / "go"
    write(tmp_path / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
          "echo ran as attempt $DFARM_ATTEMPT on $DFARM_JOB_ID\n", True)  # fmt: skip
    write(tmp_path / "job.sub", f"executable = job.sh\nqueue {count}\n")
    return gate


def jobs(cluster: TestCluster) -> dict[str, dict]:
    return {j["id"]: j for j in json.loads(cluster.run("dq", "--json", "--all").stdout)}


def client(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def test_sigterm_lets_running_jobs_finish_and_takes_no_new_ones(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--grace", "60"))
    gate = gated(tmp_path)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: jobs(cluster)["1.0"]["state"] == "running")
    cluster.processes["w1"].send_signal(signal.SIGTERM)
    wait_until(lambda: "worker w1 is draining" in cluster.log("scheduler"))
    (w1,) = json.loads(cluster.run("dstat", "--json").stdout)
    assert w1["state"] == "draining" and "draining" in cluster.run("dstat").stdout
    write(tmp_path / "two.sh", "#!/bin/sh\necho two\n", True)
    write(tmp_path / "two.sub", "executable = two.sh\nqueue\n")
    assert cluster.run("dsub", "two.sub", cwd=tmp_path).returncode == 0
    time.sleep(0.5)
    assert jobs(cluster)["2.0"]["state"] == "idle"  # not sent to the draining worker
    gate.touch()
    assert cluster.processes["w1"].wait(timeout=30) == 0
    cluster.add_worker("w2")
    with client(cluster) as c:
        first, second = c.wait(["1", "2"], timeout=60)
    assert (first.state, first.exit_code, first.worker, first.num_starts) == (
        "completed", 0, "w1", 1,
    )  # fmt: skip
    assert (second.state, second.worker) == ("completed", "w2")


def test_drain_from_the_scheduler_node_requeues_after_the_grace_period(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--grace", "60"))
    gate = gated(tmp_path)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: jobs(cluster)["1.0"]["state"] == "running")
    cluster.add_worker("w2")
    home = str(cluster.config.home)
    out = cluster.run("dfarm", "worker", "--drain", "nobody", "--home", home)
    assert out.returncode == 1 and "no worker named 'nobody' is connected" in out.stderr
    out = cluster.run("dfarm", "worker", "--drain", "w1", "--grace", "0.5", "--home", home)
    assert out.returncode == 0, out.stderr
    assert cluster.processes["w1"].wait(timeout=30) == 0
    wait_until(lambda: jobs(cluster)["1.0"]["worker"] == "w2")
    gate.touch()
    with client(cluster) as c:
        (job,) = c.wait(["1"], timeout=60)
    assert (job.state, job.worker, job.num_starts) == ("completed", "w2", 2)
    assert "worker w1 is draining: 0 running, 1 requeued" in cluster.log("scheduler")


@contextlib.contextmanager
def lost_until_rerun(cluster: TestCluster) -> Iterator[None]:
    """Worker w1 falls silent (stopped; its job runs on) until job 1.0 runs again on a
    new worker w2; w1 resumes when the block ends."""
    w1 = cluster.processes["w1"]
    w1.send_signal(signal.SIGSTOP)
    try:
        cluster.add_worker("w2")
        wait_until(lambda: jobs(cluster)["1.0"]["worker"] == "w2", timeout=30)
        yield
    finally:
        w1.send_signal(signal.SIGCONT)


def test_a_lost_worker_that_returns_cannot_overwrite_the_new_attempt(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=("--worker-timeout", "1.5"))
    gate = gated(tmp_path)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: jobs(cluster)["1.0"]["state"] == "running")
    with lost_until_rerun(cluster):
        pass
    wait_until(lambda: "job 1.0: killed (stale attempt)" in cluster.log("w1"), timeout=30)
    gate.touch()
    with client(cluster) as c:
        (job,) = c.wait(["1"], timeout=60)
    assert (job.state, job.worker, job.num_starts) == ("completed", "w2", 2)
    assert cluster.run("dfetch", "--per-job", "1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "1.0" / "stdout").read_text() == "ran as attempt 2 on 1.0\n"


def test_large_results_of_a_stale_attempt_never_replace_the_new_ones(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    """The job ends on both workers; the lost one, on the spool's file system, links
    its large output into the spool after the new attempt's result was taken."""
    cluster = make_cluster(workers=1, scheduler_args=("--worker-timeout", "1.5"))
    gate = tmp_path / "go"
    write(tmp_path / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
          "for i in $(seq 20000); do echo attempt $DFARM_ATTEMPT; done > big.out\n",
          True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_output_files = big.out\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: jobs(cluster)["1.0"]["state"] == "running")
    with lost_until_rerun(cluster):
        gate.touch()  # both runs of the job end; w1 cannot report while stopped
        with client(cluster) as c:
            (job,) = c.wait(["1"], timeout=60)
        assert (job.state, job.worker, job.num_starts) == ("completed", "w2", 2)
    job_dir = cluster.config.spool_dir / "1" / "0"
    wait_until(lambda: "result of stale attempt 1.0:1 discarded" in cluster.log("scheduler"),
               timeout=30)  # fmt: skip
    assert "files move by hard link" in cluster.log("w1")
    # No .attempt-1 left: removed once the unit that heard of it committed.
    wait_until(lambda: sorted(p.name for p in job_dir.iterdir()) == ["outputs"], timeout=30)
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
    assert (tmp_path / "1.0" / "big.out").read_text() == "attempt 2\n" * 20000


def test_results_are_cleaned_after_the_retention_time(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    days = str(2 / 86400)  # two seconds
    cluster = make_cluster(workers=1, scheduler_args=("--keep-results", days))
    write(tmp_path / "big.sh", "#!/bin/sh\nhead -c 300000 /dev/zero > big.out\necho hi\n", True)
    write(tmp_path / "big.sub", "executable = big.sh\nqueue\n")
    assert cluster.run("dsub", "big.sub", cwd=tmp_path).returncode == 0
    with client(cluster) as c:
        c.wait(["1"], timeout=60)
    spool = cluster.config.home / "spool" / "1"
    assert (spool / "0" / "outputs" / "big.out").exists()
    stat = cluster.run("dstat")
    assert "spool: 29" in stat.stdout and "results kept 2.31481e-05 day(s)" in stat.stdout
    wait_until(lambda: not spool.exists(), timeout=30)
    out = cluster.run("dfetch", "1", cwd=tmp_path)
    assert out.returncode == 1 and "the results of 1.0 were cleaned" in out.stderr
    history = json.loads(cluster.run("dhistory", "--json").stdout)
    assert [(j["id"], j["exit_code"]) for j in history] == [("1.0", 0)]


def test_a_restarted_worker_kills_what_its_killed_run_left(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=("--worker-timeout", "1.5"))
    pids = tmp_path / "pids"
    write(tmp_path / "job.sh", f"#!/bin/sh\nsleep 300 &\necho $$ $! >> {pids}\nwait\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: pids.exists() and pids.read_text().strip())
    left = [int(pid) for pid in pids.read_text().split()]
    cluster.expected_exits.add("w1")
    cgroups = worker_cgroups(cluster.processes["w1"].pid)
    cluster.processes["w1"].send_signal(signal.SIGKILL)
    cluster.processes["w1"].wait()
    assert all(alive(pid) for pid in left)  # kill -9 of a worker does not reach its jobs
    cluster.add_worker("w1")
    cluster.wait_for_workers(2)  # it registered again, so it looked for leftovers before
    wait_until(lambda: not any(alive(pid) for pid in left), what="the job's processes to die")
    # Where the worker ran its jobs in a cgroup, any worker that started on this machine
    # since (another test's) may have removed that cgroup of a dead worker, and the
    # job's processes in it, before this one looked for them.
    if not (cgroups and not any(c.exists() for c in cgroups)):
        assert "killed 1 job(s) left running by an earlier run" in cluster.log("w1")
    with client(cluster) as c:
        assert c.remove(["1"]).changed == ["1.0"]


def worker_cgroups(pid: int) -> list[Path]:
    """The cgroup folders the worker ``pid`` made for its jobs' launchers (none where
    it made none)."""
    return [found for base, _ in _hierarchies() for found in base.glob(f"dfarm-*-{pid}")]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_that_stops_cleanly_logs_no_warning(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=2, worker_args=("--grace", "60"))
    cluster.processes["w1"].send_signal(signal.SIGINT)  # stop at once
    cluster.processes["w2"].send_signal(signal.SIGTERM)  # drain, nothing running
    for name in ("w1", "w2"):
        assert cluster.processes[name].wait(timeout=30) == 0
        log = cluster.log(name)
        assert f"worker {name} stopped" in log and "disconnected from the scheduler" in log
        assert "unreachable" not in log and " WARNING " not in log, log


def test_a_worker_stopped_while_it_starts_stops_cleanly(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    # SIGINT (or SIGTERM) before the worker's loop takes it over, as when a worker is
    # stopped at once after its start: it used to raise KeyboardInterrupt wherever the
    # worker was, inside asyncio's loop set-up even, leaving tracebacks in the log.
    listener = socket.create_server(("127.0.0.1", 0))  # a scheduler it must not dial
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    config = WorkerConfig(
        host="127.0.0.1", port=listener.getsockname()[1], secret=b"s", name="w1",
        work_dir=tmp_path / "w1", slots=1, cpus=1, memory_mb=100, gpus=0,
    )  # fmt: skip
    try:
        received = defer_stop_signals()
        signal.raise_signal(signal.SIGINT)
        worker = Worker(config, Sampler(tmp_path, gpus=[]))
        with caplog.at_level(logging.INFO, logger="worker_node"):
            asyncio.run(asyncio.wait_for(run_worker(worker, received), 60))
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # it never connected
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        listener.close()
    assert received == [signal.SIGINT]
    assert "stopping: a signal came while the worker started" in caplog.text
    assert "worker w1 stopped" in caplog.text
