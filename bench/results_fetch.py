"""Results of big clusters: ``dsub --wait`` and ``dfetch`` against the jobs' own speed.

    .venv/bin/python bench/results_fetch.py [--runs 3] [--quick] [--parts 1,2,3,4]

On a local cluster of 2 one-slot workers, in a temporary directory:

1. 2,000 trivial jobs: ``dsub --wait`` (the command, as a user runs it, results
   fetched into a folder of its own) against submit-to-last-exit of the same cluster
   through the Python API without fetching;
2. 10,000 trivial jobs with ``dsub --wait``, five rounds in one home and one folder:
   each round's jobs/s, their median against the 2,000-job rate, and the last round
   against the first (flat: no slower as the home and the folder fill);
3. ``dfetch`` of 10,000 finished jobs that printed 1 KiB each;
4. ``dfetch`` of 100 jobs with a 10 MiB output file each, against a plain copy of the
   same bytes: each of the spool's files over a loopback socket to a new file (the
   baseline of bench/staging.py); and the same ``dfetch`` just after a restart of the
   scheduler (the restart itself not timed);
5. ``dfetch`` over FTP (as from another machine) of 400 jobs with a 256 KiB output
   file each (a download per file), against the loopback copy of the same files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from staging import loopback_copy  # noqa: E402

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402

PARTS = frozenset({1, 2, 3, 4, 5})


#: ``dfetch`` with the copy in place turned off: every large file over FTP.
OVER_FTP = (
    "-c",
    "import sys; from control_node import fetch_local;"
    " fetch_local.copy_in_place = lambda grant, name, downloads, damaged: downloads;"
    " from control_node.cli.dfetch import main; sys.exit(main(sys.argv[1:]))",
)


def command(name: str, *args: str, cwd: Path, home: Path) -> float:
    """Seconds one of dfarm's commands takes, run as a user runs it (``name``: its
    module in ``control_node.cli``, or :data:`OVER_FTP`'s first word with the rest in
    ``args``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env["DFARM_HOME"] = str(home)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *(["-c"] if name == "-c" else ["-m", f"control_node.cli.{name}"]), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return elapsed


def submit_file(root: Path, name: str, jobs: int, script: str, extra: str = "") -> Path:
    (root / f"{name}.sh").write_text(script)
    (root / f"{name}.sh").chmod(0o755)
    path = root / f"{name}.sub"
    path.write_text(f"executable = {root / name}.sh\n{extra}queue {jobs}\n")
    return path


def run_to_last_exit(client: Client, sub: Path, jobs: int) -> tuple[int, float]:
    """(cluster, seconds from submit to the last exit status), nothing fetched."""
    start = time.perf_counter()
    cluster = client.submit(sub, cwd=str(sub.parent))
    records = cluster.wait(timeout=900)
    elapsed = time.perf_counter() - start
    bad = [r.id for r in records if r.state != "completed" or r.exit_code != 0]
    assert len(records) == jobs and not bad, f"{len(records)} jobs, failed: {bad[:5]}"
    return cluster.id, elapsed


def plain_copy(home: Path, cluster: int, dest: Path) -> float:
    """Seconds to copy a cluster's output files in the spool, one by one, over a
    loopback socket to files in a new folder (staging.py's baseline)."""
    dest.mkdir()
    sources = sorted((home / "spool" / str(cluster)).glob("*/outputs/*"))
    return sum(loopback_copy(path, dest / f"{n}.bin", keep=True) for n, path in enumerate(sources))


def measure(runs: int, quick: bool, parts: frozenset[int] = PARTS) -> list[tuple[str, ...]]:
    small, large, rounds, big_jobs, big_mib = (
        (500, 2000, 3, 20, 10) if quick else (2000, 10000, 5, 100, 10)
    )
    with tempfile.TemporaryDirectory(prefix="dfarm-bench-") as tmp:
        root = Path(tmp)
        cluster = LocalCluster(root / "home", workers=2, slots=1)
        access = cluster.start()
        home = cluster.home
        rows: list[tuple[str, ...]] = []
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                deadline = time.monotonic() + 30
                while len(client.workers()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                if parts & {1, 2}:
                    rows += trivial_parts(client, root, home, runs, small, large, rounds, parts)
                if 3 in parts:
                    rows.append(kib_part(client, root, home, runs, large))
                if 5 in parts:
                    rows.append(medium_files_part(client, root, home, runs, small // 5))
                if 4 in parts:
                    restart = lambda: restart_scheduler(cluster)  # noqa: E731
                    rows += large_files_part(client, root, home, runs, big_jobs, big_mib, restart)
        finally:
            cluster.stop()
    return rows


def trivial_parts(
    client: Client, root: Path, home: Path, runs: int, small: int, large: int, rounds: int,
    parts: frozenset[int],
) -> list[tuple[str, ...]]:  # fmt: skip
    """Parts 1 and 2: ``dsub --wait`` of trivial jobs (part 2 needs part 1's rate)."""
    rows: list[tuple[str, ...]] = []
    trivial = "#!/bin/sh\nexit 0\n"
    sub = submit_file(root, "small", small, trivial)
    run, waited = [], []
    for number in range(runs):
        run.append(run_to_last_exit(client, sub, small)[1])
        out = root / f"small-{number}"
        out.mkdir()
        waited.append(command("dsub", "--wait", str(sub), cwd=out, home=home))
    ratio = statistics.median(waited) / statistics.median(run)
    if 1 in parts:
        rows.append(
            (f"1. dsub --wait, {small} trivial jobs (s)", show(waited),
             f"submit to last exit {show(run)}", f"{ratio:.2f}", "<= 1.30",
             verdict(ratio <= 1.3))
        )  # fmt: skip
    if 2 not in parts:
        return rows
    base_rate = small / statistics.median(waited)
    sub = submit_file(root, "large", large, trivial)
    out = root / "large"
    out.mkdir()
    rates = [large / command("dsub", "--wait", str(sub), cwd=out, home=home) for _ in range(rounds)]
    ratio = statistics.median(rates) / base_rate
    flat = rates[-1] >= 0.9 * rates[0]
    rows.append(
        (f"2. dsub --wait, {large} trivial jobs, {rounds} rounds in one home (jobs/s)",
         " ".join(f"{r:.0f}" for r in rates), f"{small} jobs {base_rate:.0f}",
         f"{ratio:.2f}", ">= 0.90, last round >= 0.9x the first",
         verdict(ratio >= 0.9 and flat))
    )  # fmt: skip
    return rows


def kib_part(client: Client, root: Path, home: Path, runs: int, jobs: int) -> tuple[str, ...]:
    """Part 3: ``dfetch`` of finished jobs that printed 1 KiB each."""
    sub = submit_file(root, "kib", jobs, "#!/bin/sh\nhead -c 1024 /dev/zero\n")
    cid, _ = run_to_last_exit(client, sub, jobs)
    fetches = []
    for number in range(runs):
        dest = root / f"kib-{number}"
        fetches.append(command("dfetch", "--dest", str(dest), str(cid), cwd=root, home=home))
    return (
        f"3. dfetch of {jobs} jobs with 1 KiB of stdout (s)", show(fetches), "-", "-", "< 2 s",
        verdict(statistics.median(fetches) < 2),
    )  # fmt: skip


def restart_scheduler(cluster: LocalCluster) -> None:
    """Stop the scheduler and start it again (its workers come back on their own)."""
    process = cluster.processes["scheduler"]
    process.terminate()
    process.wait(timeout=60)
    cluster.start_scheduler(*cluster.scheduler_args)


def large_files_part(
    client: Client, root: Path, home: Path, runs: int, jobs: int, mib: int,
    restart: Callable[[], None],
) -> list[tuple[str, ...]]:  # fmt: skip
    """Part 4: ``dfetch`` of jobs with a large output file each against the loopback
    copy of the same files, ``dfetch`` made to download over FTP (as a client on
    another machine does), and ``dfetch`` just after the scheduler restarted (which
    ends the connection of ``client``), the four alternating."""
    sub = submit_file(
        root,
        "big",
        jobs,
        f"#!/bin/sh\nhead -c {mib * 2**20} /dev/zero > out.bin\n",
        "transfer_output_files = out.bin\n",
    )
    cid, _ = run_to_last_exit(client, sub, jobs)
    megabytes = jobs * mib
    fetch_rates, copy_rates, ftp_rates, restarted_rates = [], [], [], []
    for number in range(runs):
        dest = root / f"big-{number}"
        seconds = command("dfetch", "--dest", str(dest), str(cid), cwd=root, home=home)
        fetch_rates.append(megabytes / seconds)
        shutil.rmtree(dest)
        copy_rates.append(megabytes / plain_copy(home, cid, root / f"copy-{number}"))
        shutil.rmtree(root / f"copy-{number}")
        seconds = command(*OVER_FTP, "--dest", str(dest), str(cid), cwd=root, home=home)
        ftp_rates.append(megabytes / seconds)
        shutil.rmtree(dest)
        restart()
        seconds = command("dfetch", "--dest", str(dest), str(cid), cwd=root, home=home)
        restarted_rates.append(megabytes / seconds)
        shutil.rmtree(dest)
    copies = f"loopback copy {show(copy_rates, '.0f')}"
    ratio = statistics.median(fetch_rates) / statistics.median(copy_rates)
    ftp_ratio = statistics.median(ftp_rates) / statistics.median(copy_rates)
    restarted_ratio = statistics.median(restarted_rates) / statistics.median(copy_rates)
    return [
        (f"4. dfetch of {jobs} x {mib} MiB output files (MiB/s)", show(fetch_rates, ".0f"),
         copies, f"{ratio:.2f}", ">= 0.70", verdict(ratio >= 0.7)),
        ("   the same dfetch just after a restart of the scheduler (MiB/s)",
         show(restarted_rates, ".0f"), copies, f"{restarted_ratio:.2f}", ">= 0.70",
         verdict(restarted_ratio >= 0.7)),
        ("for reference: the same dfetch over FTP, as from another machine (MiB/s)",
         show(ftp_rates, ".0f"), copies, f"{ftp_ratio:.2f}", "-", ""),
    ]  # fmt: skip


def medium_files_part(
    client: Client, root: Path, home: Path, runs: int, jobs: int
) -> tuple[str, ...]:
    """Part 5: ``dfetch`` over FTP of jobs with a 256 KiB output file each against the
    loopback copy of the same files, alternating."""
    sub = submit_file(
        root, "medium", jobs, "#!/bin/sh\nhead -c 262144 /dev/zero > out.bin\n",
        "transfer_output_files = out.bin\n",
    )  # fmt: skip
    cid, _ = run_to_last_exit(client, sub, jobs)
    megabytes = jobs / 4
    ftp_rates, copy_rates = [], []
    for number in range(runs):
        dest = root / f"medium-{number}"
        seconds = command(*OVER_FTP, "--dest", str(dest), str(cid), cwd=root, home=home)
        ftp_rates.append(megabytes / seconds)
        shutil.rmtree(dest)
        copy_rates.append(megabytes / plain_copy(home, cid, dest))
        shutil.rmtree(dest)
    ratio = statistics.median(ftp_rates) / statistics.median(copy_rates)
    return (
        f"5. dfetch over FTP of {jobs} x 256 KiB output files (MiB/s)", show(ftp_rates, ".0f"),
        f"loopback copy {show(copy_rates, '.0f')}", f"{ratio:.2f}", "-", "",
    )  # fmt: skip


def show(values: list[float], fmt: str = ".2f") -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"[{format(min(values), fmt)}-{format(max(values), fmt)}]"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


HEADERS = ("target", "dfarm", "baseline", "ratio", "target", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument(
        "--parts", default="1,2,3,4,5", help="which parts to run, by number (default: all)"
    )
    args = parser.parse_args()
    rows = measure(args.runs, args.quick, frozenset(int(n) for n in args.parts.split(",")))
    print(f"median of {args.runs} runs [min-max]")
    print(tabulate(rows, headers=HEADERS, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
