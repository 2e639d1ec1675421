"""Staging a large file through dfarm, next to a plain loopback copy of it.

    .venv/bin/python bench/staging.py [--size-mb 1024] [--runs 3]

In: the time from `submit` until the job runs with the file in its sandbox (the
job prints a timestamp first thing), against copying the same file once over a
TCP socket on 127.0.0.1 (sendfile to a receiver that writes it to disk). For
reference, the same copy made twice in sequence, from the file to a first copy
and from that to a second: the best any design can do that copies a file
through a spool on its way to a worker, with no hashing, protocol or job. And
the same two copies made at once, the first relayed on to the second as it
arrives: the best a design can do that sends a file on from the spool while
the client still uploads it, as dfarm does (see docs/decisions.md).
Out: the job copies the file to an output; the time from the job's end until
the client has fetched it, against the same loopback copy.

Each run measures both routes a file can take to and from a worker: by hard
link, for a worker on the spool's file system (worker "link"), and over FTP
(worker "ftp", started with --always-ftp, as a worker on another machine).
Also the peak resident memory of the scheduler, the workers and this client,
sampled while the transfers run: it must stay flat, not grow with the file.

Every timed step starts after the machine has been idle for SETTLE seconds
(the job idles as long between its copy and its end). On a virtual machine
whose balloon device reports free pages to the host, writing a GiB into pages
freed a moment ago (by the file a step before deleted) is several times
faster than into pages the host has taken back, so without the pause each
figure would depend on what the step before it freed rather than on the step.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402

CHUNK = 1 << 20
#: Seconds of idleness before each timed step: longer than the 2 s after which a
#: virtio balloon reports freed pages to the host.
SETTLE = 4.0


def make_file(path: Path, size: int) -> None:
    """A file of random-looking bytes (:func:`refresh` makes each run's unique)."""
    block = os.urandom(CHUNK)
    with open(path, "wb") as f:
        for i in range(size // CHUNK):
            f.write(block[i % 251 :] + block[: i % 251])  # not all identical blocks


def loopback_copy(source: Path, dest: Path, keep: bool = False) -> float:
    """Seconds to copy a file once over a loopback TCP socket, written to disk
    (``dest`` is removed afterwards unless ``keep``)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        thread = threading.Thread(target=_receive, args=(server, dest))
        start = time.perf_counter()
        thread.start()
        with socket.create_connection(server.getsockname()) as sock, open(source, "rb") as f:
            sock.sendfile(f)
        thread.join()
        elapsed = time.perf_counter() - start
    if not keep:
        dest.unlink()
    return elapsed


def _receive(server: socket.socket, dest: Path, forward: int | None = None) -> None:
    """Accept one connection on ``server`` and write what comes to ``dest``, sending
    each chunk on to port ``forward`` of 127.0.0.1 as it arrives, if given."""
    conn, _ = server.accept()
    with conn, open(dest, "wb") as out:
        onward = None if forward is None else socket.create_connection(("127.0.0.1", forward))
        try:
            while chunk := conn.recv(CHUNK):
                out.write(chunk)
                if onward is not None:
                    onward.sendall(chunk)
        finally:
            if onward is not None:
                onward.close()


def relayed_copies(source: Path, work: Path) -> float:
    """Seconds to copy a file over loopback to a first copy that sends each chunk on,
    as it arrives, to a second copy (both removed afterwards)."""
    first, second = work / "relay-first.bin", work / "relay-second.bin"
    with (
        socket.create_server(("127.0.0.1", 0)) as last,
        socket.create_server(("127.0.0.1", 0)) as relay,
    ):
        threads = [
            threading.Thread(target=_receive, args=(last, second)),
            threading.Thread(target=_receive, args=(relay, first, last.getsockname()[1])),
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        with socket.create_connection(relay.getsockname()) as sock, open(source, "rb") as f:
            sock.sendfile(f)
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    assert first.stat().st_size == second.stat().st_size == source.stat().st_size
    first.unlink()
    second.unlink()
    return elapsed


def two_copies(source: Path, work: Path) -> float:
    """Seconds to copy a file over loopback to a first copy, then that to a second."""
    first = work / "copy-first.bin"
    elapsed = loopback_copy(source, first, keep=True)
    elapsed += loopback_copy(first, work / "copy-second.bin")
    first.unlink()
    return elapsed


class PeakMemory:
    """Samples the peak RSS of some processes every 20 ms in a thread."""

    def __init__(self, pids: dict[str, int]):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for name, proc in self.procs.items():
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak[name], rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def refresh(path: Path) -> str:
    """New random bytes at the start of the file, so no cache on the way already has
    it (workers keep inputs by content hash); returns its new sha256 (not timed)."""
    with open(path, "r+b") as f:
        f.write(os.urandom(CHUNK))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


#: The routes of a file to and from a worker: the name of the worker that takes it,
#: and its extra options.
ROUTES = {"link": (), "ftp": ("--always-ftp",)}


def one_run(client: Client, work: Path, sha: str, route: str) -> tuple[float, float]:
    """(seconds from submit to job start, seconds from job end to output fetched),
    on the worker of ``route``."""
    start_wall = time.time()
    cluster = client.submit(work / f"stage-{route}.sub", cwd=str(work))
    (job,) = cluster.wait(timeout=600)
    assert job.state == "completed" and job.exit_code == 0, job
    fetch_start = time.time()
    dest = work / "results"
    (result,) = cluster.results(dest=dest)
    fetched = time.time()
    stamps = result.stdout_text().split()
    job_start, job_end = float(stamps[0]), float(stamps[1])
    out = dest / result.job.id / "copy.bin"
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    assert digest.hexdigest() == sha, "the output differs from the input"
    out.unlink()
    assert fetch_start >= job_end
    return job_start - start_wall, fetched - job_end


def measure(size_mb: int, runs: int) -> dict[str, object]:
    """Seconds per run for the loopback copy, two copies in sequence and relayed,
    and dfarm in and out by each route ("in": {"link": [...], "ftp": [...]}, "out": ...); peak
    RSS by process."""
    size = size_mb * CHUNK
    with tempfile.TemporaryDirectory(prefix="dfarm-stage-") as tmp:
        work = Path(tmp)
        make_file(work / "big.bin", size)
        script = f"#!/bin/sh\ndate +%s.%N\ncp big.bin copy.bin\nsleep {SETTLE}\ndate +%s.%N\n"
        (work / "stage.sh").write_text(script)
        (work / "stage.sh").chmod(0o755)
        for route in ROUTES:
            (work / f"stage-{route}.sub").write_text(
                "executable = stage.sh\ntransfer_input_files = big.bin\n"
                f'transfer_output_files = copy.bin\nrequirements = Name == "{route}"\nqueue\n'
            )
        cluster = LocalCluster(work / "home", workers=0, slots=1)
        access = cluster.start()
        for route, options in ROUTES.items():
            cluster.add_worker(route, *options)
        copies, twice, relayed = [], [], []
        ins: dict[str, list[float]] = {route: [] for route in ROUTES}
        outs: dict[str, list[float]] = {route: [] for route in ROUTES}
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                while len(client.workers()) < len(ROUTES):
                    time.sleep(0.05)
                pids = {name: proc.pid for name, proc in cluster.processes.items()}
                pids["client"] = os.getpid()
                with PeakMemory(pids) as memory:
                    for run in range(runs):
                        time.sleep(SETTLE)
                        copies.append(loopback_copy(work / "big.bin", work / "copy-baseline.bin"))
                        time.sleep(SETTLE)
                        twice.append(two_copies(work / "big.bin", work))
                        time.sleep(SETTLE)
                        relayed.append(relayed_copies(work / "big.bin", work))
                        # Each route goes first in every other run.
                        for route in list(ROUTES)[:: -1 if run % 2 else 1]:
                            sha = refresh(work / "big.bin")
                            time.sleep(SETTLE)
                            into, back = one_run(client, work, sha, route)
                            ins[route].append(into)
                            outs[route].append(back)
        finally:
            cluster.stop()
    return {
        "copy": copies,
        "twice": twice,
        "relayed": relayed,
        "in": ins,
        "out": outs,
        "peak_rss": memory.peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.size_mb, args.runs)
    copies, peak = result["copy"], result["peak_rss"]
    base = statistics.median(copies)

    def row(what: str, seconds: list[float]) -> tuple[str, str, str, str]:
        median = statistics.median(seconds)
        return (what, f"{median:.2f}", f"{args.size_mb / median:.0f}", f"{base / median:.2f}")

    rows = [row("loopback copy (baseline)", copies),
            row("two loopback copies in sequence", result["twice"]),
            row("two loopback copies, the first relayed on", result["relayed"])]  # fmt: skip
    for route in ROUTES:
        rows.append(row(f"dfarm by {route}: submit -> file in sandbox", result["in"][route]))
        rows.append(row(f"dfarm by {route}: job end -> output fetched", result["out"][route]))
    print(f"{args.size_mb} MiB file, median of {args.runs} runs")
    print(tabulate(rows, headers=("what", "seconds", "MiB/s", "speed vs copy"),
                   disable_numparse=True))  # fmt: skip
    print("peak RSS: " + ", ".join(f"{n} {v / 2**20:.0f} MiB" for n, v in peak.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
