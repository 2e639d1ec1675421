"""The queue at scale: one cluster of 100,000 trivial jobs.

    .venv/bin/python bench/queue_scale.py [--jobs 100000] [--workers 2]

Starts a scheduler with no worker in a temporary directory, submits one cluster
of N jobs (a staged shell script that exits 0) and reports: the submit time,
the time of ``dq --summary`` and of one page of ``dq`` (``dq -limit 1000``), and
of a whole ``dq --json`` (every job, asked in pages), the commands run as a user
runs them; the scheduler's memory (RSS) with N jobs queued; then workers (one
slot each) connect and the dispatch rate is measured at queue depth N, and again
in the same run on a cluster just long enough for the same window (depth about
1,000). A rate is the jobs that complete per second over a window of 1,000
consecutive completions (by their recorded end times), so start-up and the last
stragglers do not count, and one pause of the scheduler (a collection by
Python's garbage collector takes up to 0.15 s with 100,000 jobs held) weighs in
a window of about a second, not in one of a few hundredths.
"""

from __future__ import annotations

import argparse
import os
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

WINDOW = 1000
SKIP = 50
#: The jobs of the shallow cluster: just enough for one window.
SHALLOW = SKIP + WINDOW + 1


def command_time(env: dict[str, str], *args: str) -> float:
    """Seconds of one dfarm command, as a user runs it (output discarded)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", *args], env=env, check=True, stdout=subprocess.DEVNULL, timeout=900
    )
    return time.perf_counter() - start


def rate(client: Client, ids: list[str]) -> float:
    """Jobs per second over WINDOW consecutive completions after the first SKIP."""
    ends = sorted(j.end_time for j in client.jobs(ids, states=["completed"]) if j.end_time)
    window = ends[SKIP : SKIP + WINDOW + 1]
    assert len(window) > 10, f"only {len(ends)} jobs completed"
    return (len(window) - 1) / (window[-1] - window[0])


def wait_completed(client: Client, ids: list[str], count: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.jobs(ids, states=["completed"])) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} jobs did not complete in {timeout:.0f} s")


def measure(jobs: int, workers: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="dfarm-scale-") as tmp:
        root = Path(tmp)
        (root / "true.sh").write_text("#!/bin/sh\nexit 0\n")
        (root / "true.sh").chmod(0o755)
        (root / "big.sub").write_text(f"executable = true.sh\nqueue {jobs}\n")
        (root / "small.sub").write_text(f"executable = true.sh\nqueue {SHALLOW}\n")
        cluster = LocalCluster(root / "home", workers=0, slots=1)
        access = cluster.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
        env["DFARM_HOME"] = str(root / "home")
        scheduler = psutil.Process(cluster.processes["scheduler"].pid)
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                idle_rss = scheduler.memory_info().rss
                start = time.perf_counter()
                big = client.submit(root / "big.sub", cwd=str(root))
                took = time.perf_counter() - start
                assert len(big.job_ids) == jobs
                rows.append((f"submit {jobs:,} jobs (one cluster)",
                             f"{took:.2f} s ({jobs / took:,.0f} jobs/s)"))  # fmt: skip
                dq = ("control_node.cli.dq",)
                rows.append(("dq --summary", f"{command_time(env, *dq, '--summary'):.2f} s"))
                rows.append(("dq -limit 1000 (one page)",
                             f"{command_time(env, *dq, '-limit', '1000'):.2f} s"))  # fmt: skip
                rows.append((f"dq --json (all {jobs:,})",
                             f"{command_time(env, *dq, '--json'):.2f} s"))  # fmt: skip
                rss = scheduler.memory_info().rss
                rows.append((f"scheduler RSS, {jobs:,} jobs queued",
                             f"{rss / 2**20:.0f} MB (empty: {idle_rss / 2**20:.0f} MB,"
                             f" {(rss - idle_rss) / jobs / 1024:.1f} KB/job)"))  # fmt: skip
                for i in range(1, workers + 1):
                    cluster.add_worker(f"w{i}", slots=1)
                first = [f"{big.id}.{i}" for i in range(SHALLOW)]
                wait_completed(client, first, len(first))
                deep = rate(client, first)
                client.remove([str(big.id)])
                small = client.submit(root / "small.sub", cwd=str(root))
                wait_completed(client, small.job_ids, SHALLOW)
                shallow = rate(client, small.job_ids)
                rows.append((f"dispatch rate at depth {jobs:,} ({workers} workers x 1 slot)",
                             f"{deep:.1f} jobs/s"))  # fmt: skip
                rows.append((f"dispatch rate at depth {SHALLOW:,} (same run)",
                             f"{shallow:.1f} jobs/s"))  # fmt: skip
                rows.append((f"ratio depth {jobs:,} / depth {SHALLOW:,}", f"{deep / shallow:.2f}"))
        finally:
            cluster.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.jobs < SHALLOW:
        parser.error(f"--jobs must be at least {SHALLOW}")
    rows = measure(args.jobs, args.workers)
    print(tabulate(rows, headers=("measure", "value"), disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
