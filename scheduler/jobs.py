"""The scheduler's live job table: every state change goes through here.

:meth:`JobTable.transition` checks the transition table, writes the row and an
event to SQLite, and only then returns, so the caller acts on state that is
already durable. It is called from :mod:`scheduler.transitions`, which does the
rest of each move (a running job leaving its worker), and from :meth:`JobTable.start`
here (idle to running, one step with the match that chose the job). Callers that
change many jobs wrap the calls in one ``store.transaction()``. Every change to
memory here (a job's fields, the active jobs, the unfinished counts, the queue and
usage) registers its undo with the open unit (:meth:`Store.remember`): a unit that
fails leaves the table as it found it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from functools import partial

from scheduler.dispatch import Slots
from scheduler.fairshare import DEFAULT_HALFLIFE, FairShareQueue
from scheduler.job_records import Job
from scheduler.jobstate import check_transition
from scheduler.matchmaker import match
from scheduler.protocol import UNFINISHED_STATES, JobSpec, JobState, parse_job_id, shared_specs
from scheduler.queue_summary import QueueSummary
from scheduler.store import Store
from scheduler.usage import load_usage, save_usage

log = logging.getLogger(__name__)


class JobTable:
    """Active jobs (idle, running, held) in memory, mirrored in SQLite."""

    def __init__(
        self,
        store: Store,
        on_change: Callable[[Job], None] = lambda job: None,
        halflife: float = DEFAULT_HALFLIFE,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.on_change = on_change
        #: Seconds since the epoch: submit, start and end times, and usage.
        self.clock = clock
        self.active: dict[tuple[int, int], Job] = {}
        #: Jobs idle or running, by cluster; a cluster with none is absent.
        self.unfinished: Counter[int] = Counter()
        self.queue = FairShareQueue(halflife)
        #: Counts per cluster, user and state, kept with every change.
        self.summary = QueueSummary(store.remember)
        load_usage(store, self.queue)
        for job in store.active_jobs():
            self.active[(job.cluster, job.proc)] = job
            if job.state in UNFINISHED_STATES:
                self.unfinished[job.cluster] += 1
            if job.state is JobState.IDLE:
                self.queue.push(job)
            elif job.state is JobState.RUNNING and job.start_time is not None:
                self.queue.started(job)
        store.checkpoints.attach(self.active.values())
        self.queue.undo = store.remember
        clusters = {cluster for cluster, _ in self.active}
        self.summary.load(self.active.values(), store.cluster_sizes(clusters))

    def keep(self, job: Job, names: Iterable[str] = ()) -> None:
        """Register the undo of a change to ``job``'s fields: all of them are restored
        as they are now (one copy of them all costs less than picking a few by
        name); ``names``, where given, say which are about to change."""
        fields = vars(job)
        self.store.remember(partial(fields.update, fields.copy()))

    def _count(self, cluster: int, change: int) -> None:
        """Change the number of ``cluster``'s unfinished jobs (undone with the unit)."""
        before = self.unfinished.get(cluster, 0)
        left = before + change
        if left:
            self.unfinished[cluster] = left
        else:
            del self.unfinished[cluster]

        self.store.remember(partial(self._recount, cluster, before))

    def _recount(self, cluster: int, before: int) -> None:
        if before:
            self.unfinished[cluster] = before
        else:
            self.unfinished.pop(cluster, None)

    def get(self, job_id: str) -> Job | None:
        cluster, proc = parse_job_id(job_id)
        return None if proc is None else self.active.get((cluster, proc))

    def select(
        self,
        owner: str | None,
        clusters: list[int],
        pairs: list[tuple[int, int]],
        states: set[str],
    ) -> list[Job]:
        """Active jobs matching the filters (as :meth:`Store.jobs` would select them)."""
        if not states:
            return []
        if clusters or pairs:
            whole = set(clusters)
            candidates = [job for cluster in sorted(whole) for job in self._of_cluster(cluster)]
            candidates += [
                self.active[k]
                for k in dict.fromkeys(pairs)
                if k in self.active and k[0] not in whole
            ]
        else:
            candidates = list(self.active.values())
        return [
            job
            for job in candidates
            if job.state.value in states and (owner is None or job.owner == owner)
        ]

    def _of_cluster(self, cluster: int) -> list[Job]:
        """The active jobs of ``cluster``, by proc: looked up one by one (as many
        lookups as the cluster has procs, whatever the queue holds)."""
        last = self.summary.last_proc(cluster)
        if last is None:
            return []
        active = self.active
        return [job for proc in range(last + 1) if (job := active.get((cluster, proc)))]

    def in_order(
        self,
        after: tuple[int, int],
        owner: str | None,
        states: set[str],
        clusters: Collection[int] = (),
    ) -> Iterator[Job]:
        """Active jobs of ``owner`` (None: anyone's) in ``states`` (and ``clusters``,
        if any), in id order from just after ``after``: a page costs what it holds
        (and the finished procs between), not the whole queue."""
        for cluster, last in self.summary.spans(after[0], owner, states):
            if clusters and cluster not in clusters:
                continue
            start = after[1] + 1 if cluster == after[0] else 0
            for proc in range(start, last + 1):
                job = self.active.get((cluster, proc))
                if job is not None and job.state.value in states:
                    yield job  # a cluster has one owner: the span's

    def running(self) -> list[Job]:
        return [j for j in self.active.values() if j.state is JobState.RUNNING]

    def transition(
        self, job: Job, new: JobState, event: str, detail: str = "", **changes: object
    ) -> None:
        """Move ``job`` to ``new`` (checked), apply ``changes``, write it all durably.
        A running job counts for fair share while its ``start_time`` is set: a job
        queued on a worker behind another has none until it :meth:`began`."""
        check_transition(
            job.id, job.state, new, lambda: [e.event for e in self.store.events(*_key(job))]
        )
        old, started = job.state, job.start_time
        self.keep(job)
        job.state = new
        for name, value in changes.items():
            setattr(job, name, value)
        self.store.save_job(job, event, detail)
        key = _key(job)
        if old is JobState.IDLE:
            self.queue.discard(job)
        if new is JobState.IDLE:
            self.queue.push(job)
        if old is JobState.RUNNING and new is not JobState.RUNNING:
            if started is not None:
                save_usage(self.store, self.queue.stopped(job, started, self.clock()))
        elif new is JobState.RUNNING and old is not JobState.RUNNING and job.start_time is not None:
            self.queue.started(job)
        if new in (JobState.COMPLETED, JobState.REMOVED) and self.active.pop(key, None) is not None:
            self.store.remember(partial(self.active.__setitem__, key, job))
        if (old in UNFINISHED_STATES) is not (new in UNFINISHED_STATES):
            self._count(job.cluster, 1 if new in UNFINISHED_STATES else -1)
        self.summary.moved(job, old, new)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s: %s -> %s (%s)", job.id, old.value, new.value, event)
        self.on_change(job)

    # ------------------------------------------------------------------ submit

    def submit(
        self,
        cluster: int,
        owner: str,
        submit_file: str,
        specs: list[JobSpec],
        first: int = 0,
        last: bool = True,
    ) -> list[Job]:
        """Queue procs of a cluster (numbered from ``first``) in one transaction; the
        ``last`` part completes the cluster."""
        return self.submit_clusters([(cluster, owner, submit_file, specs, first)], last)[0]

    def submit_clusters(
        self,
        parts: list[tuple[int, str, str, list[JobSpec], int]],
        last: bool = True,
        named: bool = False,
    ) -> list[list[Job]]:
        """:meth:`submit` of several clusters (cluster, owner, submit file, specs, first
        proc) in one transaction: the jobs of each (``named``: see
        :meth:`Store.insert_clusters`)."""
        now = self.clock()
        made = [
            [
                Job(cluster=cluster, proc=i, owner=owner, state=JobState.IDLE, spec=s,
                    submit_time=now)
                for i, s in enumerate(shared_specs(specs), start=first)
            ]
            for cluster, owner, _, specs, first in parts
        ]  # fmt: skip
        self.store.insert_clusters(
            [(part[0], part[2], jobs) for part, jobs in zip(parts, made, strict=True)],
            now,
            last,
            named,
        )
        for part, some in zip(parts, made, strict=True):
            if some:
                self._count(part[0], len(some))
        jobs = [job for some in made for job in some]
        keys = [_key(job) for job in jobs]

        def forget() -> None:
            for key in keys:
                self.active.pop(key, None)

        self.store.remember(forget)
        for some in made:  # one cluster's procs each
            self.summary.submitted(some)
        for job in jobs:
            self.active[_key(job)] = job
            self.queue.push(job)
            self.on_change(job)
        return made

    # ------------------------------------------------------------------ dispatch

    def assign(
        self, workers: Iterable[Slots], elsewhere: Callable[[], Iterable[Slots]] | None = None
    ) -> list[tuple[Slots, Job]]:
        """Match idle jobs to free slots (see :func:`scheduler.matchmaker.match`; a
        ranked job may go to a worker of ``elsewhere``), then take the slots and mark
        the jobs running, in one transaction."""
        by_id = {slots.worker_id: slots for slots in workers}
        others: list[Slots] = []

        def more() -> list[Slots]:
            if not others and elsewhere is not None:
                others.extend(elsewhere())
            return others

        now = self.clock()
        matches = match(self.queue, by_id.values(), now, None if elsewhere is None else more)
        for slots in others:  # asked for only where a ranked job was chosen
            by_id.setdefault(slots.worker_id, slots)
        with self.store.transaction():
            for worker_id, job in matches:
                by_id[worker_id].take(job)
                self.start(job, by_id[worker_id].name, now)
        return [(by_id[worker_id], job) for worker_id, job in matches]

    def start(self, job: Job, worker: str, now: float, queued: bool = False) -> None:
        """Mark an idle job, just given to ``worker``, running; one ``queued`` there
        behind another job has no start time until it :meth:`began`."""
        where = "queued on" if queued else "on"
        self.transition(
            job,
            JobState.RUNNING,
            "executing",
            f"{where} worker {worker} (attempt {job.attempt + 1})",
            # The record of the attempt's worker, kept in SQLite and shown to users;
            # where the job runs now, or which worker it waits for, only the
            # scheduler.workers.WorkerRegistry knows.
            worker=worker,
            attempt=job.attempt + 1,
            num_starts=job.num_starts + 1,
            start_time=None if queued else now,
            end_time=None,
            hold_reason=None,
            hold_code=None,
            hold_subcode=None,
        )

    def began(self, job: Job, now: float) -> None:
        """A job queued on a worker started there, the job ahead of it having left:
        it counts for fair share from ``now``. Not a change of state: it is written,
        and watchers told, with the next one."""
        if job.state is JobState.RUNNING and job.start_time is None:
            self.keep(job, ["start_time"])
            job.start_time = now
            self.queue.started(job)


def _key(job: Job) -> tuple[int, int]:
    return job.cluster, job.proc
