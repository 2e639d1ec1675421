"""An attempt's files: its inputs staged into its sandbox before it runs, the files
it made collected after, and its results sent back (inline, linked into a shared
spool, or over FTP). Used by :func:`worker_node.runner.run_attempt`."""

from __future__ import annotations

import contextlib
import ftplib
import logging
import os
from pathlib import Path
from typing import BinaryIO

from scheduler.protocol import (
    INLINE_BUDGET,
    INLINE_LIMIT,
    FtpGrant,
    InputFile,
    JobSpec,
    RunJob,
    pack_bytes,
    parse_job_id,
)
from worker_node import sandbox_files
from worker_node.containers import request_of
from worker_node.sandbox import Sandbox
from worker_node.spool_link import SpoolLink
from worker_node.transfer import InputCache, TransferError, ftp_session, upload

log = logging.getLogger("worker_node.runner")


def stage_inputs(
    msg: RunJob,
    grant: FtpGrant,
    cache: InputCache,
    sandbox: Sandbox,
    spool: SpoolLink | None,
    images: InputCache | None = None,
) -> Path | None:
    """Inputs from the message, the cache, the shared spool or (only if still
    missing) FTP with ``grant``. A container image sent as one file goes to
    ``images``, the worker's store of them shared by all owners (fetched once per
    worker): returns where the worker reads it from, None for no such image."""
    image = _image_input(msg.spec) if images is not None else None
    own = [item for item in msg.spec.inputs if item is not image]
    cache.add_inline({sha: text for sha, text in msg.files.items() if image is None
                      or sha != image.sha256})  # fmt: skip
    missing = cache.missing(own)
    if image is not None and images is not None:
        images.add_inline({sha: text for sha, text in msg.files.items() if sha == image.sha256})
        missing += images.missing([image])
    holder = msg.inputs_from if msg.inputs_from is not None else parse_job_id(msg.job_id)[0]
    linked = spool.inputs(holder, missing) if spool and missing else {}
    missing = [item for item in missing if item.name not in linked]
    if missing:
        with ftp_session(grant) as ftp:
            cache.download(ftp, [item for item in missing if item is not image])
            if image is not None and images is not None and image in missing:
                images.download(ftp, [image])

    def source(item: InputFile) -> tuple[Path, int]:
        if item.name in linked:
            return linked[item.name]
        try:
            return (images if item is image and images is not None else cache).entry(item.sha256)
        except KeyError:  # an image evicted since (past the image cache's limit)
            raise TransferError(f"input {item.name!r} left the worker's cache") from None

    try:
        sandbox.stage({item.name: source(item) for item in msg.spec.inputs})
    except OSError as exc:  # a folder of a directory input was swapped, or the disk is full
        raise TransferError(f"cannot place the inputs in the sandbox: {exc}") from None
    return None if image is None else source(image)[0]


def _image_input(spec: JobSpec) -> InputFile | None:
    """The input that is the job's container image, when it sends one as a file."""
    request = request_of(spec)
    if request is None or request.kind != "staged":
        return None
    return next((item for item in spec.inputs if item.name == request.image), None)


def send_results(
    msg: RunJob, grant: FtpGrant, results: dict[str, BinaryIO], spool: SpoolLink | None
) -> tuple[dict[str, str], bool]:
    """Small results to travel inline; the others are linked into the shared spool
    (then True), or uploaded now over FTP with ``grant``."""
    inline: dict[str, str] = {}
    large: list[tuple[str, BinaryIO]] = []
    budget = INLINE_BUDGET
    for name, f in results.items():
        size = os.fstat(f.fileno()).st_size
        f.seek(0)
        if size <= INLINE_LIMIT and size <= budget:
            budget -= size
            # An empty stdout or stderr is implied; an empty output file is sent.
            if size or name.startswith("outputs/"):
                inline[name] = pack_bytes(f.read())
        else:
            large.append((name, f))
    if not large:
        return inline, False
    cluster, proc = parse_job_id(msg.job_id)
    assert proc is not None  # a RunJob names one job, never a bare cluster
    if spool is not None:
        try:
            spool.put_results(cluster, proc, msg.attempt, large)
            return inline, True
        except OSError as exc:
            log.warning("%s: cannot link results into the spool (%s): using FTP", msg.job_id, exc)
    with ftp_session(grant) as ftp:
        for folder in (f"{proc}", f"{proc}/outputs"):
            with contextlib.suppress(ftplib.error_perm):  # it exists already
                ftp.mkd(folder)
        for name, f in large:
            f.seek(0)  # a failed link or copy into the spool may have read some
            upload(ftp, f, f"{proc}/{name}")
    return inline, False


def collect_outputs(
    msg: RunJob, sandbox: Path, staged: dict[str, int], owner: int, files: contextlib.ExitStack
) -> tuple[dict[str, BinaryIO], str | None]:
    """The files to send back, opened (closed with ``files``), and a failure if a
    declared output is missing or unsafe (``staged``: the inputs linked into the
    sandbox, name -> inode; ``owner``: the uid the job ran as). Each is opened
    below the sandbox without following links and checked once open (see
    :mod:`worker_node.sandbox_files`): the job may have swapped any name for a link."""
    found: dict[str, BinaryIO] = {}
    try:
        top = sandbox_files.open_dir(sandbox)
    except OSError as exc:  # a job of the worker's own account may chmod it
        return found, f"its sandbox cannot be read: {exc.strerror}"
    files.callback(os.close, top)
    wanted = msg.spec.transfer_output_files
    if wanted is not None:
        inputs = frozenset(staged.values())
        for name in wanted:
            try:
                found[name.rsplit("/", 1)[-1]] = files.enter_context(
                    sandbox_files.open_file(top, name, owner, inputs)
                )
            except sandbox_files.UnsafeFile as exc:
                return found, f"transfer_output_files: {name!r} {exc.strerror}"
        return found, None
    # New or changed files at the top: an input still linked to its source is
    # unchanged (a job that rewrites one has to replace it, since inputs are read-only).
    for name, inode in sandbox_files.plain_files(top):
        if staged.get(name) == inode:
            continue
        with contextlib.suppress(sandbox_files.UnsafeFile):  # swapped for a link since
            f = files.enter_context(sandbox_files.open_file(top, name, owner))
            if os.fstat(f.fileno()).st_ino != staged.get(name):
                found[name] = f
    return found, None
