"""A cgroup per slot launcher, where a root worker can make one.

Every process a job starts stays in its launcher's cgroup, whatever it does: only
root may move a process into another. After each job the worker kills every
process of that cgroup but the launcher itself, and waits until none is left;
this also ends what a job left when it killed its launcher (whose orphans init
adopts, beyond the launcher's reach as a subreaper, see :mod:`worker_node.reaper`).

Any cgroup hierarchy tracks membership: the worker uses cgroup v2 (unified)
where it is mounted, else a v1 ``pids`` or ``freezer`` hierarchy, in a folder
``dfarm-<worker>-<pid>`` below its own cgroup. Where none can be made (no
cgroup file system, a container that does not delegate one, not root), the
worker goes on without, and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path

from worker_node.reaper import kill_checked

log = logging.getLogger(__name__)

#: Seconds between two looks while killed processes are still leaving the cgroup.
POLL = 0.005
#: Give up (with a warning) on processes that survive SIGKILL this long.
KILL_LIMIT = 30.0
V1_CONTROLLERS = ("pids", "freezer")


class JobCgroups:
    """The worker's cgroup folder, with one cgroup per (slot, uid) launcher."""

    def __init__(self, root: Path, kind: str):
        self.root = root
        #: "cgroup v2", or "cgroup v1 (pids)"...
        self.kind = kind

    @classmethod
    def create(cls, worker: str) -> JobCgroups | None:
        """The worker's cgroup folder, made now; None where none can be made."""
        if os.geteuid() != 0:
            return None
        name = "dfarm-" + re.sub(r"[^A-Za-z0-9_.-]", "_", worker) + f"-{os.getpid()}"
        for base, kind in _hierarchies():
            _remove_stale(base)
            try:
                (base / name).mkdir()
            except OSError:
                continue
            return cls(base / name, kind)
        return None

    def add(self, key: str, pid: int) -> bool:
        """Put ``pid`` (a launcher, before it starts any job) into cgroup ``key``."""
        folder = self.root / key
        try:
            folder.mkdir(exist_ok=True)
            (folder / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            log.warning("cannot put a launcher into cgroup %s: %s", folder, exc)
            return False
        return True

    def kill(self, key: str, spare: set[int]) -> int:
        """Kill every process of cgroup ``key`` but ``spare``, until none is left;
        how many there were."""
        return _kill_all(self.root / key, spare)

    def close(self) -> None:
        """Kill what is left in the worker's cgroups and remove them."""
        _remove(self.root)


def _hierarchies() -> list[tuple[Path, str]]:
    """Where this process's cgroups are, in the hierarchies that can track jobs:
    (folder, kind), v2 first."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    found: list[tuple[Path, str]] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            dash = fields.index("-")
            mount, fstype, options = fields[4], fields[dash + 1], fields[dash + 3].split(",")
            if fstype == "cgroup2" and "" in own:
                found.insert(0, (Path(mount + own[""]), "cgroup v2"))
            elif fstype == "cgroup":
                for controller in V1_CONTROLLERS:
                    if controller in options and controller in own:
                        found.append((Path(mount + own[controller]), f"cgroup v1 ({controller})"))
    return found


def _procs(folder: Path) -> list[int]:
    try:
        return [int(pid) for pid in (folder / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _kill_all(folder: Path, spare: set[int]) -> int:
    found: set[int] = set()
    deadline = time.monotonic() + KILL_LIMIT
    while True:
        alive = [pid for pid in _procs(folder) if pid not in spare]
        if not alive:
            return len(found)
        if time.monotonic() > deadline:
            log.warning("cgroup %s: %d process(es) survive SIGKILL", folder, len(alive))
            return len(found)
        found.update(alive)
        for pid in alive:
            kill_checked(pid, lambda pid: pid in _procs(folder))
        time.sleep(POLL)


def _remove(root: Path) -> None:
    """Kill every process below ``root`` and remove its cgroups (children first)."""
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            if child.is_dir():
                _remove(child)
    _kill_all(root, set())
    with contextlib.suppress(OSError):
        root.rmdir()


def _remove_stale(base: Path) -> None:
    """Remove the cgroups of workers that are gone (killed with ``kill -9``), with
    what their jobs left running in them."""
    with contextlib.suppress(OSError):
        for folder in base.glob("dfarm-*-*"):
            pid = folder.name.rsplit("-", 1)[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                log.info("removing cgroup %s of a worker that is gone", folder)
                _remove(folder)
