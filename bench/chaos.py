"""Chaos benchmark: run N jobs under faults injected at random, then count what was lost,
recorded twice or cut short.

    .venv/bin/python bench/chaos.py [--jobs 300] [--workers 3] [--slots 2] [--seed 1]
                                    [--faults kill,scheduler-disk,worker-disk,rotate]
                                    [--strikes 12] [--job-seconds 0.3] [--timeout 600]

The faults (``--faults``, one strike at a time, each healed before the next):

- ``kill``: ``kill -9`` of a worker or of the scheduler, restarted a moment later;
- ``scheduler-disk``: the scheduler's home (a tmpfs) filled to its last byte with a
  ballast file, removed a moment later;
- ``worker-disk``: the work directory of worker w1 (a tmpfs) filled the same way;
- ``rotate``: ``dfarm worker revoke`` of a running worker's credential (the scheduler
  closes its connection and requeues its jobs; the worker, told its credential is
  wrong, kills its jobs and exits), healed with ``dfarm worker add`` and the worker
  started again with its new credential; or ``dfarm user token`` of the submitting
  user (the scheduler closes the connection the bench keeps open), after which the
  bench opens it again with the new token. Each is checked: a revoked worker that
  does not stop, a connection not closed, or an old token still welcomed counts in
  "old secret worked", which must stay 0.

The disk faults mount tmpfs file systems, so they need root; the default is every
fault the account running it can inject. Every job appends its id to a marker file
when it reaches its end, writes an output file of ``--output-kb`` KiB (so that results
travel through the spool, and a full disk cuts them short) and prints its id. At the
end the results are fetched and the scheduler's database is read directly:

- completed: jobs completed with exit code 0 whose fetched stdout is their own marker
  and whose output file is whole;
- held: jobs held (a job whose attempts failed on full worker disks three times);
- lost: submitted jobs neither completed nor held;
- recorded twice: jobs whose result was recorded more than once ("terminated" twice);
- truncated but completed: completed jobs whose output file came back short;
- rerun: jobs started more than once (their worker died or its disk filled under them);
- ran to the end twice: from the markers. A worker killed with ``kill -9`` does not
  kill its jobs (each runs in a session of its own), so a job may finish on the dead
  worker's machine and again elsewhere; a job whose results the full spool could not
  take runs again; only one result is ever recorded.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tabulate import tabulate  # noqa: E402

from control_node import Client  # noqa: E402
from control_node.connection import AuthError, DfarmError  # noqa: E402
from control_node.local_cluster import LocalCluster, local_user_token  # noqa: E402
from control_node.results import FetchedJob  # noqa: E402
from scheduler import protocol as p  # noqa: E402
from scheduler.config import SchedulerConfig  # noqa: E402

WORKER_TIMEOUT = "3"
#: Sizes of the tmpfs file systems the disk faults fill, in MiB.
SCHEDULER_DISK_MB = 256
WORKER_DISK_MB = 32
#: What each side must keep free (below, its disk counts as full).
SCHEDULER_MIN_FREE = "4MB"
WORKER_MIN_FREE = "2MB"
#: Seconds a revoked worker may take to stop (it is refused when it reconnects, which
#: it may be waiting to do, with a backoff of up to 10 s, after a scheduler restart),
#: and a rotated token's connection to be closed (the scheduler checks every second).
REVOKED_STOP_SECONDS = 30.0
TOKEN_CLOSE_SECONDS = 10.0
#: The column counting old secrets that went on working (must stay 0).
OLD_SECRET = "old secret worked"


class Watcher:
    """The bench's waiting client: one connection, kept open, opened again with the
    cluster's current token when it breaks (a scheduler restart, a rotated token)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.client: Client | None = None

    def connect(self) -> Client:
        if self.client is None:
            self.client = Client(
                scheduler=f"127.0.0.1:{self.cluster.access.port}",
                token=self.cluster.token,
                timeout=5,
            )
        return self.client

    def active(self, cluster_id: int) -> list[p.JobInfo] | None:
        """The cluster's idle and running jobs, or None when the scheduler did not
        answer (the connection is then opened again at the next call)."""
        try:
            return self.connect().jobs([str(cluster_id)], states=["idle", "running"])
        except (DfarmError, OSError):
            self.close()
            return None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


@dataclass
class Farm:
    """The cluster under test and where its disks are."""

    cluster: LocalCluster
    workers: list[str]
    slots: int
    #: Worker w1's work directory, when it is a tmpfs of its own.
    worker_disk: Path | None = None
    scheduler_args: tuple[str, ...] = ()
    #: Ballast files in place now.
    ballast: list[Path] = field(default_factory=list)
    #: What the faults hit and found, by column of the table.
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    watcher: Watcher | None = None

    def start_scheduler(self) -> None:
        self.cluster.start_scheduler(*self.scheduler_args)

    def start_worker(self, name: str) -> None:
        extra: tuple[str, ...] = ()
        if name == "w1" and self.worker_disk is not None:
            extra = ("--work-dir", str(self.worker_disk), "--min-free-space", WORKER_MIN_FREE)
        self.cluster.add_worker(name, *extra, slots=self.slots)

    def dfarm(self, *args: str) -> str:
        """Run ``dfarm ARGS --home HOME`` as an operator on the scheduler node; its output."""
        command = [sys.executable, "-m", "control_node.cli.dfarm", *args]
        done = subprocess.run(
            [*command, "--home", str(self.cluster.home)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dfarm {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout


class Fault:
    """One kind of fault: :meth:`strike` breaks something, :meth:`heal` repairs it."""

    name = ""
    #: The fault mounts file systems: only root may inject it.
    needs_root = False
    #: Its columns in the table (what :meth:`strike` returns, and what it checks).
    columns: tuple[str, ...] = ()

    def strike(self, farm: Farm, rng: random.Random) -> str:
        """Inject the fault; returns what was hit (a column of the table)."""
        raise NotImplementedError

    def heal(self, farm: Farm) -> None:
        """Undo the fault."""


class Kill(Fault):
    name = "kill"
    columns = ("scheduler kills", "worker kills")

    def __init__(self) -> None:
        self.victim = ""

    def strike(self, farm: Farm, rng: random.Random) -> str:
        self.victim = rng.choice([*farm.workers, "scheduler"])
        kill9(farm.cluster, self.victim)
        return "scheduler kills" if self.victim == "scheduler" else "worker kills"

    def heal(self, farm: Farm) -> None:
        if self.victim == "scheduler":
            farm.start_scheduler()
        else:
            farm.start_worker(self.victim)


class SchedulerDiskFull(Fault):
    name = "scheduler-disk"
    needs_root = True
    columns = ("scheduler disk full",)

    def strike(self, farm: Farm, rng: random.Random) -> str:
        farm.ballast.append(fill(farm.cluster.home / "ballast"))
        return "scheduler disk full"

    def heal(self, farm: Farm) -> None:
        unfill(farm)


class WorkerDiskFull(Fault):
    name = "worker-disk"
    needs_root = True
    columns = ("worker disk full",)

    def strike(self, farm: Farm, rng: random.Random) -> str:
        assert farm.worker_disk is not None
        farm.ballast.append(fill(farm.worker_disk / "ballast"))
        return "worker disk full"

    def heal(self, farm: Farm) -> None:
        unfill(farm)


class Rotate(Fault):
    """A worker's credential revoked and issued anew, or the user's token replaced."""

    name = "rotate"
    columns = ("worker credentials revoked", "user tokens rotated", OLD_SECRET)

    def __init__(self) -> None:
        self.victim = ""
        self.old_token = ""

    def strike(self, farm: Farm, rng: random.Random) -> str:
        self.victim = rng.choice([*farm.workers, "user"])
        if self.victim != "user":
            farm.dfarm("worker", "revoke", self.victim)
            return "worker credentials revoked"
        assert farm.watcher is not None and farm.cluster.token is not None
        farm.watcher.connect()  # a connection of the old token, open when it is replaced
        self.old_token = farm.cluster.token
        farm.cluster.token = farm.dfarm("user", "token", p.token_user(self.old_token)).strip()
        return "user tokens rotated"

    def heal(self, farm: Farm) -> None:
        if self.victim == "user":
            self._check_token(farm)
            return
        worker = farm.cluster.processes[self.victim]
        try:
            worker.wait(REVOKED_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"{self.victim} still runs with a revoked credential", file=sys.stderr)
            farm.hits[OLD_SECRET] += 1
            kill9(farm.cluster, self.victim)
        if worker.returncode != 1:  # 1: refused as its credential is wrong
            print(f"{self.victim} ended with {worker.returncode} once revoked", file=sys.stderr)
        credential = farm.cluster.home / "credentials" / f"{self.victim}.credential"
        credential.unlink(missing_ok=True)
        farm.dfarm("worker", "add", self.victim, "--output", str(credential))
        farm.start_worker(self.victim)  # with the new credential, as it is valid

    def _check_token(self, farm: Farm) -> None:
        """The connection of the old token is closed, and the old token refused."""
        assert farm.watcher is not None and farm.watcher.client is not None
        client, deadline = farm.watcher.client, time.monotonic() + TOKEN_CLOSE_SECONDS
        try:
            while time.monotonic() < deadline:
                client.jobs(states=["idle"], limit=1)
                time.sleep(0.1)
            print("the connection of a replaced token stayed open", file=sys.stderr)
            farm.hits[OLD_SECRET] += 1
        except (DfarmError, OSError):
            pass
        farm.watcher.close()
        port = farm.cluster.access.port
        try:
            Client(scheduler=f"127.0.0.1:{port}", token=self.old_token, timeout=5).close()
            print("a replaced token was welcomed", file=sys.stderr)
            farm.hits[OLD_SECRET] += 1
        except AuthError:
            pass


#: Every fault by name. A new kind of fault is a class above and an entry here.
FAULTS: dict[str, type[Fault]] = {
    fault.name: fault for fault in (Kill, SchedulerDiskFull, WorkerDiskFull, Rotate)
}


def kill9(cluster: LocalCluster, name: str) -> None:
    process = cluster.processes[name]
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def fill(path: Path) -> Path:
    """A ballast file at ``path`` that leaves its file system no byte free."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (2**20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return path


def unfill(farm: Farm) -> None:
    for path in farm.ballast:
        path.unlink(missing_ok=True)
    farm.ballast.clear()


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int, mode: str) -> Iterator[Path]:
    """A tmpfs mounted on ``path`` while the block runs."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode={mode}", "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def write_job(work: Path, args: argparse.Namespace) -> Path:
    """The submit file of the jobs and the script they run."""
    markers = work / "markers"
    script = work / "job.sh"
    script.write_text(
        f"#!/bin/sh\nsleep {args.job_seconds}\n"
        f"head -c {args.output_kb * 1024} /dev/zero > out || exit 1\n"
        f"echo $DFARM_JOB_ID >> {markers}\necho marker $DFARM_JOB_ID\n"
    )
    script.chmod(0o755)
    (work / "job.sub").write_text(
        f"executable = job.sh\ntransfer_output_files = out\nqueue {args.jobs}\n"
    )
    return markers


def run(args: argparse.Namespace, home: Path, faults: list[Fault]) -> dict[str, object]:
    rng = random.Random(args.seed)
    work = home / "submit"
    work.mkdir(parents=True)
    work.chmod(0o777)  # as root, jobs run as another account and append their markers
    markers = write_job(work, args)
    with contextlib.ExitStack() as mounts:
        farm_home = home / "farm"
        if any(isinstance(f, SchedulerDiskFull) for f in faults):
            mounts.enter_context(tmpfs(farm_home, SCHEDULER_DISK_MB, "0700"))
        farm_home.mkdir(mode=0o700, exist_ok=True)
        cluster = LocalCluster(farm_home, workers=0, slots=args.slots)
        cluster.logs = home / "logs"  # never on a disk that is filled
        cluster.logs.mkdir()
        cluster.token = local_user_token(cluster.home)
        farm = Farm(cluster, [f"w{i}" for i in range(1, args.workers + 1)], args.slots)
        farm.watcher = Watcher(cluster)
        farm.scheduler_args = ("--worker-timeout", WORKER_TIMEOUT)
        if any(isinstance(f, SchedulerDiskFull) for f in faults):
            farm.scheduler_args += ("--min-free-space", SCHEDULER_MIN_FREE)
        if any(isinstance(f, WorkerDiskFull) for f in faults):
            farm.worker_disk = mounts.enter_context(tmpfs(home / "w1-disk", WORKER_DISK_MB, "0711"))
        farm.start_scheduler()
        for name in farm.workers:
            farm.start_worker(name)
        try:
            row = _strike(farm, args, faults, rng, work, markers)
        finally:
            farm.watcher.close()
            unfill(farm)
            cluster.stop(grace=5)
        cluster_id, fetched = row.pop("cluster"), row.pop("fetched")
        counts = _count(cluster, cluster_id, args, fetched)
        seconds = row.pop("seconds")
        return {"seed": row.pop("seed"), **counts, **row, "seconds": seconds}


def _strike(
    farm: Farm,
    args: argparse.Namespace,
    faults: list[Fault],
    rng: random.Random,
    work: Path,
    markers: Path,
) -> dict[str, object]:
    """Submit, strike ``args.strikes`` times, wait for the jobs, fetch their results."""
    cluster, hits, watcher = farm.cluster, farm.hits, farm.watcher
    assert watcher is not None
    start = time.monotonic()
    cluster_id = watcher.connect().submit(work / "job.sub", cwd=str(work)).id
    deadline = time.monotonic() + args.timeout
    strikes = 0
    while strikes < args.strikes and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 2.0))
        fault = rng.choice(faults)
        hits[fault.strike(farm, rng)] += 1
        strikes += 1
        time.sleep(rng.uniform(0.1, 1.5))
        fault.heal(farm)
    while watcher.active(cluster_id) != [] and time.monotonic() < deadline:
        time.sleep(0.5)
    elapsed = time.monotonic() - start
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        fetched = c.fetch([str(cluster_id)], dest=work / "results")
    ends = collections.Counter(markers.read_text().split()) if markers.exists() else {}
    return {
        "seed": args.seed,
        "cluster": cluster_id,
        "fetched": fetched,
        **{column: hits[column] for fault in faults for column in fault.columns},
        "ran to the end twice": sum(1 for n in ends.values() if n > 1),
        "seconds": round(elapsed, 1),
    }


def _count(
    cluster: LocalCluster, cluster_id: int, args: argparse.Namespace, fetched: list[FetchedJob]
) -> dict[str, int]:
    """What came of the jobs, from their fetched results and the database."""
    completed, truncated, held = set(), set(), set()
    for f in fetched:
        if f.job.state == "held":
            held.add(f.job.id)
            print(f"held {f.job.id}: {f.job.hold_reason}", file=sys.stderr)
        if f.job.state != "completed" or f.job.exit_code != 0:
            continue
        out = next((path for path in f.outputs if path.name == "out"), None)
        size = out.stat().st_size if out is not None and out.exists() else -1
        marker = f.stdout is not None and f.stdout.read_text() == f"marker {f.job.id}\n"
        if size != args.output_kb * 1024:
            truncated.add(f.job.id)
        elif marker:
            completed.add(f.job.id)
    db = sqlite3.connect(SchedulerConfig(home=cluster.home).db_path)
    try:
        twice = db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM job_events WHERE cluster=? AND"
            " event='terminated' GROUP BY proc HAVING COUNT(*) > 1)",
            (cluster_id,),
        ).fetchone()[0]
        rerun = db.execute(
            "SELECT COUNT(*) FROM jobs WHERE cluster=? AND num_starts > 1", (cluster_id,)
        ).fetchone()[0]
    finally:
        db.close()
    return {
        "submitted": args.jobs,
        "completed": len(completed),
        "held": len(held),
        "lost": args.jobs - len(completed) - len(held) - len(truncated),
        "recorded twice": twice,
        "truncated but completed": len(truncated),
        "rerun": rerun,
    }


def parse_faults(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAULTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(FAULTS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Faults: " + ", ".join(FAULTS)
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2)
    root = os.geteuid() == 0
    default = [name for name, fault in FAULTS.items() if root or not fault.needs_root]
    parser.add_argument(
        "--faults",
        type=parse_faults,
        default=default,
        metavar="NAME,...",
        help=f"faults to inject, among {', '.join(FAULTS)} (default: {','.join(default)};"
        " the disk faults mount tmpfs file systems and need root)",
    )
    parser.add_argument(
        "--strikes", "--kills", type=int, default=12, help="faults injected in all (default 12)"
    )
    parser.add_argument("--job-seconds", type=float, default=0.3)
    parser.add_argument(
        "--output-kb", type=int, default=128, help="KiB of the output file each job writes"
    )
    parser.add_argument("--seed", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each run may take (default 600)"
    )
    args = parser.parse_args(argv)
    if not root and any(FAULTS[name].needs_root for name in args.faults):
        parser.error("the disk faults mount tmpfs file systems: run as root, or --faults kill")
    rows = []
    for seed in args.seed:
        with tempfile.TemporaryDirectory(prefix="dfarm-chaos-") as tmp:
            os.chmod(tmp, 0o755)  # jobs running as another account reach their files
            faults = [FAULTS[name]() for name in args.faults]
            rows.append(run(argparse.Namespace(**{**vars(args), "seed": seed}), Path(tmp), faults))
    print(tabulate(rows, headers="keys", tablefmt="github"))
    ok = all(
        r["lost"] == 0
        and r["recorded twice"] == 0
        and r["truncated but completed"] == 0
        and r.get(OLD_SECRET, 0) == 0
        for r in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
