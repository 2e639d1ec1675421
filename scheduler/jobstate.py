"""The legal job-state transitions: the one table every state change is checked against."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.protocol import JobState

_S = JobState

#: For each state, the states a job may move to from it.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    _S.IDLE: frozenset({_S.RUNNING, _S.HELD, _S.REMOVED}),
    # running -> idle: the worker was lost or the attempt is requeued.
    _S.RUNNING: frozenset({_S.COMPLETED, _S.IDLE, _S.HELD, _S.REMOVED}),
    _S.HELD: frozenset({_S.IDLE, _S.REMOVED}),
    _S.COMPLETED: frozenset(),
    _S.REMOVED: frozenset(),
}


class InvalidTransition(Exception):
    """A state change that the table does not allow: a bug in the caller."""

    def __init__(self, job_id: str, old: JobState, new: JobState, story: list[str]):
        self.job_id, self.old, self.new, self.story = job_id, old, new, story
        history = "; ".join(story[-5:]) or "no events"
        super().__init__(f"job {job_id}: {old.value} -> {new.value} is not allowed ({history})")


def check_transition(
    job_id: str, old: JobState, new: JobState, story: Callable[[], list[str]]
) -> None:
    """Raise :class:`InvalidTransition` unless ``old -> new`` is in :data:`ALLOWED`;
    ``story`` (the job's past events) is read only then."""
    if new not in ALLOWED[old]:
        raise InvalidTransition(job_id, old, new, story())
