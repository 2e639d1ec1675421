"""Start latency of a container job beside the same job without one.

    .venv/bin/python bench/container_start.py [--runs 10]

One worker per runtime that works here (bubblewrap, podman; ``--container-runtimes``
names it) and one plain worker. Each job is the same shell script; the container
jobs run it in a busybox root file system (a tar built here from the machine's
``busybox``), which the worker unpacks or imports once: the first run of each
warms that cache and is not counted. Time: from the submit call until the client
knows the job's exit status, runs alternating between the workers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402
from worker_node import container_runtimes  # noqa: E402

#: Worker name -> its options; "plain" runs jobs without a container.
ROUTES = {"plain": ("--container-runtimes", "none")}


def busybox_tar(folder: Path) -> Path:
    """A root file system of the machine's busybox and its applets, as a tar."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox is missing (apt-get install busybox-static)")
    root = folder / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    tar = folder / "image.tar"
    with tarfile.open(tar, "w") as out:
        out.add(root / "bin", arcname="bin")
    return tar


def measure(runs: int = 10) -> dict[str, list[float]]:
    """Seconds from submit to exit status known, per route (``runs`` each)."""
    routes = dict(ROUTES)
    for runtime in container_runtimes.detect(["bubblewrap", "podman"]):
        routes[runtime.name] = ("--container-runtimes", runtime.name)
    with tempfile.TemporaryDirectory(prefix="dfarm-container-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        busybox_tar(work)
        (work / "job.sh").write_text("#!/bin/sh\necho hello\n")
        (work / "job.sh").chmod(0o755)
        for route in routes:
            image = "" if route == "plain" else "container_image = image.tar\n"
            (work / f"{route}.sub").write_text(
                f'executable = job.sh\n{image}requirements = Name == "{route}"\nqueue\n'
            )
        cluster = LocalCluster(work / "home", workers=0, slots=1)
        access = cluster.start()
        for route, options in routes.items():
            cluster.add_worker(route, *options)
        times: dict[str, list[float]] = {route: [] for route in routes}
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                while len(client.workers()) < len(routes):
                    time.sleep(0.05)
                for run in range(runs + 1):  # the first run of each warms the caches
                    for route in routes:
                        start = time.perf_counter()
                        (job,) = client.submit(work / f"{route}.sub", cwd=str(work)).wait(60)
                        took = time.perf_counter() - start
                        assert job.state == "completed" and job.exit_code == 0, job
                        if run:
                            times[route].append(took)
        finally:
            cluster.stop()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    times = measure(args.runs)
    plain = statistics.median(times["plain"])
    print(f"{'job':<12} {'median ms':>10} {'min':>8} {'max':>8} {'vs plain':>9}")
    for route, values in times.items():
        mid = statistics.median(values)
        print(
            f"{route:<12} {mid * 1000:>10.1f} {min(values) * 1000:>8.1f}"
            f" {max(values) * 1000:>8.1f} {mid / plain:>8.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
