"""The scheduler's CPU time per job, with simulated workers that run no processes.

    .venv/bin/python bench/scheduler_cpu.py [--jobs 10000] [--workers 20] [--slots 8] [--runs 3]
                                            [--client {updates,await,none}]

Starts a real scheduler process (``LocalCluster`` with no workers) in a temporary
directory and submits one cluster of N procs of a tiny script through the real
client (parse, upload once, ``SubmitJobs``). Then W simulated workers, all in one
asyncio loop of this process, connect over TCP with the real handshake, register
S slots each and answer every ``RunJob`` at once with ``JobFinished(exit_code=0)``:
no FTP, no process. Meanwhile a client waits for the jobs (``Client.wait``) with a
progress display, so it is sent each job's updates (``--client updates``, the
default); or without one, so it is told once that the cluster is done and then
reads the records (``--client await``, as ``dsub --wait`` in a script does); or
no client waits (``--client none``) and the run stops at the last acknowledged
``JobFinished``.

It measures the scheduler process's CPU time (user + system, every thread, from
``psutil``), with nothing subtracted:

* submit: from the start of the submit until ``SubmitJobs`` returns (no worker yet);
* dispatch+completion: from connecting the workers until every job is acknowledged
  finished (its state durable in SQLite) and the client saw them all completed;
* total: from the start of the submit to the end (also the waiting client's setup).

Checks that every job ended ``completed`` with exit code 0 and was dispatched
exactly once. Each run uses a fresh scheduler; prints medians and min-max spread.
The issue's target: total CPU under 250 microseconds per job.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node.client import Client  # noqa: E402
from control_node.local_cluster import LocalCluster, local_user_token  # noqa: E402
from scheduler import protocol as p  # noqa: E402
from scheduler.config import SchedulerConfig  # noqa: E402

METRICS = p.WorkerMetrics(
    cores=64, threads=64, memory_total_mb=1 << 20, memory_available_mb=1 << 20,
    disk_total_mb=1 << 24, disk_free_mb=1 << 24, load_avg=[0.0, 0.0, 0.0], hostname="sim",
)  # fmt: skip


class FakeWorkers:
    """W simulated workers speaking the real protocol on one event loop."""

    def __init__(self, port: int, secret: bytes, jobs: int, slots: int):
        self.port, self.secret, self.jobs, self.slots = port, secret, jobs, slots
        self.runs: collections.Counter[str] = collections.Counter()
        self.acked = 0
        self._ids = itertools.count(1)
        self._pending: set[int] = set()
        self._done = asyncio.Event()

    async def run(self, workers: int, timeout: float) -> None:
        """Connect the workers; return once every job's result is acknowledged."""
        tasks = [asyncio.create_task(self._worker(f"sim-{i}")) for i in range(workers)]
        done = asyncio.create_task(self._done.wait())
        try:
            finished, _ = await asyncio.wait(
                [done, *tasks], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if done not in finished:
                for task in finished:
                    task.result()  # a worker failed: raise its error
                raise TimeoutError(f"{self.acked} of {self.jobs} jobs acknowledged in {timeout} s")
        finally:
            for task in [done, *tasks]:
                task.cancel()
            await asyncio.gather(done, *tasks, return_exceptions=True)

    async def _worker(self, name: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        heartbeat: asyncio.Task[None] | None = None
        try:
            nonce = p.new_nonce()
            hello = p.Hello(role="worker", version=p.PROTOCOL_VERSION, name=name, nonce=nonce)
            await p.write_message(writer, hello)
            challenge = await p.read_message(reader)
            await p.write_message(writer, p.answer_challenge(self.secret, hello, challenge))
            assert isinstance(challenge, p.Challenge)
            p.verify_welcome(self.secret, hello, challenge, await p.read_message(reader))
            s = self.slots
            register = p.Register(id=0, slots=s, cpus=s, memory_mb=1 << 20, gpus=0, metrics=METRICS)
            await p.write_message(writer, register)
            registered = await p.read_message(reader)
            assert isinstance(registered, p.Registered), registered
            heartbeat = asyncio.create_task(self._heartbeat(writer, registered.heartbeat_interval))
            while True:
                message = await p.read_message(reader)
                if isinstance(message, p.RunJob):
                    self.runs[message.job_id] += 1
                    request = next(self._ids)
                    self._pending.add(request)
                    writer.write(p.encode(p.JobFinished(
                        id=request, job_id=message.job_id, attempt=message.attempt,
                        exit_code=0, wall_time=0.0, cpu_time=0.0,
                    )))  # fmt: skip
                elif isinstance(message, p.Ok) and message.id in self._pending:
                    self._pending.discard(message.id)
                    self.acked += 1
                    if self.acked >= self.jobs:
                        self._done.set()
                elif isinstance(message, p.Error):
                    raise RuntimeError(f"{name}: scheduler error: {message.message}")
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            writer.close()

    async def _heartbeat(self, writer: asyncio.StreamWriter, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            writer.write(p.encode(p.Heartbeat(metrics=METRICS)))


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


#: What waits for the jobs: a client sent each job's updates, one told when the
#: cluster is done, or none.
CLIENTS = ("updates", "await", "none")


def _one_run(root: Path, jobs: int, workers: int, slots: int, waiting: str) -> dict[str, float]:
    cluster = LocalCluster(root / "home", workers=0, slots=1)
    cluster.home.mkdir(parents=True, exist_ok=True)
    cluster.logs.mkdir(exist_ok=True)
    cluster.token = local_user_token(cluster.home)
    try:
        access = cluster.start_scheduler("--allow-pool-secret")  # for the simulated workers
        sched = psutil.Process(cluster.processes["scheduler"].pid)
        secret = p.password_key(p.read_secret(SchedulerConfig(home=cluster.home).secret_path))
        timeout = 120.0 + jobs / 50
        with Client(scheduler=f"127.0.0.1:{access.port}", token=cluster.token) as client:
            sys0, cpu0, wall0 = sched.cpu_times().system, _cpu(sched), time.perf_counter()
            sub = client.submit(root / "job.sub", cwd=str(root))
            cpu1, wall1 = _cpu(sched), time.perf_counter()
            assert len(sub.job_ids) == jobs, f"{len(sub.job_ids)} of {jobs} jobs queued"
            watching, failure = threading.Event(), []

            # An awaiting client told too late is told at once: nothing to wait for.
            if waiting == "await":
                watching.set()

            def wait() -> None:
                # By cluster id, as Cluster.wait does.
                show = (lambda _: watching.set()) if waiting == "updates" else None
                try:
                    done = client.wait([str(sub.id)], timeout, on_update=show)
                    assert len(done) == jobs, f"the client saw {len(done)} of {jobs} jobs"
                    bad = [j.id for j in done if j.state != "completed"]
                    assert not bad, f"the client saw jobs not completed: {bad[:5]}"
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failure.append(exc)
                    watching.set()

            waiter = threading.Thread(target=wait, daemon=True)
            watch = waiting != "none"
            if watch:
                waiter.start()
                watching.wait(timeout)
            cpu2, wall2 = _cpu(sched), time.perf_counter()
            sim = FakeWorkers(access.port, secret, jobs, slots)
            asyncio.run(sim.run(workers, timeout))
            if watch:
                waiter.join(timeout)
                assert not waiter.is_alive() and not failure, f"waiting failed: {failure}"
            sys3, cpu3, wall3 = sched.cpu_times().system, _cpu(sched), time.perf_counter()
            records = client.jobs([str(sub.id)], states=[])
        assert len(records) == jobs, f"{len(records)} of {jobs} jobs in the queue"
        bad = [r.id for r in records if r.state != "completed" or r.exit_code != 0]
        assert not bad, f"jobs not completed with exit code 0: {bad[:5]}"
        twice = [j for j, n in sim.runs.items() if n != 1]
        assert len(sim.runs) == jobs and not twice, f"not dispatched exactly once: {twice[:5]}"
    finally:
        cluster.stop()
    return {
        "submit_cpu_us": (cpu1 - cpu0) / jobs * 1e6,
        "dispatch_cpu_us": (cpu3 - cpu2) / jobs * 1e6,
        "total_cpu_us": (cpu3 - cpu0) / jobs * 1e6,
        "total_system_cpu_us": (sys3 - sys0) / jobs * 1e6,
        "total_cpu_s": cpu3 - cpu0,
        "wall_s": wall3 - wall0,
        "submit_wall_s": wall1 - wall0,
        "dispatch_wall_s": wall3 - wall2,
        "jobs_per_s": jobs / (wall3 - wall0),
        "dispatch_jobs_per_s": jobs / (wall3 - wall2),
    }


def measure(
    jobs: int = 10000, workers: int = 20, slots: int = 8, *, waiting: str = "updates"
) -> dict[str, float]:
    """One run on a fresh scheduler: CPU microseconds per job by phase, wall rates."""
    with tempfile.TemporaryDirectory(prefix="dfarm-cpu-") as tmp:
        root = Path(tmp)
        (root / "job.sh").write_text("#!/bin/sh\nexit 0\n")
        (root / "job.sh").chmod(0o755)
        (root / "job.sub").write_text(f"executable = job.sh\nqueue {jobs}\n")
        return _one_run(root, jobs, workers, slots, waiting)


ROWS = [
    ("submit CPU µs/job", "submit_cpu_us"),
    ("dispatch+completion CPU µs/job", "dispatch_cpu_us"),
    ("total CPU µs/job", "total_cpu_us"),
    ("  of which system CPU µs/job", "total_system_cpu_us"),
    ("wall jobs/s, submit to done", "jobs_per_s"),
    ("wall jobs/s, dispatch+completion", "dispatch_jobs_per_s"),
]


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--client", choices=CLIENTS, default="updates",
        help="a client waiting with each job's updates, told once the cluster is done, or none",
    )  # fmt: skip
    args = parser.parse_args()
    runs = [
        measure(args.jobs, args.workers, args.slots, waiting=args.client) for _ in range(args.runs)
    ]
    col = {key: [r[key] for r in runs] for key in runs[0]}
    rows = [
        ("jobs", args.jobs, ""),
        ("workers x slots", f"{args.workers} x {args.slots}", ""),
        *((label, f"{statistics.median(col[key]):.0f}", _spread(col[key])) for label, key in ROWS),
    ]
    watch = {
        "updates": "a client waiting on each job's updates",
        "await": "a client told once the cluster is done",
        "none": "no client waiting",
    }[args.client]
    print(f"scheduler process CPU, median of {args.runs} runs (fresh scheduler each), {watch}")
    print(tabulate(rows, headers=("", "median", "min-max"), disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
