"""``dfarm backup FILE [--home DIR]``: a consistent copy of the scheduler's database.

It uses SQLite's online backup API, so it can run while the scheduler runs: the
copy is one snapshot of the database (the scheduler's writes wait a moment, never
fail). The copy is written beside FILE and renamed into place, owner-only: it
holds the hashes of the users' tokens. Restore by stopping the scheduler and
copying the file to ``HOME/dfarm.db`` (and removing ``dfarm.db-wal`` and
``dfarm.db-shm``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from scheduler.config import SchedulerConfig
from scheduler.protocol import default_home


def backup(database: Path, target: Path) -> int:
    """Copy ``database`` to ``target`` consistently; returns the copy's size in bytes."""
    if not database.exists():
        raise FileNotFoundError(f"no scheduler database at {database}")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    source = sqlite3.connect(database, timeout=30)
    try:
        copy = sqlite3.connect(tmp)
        try:
            source.backup(copy, pages=1024)
            (check,) = copy.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"the copy fails its integrity check: {check}")
        finally:
            copy.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    tmp.replace(target)
    return target.stat().st_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfarm backup",
        description="Write a consistent copy of the scheduler's database, even while it runs.",
    )
    parser.add_argument("file", type=Path, help="where to write the copy")
    parser.add_argument(
        "--home", type=Path, default=None, help="the scheduler's state directory (default ~/.dfarm)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    database = SchedulerConfig(home=(args.home or default_home()).expanduser()).db_path
    try:
        size = backup(database, args.file)
    except (OSError, sqlite3.Error) as exc:
        print(f"dfarm backup: error: {exc}", file=sys.stderr)
        return 1
    print(f"{database} copied to {args.file} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
