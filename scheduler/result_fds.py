"""Results read in place by a client on the scheduler's machine.

A fetch grant (see :meth:`Spool.grant_fetch`) is also good here: a client that
reached the scheduler on a loopback address connects to this Unix socket (an
abstract name, random for each start, sent only in fetch replies), proves that it
holds the grant's password, and is handed an open, read-only descriptor of each
file the grant lets it read (``SCM_RIGHTS``). It copies them in the kernel
(``copy_file_range``) and checks each copy's SHA-256 against the one recorded when
the file arrived, so moving the bytes costs one copy instead of a loopback
transfer. A file that is still the version the scheduler hashed when the job's
result arrived (the same device, inode, size, modification and change times, as a
worker checks the inputs in its cache) is not hashed again: the version is recorded
with the hash (:mod:`scheduler.result_hashes`), and each fetch reply offering local
reads tells this server the versions of the files it covers (:meth:`vouch`), so this
holds after a restart of the scheduler as well. Nothing of the spool becomes
readable by anyone else: a descriptor goes only to the process that asked, and only
if its account (``SO_PEERCRED``) is the jobs' owner's, the scheduler's own or root's.
Where any of that does not hold, the client downloads over FTP as a remote one does.

The exchange, one JSON message each way per step on a ``SOCK_SEQPACKET`` socket:
the scheduler sends ``{"nonce": HEX}``; the client sends ``{"user": GRANT_USER,
"proof": HMAC-SHA256(password, nonce), "paths": [...]}`` (paths relative to the
grant's root, as FTP names them; at most :data:`MOST_PATHS`), and again with more
paths on the same connection; each answer is ``{"open": [bool, ...]}`` with a
descriptor attached for each true, in order, or ``{"error": TEXT}``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import pwd
import secrets
import socket
import stat
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable

from scheduler.ftp_grants import GrantAuthorizer
from scheduler.result_hashes import FileVersion
from scheduler.transport.local_reads import MOST_PATHS, proof

log = logging.getLogger(__name__)

#: Bytes of one request at most.
MOST_REQUEST = 1 << 20
#: Seconds a connection may stay silent before it is closed.
IDLE = 60.0
#: Files whose hashed version is remembered, the latest told.
REMEMBERED = 200_000


class ResultFdServer:
    """Hands out descriptors of the files fetch grants may read (see the module)."""

    def __init__(self, authorizer: GrantAuthorizer):
        self.authorizer = authorizer
        #: The abstract socket's name (without its leading NUL); None where the
        #: system has no abstract Unix sockets or the socket could not be made.
        self.name: str | None = None
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="result-fds", daemon=True)
        #: The version hashed of each file of recent fetches (by device and inode),
        #: and its SHA-256.
        self._hashed: OrderedDict[tuple[int, int], tuple[FileVersion, str]] = OrderedDict()
        self._lock = threading.Lock()

    def vouch(self, versions: Iterable[tuple[FileVersion, str]]) -> None:
        """Result files of these versions had these SHA-256 when hashed (as recorded
        with the hashes: :meth:`scheduler.result_table.ResultTable.versions_of`)."""
        with self._lock:
            for version, sha in versions:
                key = (version.device, version.inode)
                self._hashed[key] = (version, sha)
                self._hashed.move_to_end(key)
            while len(self._hashed) > REMEMBERED:
                self._hashed.popitem(last=False)

    def _verified(self, fd: int) -> str | None:
        """The SHA-256 the file of ``fd`` was hashed to, if it is still the version
        hashed (the same device, inode, size, modification and change times); else
        None."""
        version = FileVersion.of(os.fstat(fd))
        with self._lock:
            known = self._hashed.get((version.device, version.inode))
        if known is None or known[0] != version:
            return None
        return known[1]

    def start(self) -> None:
        """Listen (on Linux: elsewhere :attr:`name` stays None)."""
        if not sys.platform.startswith("linux"):
            return
        name = f"dfarm-results-{secrets.token_hex(12)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind("\0" + name)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            log.warning("no local reads of results (%s): clients fetch over FTP", exc)
            return
        sock.settimeout(0.2)
        self._sock, self.name = sock, name
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            if self._thread.is_alive():
                self._thread.join(timeout=5)
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(IDLE)
            try:
                uid = struct.unpack("3i", conn.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
                ))[1]  # fmt: skip
                nonce = secrets.token_hex(16)
                conn.sendall(json.dumps({"nonce": nonce}).encode())
                while not self._stop.is_set():
                    data = conn.recv(MOST_REQUEST)
                    if not data:
                        return
                    fds: list[int] = []
                    try:
                        answer = self._answer(data, nonce, uid, fds)
                        socket.send_fds(conn, [json.dumps(answer).encode()], fds)
                    finally:
                        for fd in fds:
                            os.close(fd)
            except (OSError, ValueError):
                return

    def _answer(self, data: bytes, nonce: str, uid: int, fds: list[int]) -> dict[str, object]:
        """The answer to one request; the descriptors to attach are added to ``fds``."""
        request = json.loads(data)
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        user, paths = str(request.get("user", "")), request.get("paths")
        if not isinstance(paths, list) or len(paths) > MOST_PATHS:
            return {"error": f"name a list of at most {MOST_PATHS} paths"}
        grant = self.authorizer.grant_of(user)
        if grant is None or not hmac.compare_digest(
            proof(grant.password, nonce), str(request.get("proof", ""))
        ):
            return {"error": "authentication failed"}
        if not _may_receive(uid, grant.owners):
            return {"error": "this account may not read these results in place"}
        opened, verified = [], []
        for path in paths:
            fd = self._open(user, grant.root, str(path))
            opened.append(fd is not None)
            if fd is not None:
                fds.append(fd)
                verified.append(self._verified(fd))
        theirs = str(request.get("nonce", ""))
        return {
            "open": opened,
            "verified": verified,
            "proof": proof(grant.password, theirs, "scheduler"),
        }

    def _open(self, user: str, root: str, path: str) -> int | None:
        """A read-only descriptor of the regular file ``path`` (under ``root``) if the
        grant ``user`` may read it, else None."""
        full = os.path.realpath(os.path.join(root, path))
        if not self.authorizer.has_perm(user, "r", full):
            return None
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd


def _may_receive(uid: int, owners: tuple[str, ...]) -> bool:
    """Whether the account ``uid`` may be handed the files of jobs of ``owners``: root,
    the scheduler's own account (which reads the spool anyway), or the Unix account
    of the jobs' one owner."""
    if uid in (0, os.getuid()):
        return True
    if len(owners) != 1:
        return False
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(owners[0]).pw_uid == uid
    return False
