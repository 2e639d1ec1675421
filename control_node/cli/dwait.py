"""``dwait``: wait for jobs to finish, fetching their results as they do."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.cli.results_options import add_per_job_option
from control_node.connection import SchedulerUnavailable
from control_node.fetch_stream import wait_and_fetch
from control_node.results import FetchedJob, describe_status, failed, seconds_text
from control_node.results_report import results_report
from scheduler import protocol as p


def wait_then_fetch(
    args: argparse.Namespace, show: Callable[..., None] | None, deadline: float | None
) -> tuple[list[p.JobInfo], list[FetchedJob]]:
    """Wait, fetching results as jobs finish; a scheduler that goes away after the first connection
    (a restart) is waited for, with backoff, until the deadline."""
    connected, backoff = False, 0.5
    while True:
        try:
            with connect(args) as client:
                connected = True
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if args.no_fetch:
                    return client.wait(args.ids, timeout=left, on_update=show), []
                return wait_and_fetch(
                    client.conn,
                    args.ids,
                    args.dest,
                    per_job=args.per_job,
                    fetch_held=False,
                    timeout=left,
                    on_update=show,
                )
        except SchedulerUnavailable as exc:
            if not connected or (deadline is not None and time.monotonic() > deadline):
                raise
            print(f"\ndwait: {exc}; trying again", file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dwait", description="Wait for jobs to finish, then fetch their results."
    )
    parser.add_argument("ids", nargs="+", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument(
        "--dest", type=Path, help="folder for the results files and <cluster>.<proc>/ folders"
    )
    add_per_job_option(parser)
    parser.add_argument("--no-fetch", action="store_true", help="only wait")
    add_connection_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        show = None if args.json else render.progress_bar(sys.stderr)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        try:
            jobs, fetched = wait_then_fetch(args, show, deadline)
        except TimeoutError:
            print(
                f"\ndwait: jobs still running after {seconds_text(args.timeout)}", file=sys.stderr
            )
            return 2
        finally:
            if show:
                sys.stderr.write("\n")
        if args.json:
            print(render.dump_json(jobs))
        elif fetched:
            print(results_report(fetched))
        held = [j for j in jobs if j.state == p.JobState.HELD.value]
        for job in held:
            print(f"{job.id}: {describe_status(job)}")
        return 1 if any(failed(j) for j in jobs) else 0

    return run_command("dwait", body)


if __name__ == "__main__":
    sys.exit(main())
