"""Start a root worker's jobs from a process that already runs as the job's account.

A worker running as root runs each job as another account. Started directly,
that costs 1 to 3 ms a job: ``subprocess`` cannot use ``vfork`` when the child
changes its user, so the kernel copies the worker's whole address space. A
launcher is a small process, started once per slot and account as that account,
that starts the jobs with no change of user (so with ``vfork``), waits for each,
kills what it left in its process group, and reports its exit status and CPU
time. A launcher is a child subreaper: before it reports a job's end it kills
every process the job left, whatever session it moved to (see
:mod:`worker_node.reaper`). The worker still watches the job (limits, ``dtail``) and kills it by its
process group, as root may. Jobs start with ``posix_spawn``, which spares
``subprocess``'s work in Python and its scan of open descriptors in the child.
At start, a worker checks that its launchers' interpreter (see
:mod:`worker_node.job_python`) starts as a job account (:func:`problem`); where it
does not, the worker says so in its log and in ``dstat`` (``job_start``) and starts
jobs directly.

    python -m worker_node.launcher FD [--warm-map PYTHON [ITEMS IDLE]]
    (FD: the worker's end of a socket pair)

With ``--warm-map``, the jobs of a ``Client.map`` that run ``PYTHON`` (the command
that started the launcher) run in a warm interpreter, a fork of the launcher kept
for the jobs of one owner and function, ITEMS jobs at most, IDLE seconds idle at
most (see :mod:`worker_node.warm_map`).

Each request is one packet: JSON ``{"argv", "cwd", "env", "owner"}`` with the
job's stdin, stdout and stderr as passed descriptors; the replies are ``{"pid"}``
(or ``{"errno", "error"}`` if it could not start), then ``{"status", "cpu"}``,
with ``"kept"``, the pid of the warm interpreter left for the next job, if any.
A request ``{"drop": true}`` ends that interpreter (reply ``{"dropped": true}``).
A launcher serves one job at a time and exits when the worker closes its end.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

from worker_node import warm_map as warm_map_jobs
from worker_node.cgroups import JobCgroups
from worker_node.identity import Account
from worker_node.reaper import become_subreaper, reap_children
from worker_node.warm_map import WarmMaps

#: Seconds the check of a launcher's interpreter may take at the worker's start.
PROBE_TIMEOUT = 60.0
#: The largest request (a job's arguments and environment) a launcher reads.
MAX_REQUEST = 1 << 20


class LauncherError(OSError):
    """The launcher went away: the job's state is unknown."""


class JobLost(LauncherError):
    """The launcher went away after it took a job, which may have started."""


class Launcher:
    """The worker's side of one launcher process."""

    def __init__(
        self, account: Account | None, python: str, warm_map: tuple[int, float] | None = None
    ):
        """A launcher running as ``account`` (None: as the worker itself, which is then
        not root)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        as_account: dict[str, Any] = {}
        if account is not None:
            as_account = dict(
                user=account.uid, group=account.gid, extra_groups=list(account.groups)
            )
        with theirs:
            self.process = subprocess.Popen(
                [
                    python,
                    "-m",
                    "worker_node.launcher",
                    str(theirs.fileno()),
                    *(["--warm-map", python, *map(str, warm_map)] if warm_map else []),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=_launcher_env(),
                cwd="/",
                start_new_session=True,  # signals to the worker's group are not for it
                **as_account,
            )
        self.sock = ours
        #: The warm interpreter this launcher keeps for its next job of a map.
        self.kept: int | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def start(
        self, argv: list[str], cwd: str, env: dict[str, str], fds: list[int], owner: str = ""
    ) -> tuple[int, int | None]:
        """Start a job of ``owner``: its pid and a pidfd of it (None where the kernel
        has none). OSError as ``subprocess.Popen`` would raise it; :class:`LauncherError`
        if the launcher is gone before it took the job, :class:`JobLost` after."""
        self.kept = None
        job = {"argv": argv, "cwd": cwd, "env": env, "owner": owner}
        request = json.dumps(job).encode()
        try:
            socket.send_fds(self.sock, [request], fds)
        except OSError as exc:
            raise LauncherError(f"the job launcher is gone: {exc}") from None
        try:
            reply, pidfd = self._reply(fds=1)
        except LauncherError as exc:
            raise JobLost(str(exc)) from None
        if "pid" not in reply:
            raise OSError(int(reply["errno"]), str(reply["error"]))
        return int(reply["pid"]), pidfd

    def wait(self) -> tuple[int, float]:
        """Block until the started job ends: its exit status (-N: signal N), CPU seconds."""
        reply, _ = self._reply()
        self.kept = reply.get("kept")
        return int(reply["status"]), float(reply["cpu"])

    def drop(self) -> None:
        """End the warm interpreter this launcher keeps, if any."""
        if self.kept is None:
            return
        self.kept = None
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps({"drop": True}).encode())
            self._reply()

    def _reply(self, fds: int = 0) -> tuple[dict[str, Any], int | None]:
        """The next reply, and the descriptor passed with it, if any."""
        try:
            data, passed, _, _ = socket.recv_fds(self.sock, 4096, max(1, fds))
        except OSError as exc:
            raise LauncherError(f"the job launcher is gone: {exc}") from None
        for extra in passed[fds:]:
            os.close(extra)
        if not data:
            for fd in passed[:fds]:
                os.close(fd)
            raise LauncherError("the job launcher is gone")
        reply: dict[str, Any] = json.loads(data)
        return reply, passed[0] if passed[:fds] else None

    def close(self) -> None:
        self.sock.close()  # the launcher reads EOF and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Launchers:
    """One launcher per (slot, account), started when first needed, each in a
    cgroup of its own where the worker could make ``cgroups``. A worker that is not
    root has launchers of its own account (None) for the jobs of maps alone."""

    def __init__(
        self,
        python: str,
        cgroups: JobCgroups | None = None,
        warm_map: tuple[int, float] | None = None,
    ):
        """``warm_map``: run the jobs of maps in warm interpreters, recycled after
        so many jobs and seconds idle (see :mod:`worker_node.warm_map`)."""
        self.python = python
        self.cgroups = cgroups
        self.warm_map = warm_map
        self._lock = threading.Lock()
        self._running: dict[tuple[int, Account | None], Launcher] = {}

    def get(self, slot: int, account: Account | None) -> Launcher:
        """The slot's launcher for ``account`` (one job at a time per slot); the
        warm interpreters of the slot's other accounts end: the slot is this one's."""
        with self._lock:
            for (other_slot, other), idle in self._running.items():
                if other_slot == slot and other != account:
                    idle.drop()
            launcher = self._running.get((slot, account))
            if launcher is not None and not launcher.alive:
                launcher.close()  # a job of the same account killed it: start another
                launcher = None
            if launcher is None:
                launcher = self._running[(slot, account)] = Launcher(
                    account, self.python, self.warm_map
                )
                if self.cgroups is not None and account is not None:  # before any job
                    self.cgroups.add(_cgroup(slot, account), launcher.process.pid)
            return launcher

    def end_job(self, slot: int, account: Account) -> None:
        """After a job of ``account`` in ``slot``: kill every process left in its
        launcher's cgroup (all of them if the launcher itself is gone)."""
        if self.cgroups is None:
            return
        with self._lock:
            launcher = self._running.get((slot, account))
            spare = _own(launcher) if launcher is not None and launcher.alive else set()
        self.cgroups.kill(_cgroup(slot, account), spare)

    def pids(self) -> set[int]:
        """The launchers' own processes (of jobs' uids, yet never a job's)."""
        with self._lock:
            return {pid for launcher in self._running.values() for pid in _own(launcher)}

    def close(self) -> None:
        with self._lock:
            for launcher in self._running.values():
                launcher.close()
            self._running.clear()
            if self.cgroups is not None:
                self.cgroups.close()


def problem(python: str | None, account: Account) -> str | None:
    """Why launchers cannot start as ``account`` with ``python`` (None: they can),
    found by importing the launcher as that account."""
    if python is None:
        return "no Python that job accounts can run"
    try:
        probe = subprocess.run(
            [python, "-c", "import worker_node.launcher"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            user=account.uid,
            group=account.gid,
            extra_groups=list(account.groups),
            env=_launcher_env(),
            cwd="/",
            timeout=PROBE_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python} cannot start as {account.name}: {exc}"
    if probe.returncode != 0:
        lines = probe.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        return f"{python} fails as {account.name} (exit {probe.returncode}): {lines[-1]}"
    return None


def _own(launcher: Launcher) -> set[int]:
    """A launcher's process and its warm interpreter's, if it keeps one."""
    return {launcher.process.pid, *([launcher.kept] if launcher.kept is not None else [])}


def _cgroup(slot: int, account: Account) -> str:
    return f"slot{slot}-uid{account.uid}"


def _launcher_env() -> dict[str, str]:
    # Only what the interpreter needs to find dfarm (a job-python script of the
    # worker's runtime sets its own PYTHONPATH).
    keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    return env


def serve(sock: socket.socket, warm_map: str | None = None, warm: WarmMaps | None = None) -> None:
    """Start, wait for and report one job after another until the worker hangs up
    (``warm_map``: the Python whose map jobs run in ``warm``'s interpreters)."""
    warm = warm or WarmMaps()
    try:
        _serve(sock, warm_map, warm)
    finally:
        warm.drop()


def _serve(sock: socket.socket, warm_map: str | None, warm: WarmMaps) -> None:
    while True:
        request, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
        if not request:
            return
        try:
            job = json.loads(request)
            if job.get("drop"):
                warm.drop()
                sock.send(json.dumps({"dropped": True}).encode())
                continue
            try:
                argv, cwd, env = job["argv"], job["cwd"], job["env"]
                if warm_map and warm_map_jobs.is_map_job(argv, env, warm_map):
                    pid = warm.start(argv, cwd, env, fds, str(job.get("owner", "")))
                else:
                    warm.drop()  # the slot is another job's
                    pid = spawn(argv, cwd, env, fds)
            except OSError as exc:
                sock.send(json.dumps({"errno": exc.errno or 0, "error": exc.strerror}).encode())
                continue
        finally:
            for fd in fds:
                os.close(fd)
        _send_pid(sock, pid)
        if warm.runs(pid):
            status, cpu = warm.finish()
        else:
            wait_exit(pid)
            status, cpu = reap_group(pid)
        # What left the job's group and session: see worker_node.reaper.
        if warm.kept is None or has_children(but=warm.kept):
            reap_children(spare=warm.kept)
        reply: dict[str, Any] = {"status": status, "cpu": cpu}
        if warm.kept is not None:
            reply["kept"] = warm.kept
        sock.send(json.dumps(reply).encode())


def has_children(but: int) -> bool:
    """Whether this process has a child other than ``but``, from the kernel's lists
    of each of its threads' children (true when they cannot be read): the sweep of
    all of /proc that finds them costs a millisecond on a busy machine, after each
    job of a warm interpreter, most of which leave nothing behind."""
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", "rb") as f:
                if any(int(pid) != but for pid in f.read().split()):
                    return True
    except (OSError, ValueError):
        return True
    return False


def _send_pid(sock: socket.socket, pid: int) -> None:
    """Tell the worker the job's pid, with a pidfd of it: this launcher reaps the job,
    so the worker signals it through the pidfd, never another process that has
    taken its pid since."""
    try:
        pidfd = os.pidfd_open(pid)  # its parent: the pid is the job's until reaped here
    except OSError:  # a kernel without pidfds
        sock.send(json.dumps({"pid": pid}).encode())
        return
    try:
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [pidfd])
    finally:
        os.close(pidfd)


def spawn(argv: list[str], cwd: str, env: dict[str, str], fds: list[int]) -> int:
    """Start a job in a session of its own with ``fds`` as its stdin, stdout and
    stderr and no other descriptor: what ``subprocess.Popen(..., cwd=cwd,
    start_new_session=True, close_fds=True)`` does, with ``posix_spawn``."""
    executable = argv[0]
    if os.sep not in executable:  # looked up in the job's PATH, as subprocess does
        found = shutil.which(executable, path=env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), executable)
        executable = found
    os.chdir(cwd)  # no cwd for posix_spawn before Python 3.13; one job at a time here
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)
    ]
    # Received descriptors are inheritable: only the copies on 0, 1 and 2 may pass.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in fds]
    return os.posix_spawn(
        executable,
        argv,
        env,
        file_actions=actions,
        setsid=True,
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # ignored by Python, not by jobs
    )


# A job is waited for without reaping, what it left behind in its process group is
# killed, then it is reaped: while the leader is a zombie its group id cannot be reused.


def wait_exit(pid: int) -> None:
    """Block until the child ``pid`` has exited, leaving it a zombie."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def reap_group(pid: int) -> tuple[int, float]:
    """Kill the exited child's process group, reap it: exit status (-N: signal N), CPU s."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    become_subreaper()
    sock = socket.socket(fileno=int(argv[0]))
    sock.set_inheritable(False)  # passed to this process, never to its jobs
    with sock, contextlib.suppress(BrokenPipeError, ConnectionResetError):
        python = argv[2] if argv[1:2] == ["--warm-map"] and len(argv) > 2 else None
        warm = WarmMaps(int(argv[3]), float(argv[4])) if python and len(argv) > 4 else None
        serve(sock, python, warm)  # until the worker is gone
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
