"""The ``job_checkpoints`` table: each self-checkpointing job's latest checkpoint,
how many it stored, and the run time its jobs lost to evictions; and the fields
of :class:`~scheduler.job_records.Job` that mirror it."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.database import Database
from scheduler.job_records import Job
from scheduler.protocol import CheckpointFile, JobEvent

#: Events that end a run by taking it from its worker (HTCondor's eviction).
EVICTIONS = frozenset({"evicted"})


class CheckpointTable:
    """Rows of ``job_checkpoints``, written as part of the open unit."""

    def __init__(self, database: Database):
        self._database = database

    def save(self, job: Job) -> None:
        """Write ``job``'s checkpoint fields as its row."""
        latest = job.checkpoint
        self._database.statement(
            "INSERT OR REPLACE INTO job_checkpoints"
            " (cluster, proc, count, name, sha256, size, time, wall_lost, resumes)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                job.cluster,
                job.proc,
                job.checkpoints,
                None if latest is None else latest.name,
                None if latest is None else latest.sha256,
                None if latest is None else latest.size,
                job.checkpoint_time,
                job.wall_lost,
                job.resumes,
            ),
        )

    def attach(self, jobs: Iterable[Job]) -> None:
        """Fill the checkpoint fields of ``jobs`` from their rows (jobs loaded from
        the ``jobs`` table: at start, or for the history)."""
        by_key = {(job.cluster, job.proc): job for job in jobs}
        clusters = sorted({cluster for cluster, _ in by_key})
        for at in range(0, len(clusters), 500):
            chunk = clusters[at : at + 500]
            rows = self._database.query(
                "SELECT cluster, proc, count, name, sha256, size, time, wall_lost, resumes"
                f" FROM job_checkpoints WHERE cluster IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for row in rows:
                job = by_key.get((row["cluster"], row["proc"]))
                if job is None:
                    continue
                job.checkpoints = row["count"]
                job.checkpoint_time = row["time"]
                job.wall_lost = row["wall_lost"]
                job.resumes = row["resumes"]
                if row["name"] is not None:
                    job.checkpoint = CheckpointFile(
                        name=row["name"], sha256=row["sha256"], size=row["size"]
                    )


def wall_lost(events: list[JobEvent]) -> float:
    """Seconds of runs lost to evictions: from the later of a run's start and its
    last checkpoint to the eviction that ended it."""
    lost, kept = 0.0, None
    for event in events:
        if event.event == "executing" or (event.event == "checkpointed" and kept is not None):
            kept = event.time
        elif event.event in EVICTIONS and kept is not None:
            lost += max(0.0, event.time - kept)
            kept = None
        elif event.event in ("terminated", "held", "removed", "retrying"):
            kept = None
    return lost
