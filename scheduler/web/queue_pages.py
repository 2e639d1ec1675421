"""Pages of the queue for the dashboard and its API: sorted, filtered and counted
from :class:`~scheduler.web.queue_index.QueueIndex`, so that an answer costs its
page, not the queue. Places in line and reasons are worked out for the page's
jobs only. A search through the jobs' text is the one pass over the queue: it
reads the jobs in chunks and lets the event loop run between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler import explain
from scheduler import protocol as p
from scheduler.authz import may_control
from scheduler.connection import RequestError
from scheduler.protocol import JobState
from scheduler.selection import visible
from scheduler.web.queue_index import SORTS, STATES, Key, QueueIndex
from scheduler.web.session import WebUser

if TYPE_CHECKING:
    from scheduler.job_records import Job
    from scheduler.state import SchedulerState

#: Rows of a page unless ``limit`` says otherwise, and the most it may say.
PAGE = 50
MAX_PAGE = 500
#: Longest "why it waits" line on the queue page.
SHORT = 80


@dataclass(frozen=True)
class QueueQuery:
    """What a page of the queue shows: whose jobs, which, in what order, which rows."""

    all_users: bool = False
    owner: str | None = None
    states: tuple[str, ...] = STATES
    cluster: int | None = None
    text: str = ""
    sort: str = "state"
    descending: bool = False
    offset: int = 0
    limit: int = PAGE

    @property
    def scope(self) -> str | None:
        """The owner whose jobs are listed (None: everyone's)."""
        return self.owner

    def params(self, **changes: object) -> dict[str, str]:
        """The query string that asks for this page (with ``changes``)."""
        fields = {**self.__dict__, **changes}
        out = {
            "all": "1" if fields["all_users"] else "",
            "owner": fields["owner"] or "" if fields["all_users"] else "",
            "state": ",".join(fields["states"]) if fields["states"] != STATES else "",
            "cluster": "" if fields["cluster"] is None else str(fields["cluster"]),
            "q": fields["text"],
            "sort": ("-" if fields["descending"] else "") + fields["sort"],
            "offset": str(fields["offset"]) if fields["offset"] else "",
            "limit": str(fields["limit"]) if fields["limit"] != PAGE else "",
        }
        return {k: v for k, v in out.items() if v}


def parse_query(user: WebUser, q: Mapping[str, str], sort: str = "state") -> QueueQuery:
    """A :class:`QueueQuery` from a request's query string (RequestError "invalid"
    for a malformed one). Without ``all=1`` (or ``owner=``), the caller's jobs."""
    try:
        offset = int(q.get("offset") or 0)
        limit = int(q.get("limit") or PAGE)
        cluster = int(q["cluster"]) if q.get("cluster") else None
    except ValueError:
        raise RequestError("offset, limit and cluster must be whole numbers", "invalid") from None
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise RequestError(f"offset must be >= 0 and limit from 1 to {MAX_PAGE}", "invalid")
    order = q.get("sort") or sort
    descending = order.startswith("-")
    order = order.lstrip("-")
    if order not in SORTS:
        raise RequestError(f"sort must be one of {', '.join(SORTS)}", "invalid")
    states = tuple(s for s in (q.get("state") or "").split(",") if s) or STATES
    unknown = set(states) - set(STATES)
    if unknown:
        raise RequestError(f"state must be among {', '.join(STATES)}", "invalid")
    owner = (q.get("owner") or "").strip() or None
    all_users = q.get("all") == "1" or owner is not None
    return QueueQuery(
        all_users=all_users,
        owner=owner if all_users else user.name,
        states=tuple(s for s in STATES if s in states),
        cluster=cluster,
        text=(q.get("q") or "").strip(),
        sort=order,
        descending=descending,
        offset=offset,
        limit=limit,
    )


async def queue_page(
    s: SchedulerState, index: QueueIndex, user: WebUser, query: QueueQuery
) -> dict[str, Any]:
    """One page of the queue: rows (``dq --json`` records with ``position``,
    ``reason``, ``running_for`` and ``mine``), how many jobs match (``total``) and
    the counts per state of the jobs in scope."""
    if query.text:
        keys, total = await search(s, index, user, query)
    else:
        found = index.page(
            query.scope,
            query.states,
            query.cluster,
            query.sort,
            query.descending,
            query.offset,
            query.limit,
        )
        keys, total = found.keys, found.total
    jobs = [job for job in map(s.jobs.active.get, keys) if job is not None]
    return {
        "jobs": rows(s, index, user, jobs),
        "total": total,
        "offset": query.offset,
        "limit": query.limit,
        "sort": ("-" if query.descending else "") + query.sort,
        "counts": {state: index.count(query.scope, state) for state in STATES},
        "user": user.name,
        "all_users": query.all_users,
        "time": s.clock(),
    }


async def search(
    s: SchedulerState, index: QueueIndex, user: WebUser, query: QueueQuery
) -> tuple[list[Key], int]:
    """The page of the jobs whose text contains ``query.text`` (id, owner, worker;
    the command and hold reason of jobs the caller may see whole), and how many
    match: read in chunks, the loop running between them."""
    needle = query.text.lower()
    page: list[Key] = []
    total = 0
    chunks = index.keys(query.scope, query.states, query.cluster, query.sort, query.descending)
    for chunk in chunks:
        for key in chunk:
            job = s.jobs.active.get(key)
            if job is None or needle not in _text(user, job):
                continue
            if query.offset <= total < query.offset + query.limit:
                page.append(key)
            total += 1
        await asyncio.sleep(0)
    return page, total


def _text(user: WebUser, job: Job) -> str:
    words = [job.id, job.owner, job.worker or ""]
    if may_control(user, job):  # never match what the caller may not see
        words += [job.spec.executable, *job.spec.arguments, job.hold_reason or ""]
    return " ".join(words).lower()


def rows(
    s: SchedulerState, index: QueueIndex, user: WebUser, jobs: list[Job]
) -> list[dict[str, Any]]:
    """The queue page's rows of ``jobs``: the caller's waiting ones with their place
    in line and why they wait."""
    now = s.clock()
    waiting = [j for j in jobs if j.owner == user.name and j.state is JobState.IDLE]
    why = {a.id: a for a in analyses(s, index, waiting)}
    out = []
    for job in jobs:
        row = p.to_wire(visible(user, job))
        analysis = why.get(job.id)
        row["position"] = analysis.position if analysis and analysis.position else None
        row["reason"] = reason(job, analysis, now) if job.owner == user.name else ""
        started = job.start_time if job.state is JobState.RUNNING else None
        row["running_for"] = None if started is None else now - started
        row["mine"] = job.owner == user.name
        out.append(row)
    return out


def analyses(s: SchedulerState, index: QueueIndex, jobs: list[Job]) -> list[p.JobAnalysis]:
    """``dq -analyze`` of these idle or held jobs, at the cost of these jobs."""
    if not jobs:
        return []
    running = [
        job for job in map(s.jobs.active.get, index.page(states=["running"], limit=10**9).keys)
        if job is not None
    ]  # fmt: skip
    return explain.analyze(s, jobs, running, index.ahead_own)


def reason(job: Job, analysis: p.JobAnalysis | None, now: float) -> str:
    """One short line of why a job waits, for the queue page (the whole explanation
    of ``dq -analyze`` is on the job's page)."""
    if job.state is JobState.HELD:
        held = job.hold_reason or ""
        text = held if held.startswith("held") else f"held: {held or 'see its page'}"
    elif analysis is None:
        return ""
    elif analysis.reasons:
        text = f"no connected worker can run it: {analysis.reasons[0]}"
    else:
        text = f"{analysis.workers_free} of {analysis.workers_matching} matching worker(s) free"
        if analysis.estimated_start is not None:
            text += f", starts in about {max(0.0, analysis.estimated_start - now):.0f} s"
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"
