"""Throughput of trivial jobs on a local cluster, next to the machine's spawn rate.

    .venv/bin/python bench/throughput.py [--jobs 200] [--workers 2] [--runs 3] [--cpu]

Starts a scheduler and workers (one slot each) in a temporary directory, submits
one cluster of N jobs running a staged shell script that exits 0, waits for all
of them, and compares with `seq N | xargs -P<workers> -n1 /bin/true`. Prints the
median of several runs and their spread; asserts that every job completed. With
``--cpu``, one more run reports each process's CPU time per job: the scheduler,
the worker daemons, their job launchers, the jobs themselves and this client.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402


def time_xargs(jobs: int, parallel: int) -> float:
    start = time.perf_counter()
    subprocess.run(f"seq {jobs} | xargs -P{parallel} -n1 /bin/true", shell=True, check=True)
    return time.perf_counter() - start


def time_dfarm(client: Client, workdir: Path, jobs: int) -> tuple[float, float]:
    """(seconds from submit to the last exit status known, of which submit took)."""
    start = time.perf_counter()
    cluster = client.submit(workdir / "true.sub", cwd=str(workdir))
    submitted = time.perf_counter() - start
    records = cluster.wait(timeout=600)
    elapsed = time.perf_counter() - start
    assert len(records) == jobs, f"{len(records)} of {jobs} jobs"
    bad = [r.id for r in records if r.state != "completed" or r.exit_code != 0]
    assert not bad, f"jobs failed: {bad[:5]}"
    return elapsed, submitted


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


#: The parts of a cluster whose CPU ``--cpu`` reports.
CPU_PARTS = ("scheduler", "workers", "launchers", "jobs", "client")


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds so far of the cluster's parts, by part (jobs: what launchers reaped)."""
    spent: dict[str, float] = dict.fromkeys(CPU_PARTS, 0.0)
    for name, process in processes.items():
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        if name == "client":
            spent["client"] += times.user + times.system
        elif name.startswith("launcher"):
            spent["launchers"] += times.user + times.system
            spent["jobs"] += times.children_user + times.children_system
        else:
            spent["scheduler" if name == "scheduler" else "workers"] += times.user + times.system
    return spent


def measure_cpu(client: Client, cluster: LocalCluster, root: Path, jobs: int) -> dict[str, float]:
    """Microseconds of CPU per job of each part of the cluster over one run."""
    processes = {name: psutil.Process(p.pid) for name, p in cluster.processes.items()}
    for name in [n for n in processes if n != "scheduler"]:
        for number, child in enumerate(processes[name].children()):
            processes[f"launcher {name} {number}"] = child
    processes["client"] = psutil.Process()
    before = cpu_seconds(processes)
    time_dfarm(client, root, jobs)
    after = cpu_seconds(processes)
    return {part: (after[part] - before[part]) * 1e6 / jobs for part in CPU_PARTS}


def measure(jobs: int, workers: int, runs: int, cpu: bool = False) -> dict[str, list[float]]:
    """Seconds per run: dfarm from submit to the last exit status (and its submit part),
    and ``xargs -P<workers>`` over the same number of /bin/true."""
    with tempfile.TemporaryDirectory(prefix="dfarm-bench-") as tmp:
        root = Path(tmp)
        (root / "true.sh").write_text("#!/bin/sh\nexit 0\n")
        (root / "true.sh").chmod(0o755)
        (root / "true.sub").write_text(f"executable = true.sh\nqueue {jobs}\n")
        cluster = LocalCluster(root / "home", workers=workers, slots=1)
        access = cluster.start()
        result: dict[str, list[float]] = {"dfarm": [], "submit": [], "xargs": []}
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                deadline = time.monotonic() + 30
                while len(client.workers()) < workers and time.monotonic() < deadline:
                    time.sleep(0.05)
                for _ in range(runs):
                    elapsed, submitted = time_dfarm(client, root, jobs)
                    result["dfarm"].append(elapsed)
                    result["submit"].append(submitted)
                    result["xargs"].append(time_xargs(jobs, workers))
                if cpu:  # launchers started with the first jobs: they are children now
                    spent = measure_cpu(client, cluster, root, jobs)
                    result.update({f"cpu {part}": [us] for part, us in spent.items()})
        finally:
            cluster.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="also CPU per job of each process")
    args = parser.parse_args()
    times = measure(args.jobs, args.workers, args.runs, args.cpu)
    dfarm, submit, xargs = times["dfarm"], times["submit"], times["xargs"]
    d, x = statistics.median(dfarm), statistics.median(xargs)
    rows = [
        ("dfarm: submit to last exit status", f"{d:.3f}", spread(dfarm), f"{args.jobs / d:.0f}"),
        ("  of which submit (parse, upload, queue)", f"{statistics.median(submit):.3f}",
         spread(submit), "-"),
        (f"xargs -P{args.workers} /bin/true", f"{x:.3f}", spread(xargs), f"{args.jobs / x:.0f}"),
    ]  # fmt: skip
    print(f"{args.jobs} trivial jobs, {args.workers} workers x 1 slot, median of {args.runs} runs")
    print(tabulate(rows, headers=("what", "seconds", "spread", "jobs/s"), disable_numparse=True))
    print(f"dfarm / xargs time ratio: {d / x:.1f}x")
    if args.cpu:
        rows = [(part, f"{times[f'cpu {part}'][0]:.0f}") for part in CPU_PARTS]
        rows.append(("total", f"{sum(times[f'cpu {part}'][0] for part in CPU_PARTS):.0f}"))
        print(f"\nCPU per job over one more run of {args.jobs} jobs (microseconds):")
        print(tabulate(rows, headers=("process", "CPU per job"), disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
