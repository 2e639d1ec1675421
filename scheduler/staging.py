"""The spool and the embedded FTP server that moves files in and out of it.

Layout of the spool::

    spool/<cluster>/input/     inputs shared by every proc, uploaded once at submit
    spool/<cluster>/<proc>/    large results of one job: stdout, stderr, outputs/

Small files (up to ``INLINE_LIMIT``) travel inside messages instead: small
results are kept in SQLite with the job's state, so most jobs never create a
directory here.

The FTP server (pyftpdlib) runs in its own thread and decides nothing: every
login is a :class:`scheduler.ftp_grants.Grant` issued by the scheduler for one step (an upload, a
job's run, a fetch), with a random user name and password, an expiry, and
rules naming the only directories it may touch and how. pyftpdlib's
``AbstractedFS`` resolves symlinks and refuses any path outside the grant's
root; the rules narrow that further.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import logging
import os
import secrets
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from scheduler.arrivals import ArrivalError, Arrivals, clear_interrupted, remove_uploads
from scheduler.ftp_grants import (
    PROBE_DIR,
    PROBE_PERMS,
    READ,
    READ_WRITE,
    WRITE,
    Grant,
    GrantAuthorizer,
    Rule,
)
from scheduler.node_setup.private_dir import make_private_dir
from scheduler.private import make_private_tree
from scheduler.protocol import (
    INLINE_LIMIT,
    SPOOL_IDENTITY_FILE,
    FtpGrant,
    InputFile,
    JobSpec,
    SpoolShare,
    pack_bytes,
    unpack_bytes,
)
from scheduler.result_fds import ResultFdServer

log = logging.getLogger(__name__)


class QuotaDTPHandler(DTPHandler):
    """A data channel that stops an upload once its grant's byte budget is spent
    (and deletes what it wrote), so that no user fills the scheduler's disk. The
    bytes count as they arrive, against the budget all the grant's transfers share."""

    _counted = 0

    def handle_read(self) -> None:
        super().handle_read()
        if not self.receive or self._closed:
            return
        new, self._counted = self.tot_bytes_received - self._counted, self.tot_bytes_received
        room = self.cmd_channel.authorizer.received(self.cmd_channel.username, new)
        if room is not None and room < 0:
            path = self.file_obj.name
            self._resp = (
                "552 Upload limit exceeded: this upload went past what this grant may "
                "upload; transfer aborted.",
                log.warning,
            )
            self.close()
            with contextlib.suppress(OSError):
                os.remove(path)

    handle_read_event = handle_read  # as DTPHandler does, which would bypass the above

    def handle_error(self) -> None:
        """An upload that found the disk full tells the scheduler (see ``Spool``)."""
        error = sys.exc_info()[1]
        cause = error.args[0] if error is not None and error.args else error
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            self.spool.on_disk_full(cause)
        super().handle_error()


if TYPE_CHECKING:
    # The mixin always comes before pyftpdlib's handler, whose methods it calls.
    from pyftpdlib.handlers import FTPHandler as _HandlerBase
else:
    _HandlerBase = object


class UploadMixin(_HandlerBase):
    """Refuses an upload onto an existing file where the grant says so (a stored
    input is never rewritten in place, since workers on the spool's file system
    link it into sandboxes), and tells :class:`Arrivals` when uploads start and end."""

    arrivals: Arrivals
    authorizer: GrantAuthorizer

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        if not self.authorizer.may_replace(self.username) and os.path.lexists(file):
            self._restart_position = 0  # a REST before it is spent, as pyftpdlib does
            self.respond("550 The file exists; an upload never replaces a stored file.")
            return None
        self.arrivals.started(file)  # before the reply that lets the client go on
        opened = super().ftp_STOR(file, mode)
        if opened is None:
            self.arrivals.ended(file)
        return opened

    def on_file_received(self, file: str) -> None:
        self.arrivals.ended(file)

    def on_incomplete_file_received(self, file: str) -> None:
        self.arrivals.ended(file)


class PrivateFS(AbstractedFS):
    """What FTP uploads create is the scheduler's account's alone (files 0600,
    folders 0700), whatever the umask."""

    def open(self, filename: str, mode: str) -> IO[Any]:
        if set(mode) & set("wa+"):
            os.close(os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            f = open(filename, mode)  # noqa: SIM115 - pyftpdlib closes it
            os.fchmod(f.fileno(), 0o600)
            return f
        return super().open(filename, mode)

    def mkdir(self, path: str) -> None:
        if os.path.dirname(path) == os.path.normpath(self.root):
            # A DAG node's cluster has no folder until its first large result.
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)
        os.mkdir(path, 0o700)

    # A grant whose inputs are another cluster's (the jobs of a DAG's nodes read the
    # DAG's): its ``<root>/input`` is that folder, read-only by the grant's rules.

    def _inputs(self) -> tuple[str, str] | None:
        """(``<root>/input``, the folder it stands for), or None."""
        channel = self.cmd_channel
        real = channel.authorizer.inputs_of(getattr(channel, "username", ""))
        return None if real is None else (os.path.join(self.root, "input"), real)

    def ftp2fs(self, ftppath: str) -> str:
        path: str = super().ftp2fs(ftppath)
        mapped = self._inputs()
        if mapped is not None and _under(path, mapped[0]):
            return mapped[1] + path[len(mapped[0]) :]
        return path

    def fs2ftp(self, fspath: str) -> str:
        mapped = self._inputs()
        if mapped is not None and _under(os.path.normpath(fspath), mapped[1]):
            fspath = mapped[0] + os.path.normpath(fspath)[len(mapped[1]) :]
        return str(super().fs2ftp(fspath))

    def validpath(self, path: str) -> bool:
        if super().validpath(path):
            return True
        mapped = self._inputs()
        return mapped is not None and _under(self.realpath(path), self.realpath(mapped[1]))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


class TlsFiles(Protocol):
    """The certificate the FTP server serves (read-only, as a frozen dataclass has it)."""

    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...
    @property
    def fingerprint(self) -> str: ...


def _tls_handlers(tls: TlsFiles) -> tuple[type[FTPHandler], type[DTPHandler]]:
    """FTPS handlers that require TLS on the control and the data channels."""
    from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

    # TLS first, then the budget check, then the plain data channel.
    data = type("TlsQuotaDTPHandler", (TLS_DTPHandler, QuotaDTPHandler), {})
    control = type(
        "TlsSpoolHandler",
        (TLS_FTPHandler,),
        {
            "certfile": str(tls.cert),
            "keyfile": str(tls.key),
            "tls_control_required": True,
            "tls_data_required": True,
        },
    )
    return control, data


#: The folder of a cluster's spool directory that holds its jobs' checkpoints.
CHECKPOINTS = "checkpoints"


@functools.lru_cache(maxsize=4096)
def _job_dir(root: Path, cluster: int, proc: int) -> Path:
    """A job's folder, made once for the few times a job's finish asks for it."""
    return root / str(cluster) / str(proc)


class Spool:
    """The spool directory and the FTP server over it."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        passive_ports: range | None = None,
        masquerade_address: str | None = None,
        tls: TlsFiles | None = None,
    ):
        self.root = make_private_dir(root).resolve()
        #: Offered to workers: one that finds this secret at this path shares the
        #: spool's file system and links files instead of moving them over FTP.
        self.share = SpoolShare(path=str(self.root), identity=secrets.token_hex(16))
        try:
            _write_atomic(self.root / SPOOL_IDENTITY_FILE, self.share.identity.encode(), 0o600)
        except OSError as exc:  # a full disk: workers then move files over FTP
            log.warning("cannot write %s (%s): no worker links files", SPOOL_IDENTITY_FILE, exc)
        self.authorizer = GrantAuthorizer()
        #: With TLS, what grants tell peers to pin.
        self.tls_fingerprint = tls.fingerprint if tls else None
        control, data = FTPHandler, QuotaDTPHandler
        if tls is not None:
            control, data = _tls_handlers(tls)
        #: Inputs whose jobs are queued while their upload runs.
        self.arrivals = Arrivals()
        #: The FTP user of each cluster's upload grant, while it is valid.
        self._uploads: dict[int, str] = {}
        #: Open ``dfarm doctor`` probes: directory name -> owner, FTP user, budget.
        self._probes: dict[str, tuple[str, str, int]] = {}
        # Probes end with the connection that asked for them, which a restart ended.
        shutil.rmtree(self.root / PROBE_DIR, ignore_errors=True)
        #: Called, from the FTP server's thread, with the error of an upload that
        #: found the disk full.
        self.on_disk_full: Callable[[OSError], object] = lambda exc: None
        cut = clear_interrupted(self.root)
        if cut:
            log.warning("removed %d input(s) whose upload a restart interrupted", cut)
        # Large buffers: files move at disk speed, not 64 KiB per turn of the I/O loop.
        dtp_handler = type(
            "SpoolDTPHandler",
            (data,),
            {"ac_in_buffer_size": 1 << 20, "ac_out_buffer_size": 4 << 20, "spool": self},
        )
        handler = type(
            "SpoolFTPHandler",
            (UploadMixin, control),
            {
                "arrivals": self.arrivals,
                "authorizer": self.authorizer,
                "abstracted_fs": PrivateFS,
                "banner": "dfarm spool ready.",
                "passive_ports": passive_ports,
                "masquerade_address": masquerade_address,
                "use_sendfile": True,
                "timeout": 120,
                "dtp_handler": dtp_handler,
            },
        )
        self._ioloop = IOLoop()
        self._server = FTPServer((host, port), handler, ioloop=self._ioloop)
        self.port: int = self._server.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ftp", daemon=True)
        #: Fetch grants' files handed to clients on this machine.
        self.local_reads = ResultFdServer(self.authorizer)
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Date grants by ``clock`` (the scheduler's) rather than the system's."""
        self.authorizer.clock = clock

    def start(self) -> None:
        self._thread.start()
        self.local_reads.start()
        log.info("FTP server on port %d over %s", self.port, self.root)

    def _serve(self) -> None:
        # The IO loop itself, not serve_forever(), which logs a line on every call.
        while not self._stop.is_set():
            self._ioloop.loop(timeout=0.2, blocking=False)

    def stop(self) -> None:
        self._stop.set()
        self.local_reads.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._server.close_all()

    # -- directories -------------------------------------------------------

    def input_dir(self, cluster: int) -> Path:
        return self.root / str(cluster) / "input"

    def job_dir(self, cluster: int, proc: int) -> Path:
        return _job_dir(self.root, cluster, proc)

    def results_dir(self, cluster: int, proc: int) -> Path | None:
        """The job's folder, where its large results are (linked or uploaded); None
        when it has none (looked for by its name: most jobs' results came inline)."""
        if not os.path.isdir(f"{self.root}{os.sep}{cluster}{os.sep}{proc}"):
            return None
        return self.job_dir(cluster, proc)

    def clear_job_dir(self, cluster: int, proc: int) -> None:
        """Forget the large results of an earlier attempt of a job (an effect, run
        once the unit that restarted or cleaned the job committed)."""
        shutil.rmtree(self.job_dir(cluster, proc), ignore_errors=True)

    def checkpoint_dir(self, cluster: int, proc: int) -> Path:
        """Where a self-checkpointing job's checkpoints are uploaded (see
        :mod:`scheduler.checkpoints`): kept across its attempts, unlike its folder."""
        return self.root / str(cluster) / CHECKPOINTS / str(proc)

    def attempt_dir(self, cluster: int, proc: int, attempt: int) -> Path:
        """Where a worker sharing the spool's file system puts an attempt's results."""
        return self.job_dir(cluster, proc) / f".attempt-{attempt}"

    def take_attempt(self, cluster: int, proc: int, attempt: int) -> None:
        """Move the results a worker linked for this attempt into the job's folder
        (nothing to do when they were moved already).

        Unlike the removals, this is done in the unit that hears of the finish, not
        after its commit: the results must be in place for their hashing (in a
        thread, before the unit that records the finish), and nothing needs undoing
        if a unit fails. The job's folder holds its current attempt's results alone
        (an earlier attempt's are cleared before a new one starts), so the move
        takes nothing back from anyone, and it is idempotent: the same finish
        heard again finds them in place."""
        job_dir, source = self.job_dir(cluster, proc), self.attempt_dir(cluster, proc, attempt)
        with contextlib.suppress(FileNotFoundError):
            for entry in list(os.scandir(source)):
                target = job_dir / entry.name
                if entry.is_dir(follow_symlinks=False) and target.is_dir():
                    for item in list(os.scandir(entry.path)):
                        os.replace(item.path, target / item.name)
                else:
                    os.replace(entry.path, target)
            shutil.rmtree(source)
        # The worker made them readable to its account's peers: they are ours alone now.
        make_private_tree(job_dir)

    def drop_attempt(self, cluster: int, proc: int, attempt: int) -> None:
        """Forget the results a worker linked for an attempt that does not count (an
        effect, run once the unit that decided it committed)."""
        shutil.rmtree(self.attempt_dir(cluster, proc, attempt), ignore_errors=True)

    # -- grants ------------------------------------------------------------

    def _issue(
        self,
        root: Path | str,
        rules: list[Rule],
        ttl: float,
        host: str,
        max_bytes: int | None = None,
        replace: bool = True,
        inputs: str | None = None,
        owners: tuple[str, ...] = (),
    ) -> FtpGrant:
        raw = secrets.token_bytes(26)
        user, password = "g" + raw[:8].hex(), base64.urlsafe_b64encode(raw[8:]).decode()
        expires = self.authorizer.clock() + ttl
        grant = Grant(
            user, password, str(root), tuple(rules), expires, max_bytes, replace, inputs, owners
        )
        self.authorizer.add(grant)
        return FtpGrant(
            host=host,
            port=self.port,
            user=user,
            password=password,
            tls_fingerprint=self.tls_fingerprint,
        )

    def grant_upload(
        self, cluster: int, host: str, ttl: float = 3600, max_bytes: int | None = None
    ) -> FtpGrant:
        """Write-only access to a new cluster's input directory, for ``max_bytes``."""
        path = make_private_dir(self.input_dir(cluster))
        rules = [Rule(str(path), WRITE)]
        grant = self._issue(path, rules, ttl, host, max_bytes, replace=False)
        self._uploads[cluster] = grant.user
        return grant

    def uploading(self) -> list[int]:
        """The clusters whose inputs may still be uploaded (an upload grant each)."""
        return list(self._uploads)

    def upload_room(self, cluster: int) -> int:
        """Bytes the upload grant of ``cluster`` may still upload (0: none, or no limit)."""
        user = self._uploads.get(cluster)
        room = None if user is None else self.authorizer.upload_room(user)
        return max(0, room or 0)

    def end_upload(self, cluster: int) -> Callable[[], None]:
        """No more uploads into ``cluster``'s inputs: its grant goes. Returns what
        gives it back (the undo of a unit of work that failed)."""
        user = self._uploads.pop(cluster, None)
        if user is None:
            return lambda: None
        restore = self.authorizer.revoke(user)

        def give_back() -> None:
            restore()
            self._uploads[cluster] = user

        return give_back

    def drop_uploads(self, cluster: int) -> int:
        """Remove the uploads of ``cluster`` that were never named as inputs (a cluster
        abandoned, its upload grant ended: none will be); returns how many. An effect
        (:mod:`scheduler.effects`): run once the unit that abandoned it committed."""
        return remove_uploads(self.input_dir(cluster))

    def remove_cluster(self, cluster: int) -> None:
        """Remove the folder of a cluster that never had jobs (its upload grant
        ended). An effect, as :meth:`drop_uploads`."""
        shutil.rmtree(self.root / str(cluster), ignore_errors=True)

    def grant_job(
        self, cluster: int, proc: int, host: str, ttl: float, inputs: int | None = None
    ) -> FtpGrant:
        """For a worker: read the cluster's inputs (those of cluster ``inputs``, a DAG's,
        where given: seen as the grant's ``input``), write this job's results."""
        root = f"{self.root}{os.sep}{cluster}"
        folder = f"{self.root}{os.sep}{inputs if inputs is not None else cluster}{os.sep}input"
        rules = [Rule(folder, READ), Rule(f"{root}{os.sep}{proc}", READ_WRITE)]
        rules.append(Rule(str(self.checkpoint_dir(cluster, proc)), READ_WRITE))
        return self._issue(root, rules, ttl, host, inputs=None if inputs is None else folder)

    def grant_fetch(
        self,
        jobs: list[tuple[int, int]],
        host: str,
        ttl: float = 900,
        owners: tuple[str, ...] = (),
    ) -> FtpGrant:
        """For a user: read the results of these jobs (their own, checked by the
        caller), over FTP or, on this machine, in place (:mod:`scheduler.result_fds`,
        which hands their files only to the account of ``owners``, their jobs' owners)."""
        rules = [Rule(str(self.job_dir(c, p)), READ) for c, p in jobs]
        return self._issue(self.root, rules, ttl, host, owners=owners)

    def grant_probe(
        self, host: str, owner: str = "", max_bytes: int = 0, ttl: float = 60
    ) -> tuple[FtpGrant, str]:
        """For ``dfarm doctor``: access to a new directory under ``probe/`` for one
        file of at most ``max_bytes`` (and never more than :data:`PROBE_BUDGET`; the
        FTP server stops the upload past it), counted as ``owner``'s until
        :meth:`end_probe`; returns the grant and the directory's name relative to
        the grant's root."""
        probes = make_private_dir(self.root / PROBE_DIR)
        name = secrets.token_hex(8)
        (probes / name).mkdir(mode=0o700)
        budget = min(max_bytes or PROBE_BUDGET, PROBE_BUDGET)
        rules = [Rule(str(probes / name), PROBE_PERMS)]
        grant = self._issue(probes, rules, ttl, host, max_bytes=budget)
        self._probes[name] = (owner, grant.user, budget)
        return grant, name

    def end_probe(self, name: str) -> None:
        """The probe ``name`` is over: its grant and its directory go."""
        owner_user_budget = self._probes.pop(name, None)
        if owner_user_budget is not None:
            self.authorizer.revoke(owner_user_budget[1])
        shutil.rmtree(self.root / PROBE_DIR / name, ignore_errors=True)

    def end_expired_probes(self) -> None:
        """End the probes whose grant expired (see :meth:`GrantAuthorizer.expire`)."""
        for name, (_, user, _) in list(self._probes.items()):
            if not self.authorizer.has_user(user):
                self.end_probe(name)

    def probe_bytes(self, owner: str) -> int:
        """Bytes the open probes of ``owner`` may hold (each at its whole budget)."""
        return sum(budget for who, _, budget in self._probes.values() if who == owner)

    def revoke(self, grant: FtpGrant) -> Callable[[], None]:
        """End ``grant``; returns what gives it back (see :meth:`GrantAuthorizer.revoke`)."""
        restore = self.authorizer.revoke(grant.user)
        uploads = [cluster for cluster, user in self._uploads.items() if user == grant.user]
        for cluster in uploads:
            del self._uploads[cluster]

        def give_back() -> None:
            restore()
            for cluster in uploads:
                self._uploads[cluster] = grant.user

        return give_back

    # -- files that travel inside messages -----------------------------------

    def store_inputs(self, cluster: int, files: dict[str, str]) -> None:
        """Write small inputs sent inline at submit; each must match its hash."""
        directory = self.input_dir(cluster)
        for sha, text in files.items():
            data = unpack_bytes(text)
            if len(data) > INLINE_LIMIT or hashlib.sha256(data).hexdigest() != sha:
                raise StagingError("an inline input does not match its sha256 or is too large")
            _write_atomic(directory / sha, data)

    def name_uploads(self, cluster: int, uploads: dict[str, str], sizes: dict[str, int]) -> None:
        """Name each upload of ``uploads`` (sha256 -> upload name) by its hash, as it
        arrives if it still runs; each must have a declared size in ``sizes`` (from
        :func:`upload_sizes`)."""
        for sha, upload in uploads.items():
            if sha not in sizes:
                raise StagingError(f"the upload {upload!r} is no job's input")
            try:
                self.arrivals.name(cluster, self.input_dir(cluster), upload, sha, sizes[sha])
            except ArrivalError as exc:
                raise StagingError(str(exc)) from None

    def inline_input(self, cluster: int, item: InputFile) -> str | None:
        """A small input of a cluster as it travels in a message; None if large, or
        still arriving (then shorter than declared; the worker fetches it)."""
        if item.size > INLINE_LIMIT:
            return None
        data = (self.input_dir(cluster) / item.sha256).read_bytes()
        return pack_bytes(data) if len(data) == item.size else None


def upload_sizes(uploads: dict[str, str], specs: list[JobSpec]) -> dict[str, int]:
    """The size each upload of ``uploads`` (sha256 -> upload name) will have, by
    sha256, as ``specs`` declare it (an upload that is no input has none)."""
    if not uploads:
        return {}
    sizes = {f.sha256: f.size for spec in specs for f in spec.inputs}
    return {sha: sizes[sha] for sha in uploads if sha in sizes}


#: Bytes one ``dfarm doctor`` probe may upload: its probe file (256 KiB), no more.
PROBE_BUDGET = 256 * 1024


class StagingError(Exception):
    """Inline file data that cannot be stored."""


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with a file of ``data``, created with ``mode`` (less the umask)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        f.write(data)
    tmp.replace(path)
