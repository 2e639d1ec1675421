"""Users' control of their jobs: remove, hold, release, edit, history and live output.

Who may touch a job is decided in :mod:`scheduler.authz`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Coroutine
from pathlib import Path

from scheduler import protocol as p
from scheduler.authz import may_control, not_found
from scheduler.connection import Connection, RequestError
from scheduler.control_handlers import _parse_ids
from scheduler.job_files import read_range, result_file
from scheduler.protocol import JobState
from scheduler.queue_ahead import release
from scheduler.run_time import total_run_time
from scheduler.store import Job

log = logging.getLogger("scheduler.server")

_S = JobState
#: The states each action applies to.
_APPLIES = {
    "remove": {_S.IDLE, _S.RUNNING, _S.HELD},
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
_PAST = {"remove": "removed", "hold": "held", "release": "released"}
STREAMS = ("stdout", "stderr")
_tail_ids = itertools.count(1)


def _chunk(job: Job, offset: int, data: bytes, size: int) -> p.OutputChunk:
    return p.OutputChunk(
        job_id=job.id, offset=offset, data=p.pack_bytes(data), size=size, running=False
    )


def _whole(value: str, minimum: int) -> int:
    text = value.strip()
    if not text.lstrip("+").isdigit() or int(text) < minimum or int(text) >= 2**31:
        raise ValueError(f"expected a whole number >= {minimum}, not {value!r}")
    return int(text)


class JobControlHandlers:
    """Mixed into :class:`scheduler.server.Scheduler`."""

    # ------------------------------------------------------------------ selection

    def _controlled(self, conn: Connection, ids: list[str], all_jobs: bool) -> list[Job]:
        """The caller's active jobs named by ``ids`` (or all of them); naming a job
        that is not the caller's, or that does not exist, is an error."""
        if all_jobs:
            return [j for j in self.jobs.active.values() if may_control(conn, j)]
        clusters, pairs = _parse_ids(ids)
        if not clusters and not pairs:
            raise RequestError("name at least one job or cluster (or use -all)", "invalid")
        found = self.jobs.select(None, clusters, pairs, {s.value for s in _APPLIES["remove"]})
        found += self.store.jobs(
            clusters=clusters, job_ids=pairs, states=[s.value for s in p.FINAL_STATES]
        )
        found = [j for j in found if may_control(conn, j)]
        have = {(j.cluster, j.proc) for j in found} | {(j.cluster, None) for j in found}
        missing = [t for t in ids if p.parse_job_id(t) not in have]
        if missing:
            raise RequestError(not_found(conn, " ".join(missing)), "not_found")
        return sorted(found, key=lambda j: (j.cluster, j.proc))

    # ------------------------------------------------------------------ remove, hold, release

    def on_change_jobs(self, conn: Connection, msg: p.ChangeJobs) -> p.Message:
        if msg.action not in p.ACTIONS:
            raise RequestError(f"unknown action {msg.action!r}", "invalid")
        jobs = self._controlled(conn, msg.ids, msg.all_jobs)
        changed, skipped = [], {}
        by = f"by {conn.name}" + (f": {msg.reason}" if msg.reason else "")
        with self.store.transaction():
            for job in jobs:
                if job.state not in _APPLIES[msg.action]:
                    skipped[job.id] = f"is {job.state.value}"
                    continue
                was_running = job.state is JobState.RUNNING
                if msg.action == "remove":
                    self.jobs.transition(job, _S.REMOVED, "removed", by, end_time=time.time())
                elif msg.action == "hold":
                    self.jobs.hold(job, f"held {by}")
                else:
                    self.jobs.transition(job, _S.IDLE, "released", by, hold_reason=None)
                if was_running:
                    self._stop_attempt(job, f"{_PAST[msg.action]} {by}")
                changed.append(job.id)
        if changed:
            log.info("user %s: %s %s", conn.name, msg.action, " ".join(changed[:20]))
            self._wake.set()
        return p.JobsChanged(changed=changed, skipped=skipped)

    def _stop_attempt(self, job: Job, reason: str) -> None:
        """Kill the attempt a worker runs for ``job`` and free its slot."""
        self.orphans.pop(job.id, None)
        for worker in self.workers.values():
            if job.id in worker.running:
                del worker.running[job.id]
                self.spool.revoke(worker.grants.pop(job.id))
                assert worker.slots is not None
                release(self.jobs, worker.slots, worker.running, job)
                worker.send(p.KillJob(job_id=job.id, attempt=job.attempt, reason=reason))
                return

    # ------------------------------------------------------------------ edit

    def on_edit_jobs(self, conn: Connection, msg: p.EditJobs) -> p.Message:
        if not msg.changes:
            raise RequestError("nothing to change: give KEY=VALUE", "invalid")
        values = {}
        for key, text in msg.changes.items():
            parse = EDITABLE.get(key.lower())
            if parse is None:
                raise RequestError(
                    f"{key!r} cannot be edited (only {', '.join(sorted(EDITABLE))})", "invalid"
                )
            try:
                values[key.lower()] = parse(text)
            except ValueError as exc:
                raise RequestError(f"{key}: {exc}", "invalid") from None
        detail = ", ".join(f"{k} = {v}" for k, v in values.items())
        changed, skipped = [], {}
        with self.store.transaction():
            for job in self._controlled(conn, msg.ids, False):
                if job.state not in (_S.IDLE, _S.HELD):
                    skipped[job.id] = f"is {job.state.value} (hold it first)"
                    continue
                if job.state is _S.IDLE:
                    # Requests decide where a job fits: requeue it with the new ones.
                    self.jobs.queue.discard(job)
                job.spec = dataclasses.replace(job.spec, **values)
                if job.state is _S.IDLE:
                    self.jobs.queue.push(job)
                self.store.save_spec(job, "edited", detail)
                changed.append(job.id)
        if changed:
            self._wake.set()
        return p.JobsChanged(changed=changed, skipped=skipped)

    # ------------------------------------------------------------------ history

    def on_query_history(self, conn: Connection, msg: p.QueryHistory) -> p.Message:
        _parse_ids(msg.ids)  # refuses malformed ids
        owner = None if msg.user == "*" else (msg.user or conn.name)
        jobs = self.store.history(
            owner=owner, job_ids=msg.ids, since=msg.since, limit=max(1, min(msg.limit, 100_000))
        )
        infos = []
        for job in jobs:
            info = self._visible(conn, job)
            total = total_run_time(self.store.events(job.cluster, job.proc))
            infos.append(dataclasses.replace(info, total_run_time=total))
        return p.JobList(jobs=self.mailer.annotate(infos, conn.name))

    # ------------------------------------------------------------------ live output

    def on_tail_job(
        self, conn: Connection, msg: p.TailJob
    ) -> p.Message | Coroutine[None, None, p.Message] | None:
        if msg.stream not in STREAMS:
            raise RequestError(f"stream must be stdout or stderr, not {msg.stream!r}", "invalid")
        if msg.offset < 0 or msg.limit < 1:
            raise RequestError("offset must be >= 0 and limit >= 1", "invalid")
        job = self.owned_job(conn, msg.job_id)
        worker = next((w for w in self.workers.values() if job.id in w.running), None)
        if job.state is JobState.IDLE or (job.state is JobState.RUNNING and worker is None):
            # Not started yet, or its worker is away: nothing to show, but more to come.
            return p.OutputChunk(job_id=job.id, offset=msg.offset)
        if job.state is not JobState.RUNNING or worker is None:
            return self._final_output(msg, job)
        token = next(_tail_ids)
        self.tails[token] = (conn, msg.id, worker)
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

    def owned_job(self, conn: Connection, job_id: str) -> Job:
        """Job ``CLUSTER.PROC``, queued or finished, if ``conn`` may control it; else a
        RequestError that reveals nothing of other users' jobs."""
        try:
            cluster, proc = p.parse_job_id(job_id)
        except ValueError as exc:
            raise RequestError(str(exc), "invalid") from None
        job = None if proc is None else self.jobs.get(job_id)
        if job is None and proc is not None:
            found = self.store.jobs(job_ids=[(cluster, proc)])
            job = found[0] if found else None
        if job is None or not may_control(conn, job):
            raise RequestError(f"no job of yours is {job_id} (give CLUSTER.PROC)", "not_found")
        return job

    def _final_output(
        self, msg: p.TailJob, job: Job
    ) -> p.Message | Coroutine[None, None, p.Message]:
        """The asked part of a finished job's stdout or stderr, while its results are
        kept: from the database when small; else (a file of the user's size) only the
        part asked is read from the spool, in a thread, which the connection awaits
        (one read at a time per connection) while the loop serves the others."""
        found = result_file(self.store, self.spool, job, msg.stream)
        limit = min(msg.limit, p.INLINE_BUDGET)
        if not isinstance(found, Path):
            data = found or b""
            return _chunk(job, msg.offset, data[msg.offset : msg.offset + limit], len(data))

        async def read() -> p.Message:
            data, size = await asyncio.to_thread(read_range, found, msg.offset, limit)
            return _chunk(job, msg.offset, data, size)

        return read()

    def on_output_chunk(self, conn: Connection, msg: p.OutputChunk) -> None:
        waiting = self.tails.pop(msg.id or 0, None)
        if waiting is not None and waiting[2] is conn:
            if not msg.running:
                # The attempt ended on the worker and its end is on its way here: more
                # to come, and the next request is answered from the final output.
                msg = p.OutputChunk(job_id=msg.job_id, offset=msg.offset)
            waiting[0].send(msg.with_id(waiting[1]))

    def _drop_tails(self, worker: Connection) -> None:
        """Answer the output requests a departing worker will never answer."""
        for token, (conn, request_id, w) in list(self.tails.items()):
            if w is worker:
                del self.tails[token]
                conn.send(p.Error(id=request_id, message="the job's worker went away", code="gone"))
