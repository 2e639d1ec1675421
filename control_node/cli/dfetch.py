"""``dfetch``: download the results of finished jobs, from any machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from control_node import render
from control_node.cli.common import add_connection_options, connect, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfetch", description="Download stdout, stderr, exit status and outputs of jobs."
    )
    parser.add_argument("ids", nargs="+", metavar="ID", help="cluster or cluster.proc")
    parser.add_argument("--dest", type=Path, help="folder for the <cluster>.<proc>/ results")
    parser.add_argument(
        "--here",
        action="store_true",
        help="always use ./<cluster>.<proc>/, even if the submit file named output paths",
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        with connect(args) as client:
            fetched = client.fetch(args.ids, dest=args.dest, submit_paths=not args.here)
        if args.json:
            print(render.dump_json([f.job for f in fetched]))
        else:
            print(render.fetched_report(fetched) or "no finished job to fetch")
        return 1 if any(f.failed for f in fetched) else 0

    return run_command("dfetch", body)


if __name__ == "__main__":
    sys.exit(main())
