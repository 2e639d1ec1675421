"""The scheduler's CPU time per job, with simulated workers that run no processes.

    .venv/bin/python bench/scheduler_cpu.py [--jobs 10000] [--configs 20x8,1000x16] [--runs 3]
                                            [--client {updates,await,none}] [--profile DIR]

Starts a real scheduler process (``LocalCluster`` with no workers) in a
temporary directory and submits one cluster of N procs of a tiny script through
the real client (parse, upload once, ``SubmitJobs``). Then W simulated workers,
all in one asyncio loop of this process, connect over TCP with the real
handshake (by the pool secret: the scheduler runs with ``--allow-pool-secret``),
register S slots each and, once all W have registered, answer every ``RunJob``
at once with ``JobFinished(exit_code=0)``: no FTP, no process. Meanwhile a
client waits for the jobs (``Client.wait``) with a progress display, so it is
sent each job's updates (``--client updates``, the default); or without one, so
it is told once that the cluster is done and then reads the records (``--client
await``, as ``dsub --wait`` in a script does); or no client waits (``--client
none``) and the run stops at the last acknowledged ``JobFinished``.

It measures the scheduler process's CPU time (user + system, every thread, from
``psutil``), with nothing subtracted:

* submit: from the start of the submit until ``SubmitJobs`` returns (no worker yet);
* dispatch+completion: from connecting the workers until every job is acknowledged
  finished (its state durable in SQLite) and the client saw them all completed;
* total: from the start of the submit to the end (also the waiting client's setup).

Checks that every job ended ``completed`` with exit code 0 and was dispatched
exactly once. Each run uses a fresh scheduler. ``--configs`` names one or more
pools of W workers of S slots (``WxS``, default ``20x8``); the runs alternate
between them (run 1 of each, then run 2 of each, ...), so that a slow spell of
a shared machine hits every pool alike. One row per pool: medians and the
min-max spread of the total, and the ratio of its median total (and of its
dispatch+completion) to the first pool's, and the wall rate of
dispatch+completion. With 1000x16, 16,000 slots take the
first 16,000 jobs as the workers register; every later job goes to a slot
freed by a completion, so 100,000 jobs mostly measure the dispatch of freed
slots. The dispatch+completion phase includes the pool's handshakes and
registrations, and the heartbeats its workers send while the jobs run.

``--profile DIR`` runs the scheduler under ``cProfile`` (timed by its CPU time) and writes
``DIR/scheduler-WxS-N.prof`` for run N of each pool (read it with
``python -m pstats``); the profiler slows the scheduler several times, so its
CPU figures are not comparable with those of a run without it.

The waiting client reads the cluster's records a page at a time (each page
within a frame), whatever the number of jobs; the pools compare with
``--client none``, as ``make bench`` runs them.

Targets (``make bench``): total CPU under 250 microseconds per job for 10,000
jobs on 20x8; for 100,000 jobs, at most 200 with 20x8 and 1000x16 alike, the
1000x16 figure within 10% of the 20x8 one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import statistics
import subprocess
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
    """W simulated workers speaking the real protocol on one event loop. Each holds
    the jobs it is sent until all W have registered, then answers every job at once:
    the whole pool takes part from the first completion on (a thousand handshakes
    take seconds, and without the wait the first workers would finish many jobs
    before the last one registered)."""

    def __init__(self, port: int, secret: bytes, jobs: int, slots: int):
        self.port, self.secret, self.jobs, self.slots = port, secret, jobs, slots
        self.runs: collections.Counter[str] = collections.Counter()
        self.acked = 0
        self.registered = 0
        self._workers = 0
        self._ids = itertools.count(1)
        self._pending: set[int] = set()
        self._done = asyncio.Event()
        self._everyone = asyncio.Event()

    async def run(self, workers: int, timeout: float) -> None:
        """Connect the workers; return once every job's result is acknowledged."""
        self._workers = workers
        tasks = [asyncio.create_task(self._worker(f"sim-{i}")) for i in range(workers)]
        done = asyncio.create_task(self._done.wait())
        try:
            finished, _ = await asyncio.wait(
                [done, *tasks], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if done not in finished:
                for task in finished:
                    task.result()  # a worker failed: raise its error
                raise TimeoutError(
                    f"{self.acked} of {self.jobs} jobs acknowledged in {timeout} s,"
                    f" {self.registered} of {workers} workers registered"
                )
        finally:
            for task in [done, *tasks]:
                task.cancel()
            await asyncio.gather(done, *tasks, return_exceptions=True)

    async def _worker(self, name: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        heartbeat: asyncio.Task[None] | None = None
        release: asyncio.Task[None] | None = None
        held: list[p.RunJob] = []
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
            release = asyncio.create_task(self._release(writer, held))
            self.registered += 1
            if self.registered == self._workers:
                self._everyone.set()
            while True:
                message = await p.read_message(reader)
                if isinstance(message, p.RunJob):
                    self.runs[message.job_id] += 1
                    if held or not self._everyone.is_set():
                        held.append(message)
                    else:
                        self._finish(writer, message)
                elif isinstance(message, p.Ok) and message.id in self._pending:
                    self._pending.discard(message.id)
                    self.acked += 1
                    if self.acked >= self.jobs:
                        self._done.set()
                elif isinstance(message, p.Error):
                    raise RuntimeError(f"{name}: scheduler error: {message.message}")
        finally:
            for task in (heartbeat, release):
                if task is not None:
                    task.cancel()
            writer.close()

    def _finish(self, writer: asyncio.StreamWriter, run: p.RunJob) -> None:
        """Report ``run`` finished with exit code 0."""
        request = next(self._ids)
        self._pending.add(request)
        writer.write(p.encode(p.JobFinished(
            id=request, job_id=run.job_id, attempt=run.attempt,
            exit_code=0, wall_time=0.0, cpu_time=0.0,
        )))  # fmt: skip

    async def _release(self, writer: asyncio.StreamWriter, held: list[p.RunJob]) -> None:
        """Answer the jobs held until every worker registered."""
        await self._everyone.wait()
        for run in held:
            self._finish(writer, run)
        held.clear()

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


#: Runs ``python -m MODULE ARGS`` (``sys.argv[2:]``) under ``cProfile`` timed by the
#: process's CPU time, not the wall clock, which counts the time a busy shared machine
#: leaves the process waiting; writes the stats to ``sys.argv[1]`` once it ends.
PROFILER = """
import cProfile, runpy, sys, time
out, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


class ProfiledCluster(LocalCluster):
    """A local cluster whose scheduler runs under ``cProfile``, writing to ``profile``."""

    def __init__(self, home: Path, profile: Path):
        super().__init__(home, workers=0, slots=1)
        self.profile = profile

    def _spawn(self, name: str, args: list[str]) -> None:
        if name != "scheduler":
            super()._spawn(name, args)
            return
        fd = os.open(self.logs / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log_file:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-c", PROFILER, str(self.profile), *args], stdout=log_file,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip


def _one_run(
    root: Path, jobs: int, workers: int, slots: int, waiting: str, profile: Path | None
) -> dict[str, float]:
    cluster = (
        LocalCluster(root / "home", workers=0, slots=1)
        if profile is None
        else ProfiledCluster(root / "home", profile)
    )
    cluster.home.mkdir(parents=True, exist_ok=True)
    cluster.logs.mkdir(exist_ok=True)
    cluster.token = local_user_token(cluster.home)
    try:
        # The pool secret, for the simulated workers; the profiler slows the handshakes
        # of a thousand workers connecting at once past the default timeout.
        slow = ("--handshake-timeout", "300") if profile is not None else ()
        access = cluster.start_scheduler("--allow-pool-secret", *slow)
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
    jobs: int = 10000,
    workers: int = 20,
    slots: int = 8,
    *,
    waiting: str = "updates",
    profile: Path | None = None,
) -> dict[str, float]:
    """One run on a fresh scheduler: CPU microseconds per job by phase, wall rates
    (the scheduler profiled into the file ``profile``, if given)."""
    with tempfile.TemporaryDirectory(prefix="dfarm-cpu-") as tmp:
        root = Path(tmp)
        (root / "job.sh").write_text("#!/bin/sh\nexit 0\n")
        (root / "job.sh").chmod(0o755)
        (root / "job.sub").write_text(f"executable = job.sh\nqueue {jobs}\n")
        return _one_run(root, jobs, workers, slots, waiting, profile)


Pool = tuple[int, int]


def parse_configs(text: str) -> list[Pool]:
    """``20x8,1000x16`` -> [(20, 8), (1000, 16)]: workers x slots per worker."""
    pools = []
    for item in text.split(","):
        workers, sep, slots = item.strip().lower().partition("x")
        if not sep or not workers.isdigit() or not slots.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r} is not WORKERSxSLOTS, as 20x8")
        if int(workers) < 1 or int(slots) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: workers and slots must be >= 1")
        pools.append((int(workers), int(slots)))
    return pools


def compare(
    pools: list[Pool],
    jobs: int,
    runs: int,
    *,
    waiting: str = "none",
    profile: Path | None = None,
    progress: bool = True,
) -> dict[Pool, list[dict[str, float]]]:
    """``runs`` runs of each pool, alternating between them: the results by pool."""
    results: dict[Pool, list[dict[str, float]]] = {pool: [] for pool in pools}
    for run in range(1, runs + 1):
        for workers, slots in pools:
            if progress:
                print(f"run {run} of {runs}: {workers}x{slots}, {jobs} jobs ...", file=sys.stderr)
            path = None if profile is None else profile / f"scheduler-{workers}x{slots}-{run}.prof"
            result = measure(jobs, workers, slots, waiting=waiting, profile=path)
            results[(workers, slots)].append(result)
    return results


def ratio(results: list[dict[str, float]], base: list[dict[str, float]], key: str) -> float:
    """The median of ``key`` over ``results``, divided by its median over ``base``."""
    return statistics.median(r[key] for r in results) / statistics.median(r[key] for r in base)


def table(results: dict[Pool, list[dict[str, float]]], jobs: int) -> str:
    """One row per pool: medians of CPU µs per job, spread, ratios to the first pool."""
    base = next(iter(results.values()))
    rows = []
    for (workers, slots), runs in results.items():
        col = {key: [r[key] for r in runs] for key in runs[0]}
        rows.append((
            f"{workers} x {slots}", f"{jobs:,}",
            *(f"{statistics.median(col[key]):.0f}"
              for key in ("submit_cpu_us", "dispatch_cpu_us", "total_cpu_us")),
            _spread(col["total_cpu_us"]),
            f"{ratio(runs, base, 'total_cpu_us'):.2f}",
            f"{ratio(runs, base, 'dispatch_cpu_us'):.2f}",
            f"{statistics.median(col['dispatch_jobs_per_s']):.0f}",
        ))  # fmt: skip
    headers = (
        "workers x slots", "jobs", "submit", "dispatch+completion", "total", "total min-max",
        "total ratio", "dispatch ratio", "dispatch jobs/s (wall)",
    )  # fmt: skip
    return tabulate(rows, headers=headers, disable_numparse=True)


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument(
        "--configs", type=parse_configs, default=[(20, 8)],
        help="pools to compare, WORKERSxSLOTS separated by commas (default 20x8)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--client", choices=CLIENTS, default="updates",
        help="a client waiting with each job's updates, told once the cluster is done, or none",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="run the scheduler under cProfile, one file per run in DIR",
    )  # fmt: skip
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    results = compare(args.configs, args.jobs, args.runs, waiting=args.client, profile=args.profile)
    watch = {
        "updates": "a client waiting on each job's updates",
        "await": "a client told once the cluster is done",
        "none": "no client waiting",
    }[args.client]
    profiled = ", PROFILED (not comparable)" if args.profile else ""
    print(
        f"scheduler process CPU, µs per job, median of {args.runs} runs (fresh scheduler each,"
        f" pools alternating), {watch}{profiled}; ratios to the first row"
    )
    print(table(results, args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
