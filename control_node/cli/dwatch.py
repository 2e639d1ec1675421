"""``dwatch``: a live view of your jobs, one line per batch (as ``condor_watch_q``).

The jobs are read once; every change after that is pushed by the scheduler, so a
refresh costs it nothing. On a terminal the lines are redrawn in place; otherwise
(a pipe, a log) each change prints its batch's line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from control_node.cli.common import add_connection_options, connect, run_command
from control_node.watch import Batch, ExitRule, Watch, start
from scheduler import protocol as p

HEADERS = ("BATCH", "IDLE", "RUN", "HOLD", "DONE", "TOTAL", "JOB_IDS")
BAR = 24
#: The least time between two redraws of a terminal.
REDRAW = 0.1


def progress(batch_counts: dict[str, int], total: int, width: int = BAR) -> str:
    """``[####==!....]  40%``: done ``#``, running ``=``, held ``!``, idle ``.``."""
    if total == 0:
        return "[" + " " * width + "]"
    done = batch_counts.get("completed", 0) + batch_counts.get("removed", 0)
    cells, used = [], 0
    for state, mark in (("done", "#"), ("running", "="), ("held", "!")):
        n = done if state == "done" else batch_counts.get(state, 0)
        size = round(n * width / total)
        size = min(size, width - used)
        cells.append(mark * size)
        used += size
    cells.append("." * (width - used))
    return f"[{''.join(cells)}] {100 * done // total:3d}%"


def rows(watch: Watch) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for batch in watch.batches.values():
        c = batch.counts
        out.append(
            (
                batch.name,
                str(c["idle"]),
                str(c["running"]),
                str(c["held"]),
                str(batch.done),
                str(batch.total),
                batch.job_ids,
                progress(dict(c), batch.total),
            )
        )
    return out


def table(watch: Watch) -> list[str]:
    """The header and one line per batch, in columns."""
    body = rows(watch)
    header = (*HEADERS, "PROGRESS")
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) if i in (0, 6) else cell.rjust(w) for i, (cell, w) in
                  enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [header, *body]
    ]  # fmt: skip


def summary(watch: Watch) -> str:
    states = {s: sum(b.counts[s] for b in watch.batches.values()) for s in p.JobState}
    parts = [f"{n} {s}" for s, n in states.items() if n]
    return f"{len(watch.jobs)} job(s): " + (", ".join(parts) if parts else "none")


class Screen:
    """Draws the watch: redrawn in place on a terminal, a line per change elsewhere."""

    def __init__(self, out: TextIO, live: bool, as_json: bool):
        self.out, self.live, self.as_json = out, live, as_json
        self._drawn = 0  # lines on the terminal to draw over
        self._dirty = False
        self._last = 0.0

    def first(self, watch: Watch) -> None:
        if self.live:
            self._redraw(watch)
        elif self.as_json:
            for batch in watch.batches.values():
                self._json(batch)
        else:
            self.out.write("\n".join(table(watch)) + "\n")
            self.out.flush()

    def changed(self, watch: Watch, batch: Batch) -> None:
        if self.live:
            self._dirty = True
            self.flush(watch, force=False)
        elif self.as_json:
            self._json(batch)
        else:
            line = table(watch)[1 + list(watch.batches.values()).index(batch)]
            self.out.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.out.flush()

    def wait_time(self) -> float:
        """How long to wait for an update before a pending redraw is due."""
        if not self._dirty:
            return 5.0
        return max(0.0, self._last + REDRAW - time.monotonic())

    def flush(self, watch: Watch, force: bool = True) -> None:
        if self.live and self._dirty and (force or time.monotonic() >= self._last + REDRAW):
            self._redraw(watch)

    def _redraw(self, watch: Watch) -> None:
        lines = [*table(watch), summary(watch)]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines))
        self.out.flush()
        self._drawn, self._dirty, self._last = len(lines), False, time.monotonic()

    def _json(self, batch: Batch) -> None:
        record = {
            "batch": batch.name,
            "owner": batch.owner,
            **{s.value: batch.counts[s.value] for s in p.JobState},
            "total": batch.total,
            "job_ids": batch.job_ids,
            "time": time.time(),
        }
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dwatch",
        description="Watch your jobs live, one line per batch (as condor_watch_q): the"
        " scheduler pushes each change, nothing is polled.",
    )
    parser.add_argument("ids", nargs="*", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument("-clusters", "--clusters", nargs="+", default=[], metavar="ID",
                        help="clusters to watch (as the IDs)")  # fmt: skip
    parser.add_argument(
        "-users", "--users", nargs="+", metavar="USER",
        help="these users' jobs in the queue (others' updates reach administrators only)",
    )  # fmt: skip
    parser.add_argument(
        "-exit", "--exit", default="all,done", metavar="GROUPER,STATUS[,CODE]",
        help="stop when all, any or none of the jobs are done, active, idle, running or"
        " held; exit with CODE (default 'all,done': exit code 1 if a job failed, else 0)",
    )  # fmt: skip
    add_connection_options(parser)
    args = parser.parse_args(argv)
    try:
        rule = ExitRule.parse(args.exit)
    except ValueError as exc:
        parser.error(str(exc))
    ids = [*args.ids, *args.clusters]
    live = sys.stdout.isatty() and not args.json

    def body() -> int:
        client = connect(args)
        with client:
            watch, later = start(client.conn, ids, args.users, all_users=False)
            if not watch.jobs:
                print("dwatch: no jobs to watch", file=sys.stderr)
                return 0
            screen = Screen(sys.stdout, live, args.json)
            for job in later:
                watch.update(job)
            screen.first(watch)
            while not watch.reached(rule):
                pushed = client.conn.next_update(screen.wait_time())
                if isinstance(pushed, p.JobUpdate) and watch.watches(pushed.job):
                    screen.changed(watch, watch.update(pushed.job))
                else:
                    screen.flush(watch)
            screen.flush(watch)
        if not live and not args.json:
            print(summary(watch))
        return watch.exit_code(rule)

    return run_command("dwatch", body)


if __name__ == "__main__":
    sys.exit(main())
