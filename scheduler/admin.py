"""``dfarm user``: manage users on the scheduler node (works on the state database
directly, with or without the scheduler running)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from tabulate import tabulate

from scheduler.accounts import StoreError
from scheduler.config import SchedulerConfig
from scheduler.protocol import ACCESS_FILE, default_home
from scheduler.store import Store
from scheduler.web.passwords import set_password


def home_option() -> argparse.ArgumentParser:
    """A fresh parser holding --home (argparse shares an action among its users)."""
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument(
        "--home", type=Path, default=argparse.SUPPRESS, help="scheduler state directory"
    )
    return home


def build_parser(prog: str = "dfarm user") -> argparse.ArgumentParser:
    # --home is accepted before or after the action: `dfarm user add NAME --home DIR`.
    parser = argparse.ArgumentParser(
        prog=prog, description="Manage dfarm users.", parents=[home_option()]
    )
    parser.set_defaults(home=None)
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", parents=[home_option()], help="create a user, print the token")
    add.add_argument("name")
    add.add_argument("--email")
    add.add_argument(
        "--admin", action="store_true", help="may hold, release, remove and fetch every job"
    )
    sub.add_parser("list", parents=[home_option()], help="list users")
    remove = sub.add_parser("remove", parents=[home_option()], help="delete a user")
    remove.add_argument("name")
    token = sub.add_parser(
        "token", parents=[home_option()], help="issue a new token (the old one stops working)"
    )
    token.add_argument("name")
    password = sub.add_parser(
        "password", parents=[home_option()], help="set the web dashboard password (from"
        " standard input, or asked twice on a terminal)"
    )  # fmt: skip
    password.add_argument("name")
    return parser


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("new web password: ")
    if getpass.getpass("again: ") != first:
        raise StoreError("the two passwords differ")
    return first


def open_store(home: Path | None, prog: str) -> Store | None:
    """The scheduler's database in ``home`` (default ``~/.dfarm``), or None after
    saying on stderr that there is none."""
    home = (home or default_home()).expanduser()
    config = SchedulerConfig(home=home)
    if not config.db_path.exists():
        print(
            f"{prog}: error: no scheduler state in {home} (start 'dfarm scheduler "
            f"--home {home}' once, or pass --home)",
            file=sys.stderr,
        )
        return None
    return Store(config.db_path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = (args.home or default_home()).expanduser()
    store = open_store(home, "dfarm user")
    if store is None:
        return 1
    try:
        if args.action == "add":
            token = store.accounts.add_user(args.name, email=args.email, admin=args.admin)
            role = "admin " if args.admin else ""
            print(f"{role}user {args.name} created; their token (shown once):\n{token}")
            print(
                f"the user sets DFARM_TOKEN={token} and finds the scheduler through "
                f"DFARM_SCHEDULER or {home / ACCESS_FILE}",
                file=sys.stderr,
            )
        elif args.action == "token":
            print(store.accounts.new_token(args.name))
            print(
                f"the old token of {args.name} no longer works; a running scheduler closes"
                " its connections within a second",
                file=sys.stderr,
            )
        elif args.action == "password":
            set_password(store, args.name, _read_password())
            print(f"web password of {args.name} set")
        elif args.action == "remove":
            store.accounts.remove_user(args.name)
            print(
                f"user {args.name} removed; a running scheduler closes their connections and"
                " removes their queued jobs within a second"
            )
        else:
            rows = [
                (
                    u["name"],
                    u["email"] or "-",
                    "admin" if u["admin"] else "user",
                    time.strftime("%Y-%m-%d", time.localtime(u["created"])),
                )
                for u in store.accounts.users()
            ]
            print(tabulate(rows, headers=("NAME", "EMAIL", "ROLE", "CREATED"), tablefmt="plain"))
    except StoreError as exc:
        print(f"dfarm user: error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
