"""Moving a job's files by hard link, where the worker shares the spool's file system.

A worker on the scheduler's machine (``dfarm up``), or one that mounts the
scheduler's home from a shared disk, sees the spool itself. The scheduler tells
every worker where its spool lies and a secret kept in it (mode 0600); a worker
that reads the same secret at that path, on the file system of its own work
folder, links files instead of copying them over FTP:

- a large input goes from ``spool/<cluster>/input/<sha256>`` straight into the
  sandbox. It is not put into the worker's input cache, which every user's jobs
  share and whose entries are all verified by their hash: the spool's copy is
  the cluster owner's own upload, named by that owner's client, so it serves
  only that cluster's jobs. Like a cache entry, it is made read-only (0555), and
  it is checked against its hash before a job uses it.
  An input still being uploaded (see ``scheduler.arrivals``) is linked once its
  upload has ended.
- a large result goes from the sandbox into ``spool/<cluster>/<proc>/.attempt-<n>/``,
  owned by the spool's owner and private to it (0600); the scheduler moves it
  into the job's folder when it takes the attempt's result (a stale attempt, on
  a worker cut off while its job ran again elsewhere, overwrites nothing). A
  file the job also linked elsewhere (``ln`` to a file outside the sandbox),
  and stdout and stderr (anonymous files that the slot reuses), are copied
  there instead.

Anything that cannot be linked (another file system, permissions) moves over
FTP as on any other worker.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from scheduler.protocol import SPOOL_IDENTITY_FILE, InputFile, SpoolShare
from scheduler.transport.ftp import ARRIVAL_POLL, ARRIVAL_STALL, ARRIVING
from worker_node.transfer import TransferError

log = logging.getLogger(__name__)

#: The mode of a linked input, as of the cache's entries: any input may be the
#: executable, and no job may change what the other jobs of its cluster read.
INPUT_MODE = 0o555
#: Results and the folders made for them are the spool owner's alone.
RESULT_MODE = 0o600
FOLDER_MODE = 0o700


@dataclass(frozen=True)
class SpoolLink:
    """The scheduler's spool, seen by this worker on its own file system."""

    root: Path
    #: The spool's owner: every file taken from it must be theirs, every file put
    #: into it becomes theirs.
    uid: int
    gid: int
    #: The version (device, inode, size, times) of each input checked against its
    #: hash, by hash: a file written to since has another mtime and ctime.
    verified: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def find(cls, offer: SpoolShare | None, work_dir: Path) -> SpoolLink | None:
        """The spool offered by the scheduler, if this worker sees it at that path on
        the file system of ``work_dir``; None (files move over FTP) otherwise."""
        if offer is None:
            return None
        root = Path(offer.path)
        try:
            top = os.lstat(root)
            fd = os.open(root / SPOOL_IDENTITY_FILE, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                ident, secret = os.fstat(f.fileno()), f.read(256)
            same_disk = top.st_dev == os.stat(work_dir).st_dev
        except OSError:
            return None
        if not (
            stat.S_ISDIR(top.st_mode)
            and stat.S_ISREG(ident.st_mode)
            and ident.st_uid == top.st_uid
            and ident.st_mode & 0o077 == 0
            and hmac.compare_digest(secret, offer.identity.encode())
        ):
            return None
        if not same_disk:
            log.info("the spool %s is on another file system: files move over FTP", root)
            return None
        return cls(root, top.st_uid, top.st_gid)

    def inputs(self, cluster: int, items: list[InputFile]) -> dict[str, tuple[Path, int]]:
        """The spool's copies of ``items`` that can be linked: name -> (path, inode).
        Each is checked against its hash before a job uses it (once per version
        of the file: see :meth:`_verify`); TransferError names one that differs."""
        found: dict[str, tuple[Path, int]] = {}
        folder = self.root / str(cluster) / "input"
        for item in items:
            path = folder / item.sha256
            _await_arrival(path)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not (
                    stat.S_ISREG(st.st_mode) and st.st_uid == self.uid and st.st_size == item.size
                ):
                    continue
                if stat.S_IMODE(st.st_mode) != INPUT_MODE:
                    try:
                        os.fchmod(fd, INPUT_MODE)
                    except OSError:
                        continue
                self._verify(f, item)
                found[item.name] = (path, st.st_ino)
        return found

    def _verify(self, f: io.BufferedReader, item: InputFile) -> None:
        """Check the open spool file ``f`` against ``item``'s hash, unless this very
        version of it (inode, size, times) was checked before."""
        st = os.fstat(f.fileno())
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self.verified.get(item.sha256) == version:
            return
        f.seek(0)
        if hashlib.file_digest(f, "sha256").hexdigest() != item.sha256:
            log.error("the spool's copy of input %r does not match its hash", item.name)
            raise TransferError(
                f"input {item.name!r} does not match its hash in the spool"
                f" ({self.root}/.../{item.sha256}): it was changed after its upload"
            )
        self.verified[item.sha256] = version

    def put_results(
        self, cluster: int, proc: int, attempt: int, results: list[tuple[str, BinaryIO]]
    ) -> None:
        """Put large results (``outputs/NAME``, ``stdout``...) into the job's spool
        folder ``.attempt-<attempt>``, where the scheduler takes them if the attempt
        still counts: linked when the open file is the job's own and only in the
        sandbox, copied otherwise; either way private to the spool's owner
        (RESULT_MODE). Only the open files are used, never their names in the
        sandbox, which the job may have swapped for links. Raises OSError."""
        parts = (str(cluster), str(proc), f".attempt-{attempt}", "outputs")
        attempt_dir = self._folder(*parts).parent
        for name, f in results:
            dest = attempt_dir / name
            tmp = dest.with_name(f".{dest.name}.part")
            tmp.unlink(missing_ok=True)
            if not self._link(f, tmp):
                f.seek(0)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                with os.fdopen(os.open(tmp, flags, RESULT_MODE), "wb") as out:
                    self._own(out.fileno(), RESULT_MODE)
                    shutil.copyfileobj(f, out, 1 << 20)
            tmp.replace(dest)

    def put_checkpoint(self, cluster: int, proc: int, name: str, f: BinaryIO) -> None:
        """Put a job's checkpoint (the open file ``f``, made by this worker) into its
        checkpoint folder as ``name``, linked (or copied), private to the spool's
        owner (see :mod:`scheduler.checkpoints`). Raises OSError."""
        folder = self._folder(str(cluster), "checkpoints", str(proc))
        dest = folder / name
        tmp = folder / f".{name}.part"
        tmp.unlink(missing_ok=True)
        if not self._link(f, tmp):
            f.seek(0)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(tmp, flags, RESULT_MODE), "wb") as out:
                self._own(out.fileno(), RESULT_MODE)
                shutil.copyfileobj(f, out, 1 << 20)
        tmp.replace(dest)

    def get_checkpoint(
        self, cluster: int, proc: int, name: str, sink: Callable[[memoryview], object]
    ) -> bool:
        """Pass the bytes of a job's checkpoint to ``sink``, read from the spool; False
        when it is not there as a plain file of the spool's owner (then it comes
        over FTP)."""
        path = self.root / str(cluster) / "checkpoints" / str(proc) / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != self.uid:
                return False
            while block := f.read(1 << 20):
                sink(memoryview(block))
        return True

    def _link(self, f: BinaryIO, tmp: Path) -> bool:
        """Link the open file ``f`` as ``tmp``, owned by the spool's owner; False if
        it is not a plain file linked nowhere else, or cannot be linked or owned."""
        st = os.fstat(f.fileno())
        if not (stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
            return False
        try:
            # The inode is given away before it is linked: the job's processes are
            # gone, and its account can no longer change it once it is the spool's.
            self._own(f.fileno(), RESULT_MODE)
            # linkat() through /proc, following the link: the file the worker opened,
            # whatever the job did to its name since. (os.link without a directory
            # descriptor calls link(), which would link /proc's symlink itself.)
            fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(f.fileno()), tmp, src_dir_fd=fds, follow_symlinks=True)
            finally:
                os.close(fds)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        return True

    def _folder(self, *parts: str) -> Path:
        """The folder ``<spool>/<parts...>``, each part made as the spool's owner's
        (private to them) where it is missing."""
        path = self.root
        for part in parts:
            path = path / part
            try:
                os.mkdir(path, FOLDER_MODE)
            except FileExistsError:
                pass
            else:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    self._own(fd, FOLDER_MODE)
                finally:
                    os.close(fd)
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise NotADirectoryError(f"{path} is not a folder")
        return path

    def _own(self, fd: int, mode: int) -> None:
        """Give the open file or folder ``fd`` to the spool's owner, with ``mode``."""
        if os.geteuid() == 0:
            os.fchown(fd, self.uid, self.gid)
        os.fchmod(fd, mode)


def _await_arrival(path: Path) -> None:
    """Wait while ``path`` is still being uploaded (its marker is there) and grows."""
    marker = path.with_name(path.name + ARRIVING)
    size, idle_since = -1, time.monotonic()
    while marker.exists():
        try:
            now_size = os.stat(path).st_size
        except OSError:
            return
        now = time.monotonic()
        if now_size != size:
            size, idle_since = now_size, now
        elif now - idle_since > ARRIVAL_STALL:
            return
        time.sleep(ARRIVAL_POLL)
