"""The ``clusters`` table: cluster numbers reserved, and whether their jobs came."""

from __future__ import annotations

from scheduler.database import Database


class ClusterTable:
    """Clusters reserved, submitted, or left incomplete."""

    def __init__(self, database: Database):
        self._database = database

    def reserve_cluster(self, owner: str, now: float) -> int:
        with self._database.transaction() as db:
            cur = db.execute("INSERT INTO clusters (owner, created) VALUES (?, ?)", (owner, now))
            return int(cur.lastrowid or 0)

    def close_cluster(self, cluster: int, now: float) -> None:
        """No more parts of ``cluster`` are taken."""
        with self._database.transaction() as db:
            db.execute("UPDATE clusters SET submitted=? WHERE id=?", (now, cluster))

    def incomplete_clusters(self) -> list[int]:
        """Clusters with jobs queued whose last part never came."""
        rows = self._database.query(
            "SELECT id FROM clusters WHERE submitted IS NULL"
            " AND EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)"
        )
        return [row["id"] for row in rows]

    def reservations(self) -> list[int]:
        """Clusters reserved without any job queued."""
        rows = self._database.query(
            "SELECT id FROM clusters WHERE submitted IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)"
        )
        return [row["id"] for row in rows]

    def forget_reservation(self, cluster: int) -> bool:
        """Remove a reserved cluster that never had a job; whether it was one."""
        with self._database.transaction() as db:
            cur = db.execute(
                "DELETE FROM clusters WHERE id=? AND submitted IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster = clusters.id)",
                (cluster,),
            )
            return cur.rowcount > 0

    def cluster_owner(self, cluster: int) -> tuple[str, bool] | None:
        """The owner of a cluster and whether its jobs were submitted."""
        rows = self._database.query("SELECT owner, submitted FROM clusters WHERE id=?", (cluster,))
        return (rows[0]["owner"], rows[0]["submitted"] is not None) if rows else None
