"""``dhistory``: finished and removed jobs, from the scheduler's database."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime

from control_node import render, render_classad
from control_node.cli.classad_options import add_classad_options, parse_classad_args
from control_node.cli.common import add_connection_options, connect, run_command

_AGO = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``2h``, ``3d`` (that long ago), or a date/time ``2026-11-22[ 14:00]``."""
    now = time.time() if now is None else now
    m = _AGO.fullmatch(text.strip())
    if m:
        return now - float(m[1]) * _UNIT[m[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 2h, 3d) or a date (2026-11-22 14:00)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dhistory", description="Show finished jobs.")
    parser.add_argument("ids", nargs="*", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument("--user", "-user", help="this user's jobs ('*': everyone's)")
    parser.add_argument(
        "--allusers", "-allusers", action="store_true", help="every user's jobs (as --user '*')"
    )
    parser.add_argument("--since", help="ended since: 2h, 3d, or 2026-11-22 14:00")
    parser.add_argument(
        "--limit", "-limit", type=int, default=1000, help="at most this many (newest)"
    )
    parser.add_argument(
        "--long", "-long", "-l", action="store_true",
        help="every attribute of each job (mail delivery included), as condor_history -l",
    )  # fmt: skip
    add_classad_options(parser)
    add_connection_options(parser)
    args, expr, af_options = parse_classad_args(parser, argv)
    if args.allusers and args.user:
        parser.error("give --user or --allusers, not both")
    if args.allusers:
        args.user = "*"
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        parser.error(str(exc))

    def body() -> int:
        with connect(args) as client:
            if expr is None:
                jobs = client.history(args.ids, user=args.user, since=since, limit=args.limit)
            else:  # as condor_history: the newest --limit jobs that match, however far back
                jobs = []
                for page in client.history_pages(args.ids, user=args.user, since=since):
                    jobs[:0] = render_classad.matching(page, expr)[-(args.limit - len(jobs)) :]
                    if len(jobs) >= args.limit:
                        break
        if args.json:
            print(render.dump_json(jobs))
        elif args.autoformat:
            af = render_classad.AutoFormat(args.autoformat, af_options)
            if jobs:
                print(render_classad.autoformat(jobs, af))
        elif jobs and args.long:
            print(render.jobs_long(jobs))
        elif jobs:
            print(render.history_table(jobs))
        else:
            print("no finished job matches")
        return 0

    return run_command("dhistory", body)


if __name__ == "__main__":
    sys.exit(main())
