"""Users' control of their jobs: remove, hold, release, edit, history and live output.

Who may touch a job is decided in :mod:`scheduler.authz`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from scheduler import protocol as p
from scheduler.authz import visible_info
from scheduler.callers import Caller, Replier
from scheduler.connection import Connection, RequestError
from scheduler.dag_handlers import change_dags
from scheduler.job_files import read_range, result_file
from scheduler.job_records import Job
from scheduler.protocol import JobState
from scheduler.run_time import total_run_time
from scheduler.selection import ACTIONABLE, controlled, owned_job, parse_ids
from scheduler.state import SchedulerState
from scheduler.submission import ATTRIBUTE_NAME
from scheduler.transitions import hold, release, remove

log = logging.getLogger("scheduler.server")

_S = JobState
#: The states each action applies to.
_APPLIES = {
    "remove": set(ACTIONABLE),
    "hold": {_S.IDLE, _S.RUNNING},
    "release": {_S.HELD},
}
#: What ``dedit`` may change, with the parser of each value.
EDITABLE = {
    "request_memory": p.parse_memory_mb,
    "request_disk": p.parse_disk_kb,
    "request_cpus": lambda v: _whole(v, 1),
    "request_gpus": lambda v: _whole(v, 0),
    "max_retries": lambda v: _whole(v, 0),
    "allowed_job_duration": lambda v: _whole(v, 1),
}
STREAMS = ("stdout", "stderr")
#: The most finished jobs one ``dhistory`` request is answered with (its cost is
#: about 80 µs a job: each job's events are read); a reader asks for the next page
#: back with ``before_time`` and ``before_job``.
HISTORY_PAGE = 100
_tail_ids = itertools.count(1)


def _chunk(job: Job, offset: int, data: bytes, size: int) -> p.OutputChunk:
    return p.OutputChunk(
        job_id=job.id, offset=offset, data=p.pack_bytes(data), size=size, running=False
    )


def custom_attribute(key: str) -> str | None:
    """The attribute that ``+Name`` or ``MY.Name`` names (as in a submit file), else None;
    a badly formed name is an error."""
    if key.startswith("+"):
        name = key[1:]
    elif key[:3].lower() == "my.":
        name = key[3:]
    else:
        return None
    if not ATTRIBUTE_NAME.fullmatch(name):
        raise RequestError(f"{key!r}: not a job attribute name", "invalid")
    return name


def with_attributes(spec: p.JobSpec, changes: dict[str, str]) -> dict[str, Any]:
    """The ``attributes`` field of ``spec`` with ``changes`` made (names are
    case-insensitive, as in ClassAds); nothing when there are none."""
    if not changes:
        return {}
    lower = {name.lower() for name in changes}
    kept = {k: v for k, v in spec.attributes.items() if k.lower() not in lower}
    return {"attributes": kept | changes}


def _whole(value: str, minimum: int) -> int:
    text = value.strip()
    if not text.lstrip("+").isdigit() or int(text) < minimum or int(text) >= 2**31:
        raise ValueError(f"expected a whole number >= {minimum}, not {value!r}")
    return int(text)


# ------------------------------------------------------------------ remove, hold, release


def on_change_jobs(state: SchedulerState, conn: Caller, msg: p.ChangeJobs) -> p.Message:
    if msg.action not in p.ACTIONS:
        raise RequestError(f"unknown action {msg.action!r}", "invalid")
    with state.store.transaction():
        # A DAG's id names the whole DAG (see scheduler/dag_handlers.py).
        ids, changed, skipped = change_dags(state, conn, msg.action, msg.ids, msg.reason)
    if (changed or skipped) and not ids and not msg.all_jobs:
        state.wake()
        return p.JobsChanged(changed=changed, skipped=skipped)
    jobs = controlled(state, conn, ids, msg.all_jobs)
    by = f"by {conn.name}" + (f": {msg.reason}" if msg.reason else "")
    with state.store.transaction():
        for job in jobs:
            if job.state not in _APPLIES[msg.action]:
                skipped[job.id] = f"is {job.state.value}"
                continue
            if msg.action == "remove":
                remove(state, job, by, kill=f"removed {by}")
            elif msg.action == "hold":
                hold(state, job, f"held {by}")
            else:
                release(state, job, by)
            changed.append(job.id)
    if changed:
        log.info("user %s: %s %s", conn.name, msg.action, " ".join(changed[:20]))
        state.wake()
    return p.JobsChanged(changed=changed, skipped=skipped)


# ------------------------------------------------------------------ edit


def on_edit_jobs(state: SchedulerState, conn: Caller, msg: p.EditJobs) -> p.Message:
    if not msg.changes:
        raise RequestError("nothing to change: give KEY=VALUE", "invalid")
    values: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for key, text in msg.changes.items():
        name = custom_attribute(key)
        if name is not None:
            if not text.strip():
                raise RequestError(f"{key}: give the attribute a value", "invalid")
            attributes[name] = text.strip()
            continue
        parse = EDITABLE.get(key.lower())
        if parse is None:
            raise RequestError(
                f"{key!r} cannot be edited (only {', '.join(sorted(EDITABLE))}, +Name or MY.Name)",
                "invalid",
            )
        try:
            values[key.lower()] = parse(text)
        except ValueError as exc:
            raise RequestError(f"{key}: {exc}", "invalid") from None
    detail = ", ".join(
        [f"{k} = {v}" for k, v in values.items()] + [f"{k} = {v}" for k, v in attributes.items()]
    )
    changed, skipped = [], {}
    renames = any(name.lower() == "jobbatchname" for name in attributes)
    # Jobs that shared a spec share the edited one: a cluster keeps its few shapes.
    edited: dict[int, tuple[p.JobSpec, p.JobSpec]] = {}
    with state.store.transaction():
        for job in controlled(state, conn, msg.ids, False):
            if job.state not in (_S.IDLE, _S.HELD):
                skipped[job.id] = f"is {job.state.value} (hold it first)"
                continue
            if job.state is _S.IDLE:
                # Requests decide where a job fits: requeue it with the new ones.
                state.jobs.queue.discard(job)
            state.jobs.keep(job, ["spec"])
            old = job.spec
            pair = edited.get(id(old))
            if pair is None:
                new = dataclasses.replace(old, **values, **with_attributes(old, attributes))
                pair = edited[id(old)] = (old, new)
            job.spec = pair[1]
            state.summary.respecced(job, old)
            if job.state is _S.IDLE:
                state.jobs.queue.push(job)
            state.store.save_spec(job, "edited", detail)
            state.policies.note(job)
            if renames:
                state.summary.renamed(job)
            changed.append(job.id)
    if changed:
        state.wake()
    return p.JobsChanged(changed=changed, skipped=skipped)


# ------------------------------------------------------------------ history


def on_query_history(state: SchedulerState, conn: Caller, msg: p.QueryHistory) -> p.Message:
    """A page of finished jobs, the newest ``limit`` (at most :data:`HISTORY_PAGE`)
    of those that ended before ``before_time``/``before_job``, the most recent last;
    ``more`` says older ones match too."""
    parse_ids(msg.ids)  # refuses malformed ids
    before = history_key(msg.before_time, msg.before_job)
    owner = None if msg.user == "*" else (msg.user or conn.name)
    limit = max(1, min(msg.limit, HISTORY_PAGE))
    jobs = state.store.history(
        owner=owner, job_ids=msg.ids, since=msg.since, limit=limit + 1, before=before
    )
    more = len(jobs) > limit
    if more:
        jobs = jobs[1:]  # the oldest one: only there to say that more match
    return p.JobList(jobs=history_records(state, conn, jobs), more=more)


def history_key(before_time: float | None, before_job: str) -> tuple[float, int, int] | None:
    """Where a page of the history starts back from: the end time and the id of the
    oldest job of the page before it (None: from the newest)."""
    if before_time is None:
        return None
    try:
        cluster, proc = p.parse_job_id(before_job)
    except ValueError:
        proc = None
    if proc is None:
        raise RequestError(f"before_job: not a CLUSTER.PROC: {before_job!r}", "invalid")
    return before_time, cluster, proc


def history_records(state: SchedulerState, conn: Caller, jobs: list[Job]) -> list[p.JobInfo]:
    """Finished jobs as ``dhistory`` shows them to ``conn``: with their total run
    time and the state of their mail."""
    events = state.store.events_of((job.cluster, job.proc) for job in jobs)
    infos = [
        visible_info(
            conn, job, job.info(total_run_time=total_run_time(events[job.cluster, job.proc]))
        )
        for job in jobs
    ]
    return state.mailer.annotate(infos, conn.name)


# ------------------------------------------------------------------ live output


def on_tail_job(
    state: SchedulerState, conn: Replier, msg: p.TailJob
) -> p.Message | Coroutine[None, None, p.Message] | None:
    if msg.stream not in STREAMS:
        raise RequestError(f"stream must be stdout or stderr, not {msg.stream!r}", "invalid")
    if msg.offset < 0 or msg.limit < 1:
        raise RequestError("offset must be >= 0 and limit >= 1", "invalid")
    job = owned_job(state, conn, msg.job_id)
    worker = state.workers.of_job(job.id)
    if job.state is JobState.IDLE or (job.state is JobState.RUNNING and worker is None):
        # Not started yet, or its worker is away: nothing to show, but more to come.
        return p.OutputChunk(job_id=job.id, offset=msg.offset)
    if job.state is not JobState.RUNNING or worker is None:
        return _final_output(state, msg, job)
    token = next(_tail_ids)
    state.tails[token] = (conn, msg.id, worker.link)
    worker.send(
        p.ReadOutput(
            id=token,
            job_id=job.id,
            attempt=job.attempt,
            stream=msg.stream,
            offset=msg.offset,
            limit=max(1, min(msg.limit, p.INLINE_BUDGET)),
        )
    )
    return None  # answered when the worker's chunk arrives


def _final_output(
    state: SchedulerState, msg: p.TailJob, job: Job
) -> p.Message | Coroutine[None, None, p.Message]:
    """The asked part of a finished job's stdout or stderr, while its results are
    kept: from the database when small; else (a file of the user's size) only the
    part asked is read from the spool, in a thread, which the connection awaits
    (one read at a time per connection) while the loop serves the others."""
    found = result_file(state.store, state.spool, job, msg.stream)
    limit = min(msg.limit, p.INLINE_BUDGET)
    if not isinstance(found, Path):
        data = found or b""
        return _chunk(job, msg.offset, data[msg.offset : msg.offset + limit], len(data))

    async def read() -> p.Message:
        data, size = await asyncio.to_thread(read_range, found, msg.offset, limit)
        return _chunk(job, msg.offset, data, size)

    return read()


def on_output_chunk(state: SchedulerState, conn: Connection, msg: p.OutputChunk) -> None:
    waiting = state.tails.pop(msg.id or 0, None)
    if waiting is not None and waiting[2] is conn:
        if not msg.running:
            # The attempt ended on the worker and its end is on its way here: more
            # to come, and the next request is answered from the final output.
            msg = p.OutputChunk(job_id=msg.job_id, offset=msg.offset)
        waiting[0].send(msg.with_id(waiting[1]))
