"""``dq``: the job queue."""

from __future__ import annotations

import argparse
import sys

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command


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
    add_connection_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with connect(args) as client:
            jobs = client.jobs(args.ids, states=[] if args.all else None, all_users=args.allusers)
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


if __name__ == "__main__":
    sys.exit(main())
