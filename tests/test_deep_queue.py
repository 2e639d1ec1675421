"""dq over a deep queue on a real cluster: 20,000 jobs no worker can run. The batch
view's counts (kept by the scheduler) agree with the jobs listed one by one, the
streamed JSON holds every job once, and -analyze counts a cluster per reason."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import TestCluster, write

BIG, SMALL = 15_000, 5_000
NEVER = "cannot run on any connected worker: no worker has 400 GB of memory"


def _run(cluster: TestCluster, *args: str) -> str:
    out = cluster.run("dq", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_deep_queue_in_every_view(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    write(tmp_path / "job.sh", "#!/bin/sh\ntrue\n", True)
    write(tmp_path / "big.sub", f"executable = job.sh\nrequest_memory = 400GB\nqueue {BIG}\n")
    write(tmp_path / "small.sub", "executable = job.sh\nrequest_memory = 400GB\n"
          f"batch_name = small\nqueue {SMALL}\n")  # fmt: skip
    for name in ("big", "small"):
        out = cluster.run("dsub", f"{name}.sub", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert cluster.run("dhold", "2.7", "2.9").returncode == 0

    # The batch view: one row per batch, and condor_q's totals.
    lines = _run(cluster).splitlines()
    rows = [line.split() for line in lines[1 : lines.index("")]]
    assert [row[1:3] for row in rows][0] == ["ID:", "1"] and rows[1][1] == "small"
    assert rows[0][-6:] == ["_", "_", str(BIG), "_", str(BIG), f"1.0-{BIG - 1}"]
    assert rows[1][-6:] == ["_", "_", str(SMALL - 2), "2", str(SMALL), f"2.0-{SMALL - 1}"]
    total = f"{BIG + SMALL} jobs; 0 completed, 0 removed, {BIG + SMALL - 2} idle, 0 running, 2 held"
    assert lines[-2] == f"Total for query: {total}, 0 suspended"

    # The jobs one by one: the same counts per cluster and state.
    listed = _run(cluster, "-nobatch").splitlines()
    assert listed[0].split()[:3] == ["ID", "OWNER", "STATE"]
    jobs = [line.split() for line in listed[1 : BIG + SMALL + 1]]
    counts = Counter((job[0].split(".")[0], job[2]) for job in jobs)
    assert counts == {("1", "idle"): BIG, ("2", "idle"): SMALL - 2, ("2", "held"): 2}
    assert listed[-1] == f"{BIG + SMALL} job(s): {BIG + SMALL - 2} idle, 2 held"

    # --json: every job once, in id order.
    records = json.loads(_run(cluster, "--json"))
    ids = [record["id"] for record in records]
    assert len(ids) == BIG + SMALL and ids[0] == "1.0" and ids[-1] == f"2.{SMALL - 1}"
    assert ids == [f"1.{i}" for i in range(BIG)] + [f"2.{i}" for i in range(SMALL)]
    assert [r["id"] for r in json.loads(_run(cluster, "--json", "-limit", "3"))] == [
        "1.0", "1.1", "1.2"
    ]  # fmt: skip

    # -analyze CLUSTER: counts per reason, not one paragraph per job.
    text = _run(cluster, "-analyze", "2").splitlines()
    assert text[0].endswith(f": {SMALL - 2} idle, 0 running, 2 held.")
    assert text[1].startswith(f"  {SMALL - 2} idle: {NEVER}")
    assert text[2].startswith(f"  2 held: held by {rows[0][0]}")
    [summary] = json.loads(_run(cluster, "-analyze", "1", "--json"))
    assert summary["idle"] == BIG and list(summary["idle_reasons"].values()) == [BIG]
    assert _run(cluster, "-analyze", "1.5").startswith("1.5: Job 1.5 cannot run")

    # A reader that leaves early (dq -nobatch | head) ends dq quietly.
    with subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dq", "-nobatch"],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as dq:  # fmt: skip
        assert dq.stdout is not None and dq.stderr is not None
        assert dq.stdout.readline().split()[0] == "ID"
        assert dq.stdout.readline().split()[0] == "1.0"
        dq.stdout.close()
        assert dq.wait(timeout=60) == 0
        assert dq.stderr.read() == ""
