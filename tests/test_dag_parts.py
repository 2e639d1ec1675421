"""A DAG too large for one frame is sent in parts: the parts as cut on the client,
and a real scheduler with a small frame limit taking a DAG larger than it (and
refusing it sent whole)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TestCluster, write
from test_dag_run import client_of, order

from control_node import dag_submit
from control_node.connection import SchedulerUnavailable
from control_node.dag_submit import dag_parts
from scheduler import protocol as p

#: The scheduler's frame limit in the end-to-end test, and a DAG well past it.
FRAME = 64 * 1024
NODES = 60
PAD = "x" * 2000


def test_dag_parts_cut_a_large_dag_in_order_within_the_limit() -> None:
    spec = p.JobSpec(executable="job.sh", arguments=["y" * 500])
    nodes = [
        p.DagNodeSubmit(name=f"n{i}", submit_file="job.sub", jobs=[spec], parents=[f"n{i - 1}"])
        for i in range(1, 200)
    ]
    whole = p.SubmitDag(
        dag=7, name="big.dag", nodes=nodes, scripts={"s": "c2g="}, config={"A": "1"}
    )
    parts = dag_parts(whole, limit=20_000)
    assert len(parts) > 5
    assert all(len(p.encode(part)) <= 20_000 for part in parts)
    assert [n for part in parts for n in part.nodes] == nodes
    assert [part.first_node for part in parts] == [
        sum(len(q.nodes) for q in parts[:i]) for i in range(len(parts))
    ]
    assert [part.last for part in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[0].scripts == {"s": "c2g="} and parts[0].config == {"A": "1"}
    assert all(not part.scripts and not part.config for part in parts[1:])
    assert dag_parts(whole, limit=10**9) == [whole]


def test_a_dag_larger_than_the_schedulers_frame_is_sent_in_parts(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster: TestCluster = make_cluster(workers=2, scheduler_args=("--max-frame", str(FRAME)))
    write(tmp_path / "job.sh", f'#!/bin/sh\necho "$1" >> {tmp_path}/order.txt\n', True)
    write(
        tmp_path / "job.sub",
        'executable = job.sh\narguments = $(JOB)\n+Pad = "$(pad)"\nqueue\n',
    )
    write(
        tmp_path / "big.dag",
        "".join(f'JOB n{i} job.sub\nVARS n{i} pad="{PAD}"\n' for i in range(NODES))
        + "PARENT n0 CHILD "
        + " ".join(f"n{i}" for i in range(1, NODES))
        + "\n",
    )
    # Sent whole, the DAG is over the scheduler's limit.
    monkeypatch.setattr(dag_submit, "PART_BYTES", 10 * FRAME)
    with client_of(cluster) as c, pytest.raises(SchedulerUnavailable):
        c.submit_dag(tmp_path / "big.dag")
    log = (cluster.logs / "scheduler.log").read_text()
    assert f"exceeds the limit of {FRAME}" in log
    monkeypatch.setattr(dag_submit, "PART_BYTES", FRAME // 2)
    with client_of(cluster) as c:
        run = c.submit_dag(tmp_path / "big.dag")
        assert len(run.clusters) == NODES
        info = run.wait(timeout=120)
    assert info.state == "done", info.reason
    assert sorted(order(tmp_path)) == sorted(f"n{i}" for i in range(NODES))
    assert order(tmp_path)[0] == "n0"
