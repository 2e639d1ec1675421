"""Killing a job's process group from the worker, whose launcher (not the worker)
reaps the job: through a pidfd of its leader, and never once the leader is reaped,
when the group's number may be another group's (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess

from conftest import wait_until

from worker_node.reaper import kill_group
from worker_node.runner import Launched


def group(script: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """A shell in a session of its own, its pidfd, and the pid of the ``sleep`` it started."""
    read, write = os.pipe()
    leader = subprocess.Popen(["sh", "-c", script], stdout=write, start_new_session=True)
    os.close(write)
    with os.fdopen(read) as f:
        member = int(f.readline())
    return leader, os.pidfd_open(leader.pid), member


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def untouched(pid: int) -> bool:
    """``pid`` runs with no SIGKILL on its way (a signal is pending from the moment it
    is sent, before the process gets to die of it)."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return status["State"].split()[0] not in "ZX" and not pending & 1 << (signal.SIGKILL - 1)


def test_a_group_whose_leader_runs_is_killed_whole() -> None:
    leader, pidfd, member = group("sleep 60 & echo $!; wait")
    try:
        kill_group(pidfd, leader.pid)
        assert leader.wait(timeout=30) == -signal.SIGKILL
        wait_until(lambda: not alive(member), what="the group's other process to die")
    finally:
        os.close(pidfd)


def test_nothing_is_signalled_once_the_leader_is_reaped() -> None:
    # The leader exits and is reaped, its sleep stays behind in its group: the group's
    # number is free for another group by now, so nothing may be sent to it.
    leader, pidfd, member = group("sleep 60 & echo $!; exit 0")
    try:
        assert leader.wait(timeout=30) == 0
        kill_group(pidfd, leader.pid)
        assert untouched(member)
    finally:
        os.close(pidfd)
        os.kill(member, signal.SIGKILL)


def test_a_launched_job_that_ended_is_never_signalled() -> None:
    leader, pidfd, member = group("sleep 60 & echo $!; wait")
    job = Launched(leader.pid, pidfd)
    job.ended(0)  # as its launcher reported it (its pid no longer the worker's to use)
    assert job.pidfd is None
    job.kill()
    try:
        assert untouched(leader.pid) and untouched(member)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
