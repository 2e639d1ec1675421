"""What a worker offers and holds: the partitionable slot that jobs are matched to.

A worker is one partitionable slot: its cpus, memory and GPUs are reserved per
job and given back when the job ends, so a worker with 8 cores runs eight
1-cpu jobs or two 4-cpu jobs at once. The order of the idle queue is in
:mod:`scheduler.fairshare`.

Behind a short running job, a worker may also hold jobs of the same shape
queued (see :mod:`scheduler.queue_ahead`): each waits for one job and starts
in its place when it ends, on the resources it held, so a queued job holds
none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from scheduler.job_records import Job
from scheduler.matching.job_ad import job_ad
from scheduler.matching.requirements import Value, compile_requirements
from scheduler.protocol import JobSpec
from scheduler.undo import UndoHook, no_undo

_NO_JOB: dict[str, Value] = {}
#: What :meth:`Slots.changing` keeps: the counters, flags, attributes and chains.
_Saved = tuple[
    int, int, int, int, bool, bool, int, dict[str, Value],
    dict[str, str], dict[str, str], dict[str, tuple[str, int]],
]  # fmt: skip
#: An entry of the chains as it was: absent (``_ABSENT``) or its value.
_Entry = tuple[dict[str, Any], str, object]
_ABSENT = object()


@dataclass
class Slots:
    """What a worker offers and what its running jobs hold."""

    worker_id: int
    name: str
    slots: int
    cpus: int
    memory_mb: int
    gpus: int
    disk_free_mb: int
    used_slots: int = 0
    used_cpus: int = 0
    used_memory_mb: int = 0
    used_gpus: int = 0
    draining: bool = False
    #: The worker's disk is full: it takes no job until it has room.
    disk_full: bool = False
    #: The worker's attributes as ``requirements`` see them (see ``worker_ad``).
    attributes: dict[str, Value] = field(default_factory=dict)
    #: Queued jobs: the id of the job each waits for, by its own id ...
    leader_of: dict[str, str] = field(default_factory=dict)
    #: ... and the id of the job queued behind each job.
    follower_of: dict[str, str] = field(default_factory=dict)
    #: For each running job with jobs queued behind it: the last of them, and how many.
    chains: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Where each change registers its undo (see :mod:`scheduler.undo`); set when
    #: its worker joins the registry.
    undo: UndoHook = field(default=no_undo, compare=False, repr=False)

    def changing(self) -> None:
        """Register the undo of what is about to change: a snapshot of the counters,
        flags and chains, restored if the unit fails."""
        saved: _Saved = (
            self.used_slots, self.used_cpus, self.used_memory_mb, self.used_gpus,
            self.draining, self.disk_full, self.disk_free_mb, self.attributes,
            self.leader_of.copy(), self.follower_of.copy(), self.chains.copy(),
        )  # fmt: skip
        self.undo(partial(self._restore, saved))

    def _restore(self, saved: _Saved) -> None:
        (
            self.used_slots, self.used_cpus, self.used_memory_mb, self.used_gpus,
            self.draining, self.disk_full, self.disk_free_mb, self.attributes,
            self.leader_of, self.follower_of, self.chains,
        ) = saved  # fmt: skip

    def _changing_entries(self, *entries: tuple[dict[str, Any], str | None]) -> None:
        """As :meth:`changing`, for a job's move: only the counters and the named
        entries of the chains can change, so only they are kept (the chains of a
        busy worker hold hundreds of entries; a copy of them per job would cost
        more than the move)."""
        counters = (self.used_slots, self.used_cpus, self.used_memory_mb, self.used_gpus)
        kept = [(d, key, d.get(key, _ABSENT)) for d, key in entries if key is not None]
        self.undo(partial(self._restore_entries, counters, kept))

    def _restore_entries(self, counters: tuple[int, int, int, int], kept: list[_Entry]) -> None:
        self.used_slots, self.used_cpus, self.used_memory_mb, self.used_gpus = counters
        for d, key, value in reversed(kept):
            if value is _ABSENT:
                d.pop(key, None)
            else:
                d[key] = value

    def fits(self, job: Job) -> bool:
        """Whether ``job`` could start here now."""
        spec = job.spec
        if self.draining or self.disk_full or self.used_slots >= self.slots:
            return False
        if spec.machine is not None and spec.machine not in (self.name, str(self.worker_id)):
            return False
        return (
            self.used_cpus + spec.request_cpus <= self.cpus
            and self.used_memory_mb + (spec.request_memory or 0) <= self.memory_mb
            and self.used_gpus + spec.request_gpus <= self.gpus
            and (spec.request_disk or 0) <= self.disk_free_mb * 1024
            and (spec.requirements is None or self._satisfies(spec))
        )

    def _satisfies(self, spec: JobSpec) -> bool:
        rule = compile_requirements(spec.requirements or "true", spec.attributes)
        return rule.matches(self.attributes, job_ad(spec) if rule.needs_job else _NO_JOB)

    def take(self, job: Job) -> None:
        self._changing_entries()
        self.used_slots += 1
        self.used_cpus += job.spec.request_cpus
        self.used_memory_mb += job.spec.request_memory or 0
        self.used_gpus += job.spec.request_gpus

    def give_back(self, job: Job) -> None:
        self.changing()
        self._free(job)

    def _free(self, job: Job) -> None:
        self.used_slots -= 1
        self.used_cpus -= job.spec.request_cpus
        self.used_memory_mb -= job.spec.request_memory or 0
        self.used_gpus -= job.spec.request_gpus

    def chain(self, head: Job) -> tuple[str, int]:
        """The id of the last job of ``head``'s chain (``head`` itself when nothing is
        queued behind it) and how many are queued."""
        return self.chains.get(head.id, (head.id, 0))

    def queue_behind(self, head: Job, job: Job) -> None:
        """``job`` waits on the worker for the last job of ``head``'s chain to end,
        then runs in its place."""
        head_id, job_id = head.id, job.id
        tail, count = self.chains.get(head_id, (head_id, 0))
        self._changing_entries(
            (self.follower_of, tail), (self.leader_of, job_id), (self.chains, head_id)
        )
        self.follower_of[tail] = job_id
        self.leader_of[job_id] = tail
        self.chains[head_id] = (job_id, count + 1)

    def release(self, job: Job) -> str | None:
        """``job`` left the worker (it ended, was killed or given back). The job
        queued behind it takes its place and resources, and its id is returned;
        with none, the resources are given back. A job that was still queued
        holds none: the one behind it waits for its leader instead."""
        job_id = job.id
        follower = self.follower_of.get(job_id)
        leader = self.leader_of.get(job_id)
        if leader is not None:
            self.changing()  # rare: everything is kept
        else:
            self._changing_entries(
                (self.follower_of, job_id), (self.leader_of, follower),
                (self.chains, job_id), (self.chains, follower),
            )  # fmt: skip
        self.follower_of.pop(job_id, None)
        self.leader_of.pop(job_id, None)
        if leader is not None:  # a queued job: rare, so its head is looked for
            if follower is None:
                del self.follower_of[leader]
            else:
                self.follower_of[leader] = follower
                self.leader_of[follower] = leader
            head = leader
            while head in self.leader_of:
                head = self.leader_of[head]
            tail, count = self.chains.pop(head)
            if count > 1:
                self.chains[head] = (leader if tail == job_id else tail, count - 1)
            return None
        if follower is None:
            self._free(job)  # kept above
            return None
        del self.leader_of[follower]
        tail, count = self.chains.pop(job_id)
        if count > 1:
            self.chains[follower] = (tail, count - 1)
        return follower

    @property
    def free(self) -> bool:
        return not self.draining and not self.disk_full and self.used_slots < self.slots
