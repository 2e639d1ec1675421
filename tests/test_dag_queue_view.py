"""A running DAG in plain ``dq``: in the batch view one line named DAGFILE+ID in place
of its nodes' clusters, its nodes counted as ``dq -dag`` counts them, waiting nodes
in its total; with -nobatch its nodes' jobs, then its nodes without jobs, counted."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write
from test_dag_control import gated_job, lines

from control_node import Client


def test_plain_dq_shows_a_dag_as_one_batch_with_its_waiting_nodes(
    cluster: TestCluster, tmp_path: Path
) -> None:
    gated_job(tmp_path)
    write(
        tmp_path / "gated.dag",
        "JOB A gate.sub\nJOB B gate.sub\nJOB C gate.sub\nJOB D gate.sub\n"
        "PARENT A CHILD B C\nPARENT B C CHILD D\n",
    )
    assert cluster.run("dsub_dag", "gated.dag", cwd=tmp_path).returncode == 0
    wait_until(lambda: lines(tmp_path / "started.txt") == ["A"], what="A started")
    info = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]
    a = info["nodes"][0]["cluster"]
    shown = cluster.run("dq")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines() if "gated.dag+1" in line]
    assert len(rows) == 1, shown.stdout
    # OWNER BATCH_NAME SUBMITTED(2 words) DONE RUN IDLE HOLD TOTAL JOB_IDS
    assert rows[0][4:9] == ["_", "1", "_", "_", "4"], shown.stdout
    assert rows[0][9] == f"{a}.0"
    assert f"ID: {a}" not in shown.stdout
    header = cluster.run("dq", "-dag", "1").stdout.splitlines()[0]
    assert "4 nodes: 1 running or idle, 3 waiting on parents" in header
    listed = cluster.run("dq", "-nobatch").stdout
    assert f"{a}.0" in listed
    assert "DAG 1 (gated.dag): 3 node(s) without jobs in the queue: 3 waiting on parents" in listed
    (tmp_path / "open.A").touch()
    wait_until(lambda: len(lines(tmp_path / "started.txt")) == 3, what="B and C started")
    row = next(line.split() for line in cluster.run("dq").stdout.splitlines() if "+1" in line)
    assert row[4:9] == ["1", "2", "_", "_", "4"]
    for name in "BCD":
        (tmp_path / f"open.{name}").touch()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        c.wait(["1"], timeout=60)
    assert "gated.dag+1" not in cluster.run("dq").stdout
