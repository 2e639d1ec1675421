"""Units of the web dashboard: worker metrics over the last hour, sessions."""

from __future__ import annotations

import warnings

import pytest

from scheduler import protocol as p

# pyftpdlib imports asyncore/asynchat, deprecated in Python 3.11: not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler.web import session as web_session
    from scheduler.web.metrics import WINDOW, MetricsHistory


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
    clock = [1000.0]
    history = MetricsHistory(interval=5, clock=lambda: clock[0])
    history.record([worker("a", 1.0), worker("b", 2.0)])  # at the clock's time
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
