"""Messages that explain the queue: fair-share usage (``dfarm users``), why a job is
not running (``dq -analyze``) and the queue's counts (``dq --summary``); registered
like every other message type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from scheduler.protocol.messages import CONTROL, Message

__all__ = [
    "AnalyzeJobs",
    "BatchInfo",
    "BatchList",
    "ClusterAnalysis",
    "QueryBatches",
    "JobAnalysis",
    "JobAnalyses",
    "JobCounts",
    "QueryCounts",
    "QueryUsers",
    "UserList",
    "UserUsage",
]


@dataclass(frozen=True, kw_only=True)
class UserUsage:
    """One user's fair-share standing."""

    user: str
    #: Slot time in cpu-seconds, decayed with the half-life, running jobs included.
    effective_usage: float
    #: This user's part of all users' effective usage (0..1).
    share: float
    idle: int
    running: int
    #: Cpus held by the user's running jobs.
    running_cpus: int
    #: Place in the fair-share order among users with idle jobs (1 = next); 0: none idle.
    rank: int = 0


@dataclass(frozen=True, kw_only=True)
class JobAnalysis:
    """Why a job is (not) running, in words and in numbers."""

    id: str
    state: str
    owner: str
    #: One paragraph in plain words.
    summary: str
    #: What no connected worker has (empty when some worker could run the job).
    reasons: list[str] = field(default_factory=list)
    workers_connected: int = 0
    #: Workers that could run the job when empty.
    workers_matching: int = 0
    #: Of those, workers with enough free resources right now.
    workers_free: int = 0
    #: Idle jobs of users with less usage (they go first).
    ahead_other_users: int = 0
    #: The owner's own idle jobs before this one (higher priority, or submitted earlier).
    ahead_own: int = 0
    #: Place in the queue (1 = next), counting both.
    position: int = 0
    owner_usage: float = 0.0
    #: Rough estimate of the start (epoch seconds) and the mean run time it assumed.
    estimated_start: float | None = None
    mean_run_time: float | None = None


@dataclass(frozen=True, kw_only=True)
class QueryUsers(Message):
    """Every user's fair-share usage (``dfarm users``, ``dq --users``)."""

    type: ClassVar[str] = "query_users"
    roles = CONTROL


@dataclass(frozen=True, kw_only=True)
class UserList(Message):
    type: ClassVar[str] = "user_list"
    users: list[UserUsage]
    #: The half-life of usage, in seconds.
    halflife: float


@dataclass(frozen=True, kw_only=True)
class AnalyzeJobs(Message):
    """Why the caller's jobs (``42`` or ``42.0``) are not running."""

    type: ClassVar[str] = "analyze_jobs"
    roles = CONTROL
    ids: list[str]
    #: Clusters named whole (``42``) are summarised (:class:`ClusterAnalysis`), not
    #: explained job by job.
    by_cluster: bool = False


@dataclass(frozen=True, kw_only=True)
class ClusterAnalysis:
    """Why a cluster's jobs are not running, counted (``dq -analyze CLUSTER``)."""

    cluster: int
    owner: str
    idle: int
    running: int
    held: int
    #: Idle jobs per reason, the most first (one reason per distinct job shape).
    idle_reasons: dict[str, int] = field(default_factory=dict)
    #: Held jobs per hold reason, the most first.
    hold_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class JobAnalyses(Message):
    type: ClassVar[str] = "job_analyses"
    jobs: list[JobAnalysis]
    #: The clusters named whole (``42``), summarised instead of job by job.
    clusters: list[ClusterAnalysis] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class BatchInfo:
    """One line of the batch view (``dq``, as ``condor_q``'s default)."""

    cluster: int
    owner: str
    batch_name: str | None
    submitted: float
    done: int
    running: int
    idle: int
    held: int
    total: int
    #: HTCondor's JOB_IDS column: ``12.0``, ``12.0-99`` or ``12.0 ... 14.3``.
    job_ids: str


@dataclass(frozen=True, kw_only=True)
class QueryBatches(Message):
    """The batches in the queue, counted (the caller's, everyone's, or of ``clusters``)."""

    type: ClassVar[str] = "query_batches"
    roles = CONTROL
    all_users: bool = False
    #: Only these clusters (empty: every one).
    clusters: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class BatchList(Message):
    type: ClassVar[str] = "batch_list"
    batches: list[BatchInfo]
    #: Jobs per state in the batches listed, and in the whole queue (every user's).
    totals: dict[str, int]
    all_totals: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class QueryCounts(Message):
    """How many of the caller's (or everyone's) jobs are in each state of the queue."""

    type: ClassVar[str] = "query_counts"
    roles = CONTROL
    all_users: bool = False


@dataclass(frozen=True, kw_only=True)
class JobCounts(Message):
    type: ClassVar[str] = "job_counts"
    counts: dict[str, int]
