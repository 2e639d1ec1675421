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


_SAVE = "INSERT OR REPLACE INTO usage (user, value, stamp) VALUES (?,?,?)"


def save_usage(store: Store, share: UserShare) -> None:
    """Store a user's usage with the open unit (written once per batch and user)."""
    store.replace_later(_SAVE, share.name, (share.name, share.value, share.stamp))
