"""Workflows on a real cluster: a scheduler process, workers, SQLite on disk."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, write

from control_node import Client


def client_of(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def job_script(folder: Path) -> None:
    """job.sh NAME: appends NAME and its parents' marks to order.txt, exits $2 (0)."""
    write(
        folder / "job.sh",
        f"#!/bin/sh\necho \"$1\" >> {folder}/order.txt\nexit ${{2:-0}}\n",
        True,
    )
    write(folder / "job.sub", "executable = job.sh\narguments = $(node) $(code)\nqueue\n")


def order(folder: Path) -> list[str]:
    path = folder / "order.txt"
    return path.read_text().split() if path.exists() else []


def test_a_diamond_runs_each_node_after_its_parents(cluster: TestCluster, tmp_path: Path) -> None:
    job_script(tmp_path)
    write(
        tmp_path / "diamond.dag",
        "# a diamond\n"
        + "".join(f"JOB {n} job.sub\nVARS {n} node=\"{n}\"\n" for n in "ABCD")
        + "PARENT A CHILD B C\nPARENT B C CHILD D\n",
    )
    result = cluster.run("dsub_dag", "--wait", "diamond.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DAG 1 submitted: 4 nodes" in result.stdout
    assert "DAG 1 done" in result.stdout
    ran = order(tmp_path)
    assert sorted(ran) == ["A", "B", "C", "D"]
    assert ran[0] == "A" and ran[-1] == "D"
    shown = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)
    assert {n["name"]: n["state"] for n in shown[0]["nodes"]} == dict.fromkeys("ABCD", "done")
