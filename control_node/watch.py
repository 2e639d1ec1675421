"""Watching jobs from pushed updates (``dwatch``): counts per batch, and when to stop.

The jobs' records are read once; from then on the scheduler pushes each change of the
watched clusters (:class:`~scheduler.protocol.Subscribe`), so a watch costs the
scheduler nothing per refresh, whatever the depth of the queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from control_node.connection import Connection
from control_node.job_queries import PAGE, RECORD_BYTES, query_jobs
from control_node.results import failed
from scheduler import protocol as p

#: condor_watch_q's groups of job states, as ``-exit`` names them.
STATUS_GROUPS = {
    "done": {"completed", "removed"},
    "active": {"idle", "running"},
    "idle": {"idle"},
    "running": {"running"},
    "held": {"held"},
}
GROUPERS = ("all", "any", "none")


@dataclass
class Batch:
    """One line of the watch: a cluster, or the clusters of one ``JobBatchName``."""

    owner: str
    name: str
    counts: Counter[str] = field(default_factory=Counter)
    first: tuple[int, int] = (1 << 62, 0)
    last: tuple[int, int] = (-1, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return self.counts["completed"] + self.counts["removed"]

    @property
    def job_ids(self) -> str:
        """HTCondor's JOB_IDS column: ``12.0-99``, or ``12.0 ... 14.3`` across clusters."""
        first, last = p.format_job_id(*self.first), p.format_job_id(*self.last)
        if self.first == self.last:
            return first
        if self.first[0] == self.last[0]:
            return f"{first}-{self.last[1]}"
        return f"{first} ... {last}"


@dataclass(frozen=True)
class ExitRule:
    """``-exit GROUPER,STATUS[,CODE]``: stop when all, any or none of the jobs are in
    STATUS; exit with CODE (default: 1 if a job failed, else 0)."""

    grouper: str = "all"
    status: str = "done"
    code: int | None = None

    @classmethod
    def parse(cls, text: str) -> ExitRule:
        parts = [s.strip().lower() for s in text.split(",")]
        if len(parts) not in (2, 3) or parts[0] not in GROUPERS or parts[1] not in STATUS_GROUPS:
            raise ValueError(
                f"-exit {text!r}: expected GROUPER,STATUS[,CODE] with GROUPER one of"
                f" {', '.join(GROUPERS)} and STATUS one of {', '.join(STATUS_GROUPS)}"
            )
        try:
            code = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(f"-exit {text!r}: the exit code is not a number") from None
        return cls(parts[0], parts[1], code)


class Watch:
    """The watched jobs' states, kept per batch as updates arrive."""

    def __init__(self, owners: list[str] | None = None) -> None:
        #: Only these users' jobs (None: every job of the clusters watched).
        self.owners = owners
        self.jobs: dict[str, p.JobInfo] = {}
        self.batches: dict[tuple[str, str], Batch] = {}
        self._batch_of_cluster: dict[int, Batch] = {}

    def watches(self, job: p.JobInfo) -> bool:
        """Whether an update of ``job`` concerns this watch."""
        return job.cluster in self._batch_of_cluster and (
            not self.owners or job.owner in self.owners
        )

    def update(self, job: p.JobInfo) -> Batch:
        """Note a job's record (new, or changed); returns its batch."""
        batch = self._batch_of_cluster.get(job.cluster)
        if batch is None:
            batch = self._batch_for(job)
            self._batch_of_cluster[job.cluster] = batch
        old = self.jobs.get(job.id)
        if old is not None:
            batch.counts[old.state] -= 1
        batch.counts[job.state] += 1
        self.jobs[job.id] = job
        key = (job.cluster, job.proc)
        batch.first, batch.last = min(batch.first, key), max(batch.last, key)
        return batch

    def _batch_for(self, job: p.JobInfo) -> Batch:
        # The name is read from the first job seen of each cluster: a cluster's jobs
        # share their submit description's JobBatchName.
        from scheduler.matching.job_status import status_ad

        name = status_ad(job).get("jobbatchname")
        key = (job.owner, name if isinstance(name, str) else f"ID: {job.cluster}")
        return self.batches.setdefault(key, Batch(*key))

    def reached(self, rule: ExitRule) -> bool:
        """Whether ``rule`` says to stop now."""
        wanted = STATUS_GROUPS[rule.status]
        inside = [job.state in wanted for job in self.jobs.values()]
        if rule.grouper == "all":
            return all(inside)
        if rule.grouper == "any":
            return any(inside)
        return not any(inside)

    def exit_code(self, rule: ExitRule) -> int:
        if rule.code is not None:
            return rule.code
        return 1 if any(failed(job) for job in self.jobs.values()) else 0


def start(
    conn: Connection, ids: list[str], owners: list[str] | None, all_users: bool
) -> tuple[Watch, list[p.JobInfo]]:
    """Subscribe to the clusters of the jobs named (``ids``; none: the caller's jobs in
    the queue, or those of ``owners``), then read their records once.

    Returns the watch and the updates to apply still: those pushed while the records
    were read that are newer than the record read of their job."""
    # Named jobs in any state; else the jobs in the queue, to find their clusters.
    found = query_jobs(conn, ids, [] if ids else None, all_users or bool(owners))
    if owners:
        found = [j for j in found if j.owner in owners]
    clusters = sorted({j.cluster for j in found})
    watch = Watch(owners)
    if not clusters:
        return watch, []
    conn.request(p.Subscribe(clusters=clusters, states=[]))
    conn.updates.clear()  # older than the records read below
    pages: list[list[p.JobInfo]] = []
    early: list[tuple[int, p.JobInfo]] = []  # (pages read before it arrived, job)
    named = ids or [str(c) for c in clusters]
    for page in _pages(conn, named, all_users or bool(owners)):
        # What was pushed before this page's reply is older than this page's records,
        # and newer than those of the pages before.
        early += [(len(pages), u.job) for u in conn.updates if isinstance(u, p.JobUpdate)]
        conn.updates.clear()
        pages.append(page)
    page_of: dict[str, int] = {}
    for number, page in enumerate(pages):
        for job in page:
            if not owners or job.owner in owners:
                page_of[job.id] = number
                watch.update(job)
    later = [job for before, job in early if page_of.get(job.id, before) < before]
    return watch, later


def _pages(conn: Connection, ids: list[str], all_users: bool) -> Iterator[list[p.JobInfo]]:
    """The jobs named, in any state, a page per request (as ``query_jobs`` asks)."""
    most = max(1, min(PAGE, conn.max_frame // RECORD_BYTES))
    after = ""
    while True:
        reply = conn.request(
            p.QueryJobs(ids=ids, states=[], all_users=all_users, limit=most, after=after)
        )
        assert isinstance(reply, p.JobList)
        yield reply.jobs
        if not reply.more or not reply.jobs:
            return
        after = reply.jobs[-1].id
