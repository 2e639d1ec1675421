"""Waiting for jobs while fetching their results as they finish.

The scheduler pushes each job's record when it ends; the finished jobs are fetched
in batches (every :data:`BATCH` jobs or :data:`INTERVAL` seconds, whichever comes
first), so that when the last job ends only the last batch is left to fetch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from control_node.connection import Connection
from control_node.job_queries import query_jobs
from control_node.results import DONE_STATES, FetchedJob, Fetcher, _order, seconds_text
from scheduler import protocol as p

#: Finished jobs fetched together at most.
BATCH = 2000
#: Seconds a finished job waits at most for the others of its batch.
INTERVAL = 0.5
#: Seconds between two calls of ``on_update`` (a progress display) at least.
REDRAW = 0.1


def wait_and_fetch(
    conn: Connection,
    ids: list[str],
    dest: Path | None = None,
    *,
    per_job: bool = False,
    submit_paths: bool = True,
    fetch_held: bool = True,
    timeout: float | None = None,
    on_update: Callable[[dict[str, p.JobInfo]], None] | None = None,
) -> tuple[list[p.JobInfo], list[FetchedJob]]:
    """Wait until every job named is completed, removed or held, fetching the results
    of those finished (held ones too with ``fetch_held``) while the others run; returns
    the jobs' last records and what was fetched. TimeoutError after ``timeout`` seconds
    (what finished by then is fetched)."""
    clusters = sorted({p.parse_job_id(j)[0] for j in ids})
    everything = on_update is not None
    conn.request(p.Subscribe(clusters=clusters, states=[] if everything else sorted(DONE_STATES)))
    jobs = {j.id: j for j in query_jobs(conn, ids, states=[])}
    pending = {j for j, job in jobs.items() if job.state not in DONE_STATES}
    fetcher = Fetcher(conn, dest, submit_paths, per_job)
    ready = [job for job in jobs.values() if job.state in DONE_STATES]
    if on_update is not None:
        on_update(jobs)
    deadline = None if timeout is None else time.monotonic() + timeout
    due = redraw = time.monotonic() + INTERVAL
    try:
        while pending:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"jobs still running after {seconds_text(timeout or 0)}")
            if ready and (len(ready) >= BATCH or now >= due):
                _fetch(fetcher, ready, fetch_held)
                ready = []
            wake = due if ready else now + 5.0
            if deadline is not None:
                wake = min(wake, deadline)
            update = conn.next_update(max(0.01, wake - now))
            if not isinstance(update, p.JobUpdate) or update.job.id not in pending:
                continue
            if not ready:
                due = time.monotonic() + INTERVAL
            jobs[update.job.id] = update.job
            if update.job.state in DONE_STATES:
                pending.discard(update.job.id)
                ready.append(update.job)
            if on_update is not None and (not pending or time.monotonic() >= redraw):
                on_update(jobs)
                redraw = time.monotonic() + REDRAW
    except TimeoutError:
        _fetch(fetcher, ready, fetch_held)
        fetcher.finish()
        raise
    _fetch(fetcher, ready, fetch_held)
    return [jobs[j] for j in sorted(jobs, key=_order)], fetcher.finish()


def _fetch(fetcher: Fetcher, jobs: list[p.JobInfo], fetch_held: bool) -> None:
    wanted = [j.id for j in jobs if fetch_held or j.state != p.JobState.HELD.value]
    if wanted:
        fetcher.fetch(wanted)
