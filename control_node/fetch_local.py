"""Large result files copied in place, for a client on the scheduler's machine.

The scheduler hands over an open, read-only descriptor of each file a fetch grant
covers (:mod:`scheduler.result_fds`); each is copied in the kernel
(``copy_file_range``, else ``sendfile``) to a temporary name, its copy's SHA-256
checked against the one recorded when the file arrived, and renamed only when whole
and right. Only files with a recorded hash are taken this way, and only from a
socket that proves it knows the grant's password (which never travels there). A
file that the scheduler says is still the version it hashed when the job's result
arrived (its inode, size, modification and change times) is not hashed again:
SHA-256 costs more CPU than the copy itself. Whatever cannot be taken (no
such socket here, an account the scheduler does not hand files to, a file it did
not open) is left for FTP.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor

from control_node.fetch_downloads import Download
from scheduler import protocol as p
from scheduler.transport.local_reads import MOST_PATHS, proof

#: Files copied and checked at once: the copies and the hashing overlap.
COPIERS = 3
#: Bytes read at a time to hash a copy.
HASH_BLOCK = 4 << 20
#: Bytes of one answer at most.
MOST_ANSWER = 1 << 16
#: Seconds to wait for the scheduler's answer.
TIMEOUT = 60.0
#: What copy_file_range raises where the two files' file systems do not allow it.
_NO_COPY_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM}


def copy_in_place(
    grant: p.FtpGrant, name: str, downloads: list[Download], damaged: list[str]
) -> list[Download]:
    """Copy what the scheduler's socket ``name`` hands over; returns the downloads
    left for FTP. A copy of another hash is not kept but told in ``damaged``."""
    wanted = [d for d in downloads if d.expected is not None]
    if not wanted:
        return downloads
    try:
        opened = _open_all(grant, name, wanted)
    except (OSError, ValueError, KeyError, TypeError):
        return downloads
    try:
        if opened:
            with ThreadPoolExecutor(min(COPIERS, len(opened))) as pool:
                for problem in pool.map(lambda pair: _copy(pair[0], *pair[1]), opened.items()):
                    if problem:
                        damaged.append(problem)
    finally:
        for fd, _ in opened.values():
            os.close(fd)
    return [d for d in downloads if d not in opened]


def _open_all(
    grant: p.FtpGrant, name: str, wanted: list[Download]
) -> dict[Download, tuple[int, str | None]]:
    """A descriptor of each file the scheduler opened for us, and the SHA-256 it
    vouches for (the file is still the version it hashed), if any."""
    opened: dict[Download, tuple[int, str | None]] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect("\0" + name)
        nonce = json.loads(sock.recv(MOST_ANSWER))["nonce"]
        key = proof(grant.password, str(nonce))
        ours = secrets.token_hex(16)
        theirs = proof(grant.password, ours, "scheduler")
        try:
            for at in range(0, len(wanted), MOST_PATHS):
                part = wanted[at : at + MOST_PATHS]
                paths = [d.remote for d in part]
                request = {"user": grant.user, "proof": key, "nonce": ours, "paths": paths}
                sock.sendall(json.dumps(request).encode())
                data, fds, _, _ = socket.recv_fds(sock, MOST_ANSWER, MOST_PATHS)
                answer = json.loads(data) if data else {"error": "no answer"}
                given = iter(fds)
                flags = answer.get("open") if isinstance(answer, dict) else None
                if (
                    not isinstance(flags, list)
                    or len(flags) != len(part)
                    or not hmac.compare_digest(str(answer.get("proof", "")), theirs)
                ):
                    for fd in fds:
                        os.close(fd)
                    break
                shas = iter(answer.get("verified") or [])
                for item, ok in zip(part, flags, strict=True):
                    if ok and (one := next(given, None)) is not None:
                        sha = next(shas, None)
                        opened[item] = (one, sha if isinstance(sha, str) else None)
                for extra in given:  # more than announced: not ours to keep
                    os.close(extra)
        except BaseException:
            for fd, _ in opened.values():
                os.close(fd)
            raise
    return opened


def _copy(item: Download, source: int, verified: str | None) -> str | None:
    """Copy one file to its place; what is wrong with it, or None. A file the
    scheduler vouches for (``verified``: the recorded SHA-256) is not hashed again:
    the kernel's copy of it is checked by its size."""
    local = item.local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    size = os.fstat(source).st_size
    out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        copied = _copy_range(source, out, size)
        sha = verified if verified == item.expected else _sha256(out, copied)
    finally:
        os.close(out)
    if copied != size or sha != item.expected:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return (
            f"job {item.job_id}: result file {item.name} is damaged in the spool (its SHA-256"
            " is not the one recorded when it arrived)"
        )
    os.replace(tmp, local)
    return None


def _copy_range(source: int, out: int, size: int) -> int:
    """Copy ``size`` bytes from the start of ``source`` into ``out``; bytes copied
    (fewer when the file is shorter than it was)."""
    done = 0
    use_range = True
    while done < size:
        try:
            if use_range:
                got = os.copy_file_range(source, out, size - done, done, done)
            else:
                got = os.sendfile(out, source, done, size - done)
        except OSError as exc:
            if use_range and exc.errno in _NO_COPY_RANGE:
                use_range = False
                continue
            raise
        if got == 0:
            break
        done += got
    return done


def _sha256(fd: int, size: int) -> str:
    """The SHA-256 of the first ``size`` bytes of ``fd`` (just written: read back
    from the page cache), in large reads that let other threads run."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = os.preadv(fd, [view[: min(HASH_BLOCK, size - done)]], done)
        if got == 0:
            break
        digest.update(view[:got])
        done += got
    return digest.hexdigest()
