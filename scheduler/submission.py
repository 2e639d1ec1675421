"""Checks on a submission as it reaches the scheduler: nothing a user supplies may
name a path outside its sandbox, and every input must have been uploaded (or be
arriving: see :mod:`scheduler.arrivals`)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from scheduler.mail.rules import NOTIFICATIONS, wants_mail
from scheduler.mail.settings import check_address
from scheduler.matching.requirements import RequirementsError, compile_requirements
from scheduler.protocol import JobSpec
from scheduler.transport.ftp import ARRIVING

SHA256 = re.compile(r"[0-9a-f]{64}")
#: A URL input: ``scheme://`` and the rest.
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A job attribute's name, as ClassAd names go.
ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PROCS = 1_000_000
#: Most queue variables and random draws recorded for one job.
MAX_PARAMS = 100


class SubmissionError(Exception):
    """A submission that cannot be queued; nothing of it is stored."""


def safe_name(name: str) -> bool:
    """A plain file name: no directory part, not '.' or '..', nothing unprintable."""
    return (
        bool(name)
        and len(name) <= 255
        and "/" not in name
        and name not in (".", "..")
        and name.isprintable()
    )


#: Folder levels of an input's name (``dir_a/sub/file``), at most.
MAX_INPUT_DEPTH = 33
#: Characters of an input's name, at most.
MAX_INPUT_NAME = 4096


def safe_input_name(name: str) -> bool:
    """A file of a job's sandbox: a plain name, or plain names joined by '/' (a file
    of a directory input) that stay below the sandbox."""
    parts = name.split("/")
    return (
        len(name) <= MAX_INPUT_NAME
        and len(parts) <= MAX_INPUT_DEPTH
        and all(safe_name(part) for part in parts)
    )


def safe_relative_path(path: str) -> bool:
    """A relative path that stays below its starting directory."""
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not PurePosixPath(path).is_absolute()
        and ".." not in parts
        and path.isprintable()
    )


def url_input_name(url: str) -> str | None:
    """The sandbox file of a URL input (the last part of its path), or None when the
    URL is not one a worker may fetch into a sandbox."""
    if not URL.fullmatch(url) or not url.isprintable():
        return None
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name if safe_name(name) else None


def safe_result_name(name: str) -> bool:
    """A result file a worker may report: ``stdout``, ``stderr`` or ``outputs/NAME``."""
    head, _, rest = name.partition("/")
    return name in ("stdout", "stderr") or (head == "outputs" and safe_name(rest))


def check_submission(specs: list[JobSpec], input_dir: Path, *, mail: bool = False) -> list[str]:
    """Raise :class:`SubmissionError` naming the first problem; return warnings
    (``mail``: whether this scheduler can send notification mail)."""
    if not specs:
        raise SubmissionError("the submission has no jobs")
    if len(specs) > MAX_PROCS:
        raise SubmissionError(f"at most {MAX_PROCS} jobs in one cluster")
    uploaded: dict[str, int] = {}
    for proc, spec in enumerate(specs):
        _check_inputs(f"job {proc}", spec, input_dir, uploaded)
        _check_spec(f"job {proc}", spec)
    if any(not spec.notify_user and spec.notification != "Never" for spec in specs):
        return [
            "notification asks for mail but there is no address: set notify_user"
            " (or register one with 'dfarm user add --email')"
        ]
    if not mail and any(wants_mail(spec) for spec in specs):
        return ["this scheduler has no SMTP server configured: no notification mail will be sent"]
    return []


def _check_inputs(where: str, spec: JobSpec, input_dir: Path, uploaded: dict[str, int]) -> None:
    for f in spec.inputs:
        if not safe_input_name(f.name):
            raise SubmissionError(f"{where}: input {f.name!r} is not a plain file name")
        if not SHA256.fullmatch(f.sha256):
            raise SubmissionError(f"{where}: input {f.name!r} has no valid sha256")
        if f.sha256 not in uploaded:
            path = input_dir / f.sha256
            if path.is_symlink() or not path.is_file():
                raise SubmissionError(f"{where}: input {f.name!r} was not uploaded")
            uploaded[f.sha256] = path.stat().st_size
        if uploaded[f.sha256] != f.size and not _arriving(input_dir / f.sha256, f.size):
            raise SubmissionError(
                f"{where}: input {f.name!r} has {uploaded[f.sha256]} bytes, expected {f.size}"
            )
    names = [f.name for f in spec.inputs]
    for url in spec.url_inputs:
        name = url_input_name(url)
        if name is None:
            raise SubmissionError(f"{where}: URL input {url!r} names no file")
        names.append(name)
    if len(set(names)) != len(names):
        raise SubmissionError(f"{where}: two inputs have the same name")
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    if clash := folders.intersection(names):
        raise SubmissionError(f"{where}: input {min(clash)!r} is both a file and a folder")
    if spec.executable not in names:
        raise SubmissionError(f"{where}: the executable {spec.executable!r} is not an input")
    if spec.stdin is not None and spec.stdin not in names:
        raise SubmissionError(f"{where}: the input file {spec.stdin!r} is not an input")


def _arriving(path: Path, size: int) -> bool:
    """Whether ``path`` is an input still being uploaded, not yet over ``size``, or one
    whose upload ended, whole, since its size was read. The marker is read before the
    size: an upload ends by growing to its size, then losing its marker."""
    try:
        if path.with_name(path.name + ARRIVING).exists():
            return path.stat().st_size <= size
        return path.stat().st_size == size
    except OSError:
        return False


def _check_spec(where: str, spec: JobSpec) -> None:
    for out in spec.transfer_output_files or []:
        if not safe_relative_path(out):
            raise SubmissionError(f"{where}: output {out!r} leaves the job's directory")
    for key in spec.environment:
        if not ENV_NAME.fullmatch(key):
            raise SubmissionError(f"{where}: invalid environment variable name {key!r}")
    if spec.notification not in NOTIFICATIONS:
        raise SubmissionError(f"{where}: notification must be one of {', '.join(NOTIFICATIONS)}")
    if spec.notify_user is not None:
        try:
            check_address(spec.notify_user)
        except ValueError as exc:
            raise SubmissionError(f"{where}: notify_user: {exc}") from None
    if spec.result_file is not None and not safe_name(spec.result_file):
        raise SubmissionError(f"{where}: result_file {spec.result_file!r} is not a plain file name")
    if len(spec.params) > MAX_PARAMS or any(
        len(k) > 200 or len(v) > 4096 for k, v in spec.params.items()
    ):
        raise SubmissionError(f"{where}: too many or too long parameters")
    if len(spec.attributes) > MAX_PARAMS or any(
        not ATTRIBUTE_NAME.fullmatch(k) or len(k) > 200 or len(v) > 65536
        for k, v in spec.attributes.items()
    ):
        raise SubmissionError(f"{where}: too many, too long or badly named job attributes")
    if spec.request_cpus < 1 or spec.request_gpus < 0:
        raise SubmissionError(f"{where}: request_cpus must be >= 1 and request_gpus >= 0")
    if spec.requirements is not None:
        try:
            compile_requirements(spec.requirements, spec.attributes)
        except RequirementsError as exc:
            raise SubmissionError(f"{where}: requirements: {exc}") from None
