"""HyperQueue baseline: the same trivial workloads as the dfarm benchmark, run by HyperQueue.

    .venv/bin/python bench/hq_baseline.py [--tasks 2000] [--slots 2] [--runs 20] [--stock-wait]

Needs `pip install hyperqueue`. Its `LocalCluster` starts a server and a worker inside the
Python process, and that server listens on ALL network interfaces. It therefore only ever runs
in a child process started as `unshare --net -- python bench/hq_baseline.py --child ...`
(`unshare --net --map-root-user` when not root): a private network namespace in which the child
brings up `lo` itself and refuses to start unless `lo` is its only interface and its namespace
differs from the parent's. The child prints its result as JSON on stdout (HyperQueue's own
banner is sent to stderr). Needs root or unprivileged user namespaces; `available()` says why not.

Completion is what HyperQueue's client API reports: the job is terminated and its counters say
every task finished (failed == 0). The stock `wait_for_jobs` re-polls the server only once a
second, which would measure that sleep; by default the client polls every `POLL` seconds instead
(a callback that raises while the job is running turns `wait_for_jobs` into a single poll).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

POLL = 0.005  # seconds between the client's job-status requests (None: HyperQueue's own 1 s)
TIMEOUT = 600.0  # seconds allowed for one child process


def _netns_command() -> list[str]:
    return ["unshare", "--net", *([] if os.geteuid() == 0 else ["--map-root-user"]), "--"]


def _run_child(mode: str, timeout: float = TIMEOUT, **params: Any) -> Any:
    """Run `_child(mode, params)` in a private network namespace; return its JSON result."""
    params |= {"mode": mode, "parent_netns": os.readlink("/proc/self/ns/net")}
    script = str(Path(__file__).resolve())
    command = [*_netns_command(), sys.executable, script, "--child", json.dumps(params)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"HyperQueue {mode} run took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise RuntimeError(f"HyperQueue {mode} run failed ({proc.returncode}):\n{tail}")
    return json.loads(out)


def available() -> str | None:
    """None if HyperQueue can be measured here, else a one-line reason why not."""
    if importlib.util.find_spec("hyperqueue") is None:
        return "hyperqueue is not installed: pip install hyperqueue"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed: cannot create a network namespace"
    try:
        _run_child("check", timeout=30)
    except (OSError, RuntimeError) as error:
        last = str(error).strip().splitlines()[-1]
        return f"cannot create a network namespace (needs root or user namespaces): {last}"
    return None


def throughput(tasks: int = 2000, slots: int = 2, *, poll: float | None = POLL) -> float:
    """Seconds from submitting one job of `tasks` trivial program tasks to all of them finished,
    on one worker with `slots` CPUs (each task asks for one)."""
    return float(_run_child("throughput", tasks=tasks, slots=slots, poll=poll))


def latency(runs: int = 20, *, slots: int = 2, poll: float | None = POLL) -> list[float]:
    """Seconds from submit to finished for `runs` one-task jobs, one after another, on an idle
    cluster started once."""
    return [float(x) for x in _run_child("latency", runs=runs, slots=slots, poll=poll)]


# ---- the child, inside the network namespace ----


def _loopback_only(parent_netns: str) -> None:
    """Bring `lo` up; exit unless this is a new namespace whose only interface is `lo`."""
    if os.readlink("/proc/self/ns/net") == parent_netns:
        raise SystemExit("refusing to start HyperQueue: not in a new network namespace")
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        raise SystemExit(f"refusing to start HyperQueue: interfaces {names}, expected only lo")


class _Running(Exception):
    """Raised from the status callback to end `wait_for_jobs` after one poll."""


def _wait(client: Any, job_id: int, poll: float | None) -> None:
    """Block until the job is terminated; assert that all of its tasks finished."""
    status: dict[str, Any] = {}

    def seen(jobs: dict[int, dict[str, Any]]) -> None:
        status.update(jobs[job_id])
        if poll is not None and not status["completed"]:
            raise _Running

    while True:
        try:
            failed = client.connection.wait_for_jobs([job_id], seen)
            break
        except _Running:
            time.sleep(poll)
    ok = not failed and status["completed"] and status["finished"] == status["total"]
    assert ok and not status["failed"], f"HyperQueue job {job_id}: {status}, failed={failed}"


@contextlib.contextmanager
def _cluster(work: Path, slots: int, poll: float | None) -> Iterator[tuple[Any, Path]]:
    """A server and one worker with `slots` CPUs, proven ready by a finished one-task job."""
    from hyperqueue import Job, LocalCluster
    from hyperqueue.cluster import WorkerConfig

    script = work / "true.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    cluster = LocalCluster(server_dir=str(work / "server"), worker_config=WorkerConfig(cores=slots))
    try:
        client = cluster.client()
        warmup = Job(default_workdir=work)
        warmup.program([str(script)], stdout=None, stderr=None)
        _wait(client, client.submit(warmup).id, poll)
        yield client, script
    finally:
        cluster.stop()


def _child(params: dict[str, Any]) -> Any:
    _loopback_only(params["parent_netns"])
    if params["mode"] == "check":
        return None
    from hyperqueue import Job

    poll = params["poll"]
    with tempfile.TemporaryDirectory(prefix="dfarm-hq-") as tmp:
        work = Path(tmp)
        with _cluster(work, params["slots"], poll) as (client, script):
            if params["mode"] == "throughput":
                job = Job(default_workdir=work)
                for _ in range(params["tasks"]):
                    job.program([str(script)], stdout=None, stderr=None)
                start = time.perf_counter()
                _wait(client, client.submit(job).id, poll)
                return time.perf_counter() - start
            times = []
            for run in range(params["runs"]):
                out = work / f"latency-{run}.out"
                job = Job(default_workdir=work)
                job.program([str(script)], stdout=str(out), stderr=None)
                start = time.perf_counter()
                _wait(client, client.submit(job).id, poll)
                times.append(time.perf_counter() - start)
                assert out.exists(), f"no stdout file {out}"
            return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--stock-wait", action="store_true", help="use HyperQueue's wait_for_jobs (1 s polling)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        stdout = os.dup(1)
        os.dup2(2, 1)  # HyperQueue prints its server banner on stdout
        result = _child(json.loads(args.child))
        os.write(stdout, json.dumps(result).encode() + b"\n")
        return 0
    reason = available()
    if reason is not None:
        print(f"HyperQueue baseline unavailable: {reason}")
        return 1
    from importlib.metadata import version

    poll = None if args.stock_wait else POLL
    seconds = throughput(args.tasks, args.slots, poll=poll)
    times = [t * 1000 for t in latency(args.runs, slots=args.slots, poll=poll)]
    waiting = "HyperQueue's wait_for_jobs, 1 s" if poll is None else f"{poll * 1000:g} ms"
    print(f"HyperQueue {version('hyperqueue')}, private network namespace, polling {waiting}")
    print(f"throughput: {args.tasks} tasks on {args.slots} slots in {seconds:.3f} s = "
          f"{args.tasks / seconds:.0f} tasks/s")  # fmt: skip
    print(f"latency of {args.runs} one-task jobs: median {statistics.median(times):.1f} ms, "
          f"min {min(times):.1f} ms, max {max(times):.1f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
