"""The results pushed with a cluster's end (:class:`~scheduler.protocol.ClusterDone`)
when the cluster is one job whose results all came inline: the client awaiting a
call of a function or a one-item map has them without a request of its own. They
are read as :class:`~scheduler.protocol.FetchResults` reads them, for the same
caller, so nothing is shown that a fetch would not show; nothing is written."""

from __future__ import annotations

from scheduler import protocol as p
from scheduler.callers import Caller
from scheduler.connection import RequestError
from scheduler.result_fetch import on_fetch_results
from scheduler.state import SchedulerState


def pushed_results(state: SchedulerState, conn: Caller, cluster: int) -> p.PushedResults | None:
    """The results of ``cluster``'s only job for ``conn``, if it is one job whose
    results all came inline; None otherwise (then a fetch asks for them)."""
    if state.store.results.hashes_of([(cluster, 0)]) or state.spool.job_dir(cluster, 0).exists():
        return None  # large files: downloaded as usual
    only = f"{cluster}.0"
    # Asked with its second job, if any: a cluster of more than one gets none.
    asked = p.FetchResults(ids=[only, f"{cluster}.1"], brief=True)
    try:
        reply = on_fetch_results(state, conn, asked)
    except RequestError:  # none of the caller's, or cleaned
        return None
    if not isinstance(reply, p.JobResults) or reply.download is not None or reply.remaining:
        return None
    if [job.id for job in reply.jobs] != [only]:
        return None
    return p.PushedResults(job=reply.jobs[0], files=reply.files.get(only, {}))
