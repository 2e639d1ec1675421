"""Per-user limits on the spool: bytes uploaded by one submission, and bytes kept
in all (inputs, large results on disk, small results in SQLite).

Use is measured from the spool and the database when it is asked (at
``new_cluster`` and at submit). One measure lists the spool's folders once and
walks those of the user's clusters only: the clusters whose folders retention
removed, however many the user submitted, cost nothing. The size of a cluster at
rest (no job of it in the queue, no upload grant, not a reservation) is kept from
its last walk: such a folder only shrinks, by retention (:meth:`Quota.forget`) or
by its removal (its folder gone from the listing), so a user's thousandth call
costs what the first did. A cluster in the queue is walked each time: its jobs'
results may arrive at any moment. The FTP server enforces the upload budget a
grant carries while the bytes arrive (see :mod:`scheduler.staging`); the submit
checks again.

A cluster whose inputs may still be uploaded counts at what its upload grant may
still bring on top of what its folder holds: the whole budget of a reservation
that nothing was uploaded to yet. So reserving clusters (``new_cluster``) and
filling each grant never stores more than the quota. The grant goes when the
cluster's last part is queued (its uploads have ended then), or when the
reservation expires (see :mod:`scheduler.reservations`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Iterable

from scheduler.protocol import parse_disk_kb
from scheduler.retention import tree_size
from scheduler.staging import Spool
from scheduler.store import Store

#: Cluster ids in one query (SQLite's limit on a statement's variables is far above).
_IDS_PER_QUERY = 500


class QuotaError(Exception):
    """A request refused because it would exceed a user's limits."""


def parse_size(text: str) -> int:
    """Bytes from ``10GB``, ``512M``, ``0`` (none): the units of ``request_disk``."""
    if text.strip() in ("0", "none", "unlimited"):
        return 0
    return parse_disk_kb(text if text.strip()[-1:].isalpha() else text + "B") * 1024


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.1f} TiB"


class Quota:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        upload_limit: int,
        spool_quota: int,
        busy: Callable[[int], bool] = lambda cluster: True,
    ):
        #: Bytes one submission may upload, and a user may keep; 0: no limit.
        self.upload_limit, self.spool_quota = upload_limit, spool_quota
        self.store, self.spool = store, spool
        #: Whether files of a cluster may still be added (jobs of it in the queue,
        #: or a reservation); by default every cluster may: nothing is kept.
        self.busy = busy
        #: The owners and sizes of clusters at rest, from their last walk.
        self._owners: dict[int, str] = {}
        self._sizes: dict[int, int] = {}

    def usage(self, user: str, but: int | None = None) -> int:
        """Bytes ``user`` keeps in the spool and in the database, and may still upload
        through the upload grants of clusters other than ``but``."""
        present = self._cluster_folders()
        uploading = set(self.spool.uploading())
        for gone in [c for c in self._owners if c not in present]:
            self.forget([gone])
        total = 0
        for cluster in self._owned(user, present | uploading):
            if cluster in present:
                total += self._size(cluster, at_rest=cluster not in uploading)
            if cluster != but:
                total += self.spool.upload_room(cluster)
        return total + self.spool.probe_bytes(user) + self.store.results.results_bytes(user)

    def forget(self, clusters: Iterable[int]) -> None:
        """Files of ``clusters`` were removed: walk them again when next asked."""
        for cluster in clusters:
            self._sizes.pop(cluster, None)
            self._owners.pop(cluster, None)

    def _size(self, cluster: int, at_rest: bool) -> int:
        """Bytes below the cluster's folder: kept from the last walk while at rest."""
        if at_rest and not self.busy(cluster):
            size = self._sizes.get(cluster)
            if size is None:
                size = self._sizes[cluster] = tree_size(self.spool.root / str(cluster))
            return size
        self._sizes.pop(cluster, None)
        return tree_size(self.spool.root / str(cluster))

    def _cluster_folders(self) -> set[int]:
        """The clusters with a folder in the spool, from one listing of its root."""
        with os.scandir(self.spool.root) as entries:
            return {int(e.name) for e in entries if e.name.isdigit() and e.is_dir()}

    def _owned(self, user: str, clusters: Collection[int]) -> list[int]:
        """Those of ``clusters`` that ``user`` owns: looked up by id, but for the
        owners of clusters at rest, kept (a cluster's owner never changes; the id of
        a reservation rolled back may be given again, so only those are kept)."""
        owners = self._owners
        ids = sorted(c for c in clusters if c not in owners)
        found = [c for c in clusters if owners.get(c) == user]
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start : start + _IDS_PER_QUERY]
            marks = ",".join("?" * len(part))
            rows = self.store.query(f"SELECT id, owner FROM clusters WHERE id IN ({marks})", part)
            for row in rows:
                cluster, owner = row["id"], row["owner"]
                if not self.busy(cluster):
                    owners[cluster] = owner
                if owner == user:
                    found.append(cluster)
        return found

    def upload_budget(self, user: str) -> int | None:
        """Bytes a new submission of ``user`` may upload (None: no limit); refuses
        when the user is already at the quota."""
        room = None
        if self.spool_quota:
            used = self.usage(user)
            if used >= self.spool_quota:
                raise QuotaError(self._over(used))
            room = self.spool_quota - used
        if self.upload_limit:
            room = self.upload_limit if room is None else min(room, self.upload_limit)
        return room

    def check_submission(self, user: str, cluster: int, uploads: dict[str, int]) -> None:
        """Refuse (and delete the uploads) if the cluster's inputs go over a limit,
        counting each of ``uploads`` (its name -> the size declared for it) at its
        declared size, arrived or not."""
        folder = self.spool.input_dir(cluster)
        coming = sum(uploads.values())
        uploaded = tree_size(folder, skip={str(folder / name) for name in uploads}) + coming
        problem = None
        if self.upload_limit and uploaded > self.upload_limit:
            problem = (
                f"the input files of this submission take {human(uploaded)}, more than "
                f"the upload limit of {human(self.upload_limit)}"
            )
        elif self.spool_quota:
            # This cluster's inputs at their declared sizes, not its grant's budget.
            used = self.usage(user, but=cluster) - tree_size(folder) + uploaded
            if used > self.spool_quota:
                problem = self._over(used)
        if problem:
            shutil.rmtree(self.spool.input_dir(cluster), ignore_errors=True)
            raise QuotaError(problem)

    def _over(self, used: int) -> str:
        return (
            f"spool quota exceeded: your inputs and results take {human(used)} of "
            f"{human(self.spool_quota)}; fetch your results and wait until those of finished "
            "jobs are cleaned (dfarm scheduler --keep-results), or ask for a larger quota"
        )
