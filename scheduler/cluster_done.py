"""Telling those who await a cluster that it is done."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.pushed_results import pushed_results
from scheduler.state import SchedulerState


def cluster_may_be_done(state: SchedulerState, cluster: int) -> None:
    """Tell those awaiting ``cluster`` that it is done, if it is: fully submitted,
    with no job idle or running, and no DAG (or DAG node) of that id still to run."""
    if (
        cluster in state.jobs.unfinished
        or cluster in state.partial_clusters
        or state.dags.holds(cluster)
    ):
        return
    push = state.push_results.pop(cluster, False)
    for conn in state.awaiting.pop(cluster, ()):
        results = pushed_results(state, conn, cluster) if push else None
        conn.send(p.ClusterDone(cluster=cluster, results=results))
