"""What every command shares: the scheduler options and error reporting."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from control_node.client import Client
from control_node.connection import DfarmError


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        metavar="HOST:PORT",
        help="scheduler address (default: $DFARM_SCHEDULER, then $DFARM_HOME/access.json)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable records")


def connect(args: argparse.Namespace) -> Client:
    """A client for the command's ``--scheduler``."""
    return Client(scheduler=args.scheduler)


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command body, turning dfarm errors and Ctrl-C into a message and an exit code."""
    try:
        return body()
    except DfarmError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (``dq | head``): what is still buffered goes nowhere, and
        # quietly, at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
