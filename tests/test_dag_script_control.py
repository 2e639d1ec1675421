"""DAG scripts on a real cluster: a DAG held while a PRE script runs, and
DAGMAN_MAX_POST_SCRIPTS seen in the scripts' starts and ends."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write
from test_dag_control import lines
from test_dag_run import client_of, job_script, nodes_of, order


def gated_script(folder: Path, name: str) -> None:
    """NAME.sh NODE: notes its start in NAME.started, waits for the file
    ``open.NAME.NODE``, notes its end in NAME.ended."""
    write(
        folder / f"{name}.sh",
        f'#!/bin/sh\necho "$1" >> {folder}/{name}.started\n'
        f"while [ ! -e {folder}/open.{name}.$1 ]; do sleep 0.05; done\n"
        f'echo "$1" >> {folder}/{name}.ended\n',
        True,
    )


def test_a_dag_held_while_a_pre_script_runs_queues_the_nodes_jobs_held(
    cluster: TestCluster, tmp_path: Path
) -> None:
    job_script(tmp_path)
    gated_script(tmp_path, "pre")
    write(tmp_path / "pre.dag", 'JOB A job.sub\nVARS A node="A"\nSCRIPT PRE A pre.sh $JOB\n')
    assert cluster.run("dsub_dag", "pre.dag", cwd=tmp_path).returncode == 0
    wait_until(lambda: lines(tmp_path / "pre.started") == ["A"], what="A's PRE script")
    held = cluster.run("dhold", "1")
    assert held.returncode == 0, held.stdout + held.stderr
    info = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]
    assert info["state"] == "held" and info["nodes"][0]["state"] == "pre"
    (tmp_path / "open.pre.A").touch()
    a = int(info["nodes"][0]["cluster"])

    def jobs_of_a() -> list[str]:
        return [j["state"] for j in json.loads(cluster.run("dq", "--json", str(a)).stdout)]

    wait_until(lambda: jobs_of_a() == ["held"], what="A's job queued held")
    assert nodes_of(cluster, 1)["A"]["state"] == "queued"
    assert order(tmp_path) == []
    released = cluster.run("drelease", "1")
    assert released.returncode == 0, released.stdout + released.stderr
    with client_of(cluster) as c:
        c.wait(["1"], timeout=60)
        assert c.dags([1])[0].state == "done"
    assert order(tmp_path) == ["A"]


def test_max_post_scripts_runs_one_post_script_at_a_time(
    cluster: TestCluster, tmp_path: Path
) -> None:
    job_script(tmp_path)
    gated_script(tmp_path, "post")
    write(tmp_path / "one.config", "DAGMAN_MAX_POST_SCRIPTS = 1\n")
    write(
        tmp_path / "posts.dag",
        "CONFIG one.config\n"
        + "".join(
            f'JOB {n} job.sub\nVARS {n} node="{n}"\nSCRIPT POST {n} post.sh $JOB\n' for n in "ABC"
        ),
    )
    assert cluster.run("dsub_dag", "posts.dag", cwd=tmp_path).returncode == 0
    # Every node's job ended: all three wait for their POST script, one runs.
    wait_until(
        lambda: [n["state"] for n in nodes_of(cluster, 1).values()] == ["post"] * 3,
        what="three nodes in post",
    )
    wait_until(lambda: lines(tmp_path / "post.started"), what="a POST script started")
    assert sorted(order(tmp_path)) == ["A", "B", "C"]
    for count in (1, 2, 3):
        started = lines(tmp_path / "post.started")
        assert len(started) == count, started
        (tmp_path / f"open.post.{started[-1]}").touch()
        if count < 3:
            wait_until(
                lambda c=count: len(lines(tmp_path / "post.started")) > c,
                what="the next POST script",
            )
            assert lines(tmp_path / "post.ended") == started
    with client_of(cluster) as c:
        c.wait(["1"], timeout=60)
        assert c.dags([1])[0].state == "done"
    assert lines(tmp_path / "post.ended") == lines(tmp_path / "post.started")
    assert sorted(lines(tmp_path / "post.started")) == ["A", "B", "C"]
