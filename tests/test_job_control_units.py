"""Pure parts of job control: argument parsing and limit checks."""

from __future__ import annotations

import io

import pytest

from control_node.cli.dedit import split_words
from control_node.cli.dhistory import parse_since
from control_node.render import progress_bar
from scheduler import protocol as p
from scheduler.run_time import total_run_time
from worker_node.limits import check, tree_rss_mb
from worker_node.runner import Attempt


def test_dedit_words() -> None:
    assert split_words(["12.0", "13", "request_memory=4GB", "max_retries", "2"]) == (
        ["12.0", "13"],
        {"request_memory": "4GB", "max_retries": "2"},
    )
    with pytest.raises(ValueError, match="has no value"):
        split_words(["12", "request_memory"])


def test_since() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1.5d", now=200_000.0) == 200_000.0 - 1.5 * 86400
    assert parse_since("2026-11-22 14:00") > 0
    with pytest.raises(ValueError, match="give a duration"):
        parse_since("soon")


def attempt(**limits: int) -> Attempt:
    spec = p.JobSpec(executable="x", **limits)
    grant = p.FtpGrant(host="h", port=1, user="u", password="p")
    msg = p.RunJob(job_id="1.0", attempt=1, owner="a", spec=spec, ftp=grant)
    return Attempt(msg=msg)


def test_limit_checks() -> None:
    assert check(attempt(), 0.0, 1e9) is None
    reason = check(attempt(allowed_job_duration=10), 0.0, 12.4)
    assert reason == "wall-time limit exceeded: ran 12 s, more than allowed_job_duration = 10 s"
    assert check(attempt(allowed_job_duration=10), 0.0, 9.0) is None
    assert check(attempt(request_memory=1), 0.0, 0.0) is None  # no process yet
    assert tree_rss_mb(2**22 + 12345) == 0.0  # no such process


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_dwait_progress_bar() -> None:
    assert progress_bar(io.StringIO()) is None  # nothing when not a terminal
    out = FakeTerminal()
    show = progress_bar(out)
    assert show is not None
    states = ["completed", "running", "idle", "held"]
    show({str(i): p.JobInfo(id=str(i), cluster=1, proc=i, owner="a", state=s, submit_time=0)
          for i, s in enumerate(states)})  # fmt: skip
    assert out.getvalue() == (
        "\r[" + "#" * 15 + "." * 15 + "] 2/4 done, 1 idle, 1 running, 1 held "
    )


def test_total_run_time_adds_every_run() -> None:
    def e(t: float, name: str) -> p.JobEvent:
        return p.JobEvent(time=t, event=name)

    events = [e(0, "submitted"), e(1, "executing"), e(3, "retrying"), e(4, "executing"),
              e(5, "evicted"), e(6, "executing"), e(10, "terminated")]  # fmt: skip
    assert total_run_time(events) == 2 + 1 + 4
    assert total_run_time([e(0, "submitted"), e(1, "removed")]) == 0
