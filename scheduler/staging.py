"""The spool and the embedded FTP server that moves files in and out of it.

Layout of the spool::

    spool/<cluster>/input/     inputs shared by every proc, uploaded once at submit
    spool/<cluster>/<proc>/    large results of one job: stdout, stderr, outputs/

Small files (up to ``INLINE_LIMIT``) travel inside messages instead: small
results are kept in SQLite with the job's state, so most jobs never create a
directory here.

The FTP server (pyftpdlib) runs in its own thread and decides nothing: every
login is a :class:`Grant` issued by the scheduler for one step (an upload, a
job's run, a fetch), with a random user name and password, an expiry, and
rules naming the only directories it may touch and how. pyftpdlib's
``AbstractedFS`` resolves symlinks and refuses any path outside the grant's
root; the rules narrow that further.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyftpdlib.authorizers import AuthenticationFailed
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from scheduler.protocol import (
    INLINE_LIMIT,
    FtpGrant,
    pack_bytes,
    unpack_bytes,
)

log = logging.getLogger(__name__)

READ = "elr"
#: Uploads are stored under a temporary name, then renamed to their hash.
WRITE = "ewf"
READ_WRITE = "elrmwadf"
#: Directory of the spool where ``dfarm doctor`` tries the data channel.
PROBE_DIR = "probe"


@dataclass(frozen=True)
class Rule:
    """Permissions (pyftpdlib letters) on a directory and everything below it."""

    directory: str
    perms: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", os.path.normpath(self.directory))

    def covers(self, path: str) -> bool:
        d = self.directory
        return path == d or path.startswith(d if d.endswith(os.sep) else d + os.sep)


@dataclass(frozen=True)
class Grant:
    user: str
    password: str
    root: Path
    rules: tuple[Rule, ...]
    expires: float


class GrantAuthorizer:
    """A pyftpdlib authorizer whose users are short-lived grants."""

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def add(self, grant: Grant) -> None:
        with self._lock:
            self._grants[grant.user] = grant

    def revoke(self, user: str) -> None:
        with self._lock:
            self._grants.pop(user, None)

    def expire(self, now: float) -> int:
        """Forget expired grants; returns how many."""
        with self._lock:
            old = [u for u, g in self._grants.items() if g.expires <= now]
            for user in old:
                del self._grants[user]
        return len(old)

    def _grant(self, user: str) -> Grant:
        with self._lock:
            grant = self._grants.get(user)
        if grant is None or grant.expires <= time.time():
            raise AuthenticationFailed("Authentication failed.")
        return grant

    # -- the interface pyftpdlib calls -------------------------------------

    def validate_authentication(self, username: str, password: str, handler: object) -> None:
        grant = self._grant(username)
        if not hmac.compare_digest(grant.password.encode(), password.encode()):
            raise AuthenticationFailed("Authentication failed.")

    def get_home_dir(self, username: str) -> str:
        return str(self._grant(username).root)

    def has_user(self, username: str) -> bool:
        with self._lock:
            return username in self._grants

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        try:
            grant = self._grant(username)
        except AuthenticationFailed:
            return False
        if path is None:
            return any(perm in rule.perms for rule in grant.rules)
        target = os.path.realpath(path)
        best: Rule | None = None
        for rule in grant.rules:
            if rule.covers(target) and (best is None or len(rule.directory) > len(best.directory)):
                best = rule
        if best is not None:
            return perm in best.perms
        # Directories on the way to a rule may be entered, nothing more.
        on_the_way = Rule(target, "")
        return perm == "e" and any(on_the_way.covers(r.directory) for r in grant.rules)

    def get_perms(self, username: str) -> str:
        try:
            return "".join(sorted({p for r in self._grant(username).rules for p in r.perms}))
        except AuthenticationFailed:
            return ""

    def get_msg_login(self, username: str) -> str:
        return "Welcome to the dfarm spool."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass


class Spool:
    """The spool directory and the FTP server over it."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        passive_ports: range | None = None,
        masquerade_address: str | None = None,
    ):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.authorizer = GrantAuthorizer()
        handler = type("SpoolFTPHandler", (FTPHandler,), {})
        handler.authorizer = self.authorizer
        handler.banner = "dfarm spool ready."
        handler.passive_ports = passive_ports
        handler.masquerade_address = masquerade_address
        handler.use_sendfile = True
        handler.timeout = 120
        # Large buffers: files move at disk speed, not 64 KiB per turn of the I/O loop.
        handler.dtp_handler = type(
            "SpoolDTPHandler",
            (DTPHandler,),
            {"ac_in_buffer_size": 1 << 20, "ac_out_buffer_size": 4 << 20},
        )
        self._ioloop = IOLoop()
        self._server = FTPServer((host, port), handler, ioloop=self._ioloop)
        self.port: int = self._server.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ftp", daemon=True)
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)

    def start(self) -> None:
        self._thread.start()
        log.info("FTP server on port %d over %s", self.port, self.root)

    def _serve(self) -> None:
        # The IO loop itself, not serve_forever(), which logs a line on every call.
        while not self._stop.is_set():
            self._ioloop.loop(timeout=0.2, blocking=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._server.close_all()

    # -- directories -------------------------------------------------------

    def input_dir(self, cluster: int) -> Path:
        return self.root / str(cluster) / "input"

    def job_dir(self, cluster: int, proc: int) -> Path:
        return self.root / str(cluster) / str(proc)

    def clear_job_dir(self, cluster: int, proc: int) -> None:
        """Forget the large results of an earlier attempt of a job."""
        shutil.rmtree(self.job_dir(cluster, proc), ignore_errors=True)

    # -- grants ------------------------------------------------------------

    def _issue(self, root: Path, rules: list[Rule], ttl: float, host: str) -> FtpGrant:
        raw = secrets.token_bytes(26)
        user, password = "g" + raw[:8].hex(), base64.urlsafe_b64encode(raw[8:]).decode()
        self.authorizer.add(Grant(user, password, root, tuple(rules), time.time() + ttl))
        return FtpGrant(host=host, port=self.port, user=user, password=password)

    def grant_upload(self, cluster: int, host: str, ttl: float = 3600) -> FtpGrant:
        """Write-only access to a new cluster's input directory."""
        path = self.input_dir(cluster)
        path.mkdir(parents=True, exist_ok=True)
        return self._issue(path, [Rule(str(path), WRITE)], ttl, host)

    def grant_job(self, cluster: int, proc: int, host: str, ttl: float) -> FtpGrant:
        """For a worker: read the cluster's inputs, write this job's results."""
        root = f"{self.root}{os.sep}{cluster}"
        rules = [Rule(f"{root}{os.sep}input", READ), Rule(f"{root}{os.sep}{proc}", READ_WRITE)]
        return self._issue(Path(root), rules, ttl, host)

    def grant_fetch(self, jobs: list[tuple[int, int]], host: str, ttl: float = 900) -> FtpGrant:
        """For a user: read the results of these jobs (their own, checked by the caller)."""
        rules = [Rule(str(self.job_dir(c, p)), READ) for c, p in jobs]
        return self._issue(self.root, rules, ttl, host)

    def grant_probe(self, host: str, ttl: float = 60) -> tuple[FtpGrant, str]:
        """For ``dfarm doctor``: read-write access to a new directory under ``probe/``
        (older probe directories are removed first); returns the grant and the
        directory's name relative to the grant's root."""
        probes = self.root / PROBE_DIR
        probes.mkdir(exist_ok=True)
        for old in probes.iterdir():
            if old.stat().st_mtime < time.time() - 2 * ttl:
                shutil.rmtree(old, ignore_errors=True)
        name = secrets.token_hex(8)
        (probes / name).mkdir()
        return self._issue(probes, [Rule(str(probes / name), READ_WRITE)], ttl, host), name

    def revoke(self, grant: FtpGrant) -> None:
        self.authorizer.revoke(grant.user)

    # -- files that travel inside messages -----------------------------------

    def store_inputs(self, cluster: int, files: dict[str, str]) -> None:
        """Write small inputs sent inline at submit; each must match its hash."""
        directory = self.input_dir(cluster)
        for sha, text in files.items():
            data = unpack_bytes(text)
            if len(data) > INLINE_LIMIT or hashlib.sha256(data).hexdigest() != sha:
                raise StagingError("an inline input does not match its sha256 or is too large")
            _write_atomic(directory / sha, data)

    def inline_input(self, cluster: int, sha: str) -> str | None:
        """A small input of a cluster as it travels in a message; None if large."""
        path = self.input_dir(cluster) / sha
        if path.stat().st_size > INLINE_LIMIT:
            return None
        return pack_bytes(path.read_bytes())


class StagingError(Exception):
    """Inline file data that cannot be stored."""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
