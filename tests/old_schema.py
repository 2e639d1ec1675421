"""Databases as an earlier schema wrote them, for the tests of each migration.

The store's own code writes the current columns; an earlier schema's ``jobs`` table
has fewer, so its job rows are written here with the columns that table has.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from scheduler.job_records import _ALL_COLUMNS, _INSERT_EVENT, Job, _column


def insert_jobs(db_path: Path, cluster: int, submit_file: str, jobs: list[Job], now: float) -> None:
    """Queue ``jobs`` of ``cluster`` (reserved already) as the schema of ``db_path`` has
    them: the columns its ``jobs`` table holds, a ``submitted`` event each."""
    with closing(sqlite3.connect(db_path)) as db, db:
        have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        columns = [c for c in _ALL_COLUMNS if c in have]
        db.execute(
            "UPDATE clusters SET submit_file=?, submitted=? WHERE id=?", (submit_file, now, cluster)
        )
        db.executemany(
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})",
            [tuple(_column(job, c) for c in columns) for job in jobs],
        )
        db.executemany(
            _INSERT_EVENT,
            [(j.cluster, j.proc, now, "submitted", f"from {submit_file}") for j in jobs],
        )
