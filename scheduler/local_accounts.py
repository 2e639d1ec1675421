"""``python -m scheduler.local_accounts``: the accounts of a local cluster (``dfarm up``).

The control node runs this command on the scheduler's home rather than opening the
scheduler's database itself. It makes sure that FILE holds a token of user NAME
(``--user NAME FILE``) and each worker's FILE a credential of worker NAME
(``--worker NAME FILE``, repeated) that the database accepts: one already there is
kept, else the user is created or given a new token, or the worker a new
credential (as ``dfarm user add`` and ``dfarm worker add`` do), and FILE is written
with mode 0600.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scheduler.accounts import StoreError
from scheduler.config import SchedulerConfig
from scheduler.protocol import holds, token_user, user_key
from scheduler.store import Store


def user_token(store: Store, name: str, token_file: Path) -> None:
    """Keep ``token_file``'s token if it is one of a user's, else write a new one."""
    if token_file.exists():
        token = token_file.read_text().strip()
        verifier = store.accounts.user_verifier(token_user(token))
        if verifier is not None and holds(verifier, user_key(token)):
            return
    try:
        token = store.accounts.add_user(name)
    except StoreError:
        token = store.accounts.new_token(name)
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")


def worker_credential(store: Store, name: str, path: Path) -> None:
    """Keep ``path``'s credential if it is worker ``name``'s, else issue a new one."""
    if path.exists():
        verifier = store.accounts.worker_verifier(name)
        if verifier is not None and holds(verifier, user_key(path.read_text().strip())):
            return
    credential = store.accounts.add_worker_credential(name, replace=True)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(credential + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.local_accounts",
        description="Make sure each FILE holds a working token of a user or credential"
        " of a worker.",
    )
    parser.add_argument("--home", type=Path, required=True, help="scheduler state directory")
    parser.add_argument("--user", nargs=2, metavar=("NAME", "FILE"), help="a user's token")
    parser.add_argument(
        "--worker", nargs=2, action="append", default=[], metavar=("NAME", "FILE"),
        help="a worker's credential (repeated: several workers)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = Store(SchedulerConfig(home=args.home).db_path)
    try:
        if args.user:
            user_token(store, args.user[0], Path(args.user[1]))
        for name, path in args.worker:
            worker_credential(store, name, Path(path))
    except (StoreError, OSError) as exc:
        print(f"local accounts in {args.home}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
