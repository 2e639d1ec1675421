"""The workflow tables and engine on a scheduler's state (real SQLite, a fake clock):
the migration that makes the tables, and a DAG that goes on when the state is opened
again as after a restart."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from core_fakes import FakeClock, close_state, open_state, register, runs, user

import scheduler.database as database_module
from scheduler import protocol as p
from scheduler.dag_handlers import on_query_dags, on_submit_dag
from scheduler.schema import _DAGS, MIGRATIONS
from scheduler.starting import schedule_once
from scheduler.store import Store
from scheduler.units import run_unit
from scheduler.worker_handlers import on_job_finished


def test_the_workflow_migration_keeps_what_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dfarm.db"
    before = MIGRATIONS[: MIGRATIONS.index(_DAGS)]
    monkeypatch.setattr(database_module, "MIGRATIONS", before)
    old = Store(path)
    cluster = old.clusters.reserve_cluster("alice", 1.0)
    old.close()
    monkeypatch.setattr(database_module, "MIGRATIONS", MIGRATIONS)
    Store(path).close()
    with closing(sqlite3.connect(path)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"dags", "dag_nodes", "dag_edges"} <= tables
        assert db.execute("SELECT id, owner FROM clusters").fetchall() == [(cluster, "alice")]
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


def _dag(state: object, names: list[str], parents: dict[str, list[str]]) -> p.SubmitDag:
    """A DAG of one-job nodes, its script input stored in its cluster's folder."""
    data = b"#!/bin/sh\ntrue\n"
    sha = hashlib.sha256(data).hexdigest()
    dag = state.store.clusters.reserve_cluster("alice", state.clock())  # type: ignore[attr-defined]
    folder = state.spool.input_dir(dag)  # type: ignore[attr-defined]
    folder.mkdir(parents=True)
    (folder / sha).write_bytes(data)
    spec = p.JobSpec(executable="job.sh", inputs=[p.InputFile(name="job.sh", sha256=sha, size=15)])
    nodes = [
        p.DagNodeSubmit(name=n, submit_file="job.sub", jobs=[spec], parents=parents.get(n, []))
        for n in names
    ]
    return p.SubmitDag(dag=dag, name="t.dag", nodes=nodes)


def _states(state: object, dag: int) -> dict[str, str]:
    reply = on_query_dags(state, user("alice"), p.QueryDags(dags=[dag]))  # type: ignore[arg-type]
    assert isinstance(reply, p.DagList)
    return {n.name: n.state for n in reply.dags[0].nodes}


def _finish(state: object, link: object, job_id: str, code: int) -> None:
    """The worker ``link`` reports the attempt it was last sent of ``job_id``."""
    sent = [m for m in link.of(p.RunJob) if m.job_id == job_id]  # type: ignore[attr-defined]
    message = p.JobFinished(job_id=job_id, attempt=sent[-1].attempt, exit_code=code)
    reply = run_unit(state, "finish", lambda: on_job_finished(state, link, message))  # type: ignore[arg-type]
    assert isinstance(reply, p.Ok), reply


def test_a_dag_goes_on_from_its_database(tmp_path: Path, clock: FakeClock) -> None:
    home = tmp_path / "home"
    state = open_state(home, clock)
    message = _dag(state, ["A", "B", "C"], {"B": ["A"], "C": ["B"]})
    reply = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), message))
    assert isinstance(reply, p.DagSubmitted), reply
    dag, clusters = reply.dag, reply.clusters
    assert _states(state, dag) == {"A": "queued", "B": "waiting", "C": "waiting"}
    link = register(state, "w1", slots=2)
    run_unit(state, "pass", lambda: schedule_once(state))
    assert list(runs(link)) == [f"{clusters['A']}.0"]
    _finish(state, link, f"{clusters['A']}.0", 0)
    assert _states(state, dag) == {"A": "done", "B": "queued", "C": "waiting"}
    close_state(state)
    # Opened again, as after a restart: B's job (sent to w1 as A ended) is still
    # queued, C still waits; w1 comes back without it, so it runs again.
    state = open_state(home, clock)
    assert _states(state, dag) == {"A": "done", "B": "queued", "C": "waiting"}
    link = register(state, "w1", slots=2)
    run_unit(state, "pass", lambda: schedule_once(state))
    assert list(runs(link)) == [f"{clusters['B']}.0"]
    _finish(state, link, f"{clusters['B']}.0", 3)  # B fails: C never runs
    assert _states(state, dag) == {"A": "done", "B": "failed", "C": "futile"}
    reply2 = on_query_dags(state, user("alice"), p.QueryDags(dags=[dag]))
    assert isinstance(reply2, p.DagList)
    info = reply2.dags[0]
    assert info.state == "failed" and f"B: job {clusters['B']}.0 exited with 3" in info.reason
    assert not state.dags.runs
    mallory = on_query_dags(state, user("mallory"), p.QueryDags())
    assert isinstance(mallory, p.DagList) and mallory.dags == []
    close_state(state)


def test_priority_orders_ready_nodes_and_is_their_jobs_priority(
    tmp_path: Path, clock: FakeClock
) -> None:
    state = open_state(tmp_path / "home", clock)
    message = _dag(state, ["low", "high", "mid"], {})
    nodes = [
        replace(n, priority={"low": -1, "high": 10, "mid": 0}[n.name], category="one")
        for n in message.nodes
    ]
    message = replace(message, nodes=nodes, max_jobs={"one": 1})
    reply = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), message))
    assert isinstance(reply, p.DagSubmitted), reply
    assert _states(state, reply.dag) == {"low": "ready", "high": "queued", "mid": "ready"}
    (job,) = state.jobs.active.values()
    assert (job.cluster, job.spec.priority) == (reply.clusters["high"], 10)
    link = register(state, "w1", slots=1)
    run_unit(state, "pass", lambda: schedule_once(state))
    _finish(state, link, f"{reply.clusters['high']}.0", 0)
    assert _states(state, reply.dag) == {"low": "ready", "high": "done", "mid": "queued"}
    close_state(state)


def test_max_pre_scripts_lets_the_next_script_run_as_one_ends(
    tmp_path: Path, clock: FakeClock
) -> None:
    state = open_state(tmp_path / "home", clock)
    message = _dag(state, ["A", "B", "C"], {})
    script = b"#!/bin/sh\nexit 0\n"
    sha = hashlib.sha256(script).hexdigest()
    pre = p.DagScriptSpec(name="pre.sh", executable=sha)
    message = replace(
        message,
        nodes=[replace(n, pre=pre) for n in message.nodes],
        scripts={sha: p.pack_bytes(script)},
        config={"DAGMAN_MAX_PRE_SCRIPTS": "1"},
    )
    reply = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), message))
    assert isinstance(reply, p.DagSubmitted), reply
    # Here scripts run as their unit commits, one at a time: each ran, in turn.
    assert _states(state, reply.dag) == {"A": "queued", "B": "queued", "C": "queued"}
    log = (tmp_path / "home" / "dags" / str(reply.dag) / "dag.log").read_text()
    assert log.count("PRE script exited with 0") == 3
    close_state(state)


def test_a_fan_is_queued_together_and_its_jobs_read_the_dags_inputs(
    tmp_path: Path, clock: FakeClock
) -> None:
    home = tmp_path / "home"
    state = open_state(home, clock)
    fan = [f"F{i}" for i in range(5)]
    message = _dag(state, ["A", *fan], dict.fromkeys(fan, ["A"]))
    reply = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), message))
    assert isinstance(reply, p.DagSubmitted), reply
    dag, clusters = reply.dag, reply.clusters
    link = register(state, "w1", slots=1)
    run_unit(state, "pass", lambda: schedule_once(state))
    sent = link.of(p.RunJob)
    # The job reads the DAG's folder: the message and the grant name it, and the
    # small input came inline from it.
    assert [m.inputs_from for m in sent] == [dag] and list(sent[0].files) == [
        message.nodes[0].jobs[0].inputs[0].sha256
    ]
    assert not state.spool.input_dir(clusters["A"]).exists()
    inserts: list[int] = []
    real = state.store.insert_clusters

    def counted(parts: list[Any], *args: Any, **kwargs: Any) -> None:
        inserts.append(len(parts))
        real(parts, *args, **kwargs)

    state.store.insert_clusters = counted  # type: ignore[method-assign]
    _finish(state, link, f"{clusters['A']}.0", 0)
    assert inserts == [5]  # the five children, in one transaction
    assert _states(state, dag) == {"A": "done", **dict.fromkeys(fan, "queued")}
    close_state(state)
    # Opened again: every child's row and job were committed with that turn.
    state = open_state(home, clock)
    assert _states(state, dag) == {"A": "done", **dict.fromkeys(fan, "queued")}
    assert sorted(j.cluster for j in state.jobs.active.values()) == sorted(clusters[n] for n in fan)
    link = register(state, "w1", slots=5)
    run_unit(state, "pass", lambda: schedule_once(state))
    assert {m.inputs_from for m in link.of(p.RunJob)} == {dag}
    for name in fan:
        _finish(state, link, f"{clusters[name]}.0", 0)
    assert set(_states(state, dag).values()) == {"done"}
    close_state(state)


def test_nodes_with_jobs_alike_store_them_once_and_read_them_after_a_restart(
    tmp_path: Path, clock: FakeClock
) -> None:
    home = tmp_path / "home"
    state = open_state(home, clock)
    message = _dag(state, ["A", "B", "C", "D"], dict.fromkeys(["B", "C", "D"], ["A"]))
    # C's jobs differ (as a submit file's VARS make them): stored in full.
    c = message.nodes[2]
    message.nodes[2] = replace(c, jobs=[replace(c.jobs[0], arguments=["x", "y"])])
    reply = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), message))
    assert isinstance(reply, p.DagSubmitted), reply
    dag, clusters = reply.dag, reply.clusters
    stored = {
        r["name"]: r["specs"]
        for r in state.store.query("SELECT name, specs FROM dag_nodes WHERE dag=?", (dag,))
    }
    assert stored["B"] == "@0" and stored["A"].startswith("[")
    assert stored["C"].startswith("[") and '"x","y"' in stored["C"]
    # Each node's cluster names its submit file from the start, and is written once.
    files = state.store.query(
        f"SELECT submit_file, submitted FROM clusters WHERE id IN ({','.join('?' * 4)})",
        tuple(clusters.values()),
    )
    assert {(r["submit_file"], r["submitted"] is not None) for r in files} == {("job.sub", True)}
    link = register(state, "w1", slots=1)
    run_unit(state, "pass", lambda: schedule_once(state))
    close_state(state)
    # Opened again (nothing read ahead or decoded kept): the children's jobs are
    # read from the rows they refer to.
    state = open_state(home, clock)
    link = register(state, "w1", slots=4)
    run_unit(state, "pass", lambda: schedule_once(state))
    _finish(state, link, f"{clusters['A']}.0", 0)
    jobs = {j.cluster: j.spec for j in state.jobs.active.values()}
    first = message.nodes[0].jobs[0]
    assert jobs[clusters["B"]] == jobs[clusters["D"]] == first
    assert jobs[clusters["C"]] == replace(first, arguments=["x", "y"])
    run_unit(state, "pass", lambda: schedule_once(state))
    for name in ("B", "C", "D"):
        _finish(state, link, f"{clusters[name]}.0", 0)
    assert set(_states(state, dag).values()) == {"done"}
    close_state(state)
