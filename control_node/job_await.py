"""Waiting for the only job of a cluster and taking its record and results in one
request: what a future of :meth:`Client.submit` and a one-item map do."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

from control_node.connection import NotFound
from scheduler import protocol as p

if TYPE_CHECKING:
    from control_node.client import Client

#: The clusters whose :class:`ClusterDone` a future's wait read, with the results it
#: brought, by connection, until their future takes it: the futures of one
#: connection share its pushes.
_seen: weakref.WeakKeyDictionary[Any, dict[int, p.PushedResults | None]] = (
    weakref.WeakKeyDictionary()
)


def await_job(
    client: Client, job_id: str, awaited: bool, timeout: float | None
) -> tuple[p.JobInfo, p.JobResults]:
    """The record and results of the only job of its cluster, once it has ended: the
    scheduler pushes the cluster's end (unasked when it was submitted ``awaited``)
    with them when they all came inline, else one request brings them together."""
    conn = client.conn
    cluster = p.parse_job_id(job_id)[0]
    seen = _seen.setdefault(conn, {})
    if not awaited:
        conn.request(p.AwaitClusters(clusters=[cluster]))
    deadline = None if timeout is None else time.monotonic() + timeout
    while cluster not in seen:
        left = 5.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {job_id} still running after {timeout} s")
        pushed = conn.next_update(min(left, 1.0 if awaited else 5.0))
        if isinstance(pushed, p.ClusterDone):
            seen[pushed.cluster] = pushed.results  # another future's, perhaps
        elif pushed is None and awaited:
            # Its push may have gone to another reader: ask (answered at once if done).
            conn.request(p.AwaitClusters(clusters=[cluster]))
            awaited = False
    came = seen.pop(cluster)
    if came is not None and came.job.id == job_id:
        files = {job_id: came.files} if came.files else {}
        return came.job, p.JobResults(
            download=None, jobs=[came.job], specs={}, events={}, files=files
        )
    reply = conn.request(p.FetchResults(ids=[job_id], brief=True))
    assert isinstance(reply, p.JobResults)
    if not reply.jobs:
        raise NotFound(f"no job {job_id} of yours")
    return reply.jobs[0], reply
