"""Submitting a submit file: parse, reserve a cluster, upload inputs once, queue.

The file is parsed before the scheduler is contacted, so a bad file queues
nothing. Each distinct input file is uploaded once per cluster, whatever the
number of procs using it, and read in blocks (memory stays flat). The jobs are
queued as soon as their large inputs are hashed, while those still upload (see
:mod:`control_node.upload`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from control_node.connection import Connection, DfarmError
from control_node.input_files import InputError, InputTrees, is_url, with_url_requirements
from control_node.submit_file import (
    ProcDescription,
    SubmitDescription,
    SubmitFileError,
    parse_submit_file,
    parse_submit_text,
)
from control_node.upload import LargeInputs, Upload, UploadError
from scheduler import protocol as p

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
    strict: bool = False,
) -> SubmitDescription:
    """The submit file at ``path`` (or ``text`` read from it) for ``cluster``; a
    SubmitError names the file and line of what is wrong (with ``strict``, also of
    the first key that is neither HTCondor's nor used as a macro)."""
    try:
        if text is None:
            found = parse_submit_file(path, cluster=cluster, cwd=cwd, seed=seed, environ=environ)
        else:
            found = parse_submit_text(
                text,
                filename=str(path),
                cluster=cluster,
                cwd=cwd or os.getcwd(),
                seed=seed,
                environ=environ,
            )
    except SubmitFileError as exc:
        raise SubmitError(str(exc), exc.path, exc.line) from None
    if strict and found.unknown_keys:
        where, line, _ = found.unknown_keys[0].split(":", 2)
        raise SubmitError(found.unknown_keys[0] + " (--strict)", where, int(line))
    return found


def submit_file(
    conn: Connection,
    path: Path,
    cwd: str | None = None,
    text: str | None = None,
    strict: bool = False,
) -> Submission:
    """Submit the file ``path`` (or ``text``, named ``path`` in messages); returns the
    cluster id and its job ids. ``strict``: refuse a file with an unknown key."""

    def reserve() -> tuple[int, Callable[[list[str]], LargeInputs]]:
        created = conn.request(p.NewCluster())
        assert isinstance(created, p.ClusterCreated)
        return created.cluster, lambda paths: Upload(created.upload, paths).run()

    def queue(message: p.SubmitJobs) -> p.Submitted:
        reply = conn.request(message)
        assert isinstance(reply, p.Submitted)
        return reply

    return submit_with(reserve, queue, path, cwd, text, strict=strict)


def submit_with(
    reserve: Callable[[], tuple[int, Callable[[list[str]], LargeInputs]]],
    queue: Callable[[p.SubmitJobs], p.Submitted],
    path: Path,
    cwd: str | None = None,
    text: str | None = None,
    environ: Mapping[str, str] | None = None,
    check: Callable[[list[ProcDescription]], None] | None = None,
    strict: bool = False,
) -> Submission:
    """The one submit path, whatever carries it: parse, ``check`` the jobs (if given;
    it raises :class:`SubmitError`), ``reserve`` a cluster (which also gives the
    function that stores large inputs), then ``queue`` the jobs. ``dsub`` passes
    requests over its connection; the web dashboard, inside the scheduler, calls the
    scheduler's own handlers (with an empty ``environ``: the scheduler's is not the
    user's). ``strict`` refuses a key that is neither HTCondor's nor used as a macro."""
    # Refuse a bad file first.
    description = parse_description(path, text, 0, cwd, None, environ, strict)
    if check is not None:
        check(description.procs)
    if not description.procs:  # 'queue 0': condor_submit queues nothing, and succeeds
        return Submission(0, [], description.warnings)
    cluster, store_large = reserve()
    if _mentions_cluster(path, text):  # $(Cluster) or $(ClusterId): use the real id
        # The same seed, so that random draws are the ones of the first reading.
        description = parse_description(path, text, cluster, cwd, description.random_seed, environ)
        if check is not None:
            check(description.procs)
    procs, warnings = description.procs, description.warnings
    trees = InputTrees()
    paths = list(dict.fromkeys(local for proc in procs for local, _ in _staged(proc, trees)))
    digests, inline = _read_small_files(paths)
    try:
        large = store_large([path for path in paths if path not in digests])
        uploading = not large.ended()
        if not uploading:
            large.finish()
    except UploadError as exc:
        raise SubmitError(f"uploading the inputs failed: {exc}") from None
    digests.update(large.digests)
    try:
        return _queue_parts(
            cluster, path, procs, digests, inline, large, uploading, queue, warnings, trees
        )
    except BaseException:
        large.cancel()  # the submission failed: its uploads are of no use
        raise


def _queue_parts(
    cluster: int,
    path: Path,
    procs: list[ProcDescription],
    digests: dict[str, tuple[str, int]],
    inline: dict[str, str],
    large: LargeInputs,
    uploading: bool,
    queue: Callable[[p.SubmitJobs], p.Submitted],
    warnings: list[str],
    trees: InputTrees,
) -> Submission:
    """Queue the cluster's jobs in parts; while uploads run (``uploading``), keep it
    open until they have ended well."""
    specs = p.shared_specs([_spec(proc, digests, trees) for proc in procs])
    unnamed = dict(large.uploads)
    job_ids: list[str] = []
    first, size = 0, min(FIRST_PART, PART)
    while first < len(specs):
        part = specs[first : first + size]
        named = {f.sha256 for spec in part for f in spec.inputs if f.sha256 in unnamed}
        reply = queue(
            p.SubmitJobs(
                cluster=cluster,
                submit_file=os.path.basename(path),
                jobs=part,
                files=inline if first == 0 else {},
                uploads={sha: unnamed.pop(sha) for sha in named},
                first_proc=first,
                # While an upload runs, the cluster stays open: if it fails, the
                # scheduler removes the jobs already queued.
                last=first + size >= len(specs) and not uploading,
            )
        )
        job_ids += reply.job_ids
        warnings += [w for w in reply.warnings if w not in warnings]
        first, size = first + size, min(2 * size, PART)
    if uploading:
        try:
            large.finish()
        except UploadError as exc:
            raise SubmitError(
                f"uploading the inputs failed: {exc}; cluster {cluster} was removed"
            ) from None
        queue(
            p.SubmitJobs(
                cluster=cluster,
                submit_file=os.path.basename(path),
                jobs=[],
                first_proc=len(specs),
            )
        )
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


def _staged(proc: ProcDescription, trees: InputTrees) -> list[tuple[str, str]]:
    """(local file, sandbox name) of each file the job's sandbox gets from the
    submit machine; a SubmitError names two that would take the same name."""
    files = [proc.executable, *proc.transfer_input_files]
    if proc.input:
        files.append(proc.input)
    try:
        staged = trees.staged(files)
    except InputError as exc:
        raise SubmitError(f"transfer_input_files: {exc}") from None
    seen: dict[str, str] = {}
    for local, name in staged:
        other = seen.setdefault(name, local)
        if other != local:
            raise SubmitError(
                f"'{local}' and '{other}' would both be '{name}' in the job's sandbox"
            )
    return staged


def _spec(
    proc: ProcDescription, digests: dict[str, tuple[str, int]], trees: InputTrees
) -> p.JobSpec:
    inputs: dict[str, p.InputFile] = {}
    for local, name in _staged(proc, trees):
        sha, size = digests[local]
        inputs[name] = p.InputFile(name=name, sha256=sha, size=size)
    urls = [item for item in proc.transfer_input_files if is_url(item)]
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
        requirements=with_url_requirements(proc.requirements, urls),
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
        attributes=dict(proc.attributes),
        hold=proc.hold,
        url_inputs=urls,
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
