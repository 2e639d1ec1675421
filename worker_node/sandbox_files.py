"""Opening the files a job left in its sandbox, whatever it did to their names.

A job may rename a link over its output at any moment, even after its main
process ended (until all its processes are gone), and the worker may run as
root: a path it opens, stats then opens, or chmods, may lead anywhere by then.
So the worker never opens a sandbox path by name: it walks each component from
a descriptor of the sandbox it holds, with ``O_NOFOLLOW``, and checks the file it
opened (``fstat``) rather than the path: a plain file, owned by the job's account
or one of the inputs the worker staged.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO the job left must not block the worker.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(OSError):
    """A sandbox file the worker refuses to read; the message says why, in the
    words of ``transfer_output_files: 'NAME' <message>``."""


def open_dir(path: Path) -> int:
    """A descriptor of the folder ``path`` itself (never through a link)."""
    return os.open(path, _DIR_FLAGS)


def open_file(
    dir_fd: int, name: str, owner: int | None, inputs: frozenset[int] = frozenset()
) -> BinaryIO:
    """Open ``name`` (``a/b`` walks folders) below the folder ``dir_fd`` for
    reading, following no link; it must be a plain file owned by ``owner`` (None:
    anyone) or one of the staged ``inputs`` (inodes). Raises UnsafeFile."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeFile(errno.EINVAL, "is a link out of the sandbox")
    fd = dir_fd
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        try:
            step = os.open(part, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise _refusal(fd, part, exc) from None
        finally:
            if fd != dir_fd:
                os.close(fd)
        fd = step
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeFile(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(errno.EINVAL, "is not a plain file")
        if owner is not None and st.st_uid != owner and st.st_ino not in inputs:
            raise UnsafeFile(errno.EPERM, "belongs to another account")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _refusal(fd: int, part: str, exc: OSError) -> UnsafeFile:
    try:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return UnsafeFile(errno.ENOENT, "was not produced")
    if stat.S_ISLNK(st.st_mode):
        return UnsafeFile(errno.ELOOP, "is a link out of the sandbox")
    if exc.errno == errno.ENOTDIR:
        return UnsafeFile(errno.ENOENT, "was not produced")
    return UnsafeFile(exc.errno or errno.EIO, f"cannot be read: {exc.strerror}")


def plain_files(dir_fd: int) -> list[tuple[str, int]]:
    """The names and inodes of the folder's entries that are plain files (as
    listed: each is opened with :func:`open_file` before it is read)."""
    with os.scandir(dir_fd) as entries:
        return sorted(
            (entry.name, entry.inode()) for entry in entries if entry.is_file(follow_symlinks=False)
        )
