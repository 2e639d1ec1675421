"""Counts of the queue kept as jobs change: per batch (cluster), per user and per state,
and within a cluster its idle jobs per shape (spec) and its held jobs per reason.

Views of a deep queue (``dq``'s batch view, the dashboard's counts, ``dq -analyze
CLUSTER``) read these instead of walking every job. :class:`~scheduler.jobs.JobTable`
tells the summary of each submission and each change of state, at the cost of a few
dict updates, and each change registers its undo with the open unit, as the table's
own do.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import partial

from scheduler.job_records import Job
from scheduler.protocol import BatchInfo, JobSpec, JobState
from scheduler.undo import UndoHook, no_undo

#: The states a job in the queue is counted in; a job that leaves the queue
#: (completed or removed) counts as done.
_INDEX = {JobState.IDLE: 0, JobState.RUNNING: 1, JobState.HELD: 2}
_DONE = 3
_NAMES = ("idle", "running", "held")
_IDLE, _HELD = 0, 2
#: The reason counted for a job held without one.
NO_REASON = "no reason given"


class _Cluster:
    """The counts of one cluster in the queue: idle, running, held, done."""

    __slots__ = ("owner", "batch_name", "submitted", "counts", "first", "last",
                 "shapes", "held_as", "reasons")  # fmt: skip

    def __init__(self, owner: str, batch_name: str | None, submitted: float, first: int) -> None:
        self.owner, self.batch_name, self.submitted = owner, batch_name, submitted
        # Procs are numbered from 0 in order: those before the first seen have left.
        self.counts = [0, 0, 0, first]
        self.first, self.last = 0, first - 1
        #: Idle jobs per spec object (procs that differ in nothing but their number
        #: share one): the spec, how many, and one of its jobs.
        self.shapes: dict[int, tuple[JobSpec, int, Job]] = {}
        #: The reason each held proc was counted under, and the count per reason.
        self.held_as: dict[int, str] = {}
        self.reasons: dict[str, int] = {}

    def add_idle(self, job: Job, n: int = 1, spec: JobSpec | None = None) -> None:
        """``n`` idle jobs of ``spec`` (default: ``job``'s) more; negative: fewer."""
        spec = job.spec if spec is None else spec
        key = id(spec)
        had = self.shapes.get(key)
        count = n + (had[1] if had else 0)
        if count > 0:
            self.shapes[key] = (spec, count, had[2] if had else job)
        else:
            self.shapes.pop(key, None)

    def add_held(self, proc: int, reason: str) -> None:
        self.held_as[proc] = reason
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def drop_held(self, proc: int) -> str:
        """Proc ``proc`` is no longer held: the reason it was counted under."""
        reason = self.held_as.pop(proc, NO_REASON)
        left = self.reasons.get(reason, 0) - 1
        if left > 0:
            self.reasons[reason] = left
        else:
            self.reasons.pop(reason, None)
        return reason

    @property
    def queued(self) -> int:
        c = self.counts
        return c[0] + c[1] + c[2]


def batch_name(job: Job) -> str | None:
    """The job's ``JobBatchName`` (a quoted ClassAd string in its attributes), or None."""
    attributes = job.spec.attributes
    if not attributes:
        return None
    for name, value in attributes.items():
        if name.lower() == "jobbatchname":
            text = value.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            return text or None
    return None


class QueueSummary:
    """Jobs in the queue counted per cluster, per user and per state."""

    def __init__(self, undo: UndoHook = no_undo) -> None:
        self.undo = undo
        self._clusters: dict[int, _Cluster] = {}
        #: Per user: idle, running, held (jobs in the queue only).
        self._users: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ changes

    def load(self, jobs: Iterable[Job], sizes: dict[int, int]) -> None:
        """Count the active ``jobs`` (at start-up); ``sizes``: the number of jobs each
        of their clusters has in all, finished ones included."""
        for job in jobs:
            rec = self._clusters.get(job.cluster)
            if rec is None:
                rec = self._clusters[job.cluster] = _Cluster(
                    job.owner, batch_name(job), job.submit_time, 0
                )
                rec.last = sizes.get(job.cluster, 0) - 1
            rec.last = max(rec.last, job.proc)
            i = _INDEX[job.state]
            rec.counts[i] += 1
            self._users.setdefault(job.owner, [0, 0, 0])[i] += 1
            if i == _IDLE:
                rec.add_idle(job)
            elif i == _HELD:
                rec.add_held(job.proc, job.hold_reason or NO_REASON)
        for rec in self._clusters.values():
            rec.counts[_DONE] = rec.last + 1 - rec.queued

    def submitted(self, jobs: list[Job]) -> None:
        """``jobs`` (one cluster's procs, numbered in order, idle) joined the queue."""
        if not jobs:
            return
        head = jobs[0]
        rec = self._clusters.get(head.cluster)
        if rec is None:
            rec = _Cluster(head.owner, batch_name(head), head.submit_time, head.proc)
            self._clusters[head.cluster] = rec
            self.undo(partial(self._forget, head.cluster))
        before = rec.last
        rec.last = jobs[-1].proc
        rec.counts[0] += len(jobs)
        user = self._users.setdefault(head.owner, [0, 0, 0])
        user[0] += len(jobs)
        added = _shapes(jobs)
        for job, n in added:
            rec.add_idle(job, n)
        self.undo(partial(self._unsubmit, rec, user, len(jobs), before, added))

    def _forget(self, cluster: int) -> None:
        self._clusters.pop(cluster, None)

    def _unsubmit(
        self, rec: _Cluster, user: list[int], n: int, last: int, added: list[tuple[Job, int]]
    ) -> None:
        rec.counts[0] -= n
        user[0] -= n
        rec.last = last
        for job, count in added:
            rec.add_idle(job, -count)

    def moved(self, job: Job, old: JobState, new: JobState) -> None:
        """``job`` went from ``old`` to ``new`` (its fields already changed)."""
        rec = self._clusters.get(job.cluster)
        if rec is None or old is new:
            return
        i, j = _INDEX.get(old, _DONE), _INDEX.get(new, _DONE)
        was = rec.held_as.get(job.proc, NO_REASON) if i == _HELD else None
        now = (job.hold_reason or NO_REASON) if j == _HELD else None
        self._shift(job, rec, i, j, was, now)
        self.undo(partial(self._shift, job, rec, j, i, now, was))

    def _shift(
        self, job: Job, rec: _Cluster, i: int, j: int, was: str | None, now: str | None
    ) -> None:
        """One job of ``rec`` counted in ``j`` instead of ``i`` (held for the reason
        ``was``, held now for ``now``); a cluster with nothing left in the queue is
        dropped (and put back by the undo)."""
        counts = rec.counts
        counts[i] -= 1
        counts[j] += 1
        if i == _IDLE:
            rec.add_idle(job, -1)
        elif i == _HELD:
            rec.drop_held(job.proc)
        if j == _IDLE:
            rec.add_idle(job)
        elif j == _HELD:
            rec.add_held(job.proc, now or NO_REASON)
        user = self._users.get(job.owner)
        if user is None:
            user = self._users[job.owner] = [0, 0, 0]
        if i != _DONE:
            user[i] -= 1
        if j != _DONE:
            user[j] += 1
        if counts[0] or counts[1] or counts[2]:
            self._clusters[job.cluster] = rec
        else:
            self._clusters.pop(job.cluster, None)

    def respecced(self, job: Job, old: JobSpec) -> None:
        """``job``'s spec was ``old`` (``dedit``): an idle job changes shape."""
        rec = self._clusters.get(job.cluster)
        if rec is None or job.state is not JobState.IDLE:
            return
        new = job.spec
        rec.add_idle(job, -1, old)
        rec.add_idle(job, 1, new)
        self.undo(partial(self._respec_back, job, rec, old, new))

    @staticmethod
    def _respec_back(job: Job, rec: _Cluster, old: JobSpec, new: JobSpec) -> None:
        rec.add_idle(job, -1, new)
        rec.add_idle(job, 1, old)

    def renamed(self, job: Job) -> None:
        """``job``'s attributes changed: its cluster takes its batch name."""
        rec = self._clusters.get(job.cluster)
        if rec is not None:
            old = rec.batch_name
            rec.batch_name = batch_name(job)
            self.undo(partial(setattr, rec, "batch_name", old))

    # ------------------------------------------------------------------ views

    def spans(
        self, first: int = 0, owner: str | None = None, states: Iterable[str] = _NAMES
    ) -> Iterator[tuple[int, int]]:
        """Each cluster from ``first`` on (in order) with jobs of ``owner`` (None: any)
        in ``states``, and its last proc: where to look for those jobs in id order."""
        wanted = [_NAMES.index(name) for name in states if name in _NAMES]
        for cluster in sorted(c for c in self._clusters if c >= first):
            rec = self._clusters.get(cluster)
            if rec is None or (owner is not None and rec.owner != owner):
                continue
            if any(rec.counts[i] for i in wanted):
                yield cluster, rec.last

    def last_proc(self, cluster: int) -> int | None:
        """The highest proc of a cluster in the queue (None: it has no job there)."""
        rec = self._clusters.get(cluster)
        return None if rec is None else rec.last

    def cluster(self, cluster: int) -> BatchInfo | None:
        """The counts of one cluster in the queue, or None."""
        rec = self._clusters.get(cluster)
        return None if rec is None else _counts(cluster, rec)

    def idle_shapes(self, cluster: int) -> list[tuple[Job, int]]:
        """A cluster's idle jobs per shape: one of them (with the shape's spec) and how
        many; as many entries as shapes, whatever the number of jobs."""
        rec = self._clusters.get(cluster)
        if rec is None:
            return []
        return [
            (job if job.spec is spec else dataclasses.replace(job, spec=spec), n)
            for spec, n, job in rec.shapes.values()
        ]

    def hold_reasons(self, cluster: int) -> dict[str, int]:
        """A cluster's held jobs per the reason they were held for."""
        rec = self._clusters.get(cluster)
        return {} if rec is None else dict(rec.reasons)

    def batches(self, owner: str | None = None) -> list[BatchInfo]:
        """One line per batch in the queue, as ``condor_q`` groups them: clusters of
        one owner with the same ``JobBatchName`` together, others each alone."""
        out: list[BatchInfo] = []
        where: dict[tuple[str, str], int] = {}
        for cluster in sorted(self._clusters):
            rec = self._clusters[cluster]
            if owner is not None and rec.owner != owner:
                continue
            line = _counts(cluster, rec)
            if rec.batch_name is None:
                out.append(line)
                continue
            key = (rec.owner, rec.batch_name)
            at = where.get(key)
            if at is None:
                where[key] = len(out)
                out.append(line)
                continue
            seen = out[at]
            out[at] = dataclasses.replace(
                seen,
                done=seen.done + line.done,
                running=seen.running + line.running,
                idle=seen.idle + line.idle,
                held=seen.held + line.held,
                total=seen.total + line.total,
                submitted=min(seen.submitted, line.submitted),
                job_ids=f"{seen.job_ids.split(' ')[0].split('-')[0]} ... {cluster}.{rec.last}",
            )
        return out

    def by_state(self, owner: str | None = None) -> dict[str, int]:
        """Jobs in the queue per state (idle, running, held)."""
        if owner is not None:
            counts = self._users.get(owner, [0, 0, 0])
            return dict(zip(_NAMES, counts, strict=True))
        totals = [0, 0, 0]
        for counts in self._users.values():
            for i in range(3):
                totals[i] += counts[i]
        return dict(zip(_NAMES, totals, strict=True))

    def by_user(self) -> dict[str, dict[str, int]]:
        """Per user with jobs in the queue, their jobs per state."""
        return {
            user: dict(zip(_NAMES, counts, strict=True))
            for user, counts in sorted(self._users.items())
            if any(counts)
        }


def _shapes(jobs: list[Job]) -> list[tuple[Job, int]]:
    """``jobs`` per spec object: one of them and how many."""
    spec = jobs[0].spec
    if all(job.spec is spec for job in jobs):  # most clusters: one shape
        return [(jobs[0], len(jobs))]
    first: dict[int, Job] = {}
    for job in jobs:
        first.setdefault(id(job.spec), job)
    counted = Counter(id(job.spec) for job in jobs)
    return [(first[key], n) for key, n in counted.items()]


def _counts(cluster: int, rec: _Cluster) -> BatchInfo:
    idle, running, held, done = rec.counts
    first, last = rec.first, rec.last
    ids = f"{cluster}.{first}" if first == last else f"{cluster}.{first}-{last}"
    return BatchInfo(
        cluster=cluster,
        owner=rec.owner,
        batch_name=rec.batch_name,
        submitted=rec.submitted,
        done=done,
        running=running,
        idle=idle,
        held=held,
        total=last + 1,
        job_ids=ids,
    )
