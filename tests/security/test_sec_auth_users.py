"""Removing a user or replacing their token takes effect on live connections (issue
23, "held only in part": a connection opened before ``dfarm user remove dave`` kept
submitting and its jobs ran)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node.client import Client
from control_node.connection import DfarmError


def add_user(cluster: TestCluster, name: str) -> str:
    out = cluster.run("dfarm", "user", "add", name, "--home", cluster.config.home)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def events(cluster: TestCluster, detail: str) -> list[tuple[int, int, str]]:
    with closing(sqlite3.connect(cluster.config.db_path)) as db:
        return db.execute(
            "SELECT cluster, proc, event FROM job_events WHERE detail=? ORDER BY seq", (detail,)
        ).fetchall()


def job_folder(tmp_path: Path) -> Path:
    write(tmp_path / "job.sh", "#!/bin/sh\necho ran\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue 2\n")
    return tmp_path


def test_removing_a_user_closes_their_connections_and_removes_their_queued_jobs(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=0)  # nothing runs: dave's jobs stay queued
    folder = job_folder(tmp_path)
    token = add_user(cluster, "dave")
    address = f"127.0.0.1:{cluster.access.port}"
    with Client(scheduler=address, token=token) as dave:
        cluster_id = dave.submit(folder / "job.sub", cwd=str(folder)).id
        dave.hold([f"{cluster_id}.1"])
        removal = cluster.run("dfarm", "user", "remove", "dave", "--home", cluster.config.home)
        assert removal.returncode == 0, removal.stderr
        wait_until(
            lambda: "user dave was removed: closing its connection" in cluster.log("scheduler"),
            what="the connection to close",
        )
        # The connection opened before the removal can do nothing more.
        with pytest.raises(DfarmError):
            dave.submit(folder / "job.sub", cwd=str(folder))
    # Both queued jobs, the idle one and the held one, are removed, saying why.
    removed = wait_until(lambda: events(cluster, "user dave was removed"), what="the removal")
    assert removed == [(cluster_id, 0, "removed"), (cluster_id, 1, "removed")]
    assert "user dave was removed: 2 queued job(s) removed" in cluster.log("scheduler")
    with pytest.raises(DfarmError, match="authentication failed"):
        Client(scheduler=address, token=token)
    # Nobody else was touched.
    assert cluster.run("dq").returncode == 0


def test_a_new_token_closes_the_old_ones_connections_and_keeps_the_jobs(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=0)
    folder = job_folder(tmp_path)
    old = add_user(cluster, "dave")
    address = f"127.0.0.1:{cluster.access.port}"
    with Client(scheduler=address, token=old) as dave:
        cluster_id = dave.submit(folder / "job.sub", cwd=str(folder)).id
        out = cluster.run("dfarm", "user", "token", "dave", "--home", cluster.config.home)
        assert out.returncode == 0
        new = out.stdout.strip().splitlines()[-1]
        wait_until(
            lambda: "user dave has a new token: closing its connection" in cluster.log("scheduler"),
            what="the connection to close",
        )
        with pytest.raises(DfarmError):
            dave.jobs()
    with pytest.raises(DfarmError, match="authentication failed"):
        Client(scheduler=address, token=old)
    with Client(scheduler=address, token=new) as dave:
        jobs = dave.jobs()
    assert [(j.id, j.state) for j in jobs] == [(f"{cluster_id}.{n}", "idle") for n in range(2)]


def test_a_user_removed_while_the_scheduler_was_down_has_no_queued_jobs_after(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=0)
    folder = job_folder(tmp_path)
    token = add_user(cluster, "dave")
    dsub = cluster.run("dsub", "job.sub", cwd=folder, env=cluster.env(DFARM_TOKEN=token))
    assert dsub.returncode == 0, dsub.stderr
    scheduler = cluster.processes["scheduler"]
    scheduler.terminate()
    scheduler.wait(30)
    removal = cluster.run("dfarm", "user", "remove", "dave", "--home", cluster.config.home)
    assert removal.returncode == 0, removal.stderr
    cluster.start_scheduler()
    assert len(wait_until(lambda: events(cluster, "user dave was removed"))) == 2
