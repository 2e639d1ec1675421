"""Each user's fair-share usage in SQLite (the ``usage`` table): a value at a time.

Only finished runs are stored; running jobs are counted from their start times,
so nothing here needs rewriting while they run, and decay is applied on reading.
"""

from __future__ import annotations

from scheduler.fairshare import FairShareQueue, UserShare
from scheduler.store import Store


def load_usage(store: Store, queue: FairShareQueue) -> None:
    for row in store.query("SELECT user, value, stamp FROM usage"):
        queue.load_usage(row["user"], row["value"], row["stamp"])


def save_usage(store: Store, share: UserShare) -> None:
    with store.transaction() as db:
        db.execute(
            "INSERT OR REPLACE INTO usage (user, value, stamp) VALUES (?,?,?)",
            (share.name, share.value, share.stamp),
        )
