"""A worker's container images, by content, with a size limit.

Each image a job brings (a tar staged into its sandbox, identified by its SHA-256) is
made ready once per worker: unpacked into ``<root>/rootfs-<sha256>/`` for bubblewrap,
or imported into a runtime's storage (the runtime's own command). ``index.json``
records each entry's size and when a job last used it; when the entries together pass
the limit, the least recently used ones that no running job uses are removed (an
unpacked folder deleted; an imported image removed with the command recorded for it,
which survives a restart of the worker).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LIMIT", "ImageCache"]

#: Default size limit of a worker's images (bytes).
DEFAULT_LIMIT = 20 * 2**30

#: Removes an imported image, from the description recorded with it.
Remover = Callable[[dict[str, Any]], None]


class ImageCache:
    """Images ready to run, least recently used evicted past ``limit`` bytes."""

    def __init__(self, root: Path, limit: int = DEFAULT_LIMIT, remover: Remover | None = None):
        self.root = root
        self.limit = limit
        self.remover = remover
        self._lock = threading.Lock()
        self._ready: dict[str, threading.Lock] = {}
        self._busy: dict[str, int] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self._index_path = root / "index.json"
        try:
            self._index: dict[str, dict[str, Any]] = json.loads(self._index_path.read_text())
        except (OSError, ValueError):
            self._index = {}

    def entries(self) -> dict[str, dict[str, Any]]:
        """A copy of the index: key -> size, last use (and how it is removed)."""
        with self._lock:
            return {k: dict(v) for k, v in self._index.items()}

    def rootfs(self, key: str, tar_path: Path) -> Path:
        """The root file system in the tar ``tar_path`` (content hash ``key``),
        unpacked once; in use until :meth:`release`."""
        folder = self.root / f"rootfs-{key}"

        def unpack() -> None:
            partial = self.root / f".partial-{key}-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            try:
                unpack_tar(tar_path, partial)
                partial.chmod(0o755)
                partial.rename(folder)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise

        self.registered(f"rootfs-{key}", _tree_size, unpack, None, folder)
        return folder

    def registered(
        self,
        key: str,
        size: int | Callable[[Path], int],
        make: Callable[[], None],
        remove: dict[str, Any] | None,
        folder: Path | None = None,
    ) -> None:
        """Make the entry ``key`` with ``make`` unless it is there; mark it used and in
        use until :meth:`release`. ``remove``: how the remover removes it (None: it is
        the ``folder``)."""
        with self._lock:
            gate = self._ready.setdefault(key, threading.Lock())
            self._busy[key] = self._busy.get(key, 0) + 1
        try:
            with gate:
                with self._lock:
                    present = key in self._index and (folder is None or folder.exists())
                if not present:
                    make()
                    measured = size(folder) if callable(size) and folder else size
                    with self._lock:
                        self._index[key] = {"size": int(measured) if isinstance(measured, int)
                                            else 0, "remove": remove}  # fmt: skip
                with self._lock:
                    self._index[key]["used"] = time.time()
                    self._save()
        except BaseException:
            self.release(key)
            raise
        self._evict()

    def release(self, key: str) -> None:
        """A job is done with ``key``."""
        with self._lock:
            left = self._busy.get(key, 0) - 1
            if left > 0:
                self._busy[key] = left
            else:
                self._busy.pop(key, None)
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            total = sum(e.get("size", 0) for e in self._index.values())
            victims = []
            for key, entry in sorted(self._index.items(), key=lambda kv: kv[1].get("used", 0)):
                if total <= self.limit:
                    break
                if self._busy.get(key):
                    continue
                victims.append((key, entry))
                total -= entry.get("size", 0)
            for key, _ in victims:
                del self._index[key]
            if victims:
                self._save()
        for key, entry in victims:
            log.info("image cache: evicting %s (%d bytes)", key, entry.get("size", 0))
            if entry.get("remove") is None:
                shutil.rmtree(self.root / key, ignore_errors=True)
            elif self.remover is not None:
                self.remover(entry["remove"])

    def _save(self) -> None:
        tmp = self._index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._index))
        tmp.replace(self._index_path)


def unpack_tar(tar_path: Path, dest: Path) -> None:
    """Unpack an image's tar into ``dest``: no file outside it (whatever its names and
    links say), no setuid or setgid bit, no device; the image's own links kept, since
    they are read inside the container. Raises tarfile.TarError or OSError."""
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "tar_filter"):  # Python 3.11.4 and later
            tar.extractall(dest, filter="tar")
        else:
            tar.extractall(dest, members=_checked(tar, dest))


def _checked(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar`` as the "tar" extraction filter passes them, checked one
    at a time as they are unpacked (a link unpacked earlier may lead elsewhere)."""
    top = os.path.realpath(dest)
    for member in tar:
        name = member.name.lstrip("/")
        if member.ischr() or member.isblk():
            continue
        where = os.path.realpath(os.path.join(top, name))
        if os.path.commonpath([top, where]) != top:
            raise tarfile.TarError(f"{member.name!r} would be outside the image")
        if member.islnk():
            target = os.path.realpath(os.path.join(top, member.linkname.lstrip("/")))
            if os.path.commonpath([top, target]) != top:
                raise tarfile.TarError(f"{member.name!r} links outside the image")
        member.name = name
        member.mode &= ~0o7022
        yield member


def _tree_size(folder: Path) -> int:
    total = 0
    for top, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total
