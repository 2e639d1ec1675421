"""What ``dsub --wait``, ``dwait`` and ``dfetch`` print about the results they fetched:
a line per cluster (where its results file is, how many jobs succeeded), then a line
per job that has a folder or files of its own (failures first, with their stderr)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from control_node.render import PROGRESS_BAR, fetched_report
from control_node.results import FetchedJob, failed

#: Jobs listed one per line at most; the others are in the results file.
MOST_LINES = 20


def results_report(fetched: Sequence[FetchedJob], cwd: Path | None = None) -> str:
    cwd = Path.cwd() if cwd is None else cwd
    lines = []
    clusters: dict[int, list[FetchedJob]] = {}
    for f in fetched:
        clusters.setdefault(f.job.cluster, []).append(f)
    for cluster, jobs in clusters.items():
        bad = sum(failed(f.job) for f in jobs)
        where = jobs[0].results_file
        shown = "" if where is None else f" -> {_short(where, cwd)}"
        lines.append(
            f"cluster {cluster}: {len(jobs)} job(s), {len(jobs) - bad} succeeded,"
            f" {bad} failed{shown}"
        )
    own = [f for f in fetched if f.stdout is not None or f.outputs]
    own.sort(key=lambda f: not f.failed)  # failures first
    if own:
        lines.append(fetched_report(own[:MOST_LINES], cwd))
    if len(own) > MOST_LINES:
        lines.append(f"... and {len(own) - MOST_LINES} more job(s) with files of their own")
    return "\n".join(lines)


def _short(path: Path, cwd: Path) -> str:
    try:
        return f"./{path.resolve().relative_to(cwd.resolve())}"
    except ValueError:
        return str(path)


def fetch_progress(stream: TextIO = sys.stderr) -> Callable[[int, int], None] | None:
    """A bar of jobs fetched on one line of ``stream``; None when it is not a terminal."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = PROGRESS_BAR * done // max(1, total)
        stream.write(f"\rfetching [{'#' * filled}{'.' * (PROGRESS_BAR - filled)}] {done}/{total} ")
        stream.flush()

    return show
