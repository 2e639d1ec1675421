"""Per-user limits on the spool: bytes uploaded by one submission, and bytes kept
in all (inputs, large results on disk, small results in SQLite).

Use is measured from the spool and the database each time it is asked (at
``new_cluster`` and at submit), never counted alongside: what retention cleans,
what a user removes or what a rerun replaces is reflected at once, with nothing
to drift. One measure lists the spool's folders once and walks those of the
user's clusters only: the clusters whose folders retention removed, however
many the user submitted, cost nothing. The FTP server enforces the upload
budget a grant carries while the bytes arrive (see :mod:`scheduler.staging`);
the submit checks again.

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
from collections.abc import Collection

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
    def __init__(self, store: Store, spool: Spool, upload_limit: int, spool_quota: int):
        #: Bytes one submission may upload, and a user may keep; 0: no limit.
        self.upload_limit, self.spool_quota = upload_limit, spool_quota
        self.store, self.spool = store, spool

    def usage(self, user: str, but: int | None = None) -> int:
        """Bytes ``user`` keeps in the spool and in the database, and may still upload
        through the upload grants of clusters other than ``but``."""
        present = self._cluster_folders()
        total = 0
        for cluster in self._owned(user, present | set(self.spool.uploading())):
            if cluster in present:
                total += tree_size(self.spool.root / str(cluster))
            if cluster != but:
                total += self.spool.upload_room(cluster)
        return total + self.spool.probe_bytes(user) + self.store.results.results_bytes(user)

    def _cluster_folders(self) -> set[int]:
        """The clusters with a folder in the spool, from one listing of its root."""
        with os.scandir(self.spool.root) as entries:
            return {int(e.name) for e in entries if e.name.isdigit() and e.is_dir()}

    def _owned(self, user: str, clusters: Collection[int]) -> list[int]:
        """Those of ``clusters`` that ``user`` owns, looked up by id."""
        ids = sorted(clusters)
        found: list[int] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            part = ids[start : start + _IDS_PER_QUERY]
            marks = ",".join("?" * len(part))
            rows = self.store.query(
                f"SELECT id FROM clusters WHERE owner=? AND id IN ({marks})", (user, *part)
            )
            found.extend(row["id"] for row in rows)
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
