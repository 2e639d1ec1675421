"""``dsub``: submit jobs from a submit file, optionally wait for their results.

With ``--wait``, results are fetched while the cluster runs, into
``<cluster>.results.jsonl`` (and a ``<cluster>.<proc>/`` folder for a job with files
worth one, or every job with ``--per-job``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.cli.dryrun import dry_run
from control_node.cli.results_options import add_per_job_option
from control_node.results import failed
from control_node.results_report import results_report
from scheduler import protocol as p


def progress_printer(
    cluster: int, stream: TextIO = sys.stderr
) -> Callable[[dict[str, p.JobInfo]], None] | None:
    """A callback showing counts on one terminal line (nothing when not a terminal)."""
    if not stream.isatty():
        return None

    def show(jobs: dict[str, p.JobInfo]) -> None:
        states = [j.state for j in jobs.values()]
        done = sum(s in ("completed", "removed", "held") for s in states)
        counts = f"{states.count('idle')} idle, {states.count('running')} running"
        stream.write(f"\rcluster {cluster}: {counts}, {done}/{len(states)} done ")
        stream.flush()

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsub", description="Submit jobs from a submit file.")
    parser.add_argument(
        "file", type=Path, help="submit file (HTCondor syntax or dfarm's seed format)"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the jobs, then fetch results")
    parser.add_argument(
        "--dest", type=Path, help="where --wait puts the results file and <cluster>.<proc>/ folders"
    )
    add_per_job_option(parser)
    parser.add_argument("--timeout", type=float, help="seconds --wait waits at most")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the cluster id")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print every job the file would make (and the workers that match); queue nothing",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a key that is neither HTCondor's nor used as a macro (else a warning)",
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)
    if args.dry_run:
        return run_command("dsub", lambda: dry_run(args))

    def body() -> int:
        with connect(args) as client:
            cluster = client.submit(args.file, strict=args.strict)
            for warning in cluster.warnings:
                print(f"dsub: warning: {warning}", file=sys.stderr)
            if not cluster.job_ids:  # 'queue 0', as condor_submit: nothing, and success
                if args.json:
                    print(render.dump_json({"cluster": None, "job_ids": []}))
                else:
                    print(f"dsub: {args.file} queues no jobs: nothing was submitted.")
                return 0
            if args.quiet:
                print(cluster.id)
            elif not args.json:
                print(f"{len(cluster.job_ids)} job(s) submitted to cluster {cluster.id}.")
            if not args.wait:
                if args.json:
                    print(render.dump_json({"cluster": cluster.id, "job_ids": cluster.job_ids}))
                return 0
            show = None if args.json or args.quiet else progress_printer(cluster.id)
            try:
                jobs, fetched = client.wait_and_fetch(
                    [str(cluster.id)],
                    dest=args.dest,
                    per_job=args.per_job,
                    timeout=args.timeout,
                    on_update=show,
                )
            finally:
                if show:
                    sys.stderr.write("\n")
        if args.json:
            print(
                render.dump_json({"cluster": cluster.id, "job_ids": cluster.job_ids, "jobs": jobs})
            )
        elif not args.quiet:
            print(results_report(fetched))
        return 1 if any(failed(j) for j in jobs) else 0

    return run_command("dsub", body)


if __name__ == "__main__":
    sys.exit(main())
