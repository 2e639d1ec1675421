"""Self-checkpointing jobs (HTCondor's ``checkpoint_exit_code``), the worker's side.

A job with a checkpoint exit code that exits with it has its checkpoint files
(``transfer_checkpoint_files``, by default every file of its sandbox but the
inputs it left as staged) packed into one tar, linked into the spool (where the
worker shares its file system) or uploaded over FTP, and committed by the
scheduler (see :mod:`scheduler.checkpoints`); then it starts again in the same
directory. A job started with a checkpoint finds the checkpoint's files in its
sandbox before it starts. A draining worker asks each such job to checkpoint with
its ``kill_sig`` and gives it ``job_max_vacate_time`` seconds to do so (see
:func:`vacate`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import hashlib
import logging
import os
import signal
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from scheduler import protocol as p
from scheduler.transport.ftp import retrieve
from scheduler.transport.hashing import HashingWriter
from worker_node import sandbox_files
from worker_node.identity import Account
from worker_node.spool_link import SpoolLink
from worker_node.transfer import TransferError, ftp_session, upload

if TYPE_CHECKING:
    from worker_node.runner import Attempt
    from worker_node.sandbox import Sandbox

log = logging.getLogger(__name__)

#: HTCondor's default ``JobMaxVacateTime`` (its ``MACHINE_MAX_VACATE_TIME``), seconds.
DEFAULT_VACATE_TIME = 600.0


@dataclass(frozen=True)
class Policy:
    """How a job checkpoints, from its attributes."""

    exit_code: int
    #: Names of the files to keep (None: the whole sandbox).
    files: list[str] | None = None
    kill_sig: int = signal.SIGTERM
    vacate_time: float = DEFAULT_VACATE_TIME


def _unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def parse_signal(text: str) -> int:
    """A signal by name (``SIGTERM``, ``TERM``) or number; ValueError otherwise."""
    text = _unquoted(text).strip().upper()
    if text.isdigit() and 0 < int(text) < signal.NSIG:
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def policy(attributes: dict[str, str]) -> Policy | None:
    """The job's checkpoint policy; None when it does not checkpoint itself. Raises
    ValueError naming the submit key whose value is not usable."""
    code = attributes.get("SuccessCheckpointExitCode")
    if code is None:
        return None
    try:
        exit_code = int(_unquoted(code))
    except ValueError:
        raise ValueError(f"checkpoint_exit_code: {code!r} is not an integer") from None
    if not 1 <= exit_code <= 255:
        raise ValueError(f"checkpoint_exit_code: {exit_code} is not an exit code (1 to 255)")
    files = None
    if "TransferCheckpoint" in attributes:
        names = _unquoted(attributes["TransferCheckpoint"]).replace(",", " ").split()
        for name in names:
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"transfer_checkpoint_files: {name!r} is not below the sandbox")
        files = names
    kill_sig: int = signal.SIGTERM
    if "KillSig" in attributes:
        try:
            kill_sig = parse_signal(attributes["KillSig"])
        except ValueError as exc:
            raise ValueError(f"kill_sig: {exc}") from None
    vacate = DEFAULT_VACATE_TIME
    if "JobMaxVacateTime" in attributes:
        try:
            vacate = float(_unquoted(attributes["JobMaxVacateTime"]))
        except ValueError:
            raise ValueError(
                f"job_max_vacate_time: {attributes['JobMaxVacateTime']!r} is not a number"
            ) from None
        if vacate < 0:
            raise ValueError("job_max_vacate_time: a negative time")
    return Policy(exit_code, files, kill_sig, vacate)


class _Hashing:
    """A file written through, hashed in the same pass."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, block: bytes) -> int:
        self.digest.update(block)
        self.size += len(block)
        return self.raw.write(block)

    def tell(self) -> int:
        return self.size


def pack(
    directory: Path, staged: dict[str, int], files: list[str] | None, out: Path
) -> tuple[str, int]:
    """Write a tar of the checkpoint files of ``directory`` to ``out``: ``files``, or
    every entry but the inputs still linked as staged (name -> inode). Links are
    stored as links, never followed. Returns the tar's SHA-256 and size."""
    top = sandbox_files.open_dir(directory)
    try:
        if files is None:
            names = sorted(
                entry.name for entry in os.scandir(top) if staged.get(entry.name) != entry.inode()
            )
        else:
            names = files
    finally:
        os.close(top)
    with open(out, "wb") as raw:
        hashed = _Hashing(raw)
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=hashed, mode="w", format=tarfile.PAX_FORMAT, copybufsize=1 << 20
        ) as tar:
            for name in names:
                path = directory / name
                if not os.path.lexists(path):
                    if files is not None:
                        raise FileNotFoundError(f"transfer_checkpoint_files: {name!r} is missing")
                    continue
                tar.add(path, arcname=name, recursive=True)
    return hashed.digest.hexdigest(), hashed.size


def unpack(archive: Path, directory: Path, staged: dict[str, int], account: Account | None) -> None:
    """Put the files of a checkpoint into ``directory`` (an input of the same name is
    replaced, and no longer counts as staged), owned by ``account`` when given.
    Names that would leave the directory and links that point outside are refused
    (tarfile's ``data`` filter)."""
    with tarfile.open(archive, "r") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts:
                raise tarfile.TarError(f"{member.name!r} is not below the sandbox")
            target = directory / member.name
            top = parts[0]
            if top in staged:
                staged.pop(top)
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    target.unlink()
            elif not member.isdir() and os.path.lexists(target) and not target.is_dir():
                target.unlink()  # never written through: it may be a link to the cache
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
                tar.extract(member, directory, filter="data")
            else:
                tar.extract(_as_data(member, directory), directory)
            if account is not None:
                os.lchown(target, account.uid, account.gid)


def _as_data(member: tarfile.TarInfo, directory: Path) -> tarfile.TarInfo:
    """``member`` as tarfile's ``data`` filter passes it, for the Pythons without
    it (the interpreter a worker that is not root may run): no special file, no
    link leading out of ``directory``, no setuid/setgid/sticky bit nor write by
    others, the owner the worker's. Raises tarfile.TarError."""
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise tarfile.TarError(f"{member.name!r} is a special file")
    top = os.path.realpath(directory)
    if member.issym() or member.islnk():
        base = os.path.dirname(member.name) if member.issym() else ""
        if os.path.isabs(member.linkname):
            raise tarfile.TarError(f"{member.name!r} links to an absolute path")
        target = os.path.realpath(os.path.join(top, base, member.linkname))
        if os.path.commonpath([top, target]) != top:
            raise tarfile.TarError(f"{member.name!r} links outside the sandbox")
    checked = copy.copy(member)
    checked.mode = member.mode & 0o755 | (0o600 if member.isreg() else 0)
    checked.uid, checked.gid = os.geteuid(), os.getegid()
    checked.uname = checked.gname = ""
    return checked


#: Runs a transfer with the attempt's grant, again with a new one if the scheduler
#: was lost (``worker_node.runner._with_grant``).
WithGrant = Callable[["Attempt", Callable[[p.FtpGrant], Any]], Any]

#: Sends a ``Checkpointed`` to the scheduler and waits for its answer (None: the
#: connection was lost first).
Commit = Callable[[p.Checkpointed], p.Message | None]


class Keeper:
    """The checkpoints of one attempt: restores the latest before the first run,
    stores each new one."""

    def __init__(
        self,
        msg: p.RunJob,
        rules: Policy,
        scratch: Path,
        commit: Commit,
        spool: SpoolLink | None = None,
    ):
        self.msg, self.policy, self.scratch, self.commit = msg, rules, scratch, commit
        #: The spool where this worker shares its file system: checkpoints are linked.
        self.spool = spool
        self.stored = 0
        #: Set when the attempt is to end after its next checkpoint (its worker drains).
        self.vacating = False
        #: Set once that checkpoint is committed: the scheduler has requeued the job.
        self.vacated = False

    def restore(self, grant: p.FtpGrant, directory: Path, staged: dict[str, int],
                account: Account | None) -> None:  # fmt: skip
        """Fetch the job's latest checkpoint with ``grant`` and unpack it into
        ``directory``; raises TransferError when it cannot be had whole."""
        latest = self.msg.checkpoint
        if latest is None:
            return
        cluster, proc = p.parse_job_id(self.msg.job_id)
        assert proc is not None  # a RunJob names one job
        fd, name = tempfile.mkstemp(prefix="restore-", suffix=".tar", dir=self.scratch)
        os.close(fd)
        archive = Path(name)
        try:
            with open(archive, "wb") as f, HashingWriter(f.write) as hashed:
                copied = self.spool is not None and self.spool.get_checkpoint(
                    cluster, proc, latest.name, hashed
                )
                if not copied:
                    with ftp_session(grant) as ftp:
                        retrieve(ftp, f"checkpoints/{proc}/{latest.name}", hashed)
            if hashed.digest.hexdigest() != latest.sha256:
                raise TransferError(f"checkpoint {latest.name} arrived damaged")
            try:
                unpack(archive, directory, staged, account)
            except (OSError, tarfile.TarError) as exc:
                raise TransferError(f"cannot unpack checkpoint {latest.name}: {exc}") from None
        finally:
            archive.unlink(missing_ok=True)

    def store(self, grant: p.FtpGrant, directory: Path, staged: dict[str, int],
              wall: float) -> p.Message | None:  # fmt: skip
        """Pack, upload and commit a checkpoint of ``directory``; returns the
        scheduler's answer (None: the connection was lost before it came)."""
        cluster, proc = p.parse_job_id(self.msg.job_id)
        assert proc is not None  # a RunJob names one job
        self.stored += 1
        name = f"{self.msg.attempt}-{self.stored}-{time.time_ns()}.tar"
        archive = self.scratch / f"ckpt-{self.msg.job_id}-{name}"
        try:
            sha, size = pack(directory, staged, self.policy.files, archive)
            with open(archive, "rb") as f:
                if not self._link(cluster, proc, name, f):
                    with ftp_session(grant) as ftp:
                        upload(ftp, f, f"checkpoints/{proc}/{name}")
        finally:
            archive.unlink(missing_ok=True)
        vacating = self.vacating
        message = p.Checkpointed(
            job_id=self.msg.job_id,
            attempt=self.msg.attempt,
            file=p.CheckpointFile(name=name, sha256=sha, size=size),
            wall_time=round(wall, 3),
            vacating=vacating,
        )
        reply = self.commit(message)
        # Asked to vacate only after this was sent: the worker gives the job back.
        self.vacated = vacating and isinstance(reply, p.Ok)
        return reply

    def _link(self, cluster: int, proc: int, name: str, f: BinaryIO) -> bool:
        """Put the checkpoint into the shared spool; False: it goes over FTP."""
        if self.spool is None:
            return False
        try:
            self.spool.put_checkpoint(cluster, proc, name, f)
            return True
        except OSError as exc:
            log.warning("%s: cannot put its checkpoint into the spool (%s): using FTP",
                        self.msg.job_id, exc)  # fmt: skip
            f.seek(0)
            return False


def restore(
    attempt: Attempt,
    sandbox: Sandbox,
    account: Account | None,
    commit: Commit,
    with_grant: WithGrant,
    spool: SpoolLink | None = None,
) -> str | None:
    """Give a job that checkpoints itself its keeper (its checkpoints linked with the
    ``spool`` where it is shared, else moved over FTP), and its latest checkpoint's
    files; returns why it cannot start, if it cannot."""
    msg = attempt.msg
    try:
        rules = policy(msg.spec.attributes)
    except ValueError as exc:
        return str(exc)
    if rules is None:
        return None
    keeper = attempt.keeper = Keeper(msg, rules, sandbox.root, commit, spool)
    if msg.checkpoint is None:
        return None
    try:
        with_grant(attempt, lambda grant: keeper.restore(
            grant, sandbox.directory, sandbox.staged, account))  # fmt: skip
    except TransferError as exc:
        return f"{p.NOT_STARTED[0]}: {exc}"
    return None


def stored(
    attempt: Attempt,
    sandbox: Sandbox,
    status: int | None,
    failure: str | None,
    wall: float,
    with_grant: WithGrant,
) -> bool:
    """After a run: if it exited with the job's checkpoint exit code, store the
    checkpoint; True when the job is to start again in its directory."""
    keeper = attempt.keeper
    if keeper is None or failure or attempt.kill_reason or attempt.limit_exceeded:
        return False
    if status != keeper.policy.exit_code:
        return False

    def store(grant: p.FtpGrant) -> p.Message:
        reply = keeper.store(grant, sandbox.directory, sandbox.staged, wall)
        if reply is None:  # the scheduler was lost before it answered: again
            raise TransferError("the scheduler did not answer the checkpoint")
        return reply

    try:
        reply = with_grant(attempt, store)
    except TransferError as exc:
        log.warning("job %s: checkpoint not stored (%s): it starts again from its directory",
                    attempt.msg.job_id, exc)  # fmt: skip
        return attempt.kill_reason is None and not keeper.vacating
    except OSError as exc:  # its files cannot be packed (a declared one is missing)
        attempt.kill_reason = f"its checkpoint could not be made: {exc}"
        return False
    if isinstance(reply, p.Error) and reply.code == "stale":
        attempt.kill_reason = reply.message
        return False
    if isinstance(reply, p.Error):
        log.warning("job %s: %s", attempt.msg.job_id, reply.message)
    if keeper.vacating:
        attempt.kill_reason = "vacated: its checkpoint is stored, it runs again elsewhere"
        return False
    return attempt.kill_reason is None


class Requests:
    """Requests of slot threads (checkpoints to commit) sent on the worker's loop,
    each thread waiting for its answer."""

    def __init__(self, send: Callable[[p.Message], bool], ids: Iterator[int]):
        #: Sends on the current connection; False when there is none.
        self._send = send
        self._ids = ids
        self._waiting: dict[int, concurrent.futures.Future[p.Message | None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def ask(self, message: p.Message) -> p.Message | None:
        """From a slot thread: send ``message``, return its answer (None: the
        connection was lost first)."""
        assert self.loop is not None
        answer: concurrent.futures.Future[p.Message | None] = concurrent.futures.Future()

        def send() -> None:
            request_id = next(self._ids)
            self._waiting[request_id] = answer
            if not self._send(message.with_id(request_id)):
                self._waiting.pop(request_id)
                answer.set_result(None)

        self.loop.call_soon_threadsafe(send)
        return answer.result()

    def answer(self, message: p.Message) -> bool:
        """On the loop: take ``message`` if it answers a request; True if it did."""
        waiting = self._waiting.pop(message.id, None) if message.id is not None else None
        if waiting is None:
            return False
        waiting.set_result(message)
        return True

    def connection_lost(self) -> None:
        """On the loop: no answer will come to the requests sent."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.set_result(None)


def vacate(attempt_keeper: Keeper, send_signal: Callable[[int], None]) -> float:
    """Ask a job to checkpoint because its worker drains: its ``kill_sig`` now; its
    next checkpoint ends the attempt. Returns the seconds it has to do so."""
    attempt_keeper.vacating = True
    send_signal(attempt_keeper.policy.kill_sig)
    return attempt_keeper.policy.vacate_time
