"""Running one attempt of a job: stage inputs, run the process, send results (the
files' steps are in :mod:`worker_node.attempt_files`).

Each attempt runs in a sandbox directory ``<work>/jobs/<cluster>.<proc>-<attempt>/``,
where its inputs are staged as read-only hard links to the input cache (or to
the spool, where the worker shares its file system: see
:mod:`worker_node.spool_link`). Its stdout and stderr go to anonymous
temporary files, never into that directory, so they are not mistaken for
outputs. File-system operations are kept few: on a busy or virtualised disk
each costs more than starting the job's process, so a slot reuses its sandbox
for the next job of the same cluster or owner (see :mod:`worker_node.sandbox`).
:func:`run_attempt` blocks; the daemon runs it in a thread of its own per slot.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from scheduler.protocol import (
    NOT_STARTED,
    FtpGrant,
    JobFinished,
    RunJob,
    parse_job_id,
)
from worker_node import checkpoint, py_scripts, reaper, sandbox_files, url_inputs
from worker_node.attempt_files import collect_outputs, send_results, stage_inputs
from worker_node.containers import INSIDE, Containers, ImageProblem, Prepared, request_of
from worker_node.deferral import wait_for_deferral
from worker_node.disk import DiskWatch
from worker_node.identity import Account
from worker_node.launcher import (
    JobLost,
    Launcher,
    LauncherError,
    Launchers,
    reap_group,
    wait_exit,
)
from worker_node.limits import tree_rss_mb, watch_limits
from worker_node.sandbox import Sandbox
from worker_node.spool_link import SpoolLink
from worker_node.transfer import InputCache, TransferError
from worker_node.warm_map import MAP_SCRIPT, fail_item

log = logging.getLogger(__name__)

#: Variables of the worker's own environment that jobs inherit.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
#: Seconds a failed transfer waits for the connection to the scheduler to drop
#: before it counts as the transfer's own failure (a scheduler killed mid-transfer
#: refuses FTP a moment before its worker connection is seen to close).
GRANT_SETTLE = 5.0

T = TypeVar("T")


@dataclass
class Attempt:
    """One run of a job on this worker, killable from another thread."""

    msg: RunJob
    process: subprocess.Popen[bytes] | Launched | None = None
    kill_reason: str | None = None
    #: Set when the job was killed for exceeding a limit: the hold reason.
    limit_exceeded: str | None = None
    #: The job's stdout and stderr while it runs (read by ``dtail``).
    streams: dict[str, BinaryIO] = field(default_factory=dict)
    #: The GPUs reserved for the job, its ``CUDA_VISIBLE_DEVICES`` (None: the worker
    #: has no GPUs, leave it unset).
    gpus: list[int] | None = None
    #: Set (by its slot thread) once it has ended, so that nothing queues behind it.
    ended: bool = False
    #: The peak resident memory (MB) of its process tree seen so far (``MemoryUsage``).
    peak_memory_mb: float = 0.0
    #: The FTP grant its files move with: its ``RunJob``'s, or the one the scheduler
    #: sent when it took the attempt back after losing it (:meth:`new_grant`).
    ftp: FtpGrant = field(init=False)
    #: False once the connection that gave :attr:`ftp` has dropped.
    connected: bool = True
    #: Its checkpoints, when the job checkpoints itself.
    keeper: checkpoint.Keeper | None = None
    #: Where the job's processes are not its own tree (a container's, under its
    #: runtime's monitor): the roots of those whose memory is the job's.
    memory_roots: Callable[[], list[int]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.ftp = self.msg.ftp
        self._changed = threading.Condition(self._lock)

    @property
    def key(self) -> str:
        return f"{self.msg.job_id}:{self.msg.attempt}"

    def kill(self, reason: str) -> None:
        """Kill the job's whole process group (it runs in a session of its own)."""
        with self._lock:
            self.kill_reason = reason
            self._changed.notify_all()
            if isinstance(self.process, Launched):
                self.process.kill()
            elif self.process is not None and self.process.returncode is None:
                # This worker is its parent and reaps it only under this lock
                # (see _execute): until then no other group can have its number.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the job's process (HTCondor's ``kill_sig``), if it runs."""
        with self._lock:
            process = self.process
            if isinstance(process, Launched) and process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if process.pidfd is not None:
                        signal.pidfd_send_signal(process.pidfd, sig)
                    else:  # without pidfds: by number, as Launched.kill does
                        os.kill(process.pid, sig)
            elif isinstance(process, subprocess.Popen) and process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(process.pid, sig)

    def measure_memory(self) -> int | None:
        """Measure the job's resident memory now; returns the peak so far in MB
        (rounded up, as HTCondor's ``MemoryUsage``), None before its program started."""
        if self.process is None:
            return None
        self.peak_memory_mb = max(self.peak_memory_mb, self.memory_mb())
        return math.ceil(self.peak_memory_mb)

    def memory_mb(self) -> float:
        """The resident memory (MB) of the job's processes now."""
        process = self.process
        if process is None:
            return 0.0
        if self.memory_roots is not None:
            return sum(tree_rss_mb(pid) for pid in self.memory_roots())
        return tree_rss_mb(process.pid)

    def connection_lost(self) -> None:
        """The connection to the scheduler dropped: its grant may be gone with it."""
        with self._lock:
            self.connected = False
            self._changed.notify_all()

    def new_grant(self, grant: FtpGrant) -> None:
        """The scheduler took the attempt back, with a new grant."""
        with self._lock:
            self.ftp, self.connected = grant, True
            self._changed.notify_all()

    def await_new_grant(self, failed: FtpGrant, settle: float = GRANT_SETTLE) -> bool:
        """After a transfer with the grant ``failed`` went wrong: True once a newer
        grant came, if the scheduler was lost (its connection dropped, or drops
        within ``settle`` seconds); False at once if it was not (the failure is the
        transfer's own) or when the attempt is killed meanwhile."""
        with self._lock:
            self._changed.wait_for(
                lambda: not self.connected or self.ftp is not failed or self.kill_reason, settle
            )
            if self.connected and self.ftp is failed:
                return False
            if self.ftp is failed and self.kill_reason is None:
                log.warning("job %s: the scheduler is away; files wait for it", self.msg.job_id)
            self._changed.wait_for(lambda: self.ftp is not failed or self.kill_reason)
            return self.kill_reason is None

    def read_output(self, stream: str, offset: int, limit: int) -> tuple[bytes, int] | None:
        """``limit`` bytes of stdout or stderr from ``offset``, and the stream's size;
        None once the attempt's files are closed."""
        with self._lock:
            f = self.streams.get(stream)
            if f is None:
                return None
            size = os.fstat(f.fileno()).st_size
            return os.pread(f.fileno(), max(0, min(limit, size - offset)), offset), size


def job_environment(
    msg: RunJob, sandbox: Path, gpus: str | None = None, python: str | None = None
) -> dict[str, str]:
    """What a job sees: a few of the worker's variables, dfarm's, then the job's own
    (``gpus``: its ``CUDA_VISIBLE_DEVICES``, which the job cannot override; ``python``:
    the interpreter ``Client.map`` jobs use, default the worker's)."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    cluster, proc = parse_job_id(msg.job_id)
    env.update(
        HOME=str(sandbox),
        TMPDIR=str(sandbox),
        DFARM_JOB_ID=msg.job_id,
        DFARM_CLUSTER=str(cluster),
        DFARM_PROC=str(proc),
        DFARM_ATTEMPT=str(msg.attempt),
        DFARM_SCRATCH_DIR=str(sandbox),
        OMP_NUM_THREADS=str(msg.spec.request_cpus),
        # The worker's own interpreter, which Client.map jobs run with.
        DFARM_PYTHON=python or sys.executable,
    )
    env.update(msg.spec.environment)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def _container(
    attempt: Attempt,
    sandbox: Sandbox,
    account: Account | None,
    containers: Containers | None,
    image_file: Path | None,
) -> Prepared:
    """The image of a job that asks for a container (``image_file``: the worker's copy
    of the one it sent), made ready by one of ``containers``' runtimes; raises
    ImageProblem where it cannot be."""
    msg = attempt.msg
    request = request_of(msg.spec)
    assert request is not None
    if containers is None:
        raise ImageProblem("this worker has no container runtime")
    sha = next((i.sha256 for i in msg.spec.inputs if i.name == request.image), None)
    image = containers.prepare(
        request, sandbox.directory, sha, account, f"{msg.job_id}-{msg.attempt}", image_file
    )
    attempt.memory_roots = image.memory_roots()
    return image


def run_attempt(
    attempt: Attempt,
    cache: InputCache,
    sandbox: Sandbox,
    account: Account | None = None,
    python: str | None = None,
    launchers: Launchers | None = None,
    spool: SpoolLink | None = None,
    disk: DiskWatch | None = None,
    commit: checkpoint.Commit | None = None,
    containers: Containers | None = None,
) -> JobFinished:
    """Stage, run and return one attempt (as ``account``, default the worker's own,
    started by the slot's launcher for that account when ``launchers`` are given;
    files linked with the ``spool`` where it is shared, else moved over FTP; a job
    that ends on a full ``disk`` returns nothing but that failure; a job that
    checkpoints itself has each checkpoint committed with ``commit``; one that asks
    for a container runs in it with one of ``containers``' runtimes);
    never raises for the job's own failures."""
    msg = attempt.msg
    finished = functools.partial(JobFinished, job_id=msg.job_id, attempt=msg.attempt)
    reusable = False
    began = time.monotonic()
    image: Prepared | None = None
    try:
        name = f"{msg.job_id}-{msg.attempt}"
        sandbox.prepare(parse_job_id(msg.job_id)[0], name, account, msg.owner)
        try:
            images = containers.files if containers is not None else None
            image_file = _with_grant(
                attempt, lambda grant: stage_inputs(msg, grant, cache, sandbox, spool, images)
            )
        except TransferError as exc:
            return finished(failure=f"{NOT_STARTED[0]}: {exc}")
        if msg.spec.url_inputs:
            budget = url_inputs.MAX_BYTES
            if msg.spec.request_disk:
                budget = min(budget, msg.spec.request_disk * 1024)
            failed = url_inputs.fetch_as(
                msg.spec.url_inputs, sandbox.directory, account, python, budget,
                cancelled=lambda: attempt.kill_reason is not None,
            )  # fmt: skip
            if failed is not None:
                worker = disk.name if disk is not None else "this worker"
                return finished(failure=url_inputs.hold_reason(worker, failed.url, failed.detail))
        unusable = (
            None
            if commit is None
            else checkpoint.restore(attempt, sandbox, account, commit, _with_grant, spool)
        )
        if unusable:
            return finished(failure=unusable)
        stdout, stderr = sandbox.stdout, sandbox.stderr
        with attempt._lock:
            attempt.streams = {"stdout": stdout, "stderr": stderr}
        missed = wait_for_deferral(
            msg.spec.attributes, attempt._changed, lambda: attempt.kill_reason is not None
        )
        if missed:
            return finished(failure=missed)
        if request_of(msg.spec) is not None:
            try:
                image = _container(attempt, sandbox, account, containers, image_file)
            except ImageProblem as exc:
                worker = disk.name if disk is not None else "this worker"
                return finished(failure=f"container on worker {worker}: {exc}")
        launcher = _launcher(launchers, sandbox.index, account, msg.spec.executable)
        status, wall, cpu, failure = _execute(
            attempt, sandbox.directory, stdout, stderr, account, python, launcher, image
        )
        while checkpoint.stored(attempt, sandbox, status, failure, wall, _with_grant):
            status, more_wall, more_cpu, failure = _execute(
                attempt, sandbox.directory, stdout, stderr, account, python, launcher, image
            )
            wall, cpu = wall + more_wall, cpu + more_cpu
        status = fail_item(attempt, stderr, status)
        with attempt._lock:
            attempt.streams = {}  # results are read from the start, with no dtail about
        _end_processes(account, launchers, sandbox.index)
        if disk is not None and (full := disk.problem(since=began)) is not None:
            return finished(failure=full, disk_full=True)  # outputs cut short
        with contextlib.ExitStack() as files:
            owner = os.geteuid() if account is None else account.uid
            outputs, missing = collect_outputs(msg, sandbox.directory, sandbox.staged, owner, files)
            results: dict[str, BinaryIO] = {"stdout": stdout, "stderr": stderr}
            results.update({f"outputs/{name}": f for name, f in outputs.items()})
            inline, spooled = _with_grant(
                attempt, lambda grant: send_results(msg, grant, results, spool)
            )
        failure = attempt.limit_exceeded or failure or missing
        if attempt.kill_reason and not failure:
            failure = f"killed: {attempt.kill_reason}"
        reusable = failure is None
        code, sig = (None, -status) if status is not None and status < 0 else (status, None)
        return finished(
            exit_code=code,
            exit_signal=sig,
            wall_time=round(wall, 6),
            cpu_time=round(cpu, 6),
            output_files=sorted(outputs),
            files=inline,
            spooled=spooled,
            failure=failure,
            memory_usage_mb=math.ceil(attempt.peak_memory_mb) if attempt.peak_memory_mb else None,
        )
    except TransferError as exc:
        return finished(failure=f"could not transfer results: {exc}")
    finally:
        if image is not None:
            image.cleanup(account)
        with attempt._lock:
            attempt.streams = {}
        sandbox.finish(reusable)


def _with_grant(attempt: Attempt, transfer: Callable[[FtpGrant], T]) -> T:
    """``transfer`` with the attempt's FTP grant; when it fails because the scheduler
    was lost (restarted, or the connection dropped), again with the grant the
    scheduler gives when it takes the attempt back."""
    while True:
        grant = attempt.ftp
        try:
            return transfer(grant)
        except TransferError:
            if not attempt.await_new_grant(grant):
                raise


def _devnull() -> int:
    """One read-only descriptor of /dev/null, shared as every job's default stdin."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


_DEVNULL: int | None = None


def _execute(
    attempt: Attempt,
    sandbox: Path,
    stdout: BinaryIO,
    stderr: BinaryIO,
    account: Account | None = None,
    python: str | None = None,
    launcher: Launcher | None = None,
    image: Prepared | None = None,
) -> tuple[int | None, float, float, str | None]:
    """Run the process (in ``image`` if given); returns (exit status or -signal,
    wall s, cpu s, failure)."""
    spec = attempt.msg.spec
    exe = sandbox / spec.executable
    start = time.monotonic()
    gpus = None if attempt.gpus is None else ",".join(map(str, attempt.gpus))
    env = job_environment(attempt.msg, sandbox, gpus, python)
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None
    if account is not None:
        user, group, extra_groups = account.uid, account.gid, list(account.groups)
        env.update(USER=account.name, LOGNAME=account.name)
    argv: list[str] | str
    if image is not None:  # the program runs as given, with the image's interpreters
        argv, env = image.command(
            [f"{INSIDE}/{spec.executable}", *spec.arguments], sandbox, env,
            spec.request_cpus, spec.request_memory,
        )  # fmt: skip
    else:
        argv = py_scripts.command(
            exe, spec.arguments, python if account is not None else python or sys.executable
        )
    if isinstance(argv, str):
        reason = f"{NOT_STARTED[1]} {spec.executable!r}: {argv}"
        stderr.write(f"dfarm: {reason}\n".encode())
        return None, 0.0, 0.0, reason
    try:
        fin = _open_stdin(sandbox, spec.stdin)
    except sandbox_files.UnsafeFile as exc:
        reason = f"input {spec.stdin!r} {exc.strerror}"
        stderr.write(f"dfarm: {reason}\n".encode())
        return None, 0.0, 0.0, reason
    with fin if fin is not None else contextlib.nullcontext():
        try:
            with attempt._lock:
                if attempt.kill_reason:
                    return None, 0.0, 0.0, f"killed before it started: {attempt.kill_reason}"
                stdin = fin.fileno() if fin is not None else _devnull()
                if launcher is not None:
                    fds = [stdin, stdout.fileno(), stderr.fileno()]
                    try:
                        attempt.process = Launched(
                            *launcher.start(argv, str(sandbox), env, fds, attempt.msg.owner)
                        )
                    except JobLost as exc:  # it may have started: never start it twice
                        attempt.kill_reason = str(exc)
                        return None, time.monotonic() - start, 0.0, None
                    except LauncherError as exc:
                        log.warning("%s: job %s starts without it", exc, attempt.msg.job_id)
                        launcher = None
                if launcher is None:
                    attempt.process = subprocess.Popen(
                        argv,
                        cwd=sandbox,
                        stdin=stdin,
                        stdout=stdout,
                        stderr=stderr,
                        env=env,
                        start_new_session=True,
                        close_fds=True,
                        user=user,
                        group=group,
                        extra_groups=extra_groups,
                    )
        except OSError as exc:
            reason = f"{NOT_STARTED[1]} {spec.executable!r}: {exc.strerror or exc}"
            stderr.write(f"dfarm: {reason}\n".encode())
            return None, time.monotonic() - start, 0.0, reason
    if launcher is not None:
        return _wait_launched(attempt, launcher, start)
    process = attempt.process
    assert isinstance(process, subprocess.Popen)
    with watch_limits(attempt, start):
        wait_exit(process.pid)
    with attempt._lock:  # reaped where Attempt.kill cannot signal its number meanwhile
        process.returncode, cpu = reap_group(process.pid)
    return process.returncode, time.monotonic() - start, cpu, None


def _open_stdin(sandbox: Path, name: str | None) -> BinaryIO | None:
    """The job's stdin file, opened without following links (None: /dev/null)."""
    if not name:
        return None
    top = sandbox_files.open_dir(sandbox)
    try:
        return sandbox_files.open_file(top, name, None)
    finally:
        os.close(top)


@dataclass
class Launched:
    """A job started by a launcher: what :meth:`Attempt.kill` and the limits need.
    Its launcher reaps it, so its pid may be another process's by the time the
    worker hears of its end: it is signalled through ``pidfd``."""

    pid: int
    #: A pidfd of the job (None: the kernel has none), open until it ended.
    pidfd: int | None = None
    returncode: int | None = None

    def kill(self) -> None:
        """SIGKILL the job's process group, if it still runs (under the attempt's lock)."""
        if self.returncode is not None:
            return
        if self.pidfd is not None:
            reaper.kill_group(self.pidfd, self.pid)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # without pidfds: by number, as it can

    def ended(self, status: int) -> None:
        """The launcher reported its end (under the attempt's lock)."""
        self.returncode = status
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _end_processes(account: Account | None, launchers: Launchers | None, slot: int) -> None:
    """Kill what is left of the job in its launcher's cgroup, and under a uid
    dedicated to it (see :mod:`worker_node.reaper`), the slot's launcher spared."""
    if account is None:
        return
    if launchers is not None:
        launchers.end_job(slot, account)
    if account.dedicated:
        reaper.sweep_uid(account.uid, launchers.pids() if launchers is not None else set())


def _launcher(
    launchers: Launchers | None, slot: int, account: Account | None, executable: str
) -> Launcher | None:
    """The slot's launcher for ``account``; a worker that is not root (``account``
    None) has launchers for the jobs of maps alone (see :mod:`worker_node.warm_map`)."""
    if launchers is None or (account is None and executable != MAP_SCRIPT):
        return None
    try:
        return launchers.get(slot, account)
    except OSError as exc:
        name = account.name if account is not None else "the worker's own account"
        log.warning("cannot start a job launcher for %s: %s", name, exc)
        return None


def _wait_launched(
    attempt: Attempt, launcher: Launcher, start: float
) -> tuple[int | None, float, float, str | None]:
    process = attempt.process
    assert isinstance(process, Launched)
    with watch_limits(attempt, start):
        try:
            status, cpu = launcher.wait()
        except LauncherError as exc:
            status, cpu = None, 0.0
            attempt.kill(str(exc))
    with attempt._lock:
        process.ended(status if status is not None else -signal.SIGKILL)
    return status, time.monotonic() - start, cpu, None
