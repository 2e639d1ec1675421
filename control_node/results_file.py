"""A cluster's results in one file: ``<cluster>.results.jsonl``.

One JSON object a line, one line per job, in proc order: every field of the job's
record as ``dq --json`` and ``dresults --json`` show it (state, exit code or signal,
times, worker, parameters, result), and

- ``stdout``, ``stderr``: what the job printed there (UTF-8, invalid bytes replaced),
  when it came inline (up to 64 KiB); ``null`` when it is in a file instead;
- ``folder``: the job's ``<cluster>.<proc>/`` folder beside this file, when it got one
  (output files, a large stdout or stderr, a failure, ``--per-job``); else ``null``;
- ``stdout_path``, ``stderr_path``: where the submit file's ``output`` and ``error``
  put them, as HTCondor does; else ``null``.

The file is rewritten whole under a temporary name and renamed into place: a reader
or an interrupted fetch never sees a partial line, and fetching again gives the same
file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler import protocol as p

SUFFIX = ".results.jsonl"
#: The fields a line adds to the job's record.
EXTRA_FIELDS = ("stdout", "stderr", "folder", "stdout_path", "stderr_path")


def results_path(dest: Path, cluster: int) -> Path:
    """Where the results of ``cluster`` fetched into ``dest`` are."""
    return dest / f"{cluster}{SUFFIX}"


@dataclass(frozen=True)
class ResultRecord:
    """One line of a results file: the job's record and where its output is."""

    job: p.JobInfo
    stdout: str | None
    stderr: str | None
    folder: str | None
    stdout_path: str | None
    stderr_path: str | None


def text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def line(
    job: p.JobInfo | dict[str, Any],
    stdout: bytes | None,
    stderr: bytes | None,
    folder: str | None,
    stdout_path: Path | None = None,
    stderr_path: Path | None = None,
) -> str:
    """The line of one job (its record, or the record's wire form)."""
    record = dict(job) if isinstance(job, dict) else dict(p.to_wire(job))
    record.update(
        stdout=text(stdout),
        stderr=text(stderr),
        folder=folder,
        stdout_path=None if stdout_path is None else str(stdout_path),
        stderr_path=None if stderr_path is None else str(stderr_path),
    )
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


class ClusterResultsFile:
    """The results file of one cluster in one folder, kept in memory while a fetch
    adds to it: what an earlier fetch wrote stays, a job fetched again is replaced."""

    def __init__(self, path: Path):
        self.path = path
        self._lines: dict[int, str] = {}
        self._dirty = False
        try:
            with open(path, encoding="utf-8") as f:
                for text_line in f:
                    proc = json.loads(text_line).get("proc")
                    if isinstance(proc, int):
                        self._lines[proc] = text_line
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            self._lines.clear()  # unreadable: written anew from what this fetch brings

    def add(self, proc: int, text_line: str) -> None:
        if self._lines.get(proc) != text_line:
            self._lines[proc] = text_line
            self._dirty = True

    def __len__(self) -> int:
        return len(self._lines)

    def flush(self) -> None:
        """Write the file under a temporary name and rename it into place."""
        if not self._dirty and self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.part")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(self._lines[proc] for proc in sorted(self._lines)))
        os.replace(tmp, self.path)
        self._dirty = False


def read_results(path: str | os.PathLike[str]) -> list[ResultRecord]:
    """The records of a results file, in proc order."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, text_line in enumerate(f, 1):
            data: dict[str, Any] = json.loads(text_line)
            extra = {name: data.pop(name, None) for name in EXTRA_FIELDS}
            job = p.from_wire(p.JobInfo, data, f"{path}:{number}")
            records.append(ResultRecord(job=job, **extra))
    return records
