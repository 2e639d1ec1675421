"""Which jobs have periodic policies, so that a pass over them costs nothing for the
jobs that have none (see :mod:`scheduler.policies`)."""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.job_records import Job
from scheduler.protocol import JobSpec

#: The periodic policies (HTCondor's attribute names, lower case).
PERIODIC = frozenset({"periodichold", "periodicrelease", "periodicremove"})


def has_periodic(spec: JobSpec) -> bool:
    """Whether ``spec`` sets a periodic policy (names are case-insensitive)."""
    return bool(spec.attributes) and any(name.lower() in PERIODIC for name in spec.attributes)


class PolicyIndex:
    """The jobs (cluster, proc) that may have periodic policies, when the last pass
    began and the jobs it has still to evaluate.

    A key is a hint, kept without undo: one that a failed unit left, or whose job
    has finished since, is dropped by the pass that finds no such job (see
    :func:`scheduler.policies.periodic_pass`); a job is noted whenever it is
    submitted, changes or is edited, and all active jobs when the scheduler starts.
    """

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._keys: set[tuple[int, int]] = set()
        #: (job, attribute) whose expression was found UNDEFINED or ERROR: logged once.
        self.warned: set[tuple[tuple[int, int], str]] = set()
        self.last_pass: float | None = None
        #: The jobs the pass under way has not evaluated yet.
        self.pending: list[tuple[int, int]] = []
        for job in jobs:
            self.note(job)

    def note(self, job: Job) -> None:
        if has_periodic(job.spec):
            self._keys.add((job.cluster, job.proc))

    def listed(self) -> list[tuple[int, int]]:
        return sorted(self._keys)

    def forget(self, key: tuple[int, int]) -> None:
        self._keys.discard(key)
        self.warned = {w for w in self.warned if w[0] != key} if self.warned else self.warned

    def __len__(self) -> int:
        return len(self._keys)

    def due(self, now: float, interval: float) -> bool:
        """Whether a pass is due at ``now`` (one every ``interval`` seconds); the first
        comes one interval after the scheduler started."""
        if self.last_pass is None:
            self.last_pass = now
        return now - self.last_pass >= interval
