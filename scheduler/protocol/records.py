"""Shared vocabulary: job states, roles, ids, size units and the records messages carry."""

from __future__ import annotations

import enum
import math
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_PORT",
    "FINAL_STATES",
    "FtpGrant",
    "GpuInfo",
    "HEADER",
    "INLINE_BUDGET",
    "INLINE_LIMIT",
    "InputFile",
    "JobEvent",
    "JobInfo",
    "JobSpec",
    "JobState",
    "MACHINE_ATTRIBUTES",
    "PushedResults",
    "PROTOCOL_VERSION",
    "ProtocolError",
    "Role",
    "SPOOL_IDENTITY_FILE",
    "SpoolShare",
    "UNFINISHED_STATES",
    "WorkerInfo",
    "WorkerMetrics",
    "format_job_id",
    "parse_disk_kb",
    "parse_job_id",
    "parse_memory_mb",
    "shared_specs",
]

PROTOCOL_VERSION = 3
#: What ``$$(NAME)`` in a job's arguments or environment may name (lower case): the
#: attributes of the worker the job is matched to, substituted at dispatch.
MACHINE_ATTRIBUTES = frozenset({
    "machine", "name", "cpus", "memory", "disk", "gpus", "opsys", "arch",
    "totalcpus", "totalmemory", "totalgpus",
})  # fmt: skip
DEFAULT_PORT = 7070
#: Largest frame accepted by default (bytes of JSON).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
#: The range of every integer on the wire: what SQLite's INTEGER holds.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Files up to this size travel inside messages (base64); larger ones over FTP.
INLINE_LIMIT = 64 * 1024
#: Most inline file bytes one message carries; what does not fit goes over FTP.
INLINE_BUDGET = 4 * 1024 * 1024


class ProtocolError(Exception):
    """A frame or message that does not follow the protocol."""


class JobState(enum.StrEnum):
    """The states of a job. Legal moves are in ``scheduler.jobstate``."""

    #: Waiting in the queue for a slot.
    IDLE = "idle"
    #: Dispatched to a worker.
    RUNNING = "running"
    #: Ran to the end; its exit code or signal is recorded.
    COMPLETED = "completed"
    #: Will not run until released; ``hold_reason`` says why.
    HELD = "held"
    #: Removed by its owner or an admin.
    REMOVED = "removed"


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.REMOVED})
#: States in which a job still has to run; a cluster with none left is done.
UNFINISHED_STATES = frozenset({JobState.IDLE, JobState.RUNNING})


class Role(enum.StrEnum):
    """What a peer is. Each message type lists the roles that may send it."""

    WORKER = "worker"
    CONTROL = "control"


def format_job_id(cluster: int, proc: int) -> str:
    """``42, 0`` -> ``"42.0"``."""
    return f"{cluster}.{proc}"


def parse_job_id(text: str) -> tuple[int, int | None]:
    """``"42.0"`` -> ``(42, 0)``; a bare cluster ``"42"`` -> ``(42, None)``."""
    match = _JOB_ID.match(text)
    if not match:
        raise ValueError(f"not a job id: {text!r} (expected CLUSTER or CLUSTER.PROC)")
    cluster, proc = int(match[1]), None if match[2] is None else int(match[2])
    if max(cluster, proc or 0) > INT64_MAX:
        raise ValueError(f"not a job id: {text!r} (number out of range)")
    return cluster, proc


_JOB_ID = re.compile(r"^\s*([0-9]+)(?:\.([0-9]+))?\s*$")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]B?)?", re.IGNORECASE)
_UNIT_BYTES = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _quantity_bytes(value: str, default_unit: str, what: str) -> Fraction:
    m = _QUANTITY.fullmatch(value.strip())
    if m is None:
        raise ValueError(
            f"invalid {what} {value!r}: expected a number with an optional unit"
            " K, KB, M, MB, G, GB, T or TB"
        )
    unit = (m.group(2) or default_unit)[0].upper()
    amount = Fraction(m.group(1)) * _UNIT_BYTES[unit]
    if amount <= 0:
        raise ValueError(f"invalid {what} {value!r}: must be greater than 0")
    return amount


def parse_memory_mb(value: str) -> int:
    """``request_memory``: a bare number is MiB; K/M/G/T(B) are binary units. Rounds up."""
    return math.ceil(_quantity_bytes(value, "M", "memory size") / 2**20)


def parse_disk_kb(value: str) -> int:
    """``request_disk``: a bare number is KiB; K/M/G/T(B) are binary units. Rounds up."""
    return math.ceil(_quantity_bytes(value, "K", "disk size") / 2**10)


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    """One GPU on a worker."""

    index: int
    name: str
    memory_mb: int
    #: CUDA compute capability (8.0 for an A100); 0.0 where unknown.
    capability: float = 0.0


@dataclass(frozen=True, kw_only=True)
class WorkerMetrics:
    """What a worker reports about its machine at registration and in heartbeats."""

    cores: int
    threads: int
    memory_total_mb: int
    memory_available_mb: int
    disk_total_mb: int
    disk_free_mb: int
    load_avg: list[float]
    gpus: list[GpuInfo] = field(default_factory=list)
    os: str = ""
    arch: str = ""
    hostname: str = ""
    #: How the worker ends every process of a job (see worker_node.reaper).
    process_tracking: str = ""
    #: How a root worker starts its jobs: "launchers" (the fast path), or "slow: "
    #: and why it cannot use them; "direct" for a worker that runs jobs as itself.
    job_start: str = ""
    #: The work directory's disk has less free space than the worker must keep: the
    #: worker takes no job until it has room (see ``worker_node.disk``).
    disk_full: bool = False
    #: Machine attributes the worker advertises to ``requirements`` beyond its
    #: resources, by HTCondor's names: ``OpSysAndVer``, ``HasDocker``, ... and those of
    #: its ``worker.toml`` (see ``worker_node.machine_attributes``).
    attributes: dict[str, bool | int | float | str] = field(default_factory=dict)
    #: The peak resident memory (MB, the whole process tree) of each attempt running
    #: there so far, by ``JOB_ID:ATTEMPT``: the job's ``MemoryUsage``.
    job_memory_mb: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class InputFile:
    """A file staged into a job's sandbox as ``name``; the spool keeps it once per
    cluster as ``<cluster>/input/<sha256>``."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class CheckpointFile:
    """A job's latest checkpoint: a tar of its checkpoint files, kept in the spool as
    ``<cluster>/checkpoints/<proc>/<name>`` (see :mod:`scheduler.checkpoints`)."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What to run: one proc of a submit description, as stored by the scheduler.

    File names on the worker side are bare names in the sandbox. ``output``,
    ``error``, ``log`` and ``initialdir`` are paths on the submitting machine,
    kept so that results can be put where the submit file said.
    """

    executable: str
    arguments: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    inputs: list[InputFile] = field(default_factory=list)
    transfer_output_files: list[str] | None = None
    request_cpus: int = 1
    request_memory: int | None = None
    request_disk: int | None = None
    request_gpus: int = 0
    #: A ``requirements`` expression over worker attributes (see ``requirements.py``).
    requirements: str | None = None
    priority: int = 0
    machine: str | None = None
    notify_user: str | None = None
    notification: str = "Never"
    #: One mail per job even in a cluster of many (default: one digest per cluster).
    notification_per_job: bool = False
    output: str | None = None
    error: str | None = None
    log: str | None = None
    initialdir: str | None = None
    #: Reruns after a non-zero exit or a kill (HTCondor's ``max_retries``).
    max_retries: int = 0
    #: Seconds a run may last before the job is held (``allowed_job_duration``).
    allowed_job_duration: int | None = None
    #: The queue variables of the proc's item and the values its $RANDOM_* drew.
    params: dict[str, str] = field(default_factory=dict)
    #: The job's result is this output file's content (else its last line of stdout).
    result_file: str | None = None
    #: Queued held (``hold = true``): the job waits for ``drelease``.
    hold: bool = False
    #: Job attributes by ClassAd name (``+Name``, ``MY.Name`` and the submit keys
    #: stored as attributes, such as ``JobBatchName`` or ``PeriodicRemove``), each a
    #: ClassAd expression as text.
    attributes: dict[str, str] = field(default_factory=dict)
    #: URL inputs (``transfer_input_files``), fetched by the worker into the sandbox
    #: as the last part of their path (see ``worker_node.url_inputs``).
    url_inputs: list[str] = field(default_factory=list)


def shared_specs(specs: list[JobSpec]) -> list[JobSpec]:
    """``specs`` with each run of equal ones made one object. The procs of most
    clusters differ in nothing but their number, and a spec's wire form (and the
    scheduler's stored text of it) is made once per object, not once per job."""
    out: list[JobSpec] = []
    for spec in specs:
        out.append(out[-1] if out and out[-1] == spec else spec)
    return out


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """One line of a job's story (submitted, executing, terminated, held, ...)."""

    time: float
    event: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class JobInfo:
    """A job as users see it: ``dq --json`` and the Python API use these fields."""

    id: str
    cluster: int
    proc: int
    owner: str
    state: str
    submit_time: float
    start_time: float | None = None
    end_time: float | None = None
    worker: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    wall_time: float | None = None
    cpu_time: float | None = None
    num_starts: int = 0
    hold_reason: str | None = None
    #: HTCondor's HoldReasonCode and HoldReasonSubCode where the hold set them (a job
    #: policy's: code 3); None: they follow from ``hold_reason``.
    hold_code: int | None = None
    hold_subcode: int | None = None
    executable: str = ""
    arguments: list[str] = field(default_factory=list)
    output_files: list[str] = field(default_factory=list)
    #: Delivery of the job's mail notification: "" (none asked or due yet), "pending",
    #: "sent" or "failed", with the last error after a colon.
    mail: str = ""
    #: Seconds of every run together, retries and lost attempts included (history only).
    total_run_time: float | None = None
    #: The queue variables and random draws of the job (see :attr:`JobSpec.params`).
    params: dict[str, str] = field(default_factory=dict)
    #: The numbers the job produced (a single number is ``{"value": x}``), once completed.
    result: dict[str, float] | None = None
    #: Why a finished job has no result (its exit status, or what it printed).
    result_error: str | None = None
    #: The job's attributes (see :attr:`JobSpec.attributes`).
    attributes: dict[str, str] = field(default_factory=dict)
    #: What the job asked for (see :class:`JobSpec`; memory in MB, disk in KiB).
    request_cpus: int = 1
    request_memory: int | None = None
    request_disk: int | None = None
    request_gpus: int = 0
    #: HTCondor's ``MemoryUsage``: the peak resident memory (MB) of its running or
    #: last attempt, as its worker measured it (None: not measured yet).
    memory_usage: int | None = None
    #: Checkpoints the job has stored (``NumCkpts``), and the time and bytes of the
    #: latest; seconds of runs lost to evictions since the checkpoint before each.
    checkpoints: int = 0
    checkpoint_time: float | None = None
    checkpoint_size: int | None = None
    wall_lost: float = 0.0
    #: Starts that began from a checkpoint (of ``num_starts``).
    resumes: int = 0
    #: Reruns after a failed run (``max_retries``, HTCondor's ``JobMaxRetries``).
    max_retries: int = 0


@dataclass(frozen=True, kw_only=True)
class PushedResults:
    """A finished job's record and its small files (as ``JobResults.files`` holds a
    job's), pushed with its cluster's end (see ``ClusterDone``)."""

    job: JobInfo
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """A worker as ``dstat --json`` and the Python API show it."""

    id: int
    name: str
    state: str
    address: str
    slots_total: int
    slots_used: int
    cpus_total: int
    cpus_used: int
    memory_total_mb: int
    memory_used_mb: int
    gpus_total: int
    gpus_used: int
    metrics: WorkerMetrics
    last_heartbeat: float
    connected_since: float
    #: How it authenticated: "credential" (its own) or "pool secret".
    auth: str = ""


@dataclass(frozen=True, kw_only=True)
class FtpGrant:
    """Short-lived FTP credentials confined to the directories that one step needs."""

    host: str
    port: int
    user: str
    password: str
    #: Set when the spool speaks FTPS: the certificate the client must see.
    tls_fingerprint: str | None = None


#: The file at the top of the spool that holds :attr:`SpoolShare.identity` (mode 0600).
SPOOL_IDENTITY_FILE = ".identity"


@dataclass(frozen=True, kw_only=True)
class SpoolShare:
    """Where the scheduler's spool lies on its own file system. A worker that finds
    the spool there, holding ``identity``, shares that file system: it moves files
    to and from the spool by hard link instead of FTP."""

    path: str
    #: The secret in the spool's identity file (readable by its owner only).
    identity: str
