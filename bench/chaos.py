"""Chaos benchmark: run N jobs while killing (``kill -9``) and restarting workers and the
scheduler at random, then count what was lost or recorded twice.

    .venv/bin/python bench/chaos.py [--jobs 300] [--workers 3] [--slots 2] [--seed 1]
                                    [--kills 12] [--job-seconds 0.3]

Every job appends its id to a marker file when it reaches its end and prints it. At the
end the scheduler's database is read directly:

- completed: jobs completed with exit code 0 whose fetched stdout is their own marker;
- lost: submitted jobs that are not completed (or whose result is wrong);
- duplicated: jobs whose result was recorded more than once ("terminated" twice);
- rerun: jobs started more than once (their worker was killed under them);
- ran to the end twice: from the markers. A worker killed with ``kill -9`` does not
  kill its jobs (each runs in a session of its own), so a job may finish on the dead
  worker's machine and again elsewhere; only one of the two results is recorded.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tabulate import tabulate  # noqa: E402

from control_node import Client  # noqa: E402
from control_node.connection import DfarmError  # noqa: E402
from control_node.local_cluster import LocalCluster, local_user_token  # noqa: E402

WORKER_TIMEOUT = "3"


def kill9(cluster: LocalCluster, name: str) -> None:
    process = cluster.processes[name]
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def finished(cluster: LocalCluster, cluster_id: int, n_jobs: int) -> bool:
    """Whether every job has left the queue (False while the scheduler is down)."""
    try:
        with Client(
            scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token, timeout=5
        ) as client:
            return not client.jobs([str(cluster_id)])
    except (DfarmError, OSError):
        return False


def run(args: argparse.Namespace, home: Path) -> dict[str, object]:
    rng = random.Random(args.seed)
    work = home / "submit"
    work.mkdir(parents=True)
    markers = work / "markers"
    script = work / "job.sh"
    script.write_text(
        f"#!/bin/sh\nsleep {args.job_seconds}\necho $DFARM_JOB_ID >> {markers}\n"
        "echo marker $DFARM_JOB_ID\n"
    )
    script.chmod(0o755)
    (work / "job.sub").write_text(f"executable = job.sh\nqueue {args.jobs}\n")

    cluster = LocalCluster(home / "farm", workers=0, slots=args.slots)
    cluster.logs.mkdir(parents=True)
    cluster.token = local_user_token(cluster.config)
    cluster.start_scheduler("--worker-timeout", WORKER_TIMEOUT)
    names = [f"w{i}" for i in range(1, args.workers + 1)]
    for name in names:
        cluster.add_worker(name, slots=args.slots)
    kills = collections.Counter()
    start = time.monotonic()
    try:
        with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
            cluster_id = c.submit(work / "job.sub", cwd=str(work)).id
        deadline = time.monotonic() + args.timeout
        while kills.total() < args.kills and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.0))
            victim = rng.choice([*names, "scheduler"])
            kill9(cluster, victim)
            kills[victim == "scheduler"] += 1
            time.sleep(rng.uniform(0.1, 1.5))
            if victim == "scheduler":
                cluster.start_scheduler("--worker-timeout", WORKER_TIMEOUT)
            else:
                cluster.add_worker(victim, slots=args.slots)
        while not finished(cluster, cluster_id, args.jobs) and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
            fetched = c.fetch([str(cluster_id)], dest=work / "results")
    finally:
        cluster.stop(grace=5)
    good = {
        f.job.id
        for f in fetched
        if f.job.state == "completed"
        and f.job.exit_code == 0
        and f.stdout is not None
        and f.stdout.read_text() == f"marker {f.job.id}\n"
    }
    db = sqlite3.connect(cluster.config.db_path)
    try:
        terminated = db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM job_events WHERE cluster=? AND"
            " event='terminated' GROUP BY proc HAVING COUNT(*) > 1)",
            (cluster_id,),
        ).fetchone()[0]
        rerun = db.execute(
            "SELECT COUNT(*) FROM jobs WHERE cluster=? AND num_starts > 1", (cluster_id,)
        ).fetchone()[0]
    finally:
        db.close()
    ends = collections.Counter(markers.read_text().split()) if markers.exists() else {}
    return {
        "seed": args.seed,
        "submitted": args.jobs,
        "completed": len(good),
        "lost": args.jobs - len(good),
        "duplicated": terminated,
        "rerun": rerun,
        "ran to the end twice": sum(1 for n in ends.values() if n > 1),
        "scheduler kills": kills[True],
        "worker kills": kills[False],
        "seconds": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--kills", type=int, default=12, help="kill -9 this many times")
    parser.add_argument("--job-seconds", type=float, default=0.3)
    parser.add_argument("--seed", type=int, nargs="+", default=[1])
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seed:
        with tempfile.TemporaryDirectory(prefix="dfarm-chaos-") as tmp:
            rows.append(run(argparse.Namespace(**{**vars(args), "seed": seed}), Path(tmp)))
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
