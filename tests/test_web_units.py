"""Units of the web dashboard: worker metrics over the last hour, sessions, the queue's
order and reasons, each user's part of the pool."""

from __future__ import annotations

import warnings

import pytest

from scheduler import protocol as p
from scheduler.dispatch import IdleQueue
from scheduler.protocol import JobSpec, JobState
from scheduler.store import Job

# pyftpdlib imports asyncore/asynchat, deprecated in Python 3.11: not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler.web import session as web_session
    from scheduler.web.metrics import WINDOW, MetricsHistory
    from scheduler.web.views import queue_reason, usage_by_user


def worker(name: str, load: float, used: int = 0) -> p.WorkerInfo:
    metrics = p.WorkerMetrics(
        cores=4, threads=8, memory_total_mb=1000, memory_available_mb=500, disk_total_mb=1,
        disk_free_mb=1, load_avg=[load, 0, 0],
    )  # fmt: skip
    return p.WorkerInfo(
        id=1, name=name, state="busy" if used else "idle", address="a", slots_total=2,
        slots_used=used, cpus_total=4, cpus_used=used, memory_total_mb=1000, memory_used_mb=0,
        gpus_total=0, gpus_used=0, metrics=metrics, last_heartbeat=0, connected_since=0,
    )  # fmt: skip


def test_metrics_keep_the_last_hour() -> None:
    history = MetricsHistory(interval=5)
    history.record([worker("a", 1.0), worker("b", 2.0)], now=1000)
    history.record([worker("a", 3.0, used=1)], now=1000 + WINDOW / 2)
    charts = {c["key"]: c for c in history.charts("a", now=1000 + WINDOW / 2)}
    assert charts["load"]["samples"] == 2 and charts["load"]["last"] == 3.0
    assert charts["load"]["points"] == "120.0,40.0 240.0,0.0"  # half an hour ago, now
    assert charts["slots_used"]["last"] == 1.0
    history.record([worker("a", 0.0)], now=1001 + WINDOW)
    assert history.charts("a", now=1001 + WINDOW)[0]["samples"] == 2  # the first is gone
    assert history.charts("b", now=1001 + WINDOW)[0]["samples"] == 0  # b left an hour ago
    assert history.charts("nobody")[0] == {
        "key": "load", "title": "load average (1 min)", "unit": "", "max": 1.0, "last": None,
        "points": "", "samples": 0,
    }  # fmt: skip


def test_sessions_expire_and_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = web_session.Sessions()
    sid, made = sessions.new("alice")
    assert sessions.get(sid) is made and sessions.get("nope") is None and sessions.get(None) is None
    now = made.last_used
    monkeypatch.setattr(web_session.time, "monotonic", lambda: now + web_session.IDLE_TIMEOUT + 1)
    assert sessions.get(sid) is None  # idle too long
    monkeypatch.setattr(web_session, "MAX_SESSIONS", 2)
    first, _ = sessions.new()
    second, _ = sessions.new()
    sessions.get(first)  # used: the least recently used is now the second
    sessions.new()
    assert sessions.get(first) is not None and sessions.get(second) is None
    sessions.drop(first)
    assert sessions.get(first) is None


def job(cluster: int, proc: int, priority: int = 0) -> Job:
    spec = JobSpec(executable="x", priority=priority)
    return Job(cluster, proc, "u", JobState.IDLE, spec, 0.0)


def test_queue_order_is_the_dispatch_order() -> None:
    queue = IdleQueue()
    jobs = [job(1, 0), job(1, 1), job(2, 0, priority=5), job(3, 0)]
    for j in jobs:
        queue.push(j)
    queue.discard(jobs[1])
    queue.push(jobs[1])  # back in line (a stale heap entry stays behind)
    queue.discard(jobs[3])
    assert queue.order() == [(2, 0), (1, 0), (1, 1)]


def test_queue_reasons_and_usage() -> None:
    idle = p.JobInfo(id="1.0", cluster=1, proc=0, owner="u", state="idle", submit_time=0)
    held = p.JobInfo(id="1.1", cluster=1, proc=1, owner="u", state="held", submit_time=0,
                     hold_reason="by u")  # fmt: skip
    assert queue_reason(idle, {"1.0": 3}) == "waiting for a free slot: number 3 in line"
    assert queue_reason(held, {}) == "held: by u"
    running = [
        p.JobInfo(id=f"{i}.0", cluster=i, proc=0, owner=o, state="running", submit_time=0)
        for i, o in enumerate(["bob", "alice", "bob"])
    ]
    assert usage_by_user(running, 4) == [
        {"user": "bob", "running": 2, "slots_fraction": 0.5},
        {"user": "alice", "running": 1, "slots_fraction": 0.25},
    ]
    assert usage_by_user([], 0) == []
