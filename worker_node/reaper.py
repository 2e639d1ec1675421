"""Ending every process of a job, wherever it moved, before its outputs are read.

A job's processes may leave its process group and session (``setsid``), and a
double fork makes them orphans, which the kernel gives to init. A root worker
starts its jobs from launchers (:mod:`worker_node.launcher`), and each launcher
is a child subreaper (``PR_SET_CHILD_SUBREAPER``): the orphans of its jobs become
its children instead. Once a job's main process has exited, the launcher kills
and reaps its children until it has none, and only then reports the job's end:
nothing of the job runs when the worker collects its outputs.

A process of the job started by something else (a daemon it asked, such as
``at``) is outside that tree. Where the job's uid is dedicated to the job (slot
uids, ``--slot-uids``: one uid per slot, one job at a time), the worker then also
kills every process of that uid but the slot's launcher, and waits until none is
left. Never for other accounts: a user's own account may have sessions of its
own on the machine, and the ``--run-as`` account (``nobody``) is shared by the
jobs of other slots and by system daemons.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
#: Seconds between two looks while killed processes are still exiting.
POLL = 0.005
#: A sweep that still finds processes after this long gives up with a warning
#: (processes in uninterruptible sleep cannot be killed at once).
SWEEP_LIMIT = 30.0


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        args = (ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        return int(libc.prctl(ctypes.c_int(option), *args)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False if the
    kernel does not allow it. Also makes it undumpable, so that the jobs it starts
    (of its own uid) cannot ptrace it or read its memory."""
    _prctl(_PR_SET_DUMPABLE, 0)
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def mechanism(launchers: bool, slot_uids: bool, cgroup: str | None = None) -> str:
    """How a worker ends its jobs' processes, as ``dstat`` shows it (``cgroup``:
    the kind of cgroups its launchers run in, if any)."""
    if not launchers:
        return "process group"
    parts = [cgroup] if cgroup else []
    parts.append("subreaper")
    if slot_uids:
        parts.append("uid sweep")
    return " + ".join(parts)


def reap_children(limit: float = SWEEP_LIMIT, spare: int | None = None) -> int:
    """Kill and reap every child of this process until none is left (a subreaper's
    children include its descendants' orphans), or for at most ``limit`` seconds
    (a process in uninterruptible sleep dies late); how many were reaped. The
    child ``spare``, if any, is left alone (see :mod:`worker_node.warm_map`)."""
    if spare is not None:
        return _reap_children_but(spare, limit)
    count = 0
    deadline = time.monotonic() + limit
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return count
        if pid:
            count += 1
            continue
        if time.monotonic() > deadline:
            return count
        for child in _children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)  # a child's pid cannot be reused unreaped
        time.sleep(POLL)


def _reap_children_but(spare: int, limit: float) -> int:
    """:func:`reap_children`, child ``spare`` left alive and unreaped."""
    count = 0
    deadline = time.monotonic() + limit
    while True:
        children = [pid for pid in _children(os.getpid()) if pid != spare]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)  # a child's pid cannot be reused unreaped
        for child in children:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(child, os.WNOHANG)[0]:
                    count += 1
        if not children or time.monotonic() > deadline:
            return count
        time.sleep(POLL)


def sweep_uid(uid: int, spare: set[int]) -> int:
    """Kill every process of ``uid`` (real, effective or saved) but those in
    ``spare``, until none is left; how many were found."""
    found: set[int] = set()
    deadline = time.monotonic() + SWEEP_LIMIT
    while True:
        alive = [pid for pid in _processes_of(uid) if pid not in spare]
        if not alive:
            return len(found)
        if time.monotonic() > deadline:
            log.warning("uid %d: %d process(es) survive SIGKILL: %s", uid, len(alive), alive[:10])
            return len(found)
        found.update(alive)
        for pid in alive:
            kill_checked(pid, lambda pid: pid in _processes_of(uid, [pid]))
        time.sleep(POLL)


def kill_checked(pid: int, still: Callable[[int], bool]) -> None:
    """SIGKILL ``pid`` if ``still(pid)`` holds once a pidfd pins the process: a
    pid read from /proc may have been reused since by a process of someone else."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone (or no pidfd: then it is checked just before the kill)
        if still(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return
    try:
        if still(pid):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def kill_group(leader: int, pgid: int) -> None:
    """SIGKILL process group ``pgid`` through ``leader``, a pidfd of its leader, which
    another process (a launcher) reaps: the leader through its pidfd, then each
    other member, pinned by a pidfd, only while the leader is not yet reaped, so
    that ``pgid`` is still its group's and no other group's that took the number."""
    try:
        signal.pidfd_send_signal(leader, signal.SIGKILL)
    except ProcessLookupError:
        return  # reaped: the number may be another group's by now
    for pid in _members(pgid):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone
        try:
            # In the group while its leader was unreaped (that order): one of the job's.
            if os.getpgid(pid) == pgid and _unreaped(leader):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


def _unreaped(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)  # a zombie still takes it
    except ProcessLookupError:
        return False
    return True


def _members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` but its leader, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != pgid:
            with contextlib.suppress(OSError):
                if os.getpgid(int(name)) == pgid:
                    found.append(int(name))
    return found


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent``, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            if int(fields[1]) == parent:
                found.append(int(name))
    return found


def _processes_of(uid: int, among: list[int] | None = None) -> list[int]:
    """The live processes (not zombies) with ``uid`` among their uids, from /proc
    (only those of ``among`` if given)."""
    found = []
    for name in os.listdir("/proc") if among is None else map(str, among):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{name}/status", "rb") as f:
                status = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            uids = {int(u) for u in status[b"Uid"].split()[:3]}
            if uid in uids and not status[b"State"].strip().startswith(b"Z"):
                found.append(int(name))
    return found
