"""A job's output is hostile input too: the result it prints (its last line of stdout)
may be a number no float holds. The job completes with no result and the reason;
the scheduler logs no traceback and the worker's report is taken at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import TestCluster, write

HOSTILE = {
    "huge-int": '{"a": ' + "9" * 400 + "}",
    "huge-float": "9" * 400,
    "deep": "[" * 5000 + "]" * 5000,
    "digits": '{"a": ' + "9" * 5000 + "}",
}


def test_unrepresentable_results_are_failures_not_crashes(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1)
    for name, line in HOSTILE.items():
        write(tmp_path / f"{name}.txt", line + "\n")
    write(tmp_path / "job.sh", '#!/bin/sh\ncat "$1.txt"\n', True)
    write(
        tmp_path / "job.sub",
        "executable = job.sh\narguments = $(x)\ntransfer_input_files = $(x).txt\n"
        f"queue x in ({', '.join(HOSTILE)})\n",
    )
    done = cluster.run("dsub", "--wait", "--dest", str(tmp_path / "r"), "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    jobs = json.loads(cluster.run("dq", "--all", "--json", "1").stdout)
    assert {j["params"]["x"]: j["state"] for j in jobs} == dict.fromkeys(HOSTILE, "completed")
    for job in jobs:
        assert job["result"] is None, job
        assert (
            "not a finite number" in job["result_error"] or "not a number" in job["result_error"]
        ), job
    assert "Traceback" not in cluster.log("scheduler")
