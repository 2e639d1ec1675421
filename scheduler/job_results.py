"""A finished job's result: the number (or JSON object of numbers) it produced.

The result is the last non-blank line of the job's stdout or, when the submit file
names a ``result_file``, that output file's whole content. It is read when the job
completes, from the small results that came inline or from the spool for larger ones,
and kept in SQLite. A job that exits with a non-zero code or a signal, or prints
something else, has no result but the reason why: it counts as a failure, never as 0.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from scheduler.job_records import JobResult
from scheduler.protocol import JobSpec

#: Bytes read from the end of a large stdout for its last line.
TAIL_BYTES = 64 * 1024
#: Largest result file read.
MAX_RESULT_FILE = 1024 * 1024
#: Most keys in a JSON result.
MAX_KEYS = 1000


def extract_result(
    spec: JobSpec,
    files: dict[str, bytes],
    job_dir: Path | None,
    exit_code: int | None,
    exit_signal: int | None,
) -> JobResult:
    """The result of a job that ended with this status and these results: ``files``
    came inline, larger ones are in ``job_dir`` (None: none came back)."""
    if exit_signal is not None:
        return JobResult(None, f"killed by signal {exit_signal}")
    if exit_code != 0:
        return JobResult(None, f"exit code {exit_code}")
    if spec.result_file:
        name = f"outputs/{spec.result_file}"
        data = files.get(name)
        if data is None and job_dir is not None:
            data = _read(job_dir / name, MAX_RESULT_FILE, tail=False)
            if data is None and (job_dir / name).is_file():
                return JobResult(None, f"result file '{spec.result_file}' is over 1 MiB")
        if data is None:
            return JobResult(None, f"no result file '{spec.result_file}' came back")
        return parse_result(data.decode("utf-8", "replace").strip(), f"'{spec.result_file}'")
    data = files.get("stdout")
    if data is None:
        data = b"" if job_dir is None else _read(job_dir / "stdout", TAIL_BYTES, tail=True) or b""
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return JobResult(None, "no output on stdout")
    return parse_result(lines[-1].strip(), "the last line of stdout")


def parse_result(text: str, where: str) -> JobResult:
    """A number, or a JSON object whose values are all numbers."""
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return JobResult({"value": number}, None)
        return JobResult(None, f"{where} is not a finite number: {text[:60]!r}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and data and len(data) <= MAX_KEYS:
        values = {}
        for key, value in data.items():
            finite = _finite(value)
            if finite is None:
                return JobResult(None, f"{where}: {key!r} is not a finite number")
            values[str(key)[:100]] = finite
        return JobResult(values, None)
    return JobResult(None, f"{where} is not a number or a JSON object of numbers: {text[:60]!r}")


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (an integer too large
    for a float included)."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _read(path: Path, limit: int, tail: bool) -> bytes | None:
    """Up to ``limit`` bytes of a spool file (its end when ``tail``); None if missing or
    too large to be a result file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if tail:
            f.seek(max(0, size - limit))
        elif size > limit:
            return None
        return f.read(limit)
