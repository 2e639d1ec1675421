"""The dashboard's event streams: a stream holds each changed job once, hears of its
user's jobs only (an admin's: of all), and a stream that falls behind forgets what
it held and says so (``resync``) instead of growing."""

from __future__ import annotations

import asyncio

from scheduler.job_records import Job
from scheduler.protocol import JobSpec, JobState
from scheduler.web import events
from scheduler.web.events import EventStreams, frame
from scheduler.web.session import WebUser


def _job(proc: int, owner: str = "alice") -> Job:
    return Job(1, proc, owner, JobState.IDLE, JobSpec(executable="x"), submit_time=0.0)


def test_a_stream_holds_its_users_changed_jobs_once() -> None:
    async def run() -> None:
        streams = EventStreams()
        alice, admin = streams.open(WebUser("alice")), streams.open(WebUser("root", admin=True))
        job, other = _job(0), _job(1, "bob")
        for changed in (job, other, job):
            streams.changed(changed)
        assert alice.take() == ([job], False) and alice.take() == ([], False)
        assert admin.take() == ([job, other], False)
        streams.changed(other)
        assert not alice.wake.is_set() and alice.take() == ([], False)
        streams.close(alice)
        assert streams.streams == {admin}

    asyncio.run(run())


def test_a_stream_that_falls_behind_resyncs_and_holds_nothing() -> None:
    async def run() -> None:
        streams = EventStreams()
        slow = streams.open(WebUser("alice"))
        for proc in range(events.MAX_PENDING + 10):
            streams.changed(_job(proc))
        assert len(slow.pending) == 0 and slow.behind
        assert slow.take() == ([], True)
        streams.changed(_job(0))
        assert slow.take() == ([_job(0)], False)

    asyncio.run(run())


def test_frames_are_server_sent_events() -> None:
    assert frame("jobs", {"a": [1]}) == b'event: jobs\ndata: {"a":[1]}\n\n'
