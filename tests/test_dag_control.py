"""Whole DAGs on a real cluster: MAXJOBS seen in start times, a wide fan-out and in,
drm/dhold/drelease of a DAG, --rerun-failed, and a scheduler killed mid-DAG."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from conftest import TestCluster, wait_until, write
from test_dag_run import counting_job, nodes_of, order

from control_node import Client


def gated_job(folder: Path) -> None:
    """gate.sh NODE: notes its start, waits for the file ``open.NODE``, notes its end."""
    write(
        folder / "gate.sh",
        f'#!/bin/sh\necho "$1" >> {folder}/started.txt\n'
        f"while [ ! -e {folder}/open.$1 ]; do sleep 0.05; done\n"
        f'echo "$1" >> {folder}/order.txt\n',
        True,
    )
    write(folder / "gate.sub", "executable = gate.sh\narguments = $(JOB)\nqueue\n")


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_maxjobs_limits_the_nodes_of_a_category_running_at_once(
    make_cluster,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cluster: TestCluster = make_cluster(workers=4)
    counting_job(tmp_path)
    write(
        tmp_path / "max.dag",
        "".join(
            f'JOB N{i} count.sub\nVARS N{i} code="0" good_at="1"\nCATEGORY N{i} heavy\n'
            for i in range(6)
        )
        + "MAXJOBS heavy 2\n",
    )
    result = cluster.run("dsub_dag", "--wait", "max.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = nodes_of(cluster, 1).values()
    spans = sorted((float(n["started"]), float(n["ended"])) for n in nodes)  # type: ignore[arg-type]
    for start, _ in spans:
        at_once = sum(1 for s, e in spans if s <= start < e)
        assert at_once <= 2, spans


def test_a_wide_fan_out_and_in_of_fifty_nodes(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster: TestCluster = make_cluster(workers=3)
    counting_job(tmp_path)
    names = ["top"] + [f"mid{i}" for i in range(24)] + [f"low{i}" for i in range(24)] + ["end"]
    text = "".join(f'JOB {n} count.sub\nVARS {n} code="0" good_at="1"\n' for n in names)
    text += "PARENT top CHILD " + " ".join(names[1:25]) + "\n"
    text += "".join(f"PARENT mid{i} CHILD low{i}\n" for i in range(24))
    text += "PARENT " + " ".join(names[25:49]) + " CHILD end\n"
    write(tmp_path / "fan.dag", text)
    result = cluster.run("dsub_dag", "--wait", "fan.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = order(tmp_path)
    assert sorted(ran) == sorted(names) and ran[0] == "top" and ran[-1] == "end"
    for i in range(24):
        assert ran.index(f"mid{i}") < ran.index(f"low{i}")


def test_drm_dhold_drelease_act_on_a_whole_dag(cluster: TestCluster, tmp_path: Path) -> None:
    gated_job(tmp_path)
    write(
        tmp_path / "gated.dag",
        "JOB A gate.sub\nJOB B gate.sub\nJOB C gate.sub\nPARENT A CHILD B\nPARENT B CHILD C\n",
    )
    assert cluster.run("dsub_dag", "gated.dag", cwd=tmp_path).returncode == 0
    wait_until(lambda: lines(tmp_path / "started.txt") == ["A"], what="A started")
    held = cluster.run("dhold", "1")
    assert held.returncode == 0, held.stdout + held.stderr
    info = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]
    assert info["state"] == "held"
    a = json.loads(cluster.run("dq", "--json", str(info["nodes"][0]["cluster"])).stdout)
    assert [j["state"] for j in a] == ["held"]
    (tmp_path / "open.A").touch()
    assert cluster.run("drelease", "1").returncode == 0
    wait_until(lambda: "B" in lines(tmp_path / "started.txt"), what="B started")
    removed = cluster.run("drm", "1")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    nodes = nodes_of(cluster, 1)
    assert nodes["A"]["state"] == "done"
    assert nodes["B"]["state"] == "removed" and nodes["C"]["state"] == "removed"
    assert json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]["state"] == "removed"
    assert "C" not in lines(tmp_path / "started.txt")


def test_rerun_failed_runs_only_what_did_not_succeed(cluster: TestCluster, tmp_path: Path) -> None:
    counting_job(tmp_path)
    write(
        tmp_path / "rerun.dag",
        'JOB A count.sub\nVARS A code="0" good_at="1"\n'
        'JOB B count.sub\nVARS B code="2" good_at="2"\nPARENT A CHILD B\n'
        'JOB C count.sub\nVARS C code="0" good_at="1"\nPARENT B CHILD C\n',
    )
    assert cluster.run("dsub_dag", "--wait", "rerun.dag", cwd=tmp_path).returncode == 1
    assert order(tmp_path) == ["A", "B"]
    again = cluster.run("dsub_dag", "--wait", "--rerun-failed", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert order(tmp_path) == ["A", "B", "B", "C"]
    nodes = nodes_of(cluster, 1)
    assert all(n["state"] == "done" for n in nodes.values())


def test_a_dag_goes_on_after_the_scheduler_is_killed(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """kill -9 of the scheduler in the middle of a 30-node DAG: every node runs once."""
    cluster: TestCluster = make_cluster(workers=2)
    counting_job(tmp_path)
    names = [f"n{i}" for i in range(30)]
    text = "".join(f'JOB {n} count.sub\nVARS {n} code="0" good_at="1"\n' for n in names)
    # Ten layers of three: each node after every node of the layer before.
    for layer in range(1, 10):
        parents = " ".join(names[3 * (layer - 1) : 3 * layer])
        text += f"PARENT {parents} CHILD {' '.join(names[3 * layer : 3 * layer + 3])}\n"
    write(tmp_path / "long.dag", text)
    assert cluster.run("dsub_dag", "long.dag", cwd=tmp_path).returncode == 0
    wait_until(lambda: len(order(tmp_path)) >= 10, what="ten nodes run")
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    cluster.expected_exits.add("scheduler")
    cluster.start_scheduler()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as c:
        c.wait(["1"], timeout=120)
        info = c.dags([1])[0]
    assert info.state == "done", info
    ran = order(tmp_path)
    assert sorted(ran) == sorted(names), ran  # each exactly once
    # A job whose start was committed but whose run_job the kill cut off never ran:
    # its worker comes back without it and it is requeued unstarted, so every job
    # started once (scheduler/worker_handlers.py, _adopt).
    history = json.loads(cluster.run("dhistory", "--json", "-limit", "100").stdout)
    assert len(history) == 30 and all(j["num_starts"] == 1 for j in history)
