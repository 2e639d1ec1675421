"""The scheduler's files are private to its account.

The home holds what lets anyone act as a user or a worker (the database, the pool
secret, the TLS key, the access record), every user's inputs and results (the
spool) and the logs. Every folder of it is 0700 and every file 0600: the scheduler
runs with a umask of 0o077 and gives a mode explicitly where it creates a file, and
:func:`check_home` looks at the start whether that still holds (its folders are
made by :func:`scheduler.node_setup.private_dir.make_private_dir`).

Inputs that a worker sharing the spool's file system links into its sandboxes keep
the mode that worker gives them (see ``worker_node.spool_link``): they lie in 0700
folders, where no other account reaches them by path.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from scheduler.node_setup.private_dir import DIR_MODE

log = logging.getLogger(__name__)

#: The scheduler process's umask: what it creates is its account's alone.
UMASK = 0o077
FILE_MODE = 0o600
#: Folders of the home not the scheduler's: ``dfarm up``'s workers' work folders.
NOT_MINE = frozenset({"workers"})


class PrivacyError(Exception):
    """A file of the home that others may reach and that this account cannot fix."""


def check_home(home: Path) -> list[str]:
    """Make every folder of ``home`` 0700 and every file 0600 where others could
    reach them, when this account owns them; returns what was fixed. Raises
    :class:`PrivacyError`, naming the path and what to run, for one it cannot fix."""
    fixed: list[str] = []
    _check(home, fixed)
    for folder, dirs, files in os.walk(home):
        here = Path(folder)
        if here == home:
            dirs[:] = [d for d in dirs if d not in NOT_MINE]
        # Inputs linked into sandboxes keep the worker's mode (see the docstring).
        inputs = here.name == "input" and here.parent.parent.name == "spool"
        for name in dirs:
            _check(here / name, fixed)
        if not inputs:
            for name in files:
                _check(here / name, fixed)
    if fixed:
        log.warning(
            "made %d file(s) of %s private to this account: %s%s",
            len(fixed),
            home,
            ", ".join(fixed[:10]),
            " ..." if len(fixed) > 10 else "",
        )
    return fixed


def check_file(path: Path) -> bool:
    """Make a file of the scheduler's kept outside its home (``--tls-key``) private as
    :func:`check_home` does; returns whether it had to. Raises :class:`PrivacyError`."""
    fixed: list[str] = []
    _check(path, fixed)
    if fixed:
        log.warning("made %s private to this account", fixed[0])
    return bool(fixed)


def _check(path: Path, fixed: list[str]) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # removed while we looked
    if stat.S_ISLNK(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
        return
    if st.st_uid != os.geteuid():
        raise PrivacyError(
            f"{path} may be read by other accounts (mode {stat.S_IMODE(st.st_mode):o}) and "
            f"belongs to uid {st.st_uid}, not to this account (uid {os.geteuid()}): run "
            f"'chown -R {os.geteuid()} {path} && chmod -R go-rwx {path}', then start again"
        )
    # A folder gets 0700; a file keeps its owner's bits only.
    os.chmod(path, DIR_MODE if stat.S_ISDIR(st.st_mode) else stat.S_IMODE(st.st_mode) & 0o700)
    fixed.append(f"{path} ({stat.S_IMODE(st.st_mode):o})")


def make_private_tree(root: Path) -> None:
    """Take group and other bits off ``root`` and everything below it (links are
    left alone, files of other accounts too: they cannot be changed)."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            _restrict(os.path.join(folder, name))
    _restrict(str(root))


def _restrict(path: str) -> None:
    try:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass  # gone, or another account's
