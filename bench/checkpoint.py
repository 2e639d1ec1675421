"""The cost of a self-checkpointing job's checkpoint, beside a plain copy of its file.

    .venv/bin/python bench/checkpoint.py [--mb 100] [--rounds 5]

A job keeps a file of ``--mb`` MB of random bytes in its sandbox and checkpoints
``--rounds`` times (``checkpoint_exit_code = 85``): each run notes the time it
exits, and the next run, started by the worker once the checkpoint is packed,
uploaded to the spool, verified and committed, reads it. That gap is the cost of
a checkpoint, from the exit code to the restart. Beside it: the same file copied
once on the same disk (``shutil.copyfile`` and ``fsync``): the least any
checkpoint of that file costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402

#: Run 1 writes the state file; every run notes when it exits and how long the
#: gap since the previous run's exit was; the run after the last round exits 0.
JOB = """\
import json, os, sys, time
mb, rounds = int(sys.argv[1]), int(sys.argv[2])
now = time.time()
log = json.load(open("log.json")) if os.path.exists("log.json") else {"gaps": [], "exit": None}
if log["exit"] is not None:
    log["gaps"].append(now - log["exit"])
if not os.path.exists("state.bin"):
    with open("state.bin", "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
if len(log["gaps"]) >= rounds:
    print(json.dumps(log))
    sys.exit(0)
log["exit"] = time.time()
with open("log.json", "w") as f:
    json.dump(log, f)
sys.exit(85)
"""


def plain_copy(mb: int, folder: Path) -> float:
    """Seconds to write ``mb`` MB of random bytes' copy once (the file already written)."""
    source, copy = folder / "source.bin", folder / "copy.bin"
    with open(source, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    start = time.perf_counter()
    shutil.copyfile(source, copy)
    with open(copy, "rb+") as f:
        os.fsync(f.fileno())
    took = time.perf_counter() - start
    source.unlink()
    copy.unlink()
    return took


def checkpoint_gaps(mb: int, rounds: int) -> list[float]:
    """Seconds from each checkpoint's exit to the restart on the same worker."""
    with tempfile.TemporaryDirectory(prefix="dfarm-ckpt-bench-") as tmp:
        work = Path(tmp)
        (work / "job.py").write_text(JOB)
        (work / "job.sub").write_text(
            f"executable = job.py\narguments = {mb} {rounds}\n"
            "checkpoint_exit_code = 85\ntransfer_checkpoint_files = state.bin, log.json\nqueue\n"
        )
        os.chmod(work, 0o1777)
        cluster = LocalCluster(work / "home", workers=1, slots=1)
        access = cluster.start()
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                (job,) = client.submit(work / "job.sub", cwd=str(work)).wait(timeout=600)
                assert job.state == "completed" and job.exit_code == 0, job
                (result,) = client.fetch([job.id], dest=work / "out")
                gaps = json.loads(result.stdout_text().splitlines()[-1])["gaps"]
        finally:
            cluster.stop()
    return gaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfarm-copy-") as tmp:
        copy = plain_copy(args.mb, Path(tmp))
    gaps = checkpoint_gaps(args.mb, args.rounds)
    median = statistics.median(gaps)
    print(f"checkpoint of {args.mb} MB, exit code to restart: median {median:.2f} s "
          f"(min {min(gaps):.2f}, max {max(gaps):.2f}) over {len(gaps)} checkpoints")  # fmt: skip
    print(f"plain copy of the same file on the same disk: {copy:.2f} s "
          f"({median / copy:.1f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
