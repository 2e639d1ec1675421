"""A slot's sandbox directory and output files, reused between jobs of one owner.

On a busy or virtualised disk, creating and deleting a directory or an
anonymous file costs 0.1 to 0.9 ms each: more than starting a short job. A slot
therefore keeps its sandbox, the inputs linked into it and its stdout/stderr
files for the next job of the same cluster, or of another cluster of the same
owner run as the same account (one ``Client.submit`` call is a cluster of its
own), provided the job left the sandbox exactly as it was staged: nothing but
its inputs, still linked to the cache, and the directory's mode unchanged. The
next job finds only its own inputs there (the others are unlinked) and empty
output files. Anything else, a failed attempt, or a job of another owner or
account gets a fresh sandbox and fresh files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from worker_node import sandbox_files
from worker_node.identity import Account


class Sandbox:
    """The directory a job runs in, and the files its stdout and stderr go to."""

    def __init__(self, root: Path, index: int = 0):
        self.root = root
        #: Which of the worker's sandboxes (slots) this is: 0, 1, ...
        self.index = index
        self.directory = root
        #: The cluster whose job last ran here; None when nothing is set up.
        self.cluster: int | None = None
        #: The owner of that job, when known.
        self.owner: str | None = None
        #: Inputs linked into the directory: name -> inode of the cache entry (or
        #: spool file) it is a link to.
        self.staged: dict[str, int] = {}
        self._files: tuple[BinaryIO, BinaryIO] | None = None
        self._mode = 0
        #: The uid and gid the folders made for directory inputs get (the job's).
        self._owner: tuple[int, int] | None = None

    @property
    def stdout(self) -> BinaryIO:
        assert self._files is not None, "prepare() the sandbox first"
        return self._files[0]

    @property
    def stderr(self) -> BinaryIO:
        assert self._files is not None, "prepare() the sandbox first"
        return self._files[1]

    def prepare(
        self, cluster: int, name: str, account: Account | None = None, owner: str | None = None
    ) -> None:
        """Ready the sandbox for a job of ``cluster`` (of ``owner``, when known), empty
        output files included; a fresh sandbox is made as ``<root>/<name>``, a name
        never used before, with mode 0700, owned by ``account`` (the job's) when
        given. A reused one already is: it was kept for the same cluster (a cluster
        has one owner), or for the same owner and account."""
        ids = None if account is None else (account.uid, account.gid)
        same_owner = owner is not None and owner == self.owner and ids == self._owner
        if self._files is not None and (self.cluster == cluster or same_owner):
            for f in self._files:
                f.seek(0)
                f.truncate()
            self.cluster = cluster
            return
        self.discard()
        self.directory = self.root / name
        self.directory.mkdir(mode=0o700)
        self._owner = ids
        if account is not None:
            os.chown(self.directory, account.uid, account.gid)
        self._mode = stat.S_IMODE(os.lstat(self.directory).st_mode)
        # Anonymous files (O_TMPFILE): never seen in the sandbox, nothing to delete.
        # They live as long as the sandbox; discard() closes them.
        parent = self.root
        self._files = (
            tempfile.TemporaryFile(dir=parent),  # noqa: SIM115
            tempfile.TemporaryFile(dir=parent),  # noqa: SIM115
        )
        self.cluster, self.owner = cluster, owner

    def stage(self, sources: dict[str, tuple[Path, int]]) -> None:
        """Link exactly these inputs into the directory: name -> (the file to link,
        its inode), from the input cache or the spool."""
        for name, inode in list(self.staged.items()):
            if name not in sources or sources[name][1] != inode:
                (self.directory / name).unlink(missing_ok=True)
                del self.staged[name]
        top: int | None = None
        try:
            for name, (path, inode) in sources.items():
                if name in self.staged:
                    continue
                if "/" not in name:
                    linked = _link_or_copy(path, self.directory / name)
                else:  # a file of a directory input: never through a path the job has
                    if top is None:
                        top = sandbox_files.open_dir(self.directory)
                    linked = _link_below(path, top, name, self._owner)
                # A sandbox with a folder input is never kept for the next job (see
                # _as_staged: the folder is not a staged name), since a job may have
                # changed what lies below it.
                if linked:
                    self.staged[name] = inode
        finally:
            if top is not None:
                os.close(top)

    def finish(self, reusable: bool) -> None:
        """After a job: keep the sandbox if ``reusable`` and the job left it as staged."""
        if not (reusable and self._as_staged()):
            self.discard()

    def _as_staged(self) -> bool:
        try:
            st = os.lstat(self.directory)
            with os.scandir(self.directory) as entries:
                found = {entry.name: entry.inode() for entry in entries}
        except OSError:
            return False
        return (
            stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == self._mode
        ) and found == self.staged

    def discard(self) -> None:
        """Remove the directory and close the files; the next job starts afresh."""
        if self._files is not None:
            for f in self._files:
                with contextlib.suppress(OSError):
                    f.close()
            self._files = None
        if self.directory != self.root:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = self.root
        self.cluster = self.owner = None
        self.staged = {}


def _link_or_copy(source: Path, dest: Path) -> bool:
    """Put ``source`` at ``dest`` as a hard link (True), or as a copy when they are on
    different file systems (False); never through a link at ``dest``."""
    try:
        os.link(source, dest)
        return True
    except OSError:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(source, "rb") as src, os.fdopen(os.open(dest, flags, 0o555), "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return False


def _link_below(source: Path, top: int, name: str, owner: tuple[int, int] | None) -> bool:
    """Put ``source`` at ``name`` (``a/b/file``) below the folder ``top``, making the
    folders on the way (owned by ``owner``), each opened from the one before without
    following a link: a job that swapped one for a link makes this fail, never lead
    elsewhere. True for a hard link, False for a copy."""
    *folders, last = name.split("/")
    if any(part in ("", ".", "..") for part in [*folders, last]):
        raise OSError(errno.EINVAL, f"input {name!r} leaves the sandbox")
    fd = top
    try:
        for part in folders:
            made = True
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                made = False
            step = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != top:
                os.close(fd)
            fd = step
            if made and owner is not None:
                os.fchown(fd, *owner)
        try:
            os.link(source, last, dst_dir_fd=fd)
            return True
        except OSError:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out_fd = os.open(last, flags, 0o555, dir_fd=fd)
            with open(source, "rb") as src, os.fdopen(out_fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            return False
    finally:
        if fd != top:
            os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
