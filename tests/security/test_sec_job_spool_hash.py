"""A spooled input changed in place after its upload is refused, by name, by a
worker that links it from the spool, before any job uses it (issue 23, "every
stored file is checked against its hash", the worker's side)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import TestCluster, wait_until, write


def _jobs(cluster: TestCluster) -> dict[str, dict[str, object]]:
    out = cluster.run("dq", "--json", "--all", "-l")
    return {j["id"]: j for j in json.loads(out.stdout)}


def test_a_corrupted_spooled_input_holds_the_job_naming_it(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=0)
    data = b"x" * 200_000  # larger than travels inline: linked from the spool
    write(tmp_path / "ran", "")
    write(tmp_path / "job.sh", f"#!/bin/sh\necho ran >> {tmp_path / 'ran'}\n", True)
    (tmp_path / "big.bin").write_bytes(data)
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_input_files = big.bin\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    stored = cluster.config.home / "spool" / "1" / "input" / hashlib.sha256(data).hexdigest()
    wait_until(lambda: stored.exists() and stored.stat().st_size == len(data))
    with open(stored, "r+b") as f:  # same size, one byte changed
        f.seek(1000)
        f.write(b"y")
    cluster.add_worker("w1")
    cluster.wait_for_workers(1)
    wait_until(lambda: _jobs(cluster)["1.0"]["state"] == "held", timeout=60, what="held")
    reason = str(_jobs(cluster)["1.0"]["hold_reason"])
    assert "input 'big.bin' does not match its hash" in reason, reason
    assert (tmp_path / "ran").read_text() == ""  # the job never ran
    assert "files move by hard link" in cluster.log("w1")
