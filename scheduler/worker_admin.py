"""``dfarm worker add|revoke|list`` (and ``dfarm workers``): each worker's own
credential, on the scheduler node (works on the state database directly; a running
scheduler closes a revoked worker's connection within a second)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tabulate import tabulate

from scheduler.accounts import StoreError
from scheduler.admin import home_option, open_store

ACTIONS = ("add", "revoke", "list")


def build_parser(prog: str = "dfarm worker") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Manage worker credentials.", parents=[home_option()]
    )
    parser.set_defaults(home=None)
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser(
        "add", parents=[home_option()], help="create worker NAME's credential and print it"
    )
    add.add_argument("name")
    add.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the credential to FILE (created with mode 0600) instead of printing it",
    )
    revoke = sub.add_parser(
        "revoke", parents=[home_option()], help="revoke worker NAME's credential"
    )
    revoke.add_argument("name")
    sub.add_parser("list", parents=[home_option()], help="list worker credentials")
    return parser


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = open_store(args.home, "dfarm worker")
    if store is None:
        return 1
    try:
        if args.action == "add":
            if args.output is not None and args.output.exists():
                raise StoreError(f"{args.output} exists: choose a new file")
            credential = store.accounts.add_worker_credential(args.name)
            if args.output is not None:
                _write_private(args.output, credential)
                print(f"worker {args.name}'s credential written to {args.output} (mode 0600)")
            else:
                print(f"worker {args.name} created; its credential (shown once):\n{credential}")
            print(
                "on the worker, keep it in a file of mode 0600 and run: dfarm worker"
                " --scheduler HOST:PORT --credential-file FILE",
                file=sys.stderr,
            )
        elif args.action == "revoke":
            store.accounts.revoke_worker_credential(args.name)
            print(
                f"worker {args.name}'s credential revoked; a running scheduler closes its"
                " connection within a second and requeues its running jobs"
            )
        else:
            rows = [
                (w["name"], time.strftime("%Y-%m-%d %H:%M", time.localtime(w["created"])))
                for w in store.accounts.worker_credentials()
            ]
            print(tabulate(rows, headers=("NAME", "CREATED"), tablefmt="plain"))
    except (StoreError, OSError) as exc:
        print(f"dfarm worker: error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
