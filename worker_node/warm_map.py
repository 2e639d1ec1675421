"""Jobs of ``Client.map`` started as forks of their launcher (``--warm-map``).

A launcher (see :mod:`worker_node.launcher`) already runs as the job's account,
one per slot and account. With ``--warm-map`` it imports the map runner and
cloudpickle once, when it is given its first job of a map, and starts each later
job of a map as a fork of itself instead of a new Python: the job is spared the
interpreter's start-up and those imports. The fork is a job like any other: a
session and process group of its own, the job's working directory, environment
and descriptors, inside the launcher's cgroup, watched and killed by the worker,
reaped by the launcher. Nothing outlives a job: each one is a fresh fork of a
launcher that never runs the job's code itself, so no state passes from one item
or owner to the next.

A job is one of a map when its executable is the map's own start script
(:data:`control_node.map_runner.RUNNER`, byte for byte) and its ``DFARM_PYTHON``
is the command that started the launcher; anything else starts as usual.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from types import ModuleType

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
    if len(argv) != 4 or os.path.basename(argv[0]) != "dfarm-map.sh":
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


def fork_job(argv: list[str], cwd: str, env: dict[str, str], fds: list[int]) -> int:
    """Start the map job ``argv`` as a fork of this process: its pid, once the child
    leads a session of its own (so that the worker may kill its process group)."""
    module = runner()
    assert module is not None
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the job
        code = 1
        try:
            os.setsid()
            os.close(ready_r)
            os.close(ready_w)  # the launcher reads EOF: the session exists
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            _close_others()
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            sys.argv = [module.__file__ or "map_runner", *argv[1:]]
            sys.path[0] = cwd  # as ``python -m`` in the sandbox: not the launcher's "/"
            code = module.main(argv[1:])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    code = code or 1
            os._exit(code)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def _close_others() -> None:
    """Close every descriptor above stderr (the worker's socket, the received ones)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own, already closed
                os.close(fd)
