"""Running one attempt of a job: stage inputs, run the process, upload results.

Each attempt gets its own directory ``<work>/jobs/<cluster>.<proc>-<attempt>/``
holding ``sandbox/`` (the job's working directory, where its inputs are
staged) and the captured ``stdout`` and ``stderr`` beside it, so they are never
mistaken for outputs. :func:`run_attempt` blocks; the daemon runs it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.protocol import (
    INLINE_BUDGET,
    INLINE_LIMIT,
    JobFinished,
    RunJob,
    pack_bytes,
    parse_job_id,
)
from worker_node.transfer import InputCache, TransferError, ftp_session, upload

log = logging.getLogger(__name__)

#: Variables of the worker's own environment that jobs inherit.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass
class Attempt:
    """One run of a job on this worker, killable from another thread."""

    msg: RunJob
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    kill_reason: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> str:
        return f"{self.msg.job_id}:{self.msg.attempt}"

    def kill(self, reason: str) -> None:
        """Kill the job's whole process group (it runs in a session of its own)."""
        with self._lock:
            self.kill_reason = reason
            if self.process is not None and self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)


def job_environment(msg: RunJob, sandbox: Path) -> dict[str, str]:
    """What a job sees: a few of the worker's variables, dfarm's, then the job's own."""
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
    )
    env.update(msg.spec.environment)
    return env


def run_attempt(attempt: Attempt, cache: InputCache) -> JobFinished:
    """Stage, run and return one attempt; never raises for the job's own failures."""
    msg = attempt.msg
    sandbox = attempt.directory / "sandbox"
    sandbox.mkdir(parents=True)
    stdout, stderr = attempt.directory / "stdout", attempt.directory / "stderr"
    result = dict(job_id=msg.job_id, attempt=msg.attempt)
    try:
        try:
            _stage(msg, cache, sandbox)
        except TransferError as exc:
            return JobFinished(**result, failure=f"could not stage inputs: {exc}")
        status, wall, cpu, failure = _execute(attempt, sandbox, stdout, stderr)
        outputs, missing = _collect_outputs(msg, sandbox, cache)
        results = {"stdout": stdout, "stderr": stderr}
        results.update((f"outputs/{name}", path) for name, path in outputs.items())
        inline = _send_results(msg, results)
        failure = failure or missing
        if attempt.kill_reason and not failure:
            failure = f"killed: {attempt.kill_reason}"
        code, sig = (None, -status) if status is not None and status < 0 else (status, None)
        return JobFinished(
            **result,
            exit_code=code,
            exit_signal=sig,
            wall_time=round(wall, 6),
            cpu_time=round(cpu, 6),
            output_files=sorted(outputs),
            files=inline,
            failure=failure,
        )
    except TransferError as exc:
        return JobFinished(**result, failure=f"could not transfer results: {exc}")
    finally:
        shutil.rmtree(attempt.directory, ignore_errors=True)


def _stage(msg: RunJob, cache: InputCache, sandbox: Path) -> None:
    """Inputs from the message, the cache, or (only if still missing) FTP."""
    cache.add_inline(msg.files)
    missing = cache.missing(msg.spec.inputs)
    if missing:
        with ftp_session(msg.ftp) as ftp:
            cache.download(ftp, missing)
    cache.link_into(msg.spec.inputs, sandbox)


def _send_results(msg: RunJob, results: dict[str, Path]) -> dict[str, str]:
    """Small results to travel inline; the others are uploaded now over FTP."""
    inline: dict[str, str] = {}
    large: list[tuple[str, Path]] = []
    budget = INLINE_BUDGET
    for name, path in results.items():
        size = path.stat().st_size
        if size <= INLINE_LIMIT and size <= budget:
            budget -= size
            inline[name] = pack_bytes(path.read_bytes())
        else:
            large.append((name, path))
    if large:
        proc = parse_job_id(msg.job_id)[1]
        with ftp_session(msg.ftp) as ftp:
            for name, path in large:
                upload(ftp, path, f"{proc}/{name}")
    return inline


def _execute(
    attempt: Attempt, sandbox: Path, stdout: Path, stderr: Path
) -> tuple[int | None, float, float, str | None]:
    """Run the process; returns (exit status or -signal, wall s, cpu s, failure)."""
    spec = attempt.msg.spec
    exe = sandbox / spec.executable
    stdin_path = sandbox / spec.stdin if spec.stdin else None
    start = time.monotonic()
    with (
        open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb") as fin,
        open(stdout, "wb") as fout,
        open(stderr, "wb") as ferr,
    ):
        try:
            with attempt._lock:
                if attempt.kill_reason:
                    return None, 0.0, 0.0, f"killed before it started: {attempt.kill_reason}"
                attempt.process = subprocess.Popen(
                    [str(exe), *spec.arguments],
                    cwd=sandbox,
                    stdin=fin,
                    stdout=fout,
                    stderr=ferr,
                    env=job_environment(attempt.msg, sandbox),
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            reason = f"cannot execute {spec.executable!r}: {exc.strerror or exc}"
            ferr.write(f"dfarm: {reason}\n".encode())
            return None, time.monotonic() - start, 0.0, reason
        process = attempt.process
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    return process.returncode, wall, usage.ru_utime + usage.ru_stime, None


def _collect_outputs(
    msg: RunJob, sandbox: Path, cache: InputCache
) -> tuple[dict[str, Path], str | None]:
    """The files to send back, and a failure if a declared output is missing."""
    wanted = msg.spec.transfer_output_files
    if wanted is not None:
        found: dict[str, Path] = {}
        for name in wanted:
            path = sandbox / name
            if path.is_symlink() or not path.is_file():
                what = "is a directory" if path.is_dir() else "was not produced"
                return found, f"transfer_output_files: {name!r} {what}"
            found[path.name] = path
        return found, None
    staged = {f.name: cache.path(f.sha256) for f in msg.spec.inputs}
    found = {}
    for path in sorted(sandbox.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        original = staged.get(path.name)
        if original is not None and _same_file(path, original):
            continue
        found[path.name] = path
    return found, None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or (
            a.stat().st_size == b.stat().st_size and a.stat().st_mtime_ns == b.stat().st_mtime_ns
        )
    except OSError:
        return False
