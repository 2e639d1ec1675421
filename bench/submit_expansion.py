"""dsub's expansion of a large submit file beside HTCondor's own submit code.

    .venv/bin/python bench/submit_expansion.py [--jobs 100000] [--runs 3]

Writes, in a temporary folder, a submit file that queues one job per line of a list
file (``queue name, idx, path, mem from items.txt``, N lines of four fields) with
macros, ``$INT()``, ``$Fn()`` and ``$SUBSTR()`` in its keys and two custom attributes,
and times, in this process:

* dfarm: ``parse_description``, the code path of ``dsub --dry-run --json`` (reading
  the file and the list, every job's description, checked);
* HTCondor: ``htcondor.Submit(text).jobs(clusterid=1)`` of the ``htcondor`` 24
  bindings (condor_submit's ``SubmitHash``, in C++), materialising every job's ClassAd.

The runs alternate (dfarm, HTCondor, dfarm, ...), so that a slow spell of a shared
machine hits both alike. Prints the median of each, its spread, and the ratio.
Checks that both give N jobs and the same arguments for a sample of them.

Target: dfarm at most 2x HTCondor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node.submit import parse_description  # noqa: E402

SUBMIT = """\
executable = job.sh
tag = v2
base = /data/out
arguments = $(name) $INT(idx,%06d) $Fn(path) $SUBSTR(name,0,6) $(tag)
output = out/$Fn(path).$(Process).out
error = out/$(name).err
environment = "TAG=$(tag) IDX=$(idx) DEST=$(base)/$(name)"
request_memory = $(mem)
request_cpus = 1
+Sample = "$(name)"
+Dest = "$(base)/$SUBSTR(name,6)"
queue name, idx, path, mem from items.txt
"""


def write_files(folder: Path, jobs: int) -> Path:
    """The submit file, its list of ``jobs`` items, the executable and output folder."""
    (folder / "out").mkdir()
    (folder / "job.sh").write_text("#!/bin/sh\necho hi\n")
    (folder / "job.sh").chmod(0o755)
    with open(folder / "items.txt", "w") as f:
        for i in range(jobs):
            path = f"/data/sets/run.{i % 97:03d}/input_{i}.tar.gz"
            f.write(f"sample{i:06d} {i} {path} {256 + i % 4 * 256}\n")
    (folder / "job.sub").write_text(SUBMIT)
    return folder / "job.sub"


def time_dfarm(path: Path) -> tuple[float, list[list[str]]]:
    start = time.perf_counter()
    description = parse_description(path, None, 1, str(path.parent), 1, {"PATH": "/bin"})
    elapsed = time.perf_counter() - start
    return elapsed, [p.arguments for p in description.procs]


def time_htcondor(path: Path) -> tuple[float, list[str]]:
    with warnings.catch_warnings():  # "no condor_config": none is needed here
        warnings.simplefilter("ignore")
        import htcondor

    start = time.perf_counter()
    ads = list(htcondor.Submit(path.read_text()).jobs(clusterid=1, qdate=1))
    elapsed = time.perf_counter() - start
    return elapsed, [str(ad.get("Args", "")) for ad in ads]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")  # HTCondor needs no config here
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_files(Path(tmp), args.jobs)
        cwd = os.getcwd()
        os.chdir(tmp)  # HTCondor reads the list from the current directory
        try:
            for _ in range(args.runs):
                seconds, argv = time_dfarm(path)
                ours.append(seconds)
                seconds, condor_args = time_htcondor(path)
                theirs.append(seconds)
        finally:
            os.chdir(cwd)
    assert len(argv) == len(condor_args) == args.jobs, (len(argv), len(condor_args))
    for n in range(0, args.jobs, max(1, args.jobs // 100)):
        assert " ".join(argv[n]) == condor_args[n], (n, argv[n], condor_args[n])
    dfarm, condor = statistics.median(ours), statistics.median(theirs)
    rows = [
        [
            f"{args.jobs:,}",
            f"{dfarm:.2f} [{min(ours):.2f}-{max(ours):.2f}]",
            f"{condor:.2f} [{min(theirs):.2f}-{max(theirs):.2f}]",
            f"{dfarm / condor:.2f}",
        ]
    ]
    headers = ["jobs", "dfarm s", "HTCondor s", "ratio (target <= 2)"]
    print(tabulate(rows, headers=headers))


if __name__ == "__main__":
    main()
