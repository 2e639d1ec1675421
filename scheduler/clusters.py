"""Clusters that will not be whole: reservations that expire, submissions cut off.

A cluster is reserved (``new_cluster``) before its jobs come in parts; one whose
first part does not come in time is removed, and one whose last part will not come
(its client went away, an upload failed) loses what was queued of it.
"""

from __future__ import annotations

import logging
from functools import partial

from scheduler.cluster_done import cluster_may_be_done
from scheduler.state import SchedulerState
from scheduler.transitions import remove

log = logging.getLogger("scheduler.server")


def expire_reservations(state: SchedulerState, now: float) -> None:
    """Remove the reserved clusters whose first part did not come in time."""
    for cluster in state.reservations.due(now):
        remove_reservation(state, cluster, "was not submitted in time")


def remove_reservation(state: SchedulerState, cluster: int, why: str) -> None:
    """Remove a cluster reserved without a job: its grant, folder and row."""
    if cluster in state.partial_clusters or not state.store.clusters.forget_reservation(cluster):
        return  # it has jobs now
    state.store.remember(state.spool.end_upload(cluster))
    state.effects.defer("remove cluster folder", partial(state.spool.remove_cluster, cluster))
    log.info("reserved cluster %d removed: it %s", cluster, why)


def upload_failed(state: SchedulerState, cluster: int, why: str) -> None:
    """An input of ``cluster`` did not arrive: its jobs cannot run. Only a cluster
    still open waits for its uploads (its client sends the last part after them)."""
    if cluster in state.partial_clusters:
        abandon_cluster(state, cluster, why)


def abandon_cluster(state: SchedulerState, cluster: int, why: str) -> None:
    """A cluster whose last part will not come: remove what was queued of it."""
    state.partial_clusters.pop(cluster, None)
    state.store.remember(state.spool.end_upload(cluster))
    state.effects.defer("drop uploads", partial(state.spool.drop_uploads, cluster))
    state.effects.defer("forget its size", partial(state.quota.forget, [cluster]))
    jobs = [job for job in state.jobs.active.values() if job.cluster == cluster]
    now = state.clock()
    with state.store.transaction():
        for job in jobs:
            remove(state, job, why)
        state.store.clusters.close_cluster(cluster, now)
    state.mailer.submit_ended(cluster)
    cluster_may_be_done(state, cluster)
    log.warning("cluster %d: %s: %d queued job(s) removed", cluster, why, len(jobs))


def abandon_submissions_of(state: SchedulerState, submitter: object) -> None:
    """``submitter`` went away: the clusters it was sending in parts are cut off."""
    for cluster, (_, sender) in list(state.partial_clusters.items()):
        if sender is submitter:
            abandon_cluster(state, cluster, "the submission was interrupted")
