"""The dfarm wire protocol: frames, message types, records and the handshake.

This is the one module that the worker and control nodes import from the
scheduler package. A frame is a 4-byte big-endian length followed by one UTF-8
JSON object; every object has a ``type``; requests carry an ``id`` that their
reply echoes. Every message is a frozen dataclass registered by its ``type``::

    >>> frame = encode(QueryJobs(id=7, ids=["42.0"]))
    >>> decode(frame[4:])
    QueryJobs(id=7, ids=['42.0'], all_users=False, states=[])

Decoding checks every field against its type hint and rejects unknown types and
missing or mistyped fields with a :class:`ProtocolError` that names the field.

The first exchange on a connection is the handshake::

    peer -> Hello(role, version, name, nonce)
    scheduler -> Challenge(nonce)                  or Error, then close
    peer -> Auth(digest = HMAC(key, "peer|..."))
    scheduler -> Welcome(digest = HMAC(key, "scheduler|..."), ...)   or Error, then close

The key is the worker pool secret for workers and the user's key (derived from
the user's token by :func:`user_key`) for control clients. Both sides prove that
they hold the key, and both nonces enter the digest, so a recorded handshake
cannot be replayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import socket
import struct
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Self, Union

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7070
#: Largest frame accepted by default (bytes of JSON).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")


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


class Role(enum.StrEnum):
    """What a peer is. Each message type lists the roles that may send it."""

    WORKER = "worker"
    CONTROL = "control"


def format_job_id(cluster: int, proc: int) -> str:
    """``42, 0`` -> ``"42.0"``."""
    return f"{cluster}.{proc}"


def parse_job_id(text: str) -> tuple[int, int | None]:
    """``"42.0"`` -> ``(42, 0)``; a bare cluster ``"42"`` -> ``(42, None)``."""
    cluster, dot, proc = text.strip().partition(".")
    try:
        if not dot:
            return int(cluster), None
        return int(cluster), int(proc)
    except ValueError:
        raise ValueError(f"not a job id: {text!r} (expected CLUSTER or CLUSTER.PROC)") from None


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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    """One GPU on a worker."""

    index: int
    name: str
    memory_mb: int


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


@dataclass(frozen=True, kw_only=True)
class InputFile:
    """A file staged into a job's sandbox as ``name``; the spool keeps it once per
    cluster as ``<cluster>/input/<sha256>``."""

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
    priority: int = 0
    machine: str | None = None
    notify_user: str | None = None
    notification: str = "Never"
    output: str | None = None
    error: str | None = None
    log: str | None = None
    initialdir: str | None = None


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
    executable: str = ""
    arguments: list[str] = field(default_factory=list)
    output_files: list[str] = field(default_factory=list)


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
    memory_used_mb: int
    metrics: WorkerMetrics
    last_heartbeat: float
    connected_since: float


@dataclass(frozen=True, kw_only=True)
class FtpGrant:
    """Short-lived FTP credentials confined to the directories that one step needs."""

    host: str
    port: int
    user: str
    password: str


# --------------------------------------------------------------------------- messages

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
    """The scheduler's nonce, to be answered with :class:`Auth`."""

    type: ClassVar[str] = "challenge"
    nonce: str


@dataclass(frozen=True, kw_only=True)
class Auth(Message):
    """The peer's proof that it holds the key."""

    type: ClassVar[str] = "auth"
    roles = BOTH
    digest: str


@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    """The handshake succeeded; ``digest`` proves the scheduler holds the key too."""

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
    """Queue the procs of a reserved cluster, whose inputs are uploaded.

    Done atomically: either every proc is queued or none is.
    """

    type: ClassVar[str] = "submit_jobs"
    roles = CONTROL
    cluster: int
    submit_file: str
    jobs: list[JobSpec]


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


@dataclass(frozen=True, kw_only=True)
class JobList(Message):
    type: ClassVar[str] = "job_list"
    jobs: list[JobInfo]


@dataclass(frozen=True, kw_only=True)
class QueryWorkers(Message):
    type: ClassVar[str] = "query_workers"
    roles = CONTROL


@dataclass(frozen=True, kw_only=True)
class WorkerList(Message):
    type: ClassVar[str] = "worker_list"
    workers: list[WorkerInfo]


@dataclass(frozen=True, kw_only=True)
class Subscribe(Message):
    """Push a :class:`JobUpdate` for every state change of these clusters' jobs."""

    type: ClassVar[str] = "subscribe"
    roles = CONTROL
    clusters: list[int]


@dataclass(frozen=True, kw_only=True)
class JobUpdate(Message):
    """Pushed by the scheduler: a job of a subscribed cluster changed state."""

    type: ClassVar[str] = "job_update"
    job: JobInfo


@dataclass(frozen=True, kw_only=True)
class FetchResults(Message):
    """Read-only FTP access to the results of the caller's finished jobs."""

    type: ClassVar[str] = "fetch_results"
    roles = CONTROL
    ids: list[str]


@dataclass(frozen=True, kw_only=True)
class JobResults(Message):
    """Where each job's results lie: ``<cluster>/<proc>/`` under the grant's root."""

    type: ClassVar[str] = "job_results"
    download: FtpGrant
    jobs: list[JobInfo]
    specs: dict[str, JobSpec]
    events: dict[str, list[JobEvent]]


# worker -> scheduler --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Register(Message):
    """A worker offers its slots. ``running`` lists attempts it still runs."""

    type: ClassVar[str] = "register"
    roles = WORKER
    slots: int
    cpus: int
    memory_mb: int
    gpus: int
    metrics: WorkerMetrics
    running: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Registered(Message):
    type: ClassVar[str] = "registered"
    worker_id: int
    heartbeat_interval: float


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Message):
    """The worker is alive; fresh machine metrics."""

    type: ClassVar[str] = "heartbeat"
    roles = WORKER
    metrics: WorkerMetrics


@dataclass(frozen=True, kw_only=True)
class JobStarted(Message):
    """The job's process was started (inputs are staged)."""

    type: ClassVar[str] = "job_started"
    roles = WORKER
    job_id: str
    attempt: int


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
    #: Set when the attempt failed for a reason other than the job's own exit
    #: (inputs could not be staged, the executable could not start, a declared
    #: output is missing): the job is put on hold with this reason.
    failure: str | None = None


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


@dataclass(frozen=True, kw_only=True)
class KillJob(Message):
    """Stop an attempt the scheduler no longer expects (it was reassigned or removed)."""

    type: ClassVar[str] = "kill_job"
    job_id: str
    attempt: int
    reason: str


# --------------------------------------------------------------------------- encoding


def to_wire(value: Any) -> Any:
    """A message or record as plain JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Message):
            out["type"] = value.type
            if out.get("id") is None:
                out.pop("id")
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def encode(message: Message) -> bytes:
    """A whole frame: length header and JSON body."""
    body = json.dumps(to_wire(message), separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """Parse and validate one frame body; raises :class:`ProtocolError`."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    return from_wire(cls, data, kind)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def from_wire(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from JSON data, checking every field's type."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise ProtocolError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing field {name!r}")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ProtocolError as exc:
                errors.append(str(exc))
        raise ProtocolError(errors[0] if errors else f"{where}: must not be null")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_wire(hint, value, where)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ProtocolError(f"{where}: expected {getattr(hint, '__name__', hint)}")


# --------------------------------------------------------------------------- streams


async def read_message(reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME) -> Message:
    """Read one frame; raises :class:`ProtocolError` or ``asyncio.IncompleteReadError``."""
    header = await reader.readexactly(HEADER.size)
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return decode(await reader.readexactly(length))


async def write_message(writer: asyncio.StreamWriter, message: Message) -> None:
    writer.write(encode(message))
    await writer.drain()


def recv_message(sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> Message:
    """Blocking read of one frame from a socket (for the client library)."""
    (length,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return decode(_recv_exactly(sock, length))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("the scheduler closed the connection")
        chunks += chunk
    return bytes(chunks)


# --------------------------------------------------------------------------- authentication


def new_nonce() -> str:
    return secrets.token_hex(16)


def handshake_digest(key: bytes, side: str, hello: Hello, server_nonce: str) -> str:
    """HMAC-SHA256 binding the side ("peer" or "scheduler"), role, name and both nonces."""
    text = f"dfarm/{PROTOCOL_VERSION}|{side}|{hello.role}|{hello.name}|{hello.nonce}|{server_nonce}"
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class HandshakeError(Exception):
    """The scheduler refused the peer, or could not prove it holds the key."""


def answer_challenge(key: bytes, hello: Hello, reply: Message) -> Auth:
    """The peer's answer to the scheduler's reply to ``hello``."""
    if isinstance(reply, Error):
        raise HandshakeError(reply.message)
    if not isinstance(reply, Challenge):
        raise HandshakeError(f"expected challenge, got {reply.type}")
    return Auth(digest=handshake_digest(key, "peer", hello, reply.nonce))


def verify_welcome(key: bytes, hello: Hello, challenge: Challenge, reply: Message) -> Welcome:
    """Check that the scheduler accepted us and proved it holds the key too."""
    if isinstance(reply, Error):
        raise HandshakeError(reply.message)
    if not isinstance(reply, Welcome):
        raise HandshakeError(f"expected welcome, got {reply.type}")
    expected = handshake_digest(key, "scheduler", hello, challenge.nonce)
    if not hmac.compare_digest(reply.digest, expected):
        raise HandshakeError("the scheduler could not prove that it holds the key")
    return reply


def user_key(token: str) -> bytes:
    """The HMAC key of a user token; the scheduler stores only this hash."""
    return hashlib.sha256(token.encode()).digest()


def token_user(token: str) -> str:
    """The user name a token belongs to (tokens read ``NAME:SECRET``)."""
    name, sep, secret = token.strip().rpartition(":")
    if not sep or not name or not secret:
        raise ValueError("malformed token (expected NAME:SECRET)")
    return name


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The worker pool secret from a file (surrounding whitespace ignored)."""
    data = Path(path).read_bytes().strip()
    if not data:
        raise ValueError(f"secret file {path} is empty")
    return data


# --------------------------------------------------------------------------- access record

ACCESS_FILE = "access.json"


def default_home() -> Path:
    """The state directory: ``$DFARM_HOME``, else ``~/.dfarm``."""
    return Path(os.environ.get("DFARM_HOME", "~/.dfarm")).expanduser()


@dataclass(frozen=True, kw_only=True)
class AccessRecord:
    """Where a scheduler listens, written to ``<home>/access.json``; ``token`` is set
    only in the copy that ``dfarm up`` writes for the local user."""

    host: str
    port: int
    version: int = PROTOCOL_VERSION
    token: str | None = None

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only when it holds a token."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_wire(self), indent=2) + "\n")
        tmp.chmod(0o600 if self.token else 0o644)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AccessRecord:
        try:
            return from_wire(cls, json.loads(path.read_text()), str(path))
        except (OSError, ValueError, ProtocolError) as exc:
            raise ProtocolError(f"cannot read access record {path}: {exc}") from None
