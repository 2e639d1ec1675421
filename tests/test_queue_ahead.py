"""Short jobs queued on a worker behind a running one (scheduler.queue_ahead): a
1-slot worker still runs one job at a time, removed and drained queued jobs are
never lost nor run twice, and the slot accounting comes back to zero. The chain
bookkeeping itself is unit-tested at the end."""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sqlite3
from pathlib import Path

from conftest import TestCluster, wait_until, write

from control_node import Client
from scheduler.dispatch import Slots
from scheduler.job_records import Job
from scheduler.protocol import JobSpec, JobState
from scheduler.queue_ahead import QUEUE_DEPTH, RunTimes

#: Short jobs are queued behind a running one however slow this machine is: by
#: default a job is queued only if it should start within 0.25 s, which the jobs
#: here may not on a busy machine (then none would be queued).
ANY_WAIT = ("--queue-wait", "3600")


def client(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def traced(tmp_path: Path, count: int, gate: Path | None = None) -> None:
    """``count`` jobs that log their start and end to ``trace``; with ``gate``, every
    job but the first waits for it (the first ends at once, so the cluster is known
    to be short)."""
    wait = f'[ "$1" = 0 ] || while [ ! -e {gate} ]; do sleep 0.02; done\n' if gate else ""
    write(tmp_path / "job.sh", f"#!/bin/sh\necho start $1 >> {tmp_path}/trace\n{wait}"
          f"echo end $1 >> {tmp_path}/trace\n", True)  # fmt: skip
    write(tmp_path / "job.sub", f"executable = job.sh\narguments = $(Process)\nqueue {count}\n")


def one_at_a_time(trace: Path) -> list[str]:
    """The trace's jobs in order, checking that none started before the last ended."""
    lines = trace.read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    for (first, a), (second, b) in zip(events[::2], events[1::2], strict=True):
        assert (first, second, a) == ("start", "end", b), f"jobs overlap on one slot: {events}"
    return [job for what, job in events if what == "start"]


def slots_used(cluster: TestCluster) -> int:
    with client(cluster) as c:
        return sum(w.slots_used for w in c.workers())


def queue_behind_a_gate(cluster: TestCluster, tmp_path: Path, count: int) -> Path:
    """Submit ``count`` traced jobs: job 0 ends at once (the cluster is then known to
    be short), job 1 waits at the gate with jobs queued behind it. Returns the gate."""
    gate = tmp_path / "go"
    traced(tmp_path, count, gate)
    with client(cluster) as c:
        c.submit(tmp_path / "job.sub", cwd=str(tmp_path))
        wait_until(lambda: len(c.jobs(["1"], states=["running"])) > 2,
                   what="jobs queued behind 1.1")  # fmt: skip
    # Running for the scheduler is not yet started: wait for its process.
    trace = tmp_path / "trace"
    wait_until(lambda: "start 1\n" in trace.read_text(), what="job 1.1 to start")
    return gate


def test_short_jobs_are_queued_behind_running_ones_and_run_one_at_a_time(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, slots=1, scheduler_args=ANY_WAIT)
    traced(tmp_path, 60)
    with client(cluster) as c:
        jobs = c.submit(tmp_path / "job.sub", cwd=str(tmp_path)).wait(timeout=60)
    assert {(j.state, j.exit_code) for j in jobs} == {("completed", 0)}
    assert sorted(one_at_a_time(tmp_path / "trace"), key=int) == [str(i) for i in range(60)]
    with contextlib.closing(sqlite3.connect(cluster.config.db_path)) as db:
        queued = db.execute("SELECT COUNT(*) FROM job_events WHERE event='executing'"
                            " AND detail LIKE 'queued on worker w1%'").fetchone()[0]  # fmt: skip
        (usage,) = db.execute("SELECT value FROM usage WHERE user=?", (jobs[0].owner,)).fetchone()
    assert queued >= QUEUE_DEPTH
    # A queued job starts, and counts for fair share, when the one ahead of it ends:
    # the recorded runs of the one slot do not overlap, nor does the usage charged.
    jobs.sort(key=lambda j: j.start_time or 0)
    overlaps = [(a.id, b.id) for a, b in itertools.pairwise(jobs)
                if (b.start_time or 0) < (a.end_time or 0)]  # fmt: skip
    assert overlaps == []
    # (charged up to the commit of each end, a few µs after its end_time; charged
    # from the moment each was queued, the chains would count several times over)
    assert usage <= (jobs[-1].end_time or 0) - (jobs[0].start_time or 0) + 0.01
    wait_until(lambda: slots_used(cluster) == 0, what="the slot to be free")


def test_removing_queued_and_running_jobs_loses_and_repeats_nothing(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, slots=1, scheduler_args=ANY_WAIT)
    gate = queue_behind_a_gate(cluster, tmp_path, 12)
    with client(cluster) as c:
        queued = [j.id for j in c.jobs(["1"], states=["running"]) if j.id != "1.1"]
        assert c.remove([queued[1]]).changed == [queued[1]]  # a queued one
        assert c.remove(["1.1"]).changed == ["1.1"]  # the one running
        wait_until(lambda: "job 1.1: killed" in cluster.log("w1"))
        gate.touch()
        jobs = {j.id: j for j in c.wait(["1"], timeout=60)}
    removed = {queued[1], "1.1"}
    assert {i for i, j in jobs.items() if j.state == "removed"} == removed
    assert all(j.state == "completed" and j.num_starts == 1 for i, j in jobs.items()
               if i not in removed)  # fmt: skip
    ran = started(tmp_path / "trace")
    assert sorted(ran, key=int) == [str(i) for i in range(12) if f"1.{i}" != queued[1]]
    wait_until(lambda: slots_used(cluster) == 0, what="the slot to be free")


def started(trace: Path) -> list[str]:
    """The jobs that started, in order (a job killed while running never ended)."""
    lines = trace.read_text().split()
    return [job for what, job in zip(lines[::2], lines[1::2], strict=True) if what == "start"]


def test_a_drained_worker_gives_back_its_queued_jobs(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(
        workers=1, slots=1, worker_args=("--grace", "60"), scheduler_args=ANY_WAIT
    )
    gate = queue_behind_a_gate(cluster, tmp_path, 10)
    with client(cluster) as c:
        home = str(cluster.config.home)
        out = cluster.run("dfarm", "worker", "--drain", "w1", "--grace", "0.5", "--home", home)
        assert out.returncode == 0, out.stderr
        assert cluster.processes["w1"].wait(timeout=30) == 0
        assert {(j.id, j.state) for j in c.cluster_jobs(1)} == {
            ("1.0", "completed"),
            *((f"1.{i}", "idle") for i in range(1, 10)),
        }
        cluster.add_worker("w2")
        gate.touch()
        jobs = c.wait(["1"], timeout=60)
    assert {j.state for j in jobs} == {"completed"}
    assert {j.worker for j in jobs if j.id != "1.0"} == {"w2"}
    # 1.1 was killed at the gate when the grace period ended; the queued ones never ran on w1.
    ran = started(tmp_path / "trace")
    assert sorted(ran, key=int) == ["0", "1", "1", *map(str, range(2, 10))]


# ---------------------------------------------------------------------- units


def job(proc: int, cpus: int = 1) -> Job:
    return Job(cluster=1, proc=proc, owner="u", state=JobState.RUNNING, submit_time=0.0,
               spec=JobSpec(executable="x", request_cpus=cpus))  # fmt: skip


def test_a_chain_hands_its_resources_down_and_gives_them_back_at_its_end() -> None:
    slots = Slots(worker_id=1, name="w", slots=1, cpus=2, memory_mb=100, gpus=0, disk_free_mb=1)
    head, a, b, c = job(0, 2), job(1, 2), job(2, 2), job(3, 2)
    slots.take(head)
    for queued in (a, b, c):
        slots.queue_behind(head, queued)
    assert (slots.used_slots, slots.used_cpus) == (1, 2)
    assert slots.chain(head) == ("1.3", 3) and slots.chain(a) == ("1.1", 0)
    # A queued job removed: the one behind it waits for its leader instead.
    assert slots.release(b) is None
    assert slots.follower_of == {"1.0": "1.1", "1.1": "1.3"}
    assert slots.leader_of == {"1.1": "1.0", "1.3": "1.1"}
    assert slots.chain(head) == ("1.3", 2)
    # The running one ends: the next takes its place, resources and chain.
    assert slots.release(head) == "1.1"
    assert (slots.used_slots, slots.used_cpus) == (1, 2)
    assert slots.chain(a) == ("1.3", 1)
    # The last of a chain removed: the one before it is the last.
    d = job(4, 2)
    slots.queue_behind(a, d)
    assert slots.release(d) is None and slots.chain(a) == ("1.3", 1)
    assert slots.release(a) == "1.3" and slots.chain(c) == ("1.3", 0)
    assert slots.release(c) is None
    assert (slots.used_slots, slots.used_cpus) == (0, 0)
    assert (slots.leader_of, slots.follower_of, slots.chains) == ({}, {}, {})


def test_run_times_are_per_cluster_and_unknown_clusters_are_never_short() -> None:
    times = RunTimes()
    assert times.expected(7) == math.inf
    times.record(7, 1.0)
    times.record(7, 2.0)
    assert times.expected(7) == 1.2  # weighted towards recent runs
    for cluster in range(10_000):
        times.record(100 + cluster, 0.5)
    assert times.expected(7) == math.inf and times.expected(10_099) == 0.5


def test_queued_jobs_dropped_when_the_scheduler_dies_run_once_and_count_one_start(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster = make_cluster(workers=1, slots=1, scheduler_args=ANY_WAIT)
    gate = queue_behind_a_gate(cluster, tmp_path, 8)
    with client(cluster) as c:
        queued = len(c.jobs(["1"], states=["running"])) - 1  # behind 1.1, at the gate
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    wait_until(lambda: f"{queued} queued job(s) dropped" in cluster.log("w1"))
    cluster.start_scheduler()
    with client(cluster) as c:
        wait_until(lambda: len(c.jobs(["1"], states=["idle"])) == 6, what="the 6 requeued")
        gate.touch()
        jobs = c.wait(["1"], timeout=60)
    assert {(j.state, j.num_starts) for j in jobs} == {("completed", 1)}
    assert sorted(started(tmp_path / "trace"), key=int) == [str(i) for i in range(8)]
    with contextlib.closing(sqlite3.connect(cluster.config.db_path)) as db:
        (why,) = db.execute("SELECT detail FROM job_events WHERE cluster=1 AND proc=2"
                            " AND event='evicted'").fetchone()  # fmt: skip
    assert why == "queued on worker w1, which dropped it unstarted"
