"""Turning records into the tables and JSON that the commands print."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from control_node.connection import dump_json
from control_node.results import FetchedJob, describe_status, ended_with, tail
from scheduler import protocol as p


def tabulate(*args: Any, **kwargs: Any) -> str:
    """:func:`tabulate.tabulate`, imported with the first table: importing it costs a
    command's start-up a sixth (it reads its package metadata)."""
    from tabulate import tabulate as table

    return table(*args, **kwargs)


def when(timestamp: float | None) -> str:
    """A time as ``11/22 14:03``, or ``-``."""
    return "-" if timestamp is None else time.strftime("%m/%d %H:%M", time.localtime(timestamp))


def duration(seconds: float | None) -> str:
    """``0+00:01:05`` (days+hh:mm:ss), as HTCondor prints run times."""
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 86400}+{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_time(job: p.JobInfo, now: float) -> float | None:
    """Wall time so far for a running job, the recorded one for a finished job."""
    if job.state == p.JobState.RUNNING.value:  # no start time yet: queued on its worker
        return None if job.start_time is None else now - job.start_time
    return job.wall_time


def jobs_table(jobs: Sequence[p.JobInfo], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [
        (
            j.id,
            j.owner,
            j.state,
            when(j.submit_time),
            duration(run_time(j, now)),
            j.num_starts,
            j.worker or "-",
            " ".join([j.executable, *j.arguments])[:50],
        )
        for j in jobs
    ]
    headers = ("ID", "OWNER", "STATE", "SUBMITTED", "RUN_TIME", "STARTS", "WORKER", "CMD")
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def jobs_summary(jobs: Sequence[p.JobInfo]) -> str:
    counts = {s.value: 0 for s in p.JobState}
    for j in jobs:
        counts[j.state] += 1
    parts = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    return f"{len(jobs)} job(s){': ' + parts if parts else ''}"


def workers_table(workers: Sequence[p.WorkerInfo]) -> str:
    rows = []
    for w in workers:
        m = w.metrics
        gpus = ", ".join(g.name for g in m.gpus) if m.gpus else "-"
        rows.append(
            (
                w.id,
                w.name,
                w.state,
                f"{w.slots_used}/{w.slots_total}",
                m.cores,
                m.threads,
                f"{m.memory_available_mb / 1024:.1f} GB",
                gpus,
                " ".join(f"{x:.2f}" for x in m.load_avg),
                w.auth or "-",
                m.process_tracking or "-",
                m.job_start.partition(":")[0] or "-",  # the reason is in --json and the log
            )
        )
    headers = (
        *("ID", "NAME", "STATE", "SLOTS", "CORES", "THREADS", "RAM_AVAIL", "GPU", "LOAD"),
        *("AUTH", "JOB_PROCESSES", "JOB_START"),
    )
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


__all__ = [
    "changed_report",
    "dump_json",
    "duration",
    "history_table",
    "hold_reasons",
    "jobs_long",
    "jobs_summary",
    "jobs_table",
    "size",
    "when",
    "workers_table",
]


def hold_reasons(jobs: Sequence[p.JobInfo]) -> str:
    """One line per held job: why it is held."""
    return "\n".join(
        f"{j.id} held: {j.hold_reason or '-'}{ended_with(j)}"
        for j in jobs
        if j.state == p.JobState.HELD.value
    )


def history_table(jobs: Sequence[p.JobInfo]) -> str:
    rows = [
        (
            j.id,
            j.owner,
            j.state,
            when(j.submit_time),
            when(j.start_time),
            when(j.end_time),
            duration(j.wall_time if j.total_run_time is None else j.total_run_time),
            duration(j.cpu_time),
            j.worker or "-",
            describe_status(j) if j.state == p.JobState.COMPLETED.value else "-",
            f"{j.num_starts} ({j.resumes} resumed)" if j.resumes else j.num_starts,
        )
        for j in jobs
    ]
    headers = (
        "ID", "OWNER", "STATE", "SUBMITTED", "STARTED", "ENDED", "RUN_TIME", "CPU", "WORKER",
        "STATUS", "STARTS",
    )  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def changed_report(reply: p.JobsChanged, action: str) -> str:
    """``2 job(s) removed: 1.0 1.1`` and a line for each job left alone."""
    past = {"remove": "removed", "hold": "held", "release": "released", "edit": "edited"}[action]
    shown = " ".join(reply.changed[:20]) + (" ..." if len(reply.changed) > 20 else "")
    lines = [f"{len(reply.changed)} job(s) {past}" + (f": {shown}" if reply.changed else "")]
    lines += [
        f"{job_id}: already removed"
        if already_done(why, action)
        else f"{job_id}: not {past}: it {why}"
        for job_id, why in reply.skipped.items()
    ]
    return "\n".join(lines)


def already_done(why: str, action: str) -> bool:
    """A job ``drm`` left alone because it was removed before: what was asked holds
    (as ``condor_rm`` of a job already marked for removal)."""
    return action == "remove" and why == f"is {p.JobState.REMOVED.value}"


def size(n: int) -> str:
    """``1.5 GB``, binary units."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


#: Fields of a job record that its ClassAd shows under HTCondor's names.
_IN_CLASSAD = {
    "id", "cluster", "proc", "owner", "state", "submit_time", "start_time", "end_time",
    "worker", "exit_code", "exit_signal", "wall_time", "cpu_time", "num_starts",
    "hold_reason", "executable", "arguments", "total_run_time", "attributes",
    "request_cpus", "request_memory", "request_disk", "request_gpus",
    "checkpoints", "checkpoint_time", "resumes", "max_retries",
}  # fmt: skip


def jobs_long(jobs: Sequence[p.JobInfo]) -> str:
    """Each job's ClassAd as ``Attr = value`` lines (strings quoted, as ``condor_q -l``),
    then what only dfarm has: parameters and results as ``params.NAME`` and
    ``result.KEY``, output files, mail delivery."""
    from scheduler.matching.job_status import status_attributes

    blocks = []
    for job in jobs:
        lines = [f"{name} = {text}" for name, text in status_attributes(job)]
        for name, value in p.to_wire(job).items():
            if name in _IN_CLASSAD:
                continue
            if isinstance(value, dict):
                lines += [f"{name}.{k} = {v}" for k, v in value.items()]
            elif isinstance(value, list):
                if value:
                    lines.append(f"{name} = {' '.join(map(str, value))}")
            elif value is not None and value != "" and (value or name != "wall_lost"):
                lines.append(f"{name} = {value}")
        if job.executable.endswith(".py"):
            # As the worker runs it (worker_node.py_scripts): the file is not at hand here.
            command = " ".join(["python3", job.executable, *job.arguments])
            lines.append(f"command = {command} (if {job.executable} has no '#!' line)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def fetched_report(fetched: Sequence[FetchedJob], cwd: Path | None = None) -> str:
    """One line per job (status and where its results are); a failed job's stderr tail."""
    cwd = Path.cwd() if cwd is None else cwd
    lines = []
    for f in fetched:
        where = _short(f.stdout.parent if f.stdout else None, cwd)
        if f.outputs and (f.stdout is None or f.outputs[0].parent != f.stdout.parent):
            # As HTCondor: output files go to the initialdir, whatever folder stdout names.
            where += f" (output files: {_short(f.outputs[0].parent, cwd)})"
        lines.append(f"{f.job.id}: {describe_status(f.job)} -> {where}")
        if f.failed:
            stderr = tail(f.stderr)
            if stderr:
                lines.extend("    " + line for line in stderr.splitlines())
    return "\n".join(lines)


def _short(path: Path | None, cwd: Path) -> str:
    if path is None:
        return "(no stdout kept)"
    try:
        return f"./{path.resolve().relative_to(cwd.resolve())}/".replace("/./", "/")
    except ValueError:
        return f"{path}/"


PROGRESS_BAR = 30


def progress_bar(
    stream: TextIO, always: bool = False
) -> Callable[[dict[str, p.JobInfo]], None] | None:
    """A callback that draws counts and a bar on one line of ``stream``; None when
    ``stream`` is not a terminal, unless ``always``."""
    if not (always or stream.isatty()):
        return None

    def show(jobs: dict[str, p.JobInfo]) -> None:
        states = [j.state for j in jobs.values()]
        done = sum(s in ("completed", "removed", "held") for s in states)
        filled = PROGRESS_BAR * done // max(1, len(states))
        stream.write(
            f"\r[{'#' * filled}{'.' * (PROGRESS_BAR - filled)}] {done}/{len(states)} done, "
            f"{states.count('idle')} idle, {states.count('running')} running, "
            f"{states.count('held')} held "
        )
        stream.flush()

    return show
