"""Checks on a submission as it reaches the scheduler: nothing a user supplies may
name a path outside its sandbox, and every input must have been uploaded (or be
arriving: see :mod:`scheduler.arrivals`)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from scheduler.mail.rules import NOTIFICATIONS, wants_mail
from scheduler.mail.settings import check_address
from scheduler.matching.requirements import RequirementsError, compile_requirements
from scheduler.protocol import JobSpec
from scheduler.transport.ftp import ARRIVING

SHA256 = re.compile(r"[0-9a-f]{64}")
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


def safe_relative_path(path: str) -> bool:
    """A relative path that stays below its starting directory."""
    parts = PurePosixPath(path).parts
    return (
        bool(parts)
        and not PurePosixPath(path).is_absolute()
        and ".." not in parts
        and path.isprintable()
    )


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
        if not safe_name(f.name):
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
    if len(set(names)) != len(names):
        raise SubmissionError(f"{where}: two inputs have the same name")
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
        _check_matchable(where, spec.requirements, spec.attributes)


def _check_matchable(where: str, requirements: str, attributes: dict[str, str]) -> None:
    """Refuse a job attribute named bare in ``requirements``: the matcher compiles
    requirements without the job's attribute names, so it must be named ``MY.Name``."""
    try:
        compile_requirements(requirements)
    except RequirementsError:
        bare = sorted(
            name
            for scope, name in compile_requirements(requirements, attributes).expression.names
            if scope == "" and name in {a.lower() for a in attributes}
        )
        shown = next(a for a in attributes if a.lower() == bare[0])
        raise SubmissionError(
            f"{where}: requirements: write MY.{shown} for the job attribute {shown}"
            " (the scheduler matches a job's own attributes by their MY. name)"
        ) from None
