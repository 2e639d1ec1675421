"""Server-Sent Events: ``GET /api/events`` pushes the changes of the caller's jobs
(every job's, for an admin) as they happen, from the job table's own stream of
changes, so that a page never polls the queue.

A change costs each open stream a check of who may see the job and one entry in
a dict of the jobs changed since its last write: the records are made when the
stream writes, at most every :data:`PACE` seconds, with the jobs as they are then
(a job changed ten times in between is sent once). A stream that falls behind (a
slow client, more than :data:`MAX_PENDING` jobs changed before it could write)
forgets them and gets one ``resync`` event instead: its memory stays bounded, and
the page reads the queue again, one page of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from scheduler import protocol as p
from scheduler.authz import may_control
from scheduler.protocol import JobState
from scheduler.web.session import WebUser

if TYPE_CHECKING:
    from scheduler.job_records import Job
    from scheduler.state import SchedulerState

#: Seconds between two writes of one stream (changes in between are sent together).
PACE = 0.5
#: Seconds a stream waits after the first change before it writes: a short job's
#: changes (queued, running, done) go out together, after the job, not in its way.
GATHER = 0.05
#: Jobs changed and not yet sent past which a stream resyncs instead.
MAX_PENDING = 2000
#: Seconds of silence after which a stream sends a comment (proxies close idle ones).
KEEPALIVE = 15.0
#: Milliseconds a browser waits before it reconnects a broken stream.
RETRY_MS = 3000


class Stream:
    """One open event stream: the jobs changed since it last wrote."""

    def __init__(self, user: WebUser):
        self.user = user
        self.pending: dict[tuple[int, int], Job] = {}
        self.behind = False
        #: The dashboard is stopping: the stream ends.
        self.closed = False
        self.wake = asyncio.Event()

    def changed(self, job: Job) -> None:
        if not may_control(self.user, job):
            return  # a user hears of their own jobs only (an admin: of all)
        if not self.behind:
            key = (job.cluster, job.proc)
            if len(self.pending) >= MAX_PENDING and key not in self.pending:
                self.pending.clear()
                self.behind = True
            else:
                self.pending[key] = job
        self.wake.set()

    def take(self) -> tuple[list[Job], bool]:
        """The jobs changed since the last call, and whether the stream fell behind."""
        jobs, behind = list(self.pending.values()), self.behind
        self.pending, self.behind = {}, False
        self.wake.clear()
        return jobs, behind


class EventStreams:
    """The open streams; :meth:`changed` is called with every change of a job."""

    def __init__(self) -> None:
        self.streams: set[Stream] = set()

    def changed(self, job: Job) -> None:
        for stream in self.streams:
            stream.changed(job)

    def open(self, user: WebUser) -> Stream:
        stream = Stream(user)
        self.streams.add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def close_all(self) -> None:
        """End every stream (the dashboard stops: none holds its shutdown back)."""
        for stream in self.streams:
            stream.closed = True
            stream.wake.set()


def record(s: SchedulerState, job: Job, now: float) -> dict[str, Any]:
    """A changed job as the queue page shows it (``dq --json`` with ``running_for``,
    ``mine`` and, for a held job, its ``reason``; its place in line is not sent)."""
    row = p.to_wire(job.info())
    started = job.start_time if job.state is JobState.RUNNING else None
    row["running_for"] = None if started is None else now - started
    row["mine"] = True
    if job.state is JobState.HELD:
        held = job.hold_reason or ""
        row["reason"] = held if held.startswith("held") else f"held: {held or 'see its page'}"
    return row


def frame(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def serve(
    request: web.Request,
    s: SchedulerState,
    streams: EventStreams,
    user: WebUser,
    still_valid: Callable[[], bool],
) -> web.StreamResponse:
    """Write the stream until the client leaves or its login ends."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy must pass each event on at once
        }
    )
    await response.prepare(request)
    stream = streams.open(user)
    try:
        hello = {"user": user.name, "admin": user.admin, "time": s.clock()}
        await response.write(f"retry: {RETRY_MS}\n".encode() + frame("hello", hello))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wake.wait(), KEEPALIVE)
            if stream.closed:
                break
            if stream.wake.is_set():
                await asyncio.sleep(GATHER)
            if not still_valid():
                await response.write(frame("logout", {}))
                break
            jobs, behind = stream.take()
            if behind:
                await response.write(frame("resync", {"time": s.clock()}))
            elif jobs:
                now = s.clock()
                rows = [record(s, job, now) for job in jobs]
                await response.write(frame("jobs", {"jobs": rows, "time": now}))
            else:
                await response.write(b": keep-alive\n\n")
            await asyncio.sleep(PACE)
    except ConnectionResetError:
        pass  # the client left
    finally:
        streams.close(stream)
    return response
