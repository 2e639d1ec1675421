"""Submitting a submit file: parse, reserve a cluster, upload inputs once, queue.

The file is parsed before the scheduler is contacted, so a bad file queues
nothing. Each distinct input file is hashed while it is read (memory stays
flat) and uploaded once per cluster, whatever the number of procs using it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from control_node.connection import Connection, DfarmError
from control_node.submit_file import (
    ProcDescription,
    SubmitDescription,
    SubmitFileError,
    parse_submit_file,
    parse_submit_text,
)
from scheduler import protocol as p

BLOCK = 1 << 20
#: Where each input went: its local path -> (sha256, size).
Digests = dict[str, tuple[str, int]]
#: Jobs per submit message: a large cluster goes in parts, each well under a frame.
PART = 5000
#: Jobs in the first part. Each part is twice the one before (up to PART), so that
#: the first jobs start while the scheduler still stores the rest of the cluster.
FIRST_PART = 32


class SubmitError(DfarmError):
    """The submit file is invalid (names file and line) or could not be submitted."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path, self.line = path, line


@dataclass(frozen=True)
class Submission:
    cluster: int
    job_ids: list[str]
    warnings: list[str]


def parse_description(
    path: Path,
    text: str | None,
    cluster: int,
    cwd: str | None,
    seed: int | None,
    environ: Mapping[str, str] | None = None,
) -> SubmitDescription:
    """The submit file at ``path`` (or ``text`` read from it) for ``cluster``; a
    SubmitError names the file and line of what is wrong."""
    try:
        if text is None:
            return parse_submit_file(path, cluster=cluster, cwd=cwd, seed=seed, environ=environ)
        return parse_submit_text(
            text,
            filename=str(path),
            cluster=cluster,
            cwd=cwd or os.getcwd(),
            seed=seed,
            environ=environ,
        )
    except SubmitFileError as exc:
        raise SubmitError(str(exc), exc.path, exc.line) from None


def submit_file(
    conn: Connection, path: Path, cwd: str | None = None, text: str | None = None
) -> Submission:
    """Submit the file ``path`` (or ``text``, named ``path`` in messages); returns the
    cluster id and its job ids."""

    def reserve() -> tuple[int, Callable[[list[str]], Digests]]:
        created = conn.request(p.NewCluster())
        assert isinstance(created, p.ClusterCreated)
        return created.cluster, lambda paths: _upload(created.upload, paths)

    def queue(message: p.SubmitJobs) -> p.Submitted:
        reply = conn.request(message)
        assert isinstance(reply, p.Submitted)
        return reply

    return submit_with(reserve, queue, path, cwd, text)


def submit_with(
    reserve: Callable[[], tuple[int, Callable[[list[str]], Digests]]],
    queue: Callable[[p.SubmitJobs], p.Submitted],
    path: Path,
    cwd: str | None = None,
    text: str | None = None,
    environ: Mapping[str, str] | None = None,
    check: Callable[[list[ProcDescription]], None] | None = None,
) -> Submission:
    """The one submit path, whatever carries it: parse, ``check`` the jobs (if given;
    it raises :class:`SubmitError`), ``reserve`` a cluster (which also gives the
    function that stores large inputs), then ``queue`` the jobs. ``dsub`` passes
    requests over its connection; the web dashboard, inside the scheduler, calls the
    scheduler's own handlers (with an empty ``environ``: the scheduler's is not the
    user's)."""
    description = parse_description(path, text, 0, cwd, None, environ)  # refuse a bad file first
    if check is not None:
        check(description.procs)
    cluster, store_large = reserve()
    if _mentions_cluster(path, text):  # $(Cluster) or $(ClusterId): use the real id
        # The same seed, so that random draws are the ones of the first reading.
        description = parse_description(path, text, cluster, cwd, description.random_seed, environ)
        if check is not None:
            check(description.procs)
    procs, warnings = description.procs, description.warnings
    if not procs:
        raise SubmitError(f"{path}: the file queues no jobs", str(path))
    paths = list(dict.fromkeys(local for proc in procs for local in _inputs(proc)))
    digests, inline = _read_small_files(paths)
    digests.update(store_large([path for path in paths if path not in digests]))
    specs = p.shared_specs([_spec(proc, digests) for proc in procs])
    job_ids: list[str] = []
    first, size = 0, min(FIRST_PART, PART)
    while first < len(specs):
        reply = queue(
            p.SubmitJobs(
                cluster=cluster,
                submit_file=os.path.basename(path),
                jobs=specs[first : first + size],
                files=inline if first == 0 else {},
                first_proc=first,
                last=first + size >= len(specs),
            )
        )
        job_ids += reply.job_ids
        warnings += [w for w in reply.warnings if w not in warnings]
        first, size = first + size, min(2 * size, PART)
    return Submission(cluster, job_ids, warnings)


def _mentions_cluster(path: Path, text: str | None) -> bool:
    """Whether the file can refer to the cluster id: only a macro named in its own
    text can, so a file without the word parses the same for any cluster."""
    if text is not None:
        return "cluster" in text.lower()
    try:
        return b"cluster" in path.read_bytes().lower()
    except OSError:
        return True


def _inputs(proc: ProcDescription) -> list[str]:
    files = [proc.executable, *proc.transfer_input_files]
    if proc.input:
        files.append(proc.input)
    return files


def _spec(proc: ProcDescription, digests: dict[str, tuple[str, int]]) -> p.JobSpec:
    inputs: dict[str, p.InputFile] = {}
    for local in _inputs(proc):
        sha, size = digests[local]
        name = os.path.basename(local)
        inputs[name] = p.InputFile(name=name, sha256=sha, size=size)
    return p.JobSpec(
        executable=os.path.basename(proc.executable),
        arguments=list(proc.arguments),
        environment=dict(proc.environment),
        stdin=os.path.basename(proc.input) if proc.input else None,
        inputs=list(inputs.values()),
        transfer_output_files=proc.transfer_output_files,
        request_cpus=proc.request_cpus,
        request_memory=proc.request_memory,
        request_disk=proc.request_disk,
        request_gpus=proc.request_gpus,
        priority=proc.priority,
        machine=proc.machine,
        requirements=proc.requirements,
        notify_user=proc.notify_user,
        notification=proc.notification,
        notification_per_job=proc.notification_per_job,
        output=proc.output,
        error=proc.error,
        log=proc.log,
        initialdir=proc.initialdir,
        max_retries=proc.max_retries,
        allowed_job_duration=proc.allowed_job_duration,
        params=dict(proc.params),
        result_file=proc.result_file,
    )


def _read_small_files(
    paths: list[str],
) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """Hash and pack the small inputs that travel inside the submit message:
    (path -> (sha256, size)), (sha256 -> base64 content)."""
    digests: dict[str, tuple[str, int]] = {}
    inline: dict[str, str] = {}
    budget = p.INLINE_BUDGET
    for path in paths:
        try:
            size = os.stat(path).st_size
            if size > p.INLINE_LIMIT or size > budget:
                continue
            with open(path, "rb") as f:
                data = f.read(p.INLINE_LIMIT + 1)
        except OSError as exc:
            raise SubmitError(f"cannot read input {path}: {exc.strerror}") from None
        if len(data) > p.INLINE_LIMIT:
            continue  # it grew since stat: upload it instead
        sha = hashlib.sha256(data).hexdigest()
        digests[path] = (sha, len(data))
        inline[sha] = p.pack_bytes(data)
        budget -= len(data)
    return digests, inline


def _upload(grant: p.FtpGrant, paths: list[str]) -> dict[str, tuple[str, int]]:
    """Upload larger inputs over FTP, hashing them on the way; each is stored under
    a temporary name, then renamed to its hash. Returns path -> (sha256, size)."""
    if not paths:
        return {}
    digests: dict[str, tuple[str, int]] = {}
    try:
        with p.ftp_session(grant) as ftp:
            for number, path in enumerate(paths):
                part = f"part-{number}"
                with open(path, "rb") as f:
                    reader = p.HashingReader(f)
                    ftp.storbinary(f"STOR {part}", reader, blocksize=BLOCK)
                sha = reader.digest.hexdigest()
                ftp.rename(part, sha)
                digests[path] = (sha, reader.size)
    except p.FTP_ERRORS as exc:
        raise SubmitError(f"uploading the inputs failed: {exc}") from None
    return digests
