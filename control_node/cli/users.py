"""``dfarm users`` (also ``dq --users``): each user's fair-share usage and jobs."""

from __future__ import annotations

import argparse
import sys

from control_node import render, render_explain
from control_node.cli.common import add_connection_options, connect, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfarm users",
        description="Show each user's fair-share usage, share and jobs idle and running.",
    )
    add_connection_options(parser)
    args = parser.parse_args(argv)
    return run_command("dfarm users", lambda: show_users(args))


def show_users(args: argparse.Namespace) -> int:
    with connect(args) as client:
        reply = client.users()
    if args.json:
        print(render.dump_json(reply.users))
    else:
        print(render_explain.users_table(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
