"""Messages of job control (remove, hold, release, edit), history, live output and
draining; registered like every other message type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from scheduler.protocol.messages import CONTROL, WORKER, Message

__all__ = [
    "ACTIONS",
    "ChangeJobs",
    "Drain",
    "DrainWorker",
    "Draining",
    "EditJobs",
    "JobsChanged",
    "OutputChunk",
    "QueryHistory",
    "ReadOutput",
    "TailJob",
]

#: What :class:`ChangeJobs` can do to a job.
ACTIONS = ("remove", "hold", "release")


# control -> scheduler -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChangeJobs(Message):
    """Remove, hold or release the caller's jobs (``42`` or ``42.0``; every active job
    of the caller with ``all_jobs``). A running job is killed on its worker."""

    type: ClassVar[str] = "change_jobs"
    roles = CONTROL
    action: str
    ids: list[str] = field(default_factory=list)
    all_jobs: bool = False
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class EditJobs(Message):
    """Change requests and limits (``request_memory = 4GB``, ...) of idle or held jobs."""

    type: ClassVar[str] = "edit_jobs"
    roles = CONTROL
    ids: list[str]
    changes: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class JobsChanged(Message):
    """The jobs a request changed, and why each of the others was left alone."""

    type: ClassVar[str] = "jobs_changed"
    changed: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class QueryHistory(Message):
    """Finished (completed or removed) jobs, newest last: the ``limit`` most recently
    ended (at most 100 a reply; the reply's ``more`` says older ones match). ``user``
    empty: the caller; ``"*"``: everyone. ``since``: ended at or after this time.
    ``before_time`` and ``before_job``: only jobs that ended before that one (ended
    at that time), for the next page back."""

    type: ClassVar[str] = "query_history"
    roles = CONTROL
    ids: list[str] = field(default_factory=list)
    user: str = ""
    since: float | None = None
    limit: int = 1000
    before_time: float | None = None
    before_job: str = ""


@dataclass(frozen=True, kw_only=True)
class TailJob(Message):
    """Bytes of a running job's stdout or stderr from ``offset``; answered by
    :class:`OutputChunk` once its worker has read them."""

    type: ClassVar[str] = "tail_job"
    roles = CONTROL
    job_id: str
    stream: str = "stdout"
    offset: int = 0
    limit: int = 1024 * 1024


# scheduler <-> worker -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReadOutput(Message):
    """Scheduler to worker: read part of an attempt's stdout or stderr."""

    type: ClassVar[str] = "read_output"
    job_id: str
    attempt: int
    stream: str
    offset: int
    limit: int


@dataclass(frozen=True, kw_only=True)
class OutputChunk(Message):
    """Part of a job's output (base64) starting at ``offset``; ``size`` is the stream's
    size so far; ``running`` is false once the job writes no more (it ended, or is
    held or removed); an idle job is empty but still running in this sense."""

    type: ClassVar[str] = "output_chunk"
    roles = WORKER
    job_id: str
    offset: int
    data: str = ""
    size: int = 0
    running: bool = True


@dataclass(frozen=True, kw_only=True)
class DrainWorker(Message):
    """Operator to scheduler, with the worker pool secret: drain worker ``name``
    (it finishes its jobs, requeues those still running after ``grace`` s, then exits)."""

    type: ClassVar[str] = "drain_worker"
    roles = WORKER
    name: str
    grace: float | None = None


@dataclass(frozen=True, kw_only=True)
class Drain(Message):
    """Scheduler to worker: shut down gracefully (as on SIGTERM)."""

    type: ClassVar[str] = "drain"
    grace: float | None = None


@dataclass(frozen=True, kw_only=True)
class Draining(Message):
    """Worker to scheduler: take no new jobs here; ``requeue`` lists attempts
    (``job:attempt``) the worker gives up, to be run elsewhere."""

    type: ClassVar[str] = "draining"
    roles = WORKER
    requeue: list[str] = field(default_factory=list)
