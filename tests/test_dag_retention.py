"""An ended DAG's files expire with its results (a scheduler's state on real SQLite,
a fake clock): its input copies and its folder go, a running DAG keeps its own, and
the expired DAG can no longer run again."""

from __future__ import annotations

from pathlib import Path

from core_fakes import FakeClock, close_state, open_state, register, user
from test_dag_core import _dag, _finish, _states

from scheduler import protocol as p
from scheduler.dag_handlers import on_rerun_dag, on_submit_dag
from scheduler.dag_retention import expire_dags
from scheduler.housekeeping import housekeeping
from scheduler.starting import schedule_once
from scheduler.units import run_unit

KEEP = 3600.0


def test_a_failed_dags_files_go_when_its_results_expire(tmp_path: Path, clock: FakeClock) -> None:
    home = tmp_path / "home"
    state = open_state(home, clock, result_retention=KEEP)
    first = _dag(state, ["A", "B"], {"B": ["A"]})
    one = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), first))
    second = _dag(state, ["X"], {})
    two = run_unit(state, "submit", lambda: on_submit_dag(state, user("alice"), second))
    assert isinstance(one, p.DagSubmitted) and isinstance(two, p.DagSubmitted)
    link = register(state, "w1", slots=1)
    run_unit(state, "pass", lambda: schedule_once(state))
    _finish(state, link, f"{one.clusters['A']}.0", 3)
    assert _states(state, one.dag) == {"A": "failed", "B": "futile"}
    spool = home / "spool"
    kept = [spool / str(one.dag) / "input", home / "dags" / str(one.dag)]
    running = [spool / str(two.dag) / "input", home / "dags" / str(two.dag)]
    assert all(path.is_dir() for path in kept + running)

    clock.advance(KEEP / 2)
    housekeeping(state, clock())
    assert all(path.is_dir() for path in kept + running)  # not yet
    clock.advance(KEEP / 2 + 1)
    housekeeping(state, clock())
    assert not any(path.exists() for path in kept)
    assert all(path.is_dir() for path in running)  # X has not ended
    assert _states(state, one.dag) == {"A": "failed", "B": "futile"}  # its rows stay
    rerun = p.RerunDag(dag=one.dag)
    refused = run_unit(state, "rerun", lambda: on_rerun_dag(state, user("alice"), rerun))
    assert isinstance(refused, p.Error) and refused.code == "conflict"
    assert "its inputs were removed" in refused.message
    clock.advance(KEEP)
    assert run_unit(state, "sweep", lambda: expire_dags(state, clock())) == 0  # once only
    close_state(state)
