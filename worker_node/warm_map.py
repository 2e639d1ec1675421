"""Jobs of ``Client.map`` run by a warm interpreter of their launcher (``--warm-map``).

A launcher (see :mod:`worker_node.launcher`) already runs as the job's account,
one per slot and account. With ``--warm-map`` it imports the map runner and
cloudpickle once, when it is given its first job of a map, and hands each job of
a map to a *host*: a fork of itself, leading a session and process group of its
own, that runs the jobs of one owner and one function (the digest of the map's
FUNCTION.pkl) one after another. The host unpickles the function at its first job
and keeps it, so the function's own imports (numpy) are paid once per host.

Each job is still a job: the worker sends it to the launcher as any other, with
its sandbox as working directory, its environment and its stdin, stdout and
stderr, which the host takes for the job's length (then /dev/null again). The
worker watches the host's pid as the job's (memory, time, ``drm``): a job it
kills takes the host with it, and the next job gets a new one. Before each job
the host reseeds ``random`` and, once imported, numpy's global generator; the
processes a job left are killed when it ends. What does persist from one job of
a host to the next is the process itself: modules and their state, as in the
workers of Dask or ``concurrent.futures``.

A host ends (and the next job of a map gets a new one) after ``max_items`` jobs,
after a job that did not exit 0 (a crash, a limit hit: that job fails alone),
after ``idle`` seconds without a job, when the launcher is given a job of another
owner, of another function or no map's, and when the worker drops it because a
job of another account takes the slot.

A job is one of a map when its executable is the map's own start script
(:data:`control_node.map_runner.RUNNER`, byte for byte) and its ``DFARM_PYTHON``
is the command that started the launcher; anything else starts as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import select
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

from worker_node.reaper import reap_children

if TYPE_CHECKING:
    from worker_node.runner import Attempt

#: The name of a map job's executable (its start script).
MAP_SCRIPT = "dfarm-map.sh"
#: Jobs a host runs before it is replaced.
MAX_ITEMS = 1000
#: Seconds a host waits for its next job before it exits.
IDLE = 60.0
#: The largest job a host reads (its arguments and environment).
MAX_REQUEST = 1 << 20

#: The map runner, once imported (None: not yet, or it cannot be).
_runner: ModuleType | None = None
_unavailable = False


def runner() -> ModuleType | None:
    """The map runner module, imported on first use (None if it cannot be)."""
    global _runner, _unavailable
    if _runner is None and not _unavailable:
        try:
            import control_node.map_runner as imported
        except Exception:  # this Python lacks cloudpickle or dfarm: jobs start as usual
            _unavailable = True
        else:
            _runner = imported
    return _runner


def is_map_job(argv: list[str], env: dict[str, str], python: str) -> bool:
    """Whether ``argv`` runs the map runner with ``python``, the command that started
    this launcher (see the module)."""
    if len(argv) != 4 or os.path.basename(argv[0]) != MAP_SCRIPT:
        return False
    if env.get("DFARM_PYTHON") != python:
        return False
    module = runner()
    if module is None:
        return False
    try:
        with open(argv[0], "rb") as f:
            return bool(f.read(4096) == module.RUNNER.encode())
    except OSError:
        return False


def function_digest(argv: list[str], cwd: str) -> str:
    """The sha256 of the map job's FUNCTION.pkl ("" if it cannot be read)."""
    try:
        with open(os.path.join(cwd, argv[1]), "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""


@dataclass
class Host:
    """The launcher's side of one host."""

    pid: int
    sock: socket.socket
    #: (owner, function digest): the jobs this host may take.
    key: tuple[str, str]
    jobs: int = 0


class WarmMaps:
    """A launcher's host, if any (one job at a time, so at most one host)."""

    def __init__(self, max_items: int = MAX_ITEMS, idle: float = IDLE):
        self.max_items = max_items
        self.idle = idle
        self.host: Host | None = None

    @property
    def kept(self) -> int | None:
        """The pid of the host kept for the next job, if any."""
        return self.host.pid if self.host is not None else None

    def start(
        self, argv: list[str], cwd: str, env: dict[str, str], fds: list[int], owner: str
    ) -> int:
        """Hand the map job ``argv`` to the host of its owner and function (a new one
        if need be): the pid the worker watches it by."""
        key = (owner, function_digest(argv, cwd))
        host = self.host
        if host is not None and (host.key != key or not key[1] or _exited(host.pid)):
            self.drop()
            host = None
        if host is None:
            host = self.host = _fork_host(key, self.idle)
        request = json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode()
        try:
            socket.send_fds(host.sock, [request], fds)
        except OSError:  # it exited since (idle): a new one takes the job
            self.drop()
            host = self.host = _fork_host(key, self.idle)
            socket.send_fds(host.sock, [request], fds)
        return host.pid

    def runs(self, pid: int) -> bool:
        return self.host is not None and self.host.pid == pid

    def finish(self) -> tuple[int, float]:
        """Block until the host's job ends: its exit status (-N: signal N), CPU seconds.
        A host that did not end its job with 0, or has run its share, is ended."""
        host = self.host
        assert host is not None
        try:
            data = host.sock.recv(4096)
        except OSError:
            data = b""
        if not data:  # killed (a limit, drm) or crashed in the job
            host.sock.close()
            self.host = None
            _wait_exit(host.pid)
            return _reap_group(host.pid)
        reply = json.loads(data)
        host.jobs += 1
        status, cpu = int(reply["status"]), float(reply["cpu"])
        if status != 0 or host.jobs >= self.max_items:
            self.drop()
        return status, cpu

    def drop(self) -> None:
        """End the host, if any (it exits when its socket closes; killed otherwise)."""
        host, self.host = self.host, None
        if host is None:
            return
        host.sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(host.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(host.pid, 0)


def _exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def _reap_group(pid: int) -> tuple[int, float]:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def _fork_host(key: tuple[str, str], idle: float) -> Host:
    """A new host, once it leads a session of its own (so that the worker may kill
    its process group)."""
    module = runner()
    assert module is not None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            ours.close()
            _close_others(keep=theirs.fileno())
            _null_stdio()
            theirs.send(b"ready")
            code = _serve(theirs, module, idle)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    ready = ours.recv(16)  # the session exists
    if not ready:
        _wait_exit(pid)
        _reap_group(pid)
        raise OSError("the warm interpreter of a map failed to start")
    return Host(pid, ours, key)


def _serve(sock: socket.socket, module: ModuleType, idle: float) -> int:
    """Run one job after another until the launcher hangs up, a job fails, or no
    job came for ``idle`` seconds: the host's exit status."""
    fn: Any = None
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    while True:
        if not select.select([sock], [], [], idle)[0]:
            return 0
        data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
        if not data:
            return 0
        job = json.loads(data)
        before = _cpu()
        code = 1
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                os.close(fd)
            os.chdir(job["cwd"])
            os.environ.clear()
            os.environ.update(job["env"])
            argv = job["argv"]
            sys.argv = [module.__file__ or "map_runner", *argv[1:]]
            sys.path[0] = job["cwd"]  # as ``python -m`` in the sandbox
            _reseed()
            if fn is None:
                fn = module.load_function(argv[1])
            code = module.run_files(fn, argv[1:])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        code = _end_job(code)
        sock.send(json.dumps({"status": code, "cpu": _cpu() - before}).encode())
        if code != 0:
            return code


def _end_job(code: int) -> int:
    """Flush the job's output, kill what it started, give back its descriptors."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 1
    reap_children()
    _null_stdio()
    return code


def _reseed() -> None:
    """Fresh seeds for the generators a job may use without seeding them itself."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            numpy.random.seed()


def _cpu() -> float:
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _null_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)


def _close_others(keep: int) -> None:
    """Close every descriptor above stderr but ``keep`` (the worker's socket, the
    received ones)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):  # the listing's own, already closed
                os.close(fd)


def fail_item(attempt: Attempt, stderr: BinaryIO, status: int | None) -> int | None:
    """The status of an attempt that ended with ``status``. A map item (a job whose
    executable is :data:`MAP_SCRIPT`) killed for a limit fails as that item alone:
    the reason is added to its ``stderr`` (the map shows it) and it ends as killed,
    its own failure rather than one that holds it, so that ``max_retries`` runs it
    again as any failed job."""
    limit = attempt.limit_exceeded
    if limit is None or attempt.msg.spec.executable != MAP_SCRIPT:
        return status
    stderr.seek(0, os.SEEK_END)
    stderr.write(f"\ndfarm: {limit}\n".encode())
    stderr.flush()
    with attempt._lock:
        if attempt.kill_reason == limit:
            attempt.kill_reason = None
        attempt.limit_exceeded = None
    return status if status is not None and status < 0 else -signal.SIGKILL
