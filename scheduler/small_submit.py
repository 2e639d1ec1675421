"""A small submission in one request (:class:`~scheduler.protocol.SubmitSmall`): the
cluster reserved, its jobs queued and its end awaited as :class:`NewCluster`,
:class:`SubmitJobs` and :class:`AwaitClusters` would, so its records are those of
any cluster."""

from __future__ import annotations

import shutil

from scheduler import protocol as p
from scheduler.callers import Replier
from scheduler.control_handlers import on_await_clusters, on_submit_jobs
from scheduler.node_setup.private_dir import make_private_dir
from scheduler.state import SchedulerState, refuse_if_disk_full


def on_submit_small(state: SchedulerState, conn: Replier, msg: p.SubmitSmall) -> p.Message:
    refuse_if_disk_full(state)
    # No upload budget to grant: the quota is checked once, with the inline inputs
    # counted, as SubmitJobs checks it (a walk of the owner's spool less per call).
    now = state.reservations.clock()
    cluster = state.store.clusters.reserve_cluster(conn.name, now)
    state.reservations.add(cluster, now)
    folder = make_private_dir(state.spool.input_dir(cluster))  # where the inputs go
    # A refused submission leaves nothing: the cluster's row is rolled back with the
    # unit, and these with it.
    state.store.remember(lambda: state.reservations.submitted(cluster))
    state.store.remember(lambda: shutil.rmtree(folder.parent, ignore_errors=True))
    reply = on_submit_jobs(
        state,
        conn,
        p.SubmitJobs(cluster=cluster, submit_file=msg.submit_file, jobs=msg.jobs, files=msg.files),
    )
    if msg.await_end and isinstance(reply, p.Submitted):
        if len(msg.jobs) == 1:  # its end carries its results (scheduler/pushed_results.py)
            state.push_results[cluster] = True
        # Before the reply, and before any job can be dispatched (the loop's next turn).
        on_await_clusters(state, conn, p.AwaitClusters(clusters=[cluster]))
    return reply
