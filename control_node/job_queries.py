"""Jobs asked of the scheduler by id and state, a page at a time, so that no reply
outgrows a frame whatever the number of jobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from control_node.connection import Connection
from scheduler import protocol as p

#: The states a query asks for by default: the jobs still in the queue.
ACTIVE_STATES = [p.JobState.IDLE.value, p.JobState.RUNNING.value, p.JobState.HELD.value]
#: Jobs per reply of a query: about 2 MB of records, well under a frame.
PAGE = 5000
#: A generous bound on one job's record on the wire (most take about 400 bytes): a
#: page holds no more jobs than a frame of the connection takes at this size.
RECORD_BYTES = 3000


def query_jobs(
    conn: Connection,
    ids: list[str],
    states: list[str] | None = None,
    all_users: bool = False,
    limit: int = 0,
) -> list[p.JobInfo]:
    """Jobs by id (``42`` or ``42.0``) and state (default: in the queue), in id order.

    Asked for a page at a time, so that no reply outgrows a frame, whatever the
    number of jobs; ``limit`` stops after that many jobs (0: all)."""
    return [job for page in job_pages(conn, ids, states, all_users, limit) for job in page]


def job_pages(
    conn: Connection,
    ids: list[str],
    states: list[str] | None = None,
    all_users: bool = False,
    limit: int = 0,
    page: int = PAGE,
) -> Iterator[list[p.JobInfo]]:
    """As :func:`query_jobs`, one page (at most ``page`` jobs) at a time, each asked
    for once the one before is used: a caller that writes each page as it comes
    holds no more than one."""
    most = max(1, min(page, conn.max_frame // RECORD_BYTES))
    seen, after = 0, ""
    while True:
        reply = conn.request(_page_query(ids, states, all_users, most, limit, seen, after))
        assert isinstance(reply, p.JobList)
        if reply.jobs:
            seen += len(reply.jobs)
            after = reply.jobs[-1].id
            yield reply.jobs
        if not reply.more or not reply.jobs or 0 < limit <= seen:
            return


def _page_query(
    ids: list[str],
    states: list[str] | None,
    all_users: bool,
    most: int,
    limit: int,
    seen: int,
    after: str,
) -> p.QueryJobs:
    """The request for the page of jobs after ``after``: at most ``most`` jobs, and
    no more than ``limit`` in all (0: no limit) once ``seen`` have come."""
    return p.QueryJobs(
        ids=list(ids),
        states=ACTIVE_STATES if states is None else list(states),
        all_users=all_users,
        limit=most if limit <= 0 else min(most, limit - seen),
        after=after,
    )


def wire_pages(
    conn: Connection,
    ids: list[str],
    states: list[str] | None = None,
    all_users: bool = False,
    limit: int = 0,
    page: int = PAGE,
) -> Iterator[list[dict[str, Any]]]:
    """As :func:`job_pages`, the records as the JSON data they came as (for writing
    out as they are); each next page is asked for before this one is given, so that
    the scheduler makes it while the caller writes this one."""
    most = max(1, min(page, conn.max_frame // RECORD_BYTES))

    def ask(after: str, seen: int) -> int:
        return conn.send_request(_page_query(ids, states, all_users, most, limit, seen, after))

    seen, pending = 0, ask("", 0)
    while True:
        reply = conn.raw_reply(pending)
        jobs = reply.get("jobs") or []
        seen += len(jobs)
        last = not reply.get("more") or not jobs or 0 < limit <= seen
        if not last:
            pending = ask(jobs[-1]["id"], seen)
        if jobs:
            yield jobs
        if last:
            return
