"""What the pages and the JSON API show, read through the scheduler's own handlers.

Every read and every action here calls the handler that serves the same request
over the socket protocol (``dq``, ``dq -analyze``, ``dstat``, ``dfarm users``,
``dhistory``, ``drm``/``dhold``/``drelease``, ``dtail``), with a
:class:`~scheduler.web.session.WebUser` as the caller: who may see or touch what
is decided there, once, for the commands and the web alike. Records are turned into
JSON with :func:`scheduler.protocol.to_wire`, so the field names are those of the
commands' ``--json``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

from scheduler import control_handlers, explain, job_control
from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.control_handlers import worker_infos
from scheduler.protocol import JobState
from scheduler.selection import owned_job
from scheduler.units import run_request
from scheduler.web.session import WebUser

if TYPE_CHECKING:
    from scheduler.job_records import Job
    from scheduler.state import SchedulerState

ACTIVE = [JobState.IDLE.value, JobState.RUNNING.value, JobState.HELD.value]
DAY = 86400.0
#: Seconds to wait for a worker's chunk of a running job's output.
TAIL_TIMEOUT = 10.0


def pool(s: SchedulerState, user: WebUser) -> p.WorkerList:
    """``dstat``: the workers, the spool's disk use and how long results are kept."""
    reply = control_handlers.on_query_workers(s, user, p.QueryWorkers())
    assert isinstance(reply, p.WorkerList)
    return reply


def worker(s: SchedulerState, name: str) -> p.WorkerInfo:
    """One connected worker by name, as ``dstat`` shows it (RequestError "not_found"
    otherwise); every user may see every worker."""
    found = [w for w in worker_infos(s) if w.name == name]
    if not found:
        raise RequestError(f"no worker named {name!r} is connected", "not_found")
    return found[0]


def jobs(
    s: SchedulerState,
    user: WebUser,
    ids: list[str] | None = None,
    states: list[str] | None = None,
    all_users: bool = False,
) -> list[p.JobInfo]:
    """``dq``: jobs by id and state (default: the caller's in the queue)."""
    message = p.QueryJobs(
        ids=ids or [], states=ACTIVE if states is None else states, all_users=all_users
    )
    reply = control_handlers.on_query_jobs(s, user, message)
    assert isinstance(reply, p.JobList)
    return reply.jobs


def job_page(
    s: SchedulerState,
    user: WebUser,
    clusters: list[str],
    states: list[str] | None,
    all_users: bool,
    after: str,
    limit: int,
) -> tuple[list[p.JobInfo], bool]:
    """A page of ``dq``: at most ``limit`` jobs of ``clusters`` (none: any) in
    ``states`` (None: the queue's; empty: all) after the job ``after``, in id order;
    and whether more match."""
    message = p.QueryJobs(
        ids=clusters, states=ACTIVE if states is None else states, all_users=all_users,
        limit=limit, after=after,
    )  # fmt: skip
    reply = control_handlers.on_query_jobs(s, user, message)
    assert isinstance(reply, p.JobList)
    return reply.jobs, reply.more


async def history(
    s: SchedulerState,
    user: WebUser,
    ids: list[str] | None = None,
    since: float | None = None,
    all_users: bool = False,
    limit: int = 500,
) -> list[p.JobInfo]:
    """``dhistory``: the ``limit`` most recently ended of the finished and removed
    jobs, the most recently ended last; read a page at a time, the loop serving
    others between pages."""
    pages: list[list[p.JobInfo]] = []
    before: tuple[float, str] | None = None
    while limit > 0:
        found, more = history_page(s, user, ids or [], since, all_users, before, limit)
        pages.append(found)
        limit -= len(found)
        if not more or not found or found[0].end_time is None:
            break
        before = found[0].end_time, found[0].id
        await asyncio.sleep(0)
    return [job for page in reversed(pages) for job in page]


def history_page(
    s: SchedulerState,
    user: WebUser,
    ids: list[str],
    since: float | None,
    all_users: bool,
    before: tuple[float, str] | None,
    limit: int,
) -> tuple[list[p.JobInfo], bool]:
    """A page of ``dhistory`` (at most :data:`~scheduler.job_control.HISTORY_PAGE`
    jobs): those that ended last before the job ``before`` names (its end time and
    id; None: the newest), the most recent last; and whether older ones match too."""
    before_time, before_job = before if before is not None else (None, "")
    message = p.QueryHistory(
        ids=ids, user="*" if all_users else "", since=since, limit=limit,
        before_time=before_time, before_job=before_job,
    )  # fmt: skip
    reply = job_control.on_query_history(s, user, message)
    assert isinstance(reply, p.JobList)
    return reply.jobs, reply.more


def change(s: SchedulerState, user: WebUser, action: str, ids: list[str]) -> p.JobsChanged:
    """``drm``/``dhold``/``drelease`` (``action``: remove, hold, release)."""
    message = p.ChangeJobs(action=action, ids=ids)
    reply = run_request(s, message.type, lambda: job_control.on_change_jobs(s, user, message))
    assert isinstance(reply, p.JobsChanged)
    s.end_turn()  # committed before the browser hears of it
    return reply


def own_job(s: SchedulerState, user: WebUser, job_id: str) -> tuple[Job, p.JobInfo]:
    """One of the caller's jobs, in any state, and its record as ``dq`` shows it
    (RequestError "not_found" otherwise)."""
    job = owned_job(s, user, job_id)  # the owner check of dtail, dfetch and friends
    found = jobs(s, user, [job.id], states=[])
    if not found:
        raise RequestError(f"no job of yours is {job_id}", "not_found")
    return job, found[0]


class _Waiter:
    """The caller of ``dtail``'s handler on behalf of a web user: the reply a worker
    sends later (the handler answers a running job's output request when the worker's
    chunk arrives) resolves :attr:`reply`."""

    def __init__(self, user: WebUser):
        self.name, self.local_host, self.role = user.name, user.local_host, user.role
        self.peer = user.peer
        self.admin = user.admin
        self.reply: asyncio.Future[p.Message] = asyncio.get_running_loop().create_future()

    def send(self, message: p.Message, urgent: bool = True) -> None:
        if not self.reply.done():
            self.reply.set_result(message)


async def tail(
    s: SchedulerState, user: WebUser, job_id: str, stream: str, offset: int, limit: int
) -> p.OutputChunk:
    """``dtail``: up to ``limit`` bytes of a job's stdout or stderr from ``offset``, read
    from its worker while it runs."""
    waiter = _Waiter(user)
    message = p.TailJob(job_id=job_id, stream=stream, offset=offset, limit=limit)
    reply = job_control.on_tail_job(s, waiter, message)
    if asyncio.iscoroutine(reply):  # a finished job's large output, read in a thread
        reply = await reply
    if reply is None:
        try:
            reply = await asyncio.wait_for(waiter.reply, TAIL_TIMEOUT)
        except TimeoutError:
            raise RequestError("the job's worker did not answer in time", "gone") from None
    if isinstance(reply, p.Error):
        raise RequestError(reply.message, reply.code)
    assert isinstance(reply, p.OutputChunk)
    return reply


def users(s: SchedulerState, user: WebUser) -> p.UserList:
    """``dfarm users``: each user's fair-share usage, share and rank."""
    reply = explain.on_query_users(s, user, p.QueryUsers())
    assert isinstance(reply, p.UserList)
    return reply


def finished_counts(s: SchedulerState, since: float) -> dict[str, int]:
    """How many jobs completed and were removed since ``since`` (every user's)."""
    rows = s.store.query(
        "SELECT state, COUNT(*) AS n FROM jobs WHERE state IN (?, ?) AND end_time >= ?"
        " GROUP BY state",
        (JobState.COMPLETED.value, JobState.REMOVED.value, since),
    )
    return {row["state"]: row["n"] for row in rows}


def recent_clusters(s: SchedulerState, user: WebUser, limit: int = 50) -> list[tuple[int, int]]:
    """The caller's most recent clusters, with their number of jobs."""
    rows = s.store.query(
        "SELECT cluster, COUNT(*) AS n FROM jobs WHERE owner = ? GROUP BY cluster"
        " ORDER BY cluster DESC LIMIT ?",
        (user.name, limit),
    )
    return [(row["cluster"], row["n"]) for row in rows]


def overview(s: SchedulerState, user: WebUser) -> dict[str, Any]:
    """The overview page: workers, slots, jobs by state (finished: last day), users."""
    workers = pool(s, user).workers
    counts = explain.on_query_counts(s, user, p.QueryCounts(all_users=True))
    assert isinstance(counts, p.JobCounts)
    states = Counter(counts.counts)
    states.update(finished_counts(s, s.clock() - DAY))
    shares = users(s, user)
    return {
        "workers": len(workers),
        "workers_busy": sum(1 for w in workers if w.state == "busy"),
        "slots_used": sum(w.slots_used for w in workers),
        "slots_total": sum(w.slots_total for w in workers),
        "jobs": {state.value: states.get(state.value, 0) for state in JobState},
        "jobs_period": DAY,
        "users": p.to_wire(shares.users),
        "halflife": shares.halflife,
        "user": user.name,
        "loop_lag": s.loop_lag.stats().to_json(),
    }
