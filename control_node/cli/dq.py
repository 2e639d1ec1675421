"""``dq``: the job queue."""

from __future__ import annotations

import argparse
import sys
import time

from control_node import render, render_classad, render_explain
from control_node.cli.classad_options import add_classad_options, parse_classad_args
from control_node.cli.common import add_connection_options, connect, run_command
from control_node.cli.users import show_users
from scheduler.matching.classad import Expression


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
        "-l", "-long", "--long", action="store_true", help="every attribute of each job as"
        " 'Attr = value' (as condor_q -long), then its parameters and result"
    )  # fmt: skip
    add_classad_options(parser)
    parser.add_argument(
        "-hold",
        "-held",
        "--hold",
        action="store_true",
        help="held jobs and why (as condor_q -hold)",
    )
    parser.add_argument(
        "-run", "--run", action="store_true", help="running jobs and where (as condor_q -run)"
    )
    parser.add_argument(
        "-batch", "--batch", action="store_true",
        help="one row per batch (JobBatchName, else cluster), as condor_q's default view",
    )  # fmt: skip
    parser.add_argument(
        "-nobatch", "--nobatch", action="store_true", help="one row per job (the default)"
    )
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
    args, expr, af_options = parse_classad_args(parser, argv)
    if args.users:
        return run_command("dq", lambda: show_users(args))
    if args.analyze:
        if not args.ids:
            parser.error("-analyze needs a job id (CLUSTER or CLUSTER.PROC)")
        return run_command("dq", lambda: analyze(args))
    if args.summary:
        return run_command("dq", lambda: summary(args))

    return run_command("dq", lambda: show(args, expr, af_options))


def show(args: argparse.Namespace, expr: Expression | None, af_options: str) -> int:
    """The queue in the view asked for."""
    with connect(args) as client:
        jobs = client.jobs(
            args.ids,
            states=[] if args.all else None,
            all_users=args.allusers,
            limit=0 if expr is not None else args.limit,
        )
    jobs = render_classad.matching(jobs, expr)
    if args.hold or args.run:
        jobs = [j for j in jobs if j.state == ("held" if args.hold else "running")]
    if args.limit > 0:
        jobs = jobs[: args.limit]
    if args.json:
        print(render.dump_json(jobs))
    elif args.autoformat:
        af = render_classad.AutoFormat(args.autoformat, af_options)
        if jobs:
            print(render_classad.autoformat(jobs, af))
    elif args.long:
        if jobs:
            print(render.jobs_long(jobs))
    elif args.hold:
        print(render_classad.held_table(jobs))
    elif args.run:
        print(render_classad.running_table(jobs, time.time()))
    else:
        batch = args.batch and not args.nobatch
        if jobs:
            print(render_classad.batch_table(jobs) if batch else render.jobs_table(jobs))
        reasons = render.hold_reasons(jobs)
        if reasons and not batch:
            print(reasons)
        print(render.jobs_summary(jobs))
    return 0


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
