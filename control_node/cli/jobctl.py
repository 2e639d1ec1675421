"""What ``drm``, ``dhold`` and ``drelease`` share: select jobs, act, report.

Exit status: 0 when a job named changed, or (``drm``) every job named is removed
already; 1 when none changed (each one's reason is printed) or on an error.
"""

from __future__ import annotations

import argparse

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command


def change_main(prog: str, action: str, description: str, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("ids", nargs="*", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument(
        "-all", "--all", dest="all_jobs", action="store_true", help="every job of yours"
    )
    if action != "release":
        parser.add_argument("-reason", "--reason", default="", help="why (shown by dq)")
    add_connection_options(parser)
    args = parser.parse_args(argv)
    if bool(args.ids) == args.all_jobs:
        parser.error("name jobs or clusters, or give -all (not both)")

    def body() -> int:
        with connect(args) as client:
            if action == "release":
                reply = client.release(args.ids, all_jobs=args.all_jobs)
            else:
                act = client.remove if action == "remove" else client.hold
                reply = act(args.ids, all_jobs=args.all_jobs, reason=args.reason)
        if args.json:
            print(render.dump_json(reply))
        else:
            print(render.changed_report(reply, action))
        refused = [why for why in reply.skipped.values() if not render.already_done(why, action)]
        return 1 if refused and not reply.changed else 0

    return run_command(prog, body)


def drm(argv: list[str] | None = None) -> int:
    """``drm``: remove jobs; running ones are killed on their worker."""
    return change_main("drm", "remove", "Remove jobs (running ones are killed).", argv)


def dhold(argv: list[str] | None = None) -> int:
    """``dhold``: hold jobs until released; running ones are killed and held."""
    return change_main("dhold", "hold", "Hold jobs: they do not run until released.", argv)


def drelease(argv: list[str] | None = None) -> int:
    """``drelease``: put held jobs back in the queue."""
    return change_main("drelease", "release", "Release held jobs.", argv)
