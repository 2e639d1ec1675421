"""``dq``'s views of a queue of any depth: the batch view from the scheduler's counts,
and the job list and JSON written page by page as they arrive."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TextIO

from control_node.render import duration, hold_reasons, run_time, tabulate, when
from scheduler import protocol as p

#: The batch view's columns, as ``condor_q`` prints them.
BATCH_HEADERS = (
    "OWNER", "BATCH_NAME", "SUBMITTED", "DONE", "RUN", "IDLE", "HOLD", "TOTAL", "JOB_IDS",
)  # fmt: skip
#: The job list's columns (``dq -nobatch``).
JOB_HEADERS = ("ID", "OWNER", "STATE", "SUBMITTED", "RUN_TIME", "STARTS", "WORKER", "CMD")


def _count(n: int) -> str:
    return str(n) if n else "_"


def batch_view(reply: p.BatchList) -> str:
    """``condor_q``'s default view: one line per batch, then the totals."""
    rows = [
        (
            b.owner,
            b.batch_name if b.batch_name is not None else f"ID: {b.cluster}",
            when(b.submitted),
            _count(b.done),
            _count(b.running),
            _count(b.idle),
            _count(b.held),
            b.total,
            b.job_ids,
        )  # fmt: skip
        for b in reply.batches
    ]
    lines = []
    if rows:
        lines += [tabulate(rows, headers=BATCH_HEADERS, tablefmt="plain", disable_numparse=True)]
        lines.append("")
    lines.append(totals_line("query", reply.totals))
    lines.append(totals_line("all users", reply.all_totals))
    return "\n".join(lines)


def totals_line(who: str, counts: dict[str, int]) -> str:
    """``Total for query: 3 jobs; 0 completed, 0 removed, 3 idle, 0 running, 0 held, 0
    suspended`` (jobs in the queue: completed and removed ones have left it)."""
    states = ("completed", "removed", "idle", "running", "held")
    total = sum(counts.get(s, 0) for s in states)
    parts = ", ".join(f"{counts.get(s, 0)} {s}" for s in states)
    return f"Total for {who}: {total} jobs; {parts}, 0 suspended"


class JobListWriter:
    """``dq -nobatch``: rows written as pages arrive, in columns as wide as the first
    page needs (a later, longer value widens its row alone)."""

    def __init__(self, out: TextIO, now: float) -> None:
        self.out, self.now = out, now
        self.widths: list[int] | None = None
        self.counts: Counter[str] = Counter()
        #: The held jobs' ids and reasons, said after the table.
        self.held: list[str] = []

    def write(self, jobs: Sequence[p.JobInfo]) -> None:
        rows = [self._row(job) for job in jobs]
        if self.widths is None:
            self.widths = [max(len(r[i]) for r in [JOB_HEADERS, *rows]) for i in range(8)]
            self._line(JOB_HEADERS)
        for row in rows:
            self._line(row)
        self.counts.update(job.state for job in jobs)
        if any(job.state == p.JobState.HELD.value for job in jobs):
            self.held.append(hold_reasons(jobs))
        self.out.flush()

    def _row(self, j: p.JobInfo) -> tuple[str, ...]:
        return (
            j.id, j.owner, j.state, when(j.submit_time), duration(run_time(j, self.now)),
            str(j.num_starts), j.worker or "-", " ".join([j.executable, *j.arguments])[:50],
        )  # fmt: skip

    def _line(self, row: Sequence[str]) -> None:
        assert self.widths is not None
        cells = [cell.ljust(width) for cell, width in zip(row, self.widths, strict=True)]
        self.out.write("  ".join(cells).rstrip() + "\n")

    def end(self) -> None:
        """The held jobs' reasons and the count of jobs per state."""
        if self.held:
            self.out.write("\n".join(self.held) + "\n")
        total = sum(self.counts.values())
        states = [s.value for s in p.JobState]
        parts = ", ".join(f"{self.counts[s]} {s}" for s in states if self.counts[s])
        self.out.write(f"{total} job(s){': ' + parts if parts else ''}\n")


def write_json(pages: Iterable[Sequence[object]], out: TextIO) -> None:
    """Records as one JSON list, one record a line, each written as it comes: no
    string of the whole list is built (and each line is greppable)."""
    first = True
    for page in pages:
        for record in page:
            data = record if type(record) is dict else p.to_wire(record)
            out.write(("[\n" if first else ",\n") + json.dumps(data))
            first = False
        out.flush()
    out.write("[]\n" if first else "\n]\n")
