"""Every message type, grouped by channel; each names the roles that may send it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from scheduler.protocol.records import (
    CheckpointFile,
    FtpGrant,
    JobEvent,
    JobInfo,
    JobSpec,
    PushedResults,
    Role,
    SpoolShare,
    WorkerInfo,
    WorkerMetrics,
)

__all__ = [
    "NOT_STARTED",
    "AwaitClusters",
    "Auth",
    "BOTH",
    "CONTROL",
    "Challenge",
    "ClusterCreated",
    "ClusterDone",
    "Error",
    "FetchResults",
    "Heartbeat",
    "Hello",
    "JobFinished",
    "JobList",
    "JobResults",
    "JobUpdate",
    "KillJob",
    "MESSAGE_TYPES",
    "Message",
    "NewCluster",
    "NewGrant",
    "Ok",
    "ProbeFtp",
    "ProbeGranted",
    "QueryJobs",
    "QueryWorkers",
    "Register",
    "Registered",
    "RunJob",
    "SubmitJobs",
    "Submitted",
    "Subscribe",
    "WORKER",
    "Welcome",
    "WorkerList",
]

MESSAGE_TYPES: dict[str, type[Message]] = {}


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base of every message. ``roles`` lists who may send it to the scheduler."""

    type: ClassVar[str] = ""
    roles: ClassVar[frozenset[Role]] = frozenset()
    id: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type:
            MESSAGE_TYPES[cls.type] = cls

    def with_id(self, request_id: int | None) -> Self:
        """This message as the reply to (or request number) ``request_id``."""
        return self if request_id is None else dataclasses.replace(self, id=request_id)


BOTH = frozenset({Role.WORKER, Role.CONTROL})
CONTROL = frozenset({Role.CONTROL})
WORKER = frozenset({Role.WORKER})


@dataclass(frozen=True, kw_only=True)
class Error(Message):
    """A request failed, or the peer broke the protocol (then the connection closes)."""

    type: ClassVar[str] = "error"
    message: str
    code: str = "error"


@dataclass(frozen=True, kw_only=True)
class Hello(Message):
    """First message from a peer: who it is and which protocol it speaks."""

    type: ClassVar[str] = "hello"
    roles = BOTH
    role: str
    version: int
    name: str
    nonce: str


@dataclass(frozen=True, kw_only=True)
class Challenge(Message):
    """The scheduler's nonce and the salt (hex) and PBKDF2 iterations of the peer's
    secret, to be answered with :class:`Auth` (SCRAM-SHA-256)."""

    type: ClassVar[str] = "challenge"
    nonce: str
    salt: str
    iterations: int


@dataclass(frozen=True, kw_only=True)
class Auth(Message):
    """The peer's proof that it holds the key: SCRAM's ClientProof, in hex."""

    type: ClassVar[str] = "auth"
    roles = BOTH
    digest: str


@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    """The handshake succeeded; ``digest`` (SCRAM's ServerSignature, in hex) proves
    the scheduler holds the peer's verifier too."""

    type: ClassVar[str] = "welcome"
    digest: str
    server_name: str
    server_time: float


@dataclass(frozen=True, kw_only=True)
class Ok(Message):
    """A request that returns nothing succeeded."""

    type: ClassVar[str] = "ok"


# control -> scheduler -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewCluster(Message):
    """Reserve a cluster id and get write-only FTP access to its input directory."""

    type: ClassVar[str] = "new_cluster"
    roles = CONTROL


@dataclass(frozen=True, kw_only=True)
class ClusterCreated(Message):
    type: ClassVar[str] = "cluster_created"
    cluster: int
    upload: FtpGrant


@dataclass(frozen=True, kw_only=True)
class SubmitJobs(Message):
    """Queue the procs of a reserved cluster, whose inputs are uploaded or uploading.

    Done atomically: either every proc of the message is queued or none is. A
    large cluster comes in parts, in order, so that no frame outgrows the limit:
    each part names its first proc, and the last says so. A cluster whose last
    part never comes (a part is refused, the connection closes, the scheduler
    restarts) has its queued jobs removed.
    """

    type: ClassVar[str] = "submit_jobs"
    roles = CONTROL
    cluster: int
    submit_file: str
    jobs: list[JobSpec]
    #: Small inputs by sha256 (base64), instead of an FTP upload.
    files: dict[str, str] = field(default_factory=dict)
    #: Large inputs by sha256: the name of their upload in the cluster's input
    #: folder (``part-<n>``), which may still be running; the scheduler names it
    #: by its hash. A cluster whose uploads still run is sent with ``last`` false
    #: and completed by an empty last part once they have ended.
    uploads: dict[str, str] = field(default_factory=dict)
    #: The proc number of ``jobs[0]`` (0 for the first part).
    first_proc: int = 0
    #: Whether this is the cluster's last part.
    last: bool = True


@dataclass(frozen=True, kw_only=True)
class Submitted(Message):
    type: ClassVar[str] = "submitted"
    cluster: int
    job_ids: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class QueryJobs(Message):
    """The caller's jobs, filtered by ids (``42`` or ``42.0``) and states."""

    type: ClassVar[str] = "query_jobs"
    roles = CONTROL
    ids: list[str] = field(default_factory=list)
    all_users: bool = False
    states: list[str] = field(default_factory=list)
    #: A page: at most ``limit`` jobs (0: all) after the job id ``after``, in id order;
    #: the scheduler answers a page of at most 500 (the reply's ``more`` says so).
    limit: int = 0
    after: str = ""


@dataclass(frozen=True, kw_only=True)
class JobList(Message):
    type: ClassVar[str] = "job_list"
    jobs: list[JobInfo]
    #: Whether jobs past this page match too (ask again with ``after``).
    more: bool = False


@dataclass(frozen=True, kw_only=True)
class QueryWorkers(Message):
    type: ClassVar[str] = "query_workers"
    roles = CONTROL


@dataclass(frozen=True, kw_only=True)
class WorkerList(Message):
    type: ClassVar[str] = "worker_list"
    workers: list[WorkerInfo]
    #: Disk used by the spool (inputs, results) and results kept in the database.
    spool_bytes: int = 0
    #: Seconds results are kept after a job ends.
    result_retention: float = 0.0
    #: Why the scheduler's disk counts as full (submissions are refused); "" if not.
    scheduler_disk_full: str = ""


@dataclass(frozen=True, kw_only=True)
class Subscribe(Message):
    """Push a :class:`JobUpdate` for every change of these clusters' jobs into one of
    ``states`` (every state when empty)."""

    type: ClassVar[str] = "subscribe"
    roles = CONTROL
    clusters: list[int]
    states: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class JobUpdate(Message):
    """Pushed by the scheduler: a job of a subscribed cluster changed state."""

    type: ClassVar[str] = "job_update"
    job: JobInfo


@dataclass(frozen=True, kw_only=True)
class AwaitClusters(Message):
    """Push one :class:`ClusterDone` for each of these clusters once none of its jobs
    is idle or running (at once if none is): a wait that needs no progress."""

    type: ClassVar[str] = "await_clusters"
    roles = CONTROL
    clusters: list[int]


@dataclass(frozen=True, kw_only=True)
class ClusterDone(Message):
    """Pushed by the scheduler: an awaited cluster has no idle or running job left.
    ``results``: those of its only job, as :class:`FetchResults` gives them, when
    it was submitted by :class:`SubmitSmall` with ``await_end`` as one job (a
    call's, a one-item map's) and they all came inline, so that no request
    follows; else None."""

    type: ClassVar[str] = "cluster_done"
    cluster: int
    results: PushedResults | None = None


@dataclass(frozen=True, kw_only=True)
class FetchResults(Message):
    """Read-only FTP access to the results of the caller's finished jobs."""

    type: ClassVar[str] = "fetch_results"
    roles = CONTROL
    ids: list[str]
    #: Only the specs of jobs whose submit file names ``output``, ``error`` or ``log``
    #: (the others are of no use to a fetch, and most of a reply's bytes).
    brief: bool = False


@dataclass(frozen=True, kw_only=True)
class JobResults(Message):
    """Each job's results: small files inline (``files[job_id][name]``, base64, names
    ``stdout``, ``stderr``, ``outputs/<name>``); the others under ``<cluster>/<proc>/``
    through ``download``, which is set only when something is left to download."""

    type: ClassVar[str] = "job_results"
    download: FtpGrant | None
    jobs: list[JobInfo]
    #: Each job's spec (with ``brief``: only those naming output, error or log paths).
    specs: dict[str, JobSpec]
    events: dict[str, list[JobEvent]]
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Jobs left out to keep the reply small: ask for them again.
    remaining: list[str] = field(default_factory=list)
    #: The SHA-256 recorded for each large file when it arrived (``hashes[job_id][name]``):
    #: each must be downloaded and match, else the file is missing or damaged.
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The jobs that have files in the spool, under ``download``: only these need
    #: looking for there (a client of an older scheduler looks for every job's).
    large: list[str] | None = None
    #: For a client that reached the scheduler on a loopback address: the abstract
    #: Unix socket where ``download`` also hands out the files themselves
    #: (:mod:`scheduler.result_fds`).
    local: str | None = None


@dataclass(frozen=True, kw_only=True)
class ProbeFtp(Message):
    """``dfarm doctor``: FTP access to a fresh, empty probe directory, to check the
    data channel both ways with the real server and credentials."""

    type: ClassVar[str] = "probe_ftp"
    roles = BOTH


@dataclass(frozen=True, kw_only=True)
class ProbeGranted(Message):
    """Read-write access to ``directory`` (relative to the grant's root) for a minute,
    and the scheduler's FTP passive port range (empty: any port)."""

    type: ClassVar[str] = "probe_granted"
    ftp: FtpGrant
    directory: str
    passive_ports: str = ""


# worker -> scheduler --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Register(Message):
    """A worker offers its slots. ``running`` lists attempts it still runs (``JOB_ID:ATTEMPT``);
    ``dropped``, the queued attempts it dropped unstarted when its last connection broke;
    ``incarnation``, a name of the worker process, the same in each of its registrations."""

    type: ClassVar[str] = "register"
    roles = WORKER
    slots: int
    cpus: int
    memory_mb: int
    gpus: int
    metrics: WorkerMetrics
    running: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    incarnation: str = ""


@dataclass(frozen=True, kw_only=True)
class Registered(Message):
    type: ClassVar[str] = "registered"
    worker_id: int
    heartbeat_interval: float
    #: The spool, for a worker that may share its file system (None: FTP only).
    spool: SpoolShare | None = None


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Message):
    """The worker is alive; fresh machine metrics."""

    type: ClassVar[str] = "heartbeat"
    roles = WORKER
    metrics: WorkerMetrics


#: How a ``JobFinished.failure`` begins when the job's program never started: its
#: inputs could not be staged, it could not be executed, or a URL input could not be
#: fetched (HTCondor's words). Such a hold is mailed as a failure (see
#: :mod:`scheduler.mail.rules`).
NOT_STARTED = ("could not stage inputs", "cannot execute", "Transfer input files failure")


@dataclass(frozen=True, kw_only=True)
class JobFinished(Message):
    """An attempt ended and its outputs are uploaded. Answered by :class:`Ok`
    once the result is durable; the worker keeps the result until then."""

    type: ClassVar[str] = "job_finished"
    roles = WORKER
    job_id: str
    attempt: int
    exit_code: int | None = None
    exit_signal: int | None = None
    wall_time: float = 0.0
    cpu_time: float = 0.0
    output_files: list[str] = field(default_factory=list)
    #: Small results inline (base64): ``stdout``, ``stderr``, ``outputs/<name>``;
    #: the others were uploaded over FTP before this message was sent ...
    files: dict[str, str] = field(default_factory=dict)
    #: ... or, when set, linked into the spool by a worker that shares its file
    #: system, in the job's folder ``.attempt-<attempt>``: the scheduler moves them
    #: into place if it takes this result, so a stale attempt overwrites nothing.
    spooled: bool = False
    #: Set when the attempt failed for a reason other than the job's own exit
    #: (inputs could not be staged, the executable could not start, a declared
    #: output is missing): the job is put on hold with this reason.
    failure: str | None = None
    #: Set with ``failure`` when the worker's disk was full: the attempt failed for
    #: the worker's reason, not the job's, and the job is run again elsewhere.
    disk_full: bool = False
    #: The attempt's peak resident memory in MB, where the worker measured it.
    memory_usage_mb: int | None = None


# scheduler -> worker --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunJob(Message):
    """Run one attempt of a job. Inputs are fetched (or taken from the worker's
    cache by hash) with ``ftp``, whose root is the cluster's spool directory."""

    type: ClassVar[str] = "run_job"
    job_id: str
    attempt: int
    owner: str
    spec: JobSpec
    ftp: FtpGrant
    #: Small inputs this worker may not have yet, by sha256 (base64).
    files: dict[str, str] = field(default_factory=dict)
    #: ``JOB_ID:ATTEMPT`` of an attempt on this worker that this one is queued
    #: behind: it starts when that one ends, in its place and on its resources
    #: (GPUs included). Empty, or naming an attempt already ended: start now.
    after: str = ""
    #: The job's latest checkpoint, fetched with ``ftp`` into the sandbox before it
    #: starts (None: it starts from the beginning).
    checkpoint: CheckpointFile | None = None
    #: The cluster whose spool folder holds the inputs (a DAG's, for its nodes' jobs:
    #: ``ftp``'s ``input`` is that folder too); None: the job's own.
    inputs_from: int | None = None


@dataclass(frozen=True, kw_only=True)
class NewGrant(Message):
    """The FTP grant an attempt's files move with from now on. Sent when the
    scheduler takes back an attempt it had lost (a restart, a dropped connection):
    the grant of its ``RunJob`` is no longer valid."""

    type: ClassVar[str] = "new_grant"
    job_id: str
    attempt: int
    ftp: FtpGrant


@dataclass(frozen=True, kw_only=True)
class KillJob(Message):
    """Stop an attempt the scheduler no longer expects (it was reassigned or removed)."""

    type: ClassVar[str] = "kill_job"
    job_id: str
    attempt: int
    reason: str
