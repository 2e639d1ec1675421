"""Latency of one trivial job on an idle local cluster.

    .venv/bin/python bench/latency.py [--runs 20]

From the submit call until the client knows the job's exit status: the
executable is staged (it travels inside the submit message), the job runs on a
worker, and its stdout is stored on the scheduler with the completion.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402


def latency(runs: int = 20, workers: int = 2) -> list[float]:
    """Seconds from submit to exit status known, for ``runs`` jobs one after another."""
    with tempfile.TemporaryDirectory(prefix="dfarm-latency-") as tmp:
        work = Path(tmp)
        (work / "hello.sh").write_text("#!/bin/sh\necho hello\n")
        (work / "hello.sh").chmod(0o755)
        (work / "hello.sub").write_text("executable = hello.sh\nqueue\n")
        cluster = LocalCluster(work / "home", workers=workers, slots=1)
        access = cluster.start()
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                while len(client.workers()) < workers:
                    time.sleep(0.05)
                times = []
                for _ in range(runs + 1):  # the first run warms the workers' caches
                    start = time.perf_counter()
                    (job,) = client.submit(work / "hello.sub", cwd=str(work)).wait(timeout=60)
                    times.append(time.perf_counter() - start)
                    assert job.state == "completed" and job.exit_code == 0, job
                (result,) = client.fetch([job.id], dest=work / "out")
                assert result.stdout_text() == "hello\n"
                return times[1:]
        finally:
            cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    times = latency(args.runs)
    print(
        f"median {statistics.median(times) * 1000:.1f} ms "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}) over {args.runs} jobs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
