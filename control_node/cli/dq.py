"""``dq``: the job queue."""

from __future__ import annotations

import argparse
import sys

from control_node import render, render_explain
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.cli.users import show_users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dq", description="Show your jobs in the queue.")
    parser.add_argument("ids", nargs="*", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument(
        "--all", action="store_true", help="also completed and removed jobs (default: queue only)"
    )
    parser.add_argument(
        "--allusers", "-allusers", action="store_true", help="every user's jobs, not only yours"
    )
    parser.add_argument(
        "-l", "--long", action="store_true", help="every attribute of each job, with its"
        " parameters and result"
    )  # fmt: skip
    parser.add_argument(
        "--users", action="store_true", help="each user's fair-share usage (as 'dfarm users')"
    )
    parser.add_argument(
        "-analyze", "--analyze", action="store_true", help="say why the jobs named are not running"
    )
    parser.add_argument(
        "--summary", action="store_true", help="only the number of jobs in each state"
    )
    parser.add_argument(
        "-limit", "--limit", type=int, default=0, metavar="N", help="show at most N jobs"
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)
    if args.users:
        return run_command("dq", lambda: show_users(args))
    if args.analyze:
        if not args.ids:
            parser.error("-analyze needs a job id (CLUSTER or CLUSTER.PROC)")
        return run_command("dq", lambda: analyze(args))
    if args.summary:
        return run_command("dq", lambda: summary(args))

    def body() -> int:
        with connect(args) as client:
            jobs = client.jobs(
                args.ids,
                states=[] if args.all else None,
                all_users=args.allusers,
                limit=args.limit,
            )
        if args.json:
            print(render.dump_json(jobs))
        elif args.long:
            if jobs:
                print(render.jobs_long(jobs))
        else:
            if jobs:
                print(render.jobs_table(jobs))
            reasons = render.hold_reasons(jobs)
            if reasons:
                print(reasons)
            print(render.jobs_summary(jobs))
        return 0

    return run_command("dq", body)


def analyze(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.analyze(args.ids)
    print(render.dump_json(found) if args.json else render_explain.analyses(found))
    return 0


def summary(args: argparse.Namespace) -> int:
    with connect(args) as client:
        counts = client.counts(all_users=args.allusers)
    if args.json:
        print(render.dump_json(counts))
    else:
        parts = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        print(f"{sum(counts.values())} job(s) in the queue{': ' + parts if parts else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
