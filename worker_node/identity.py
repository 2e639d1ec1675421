"""The account a job runs as.

A worker running as root never runs a job as root (as HTCondor does): it runs it
as the submitting user when an account of that name exists on the worker and is a
user's (uid at least ``UID_MIN`` of /etc/login.defs, 1000 by default: never root
nor a system account such as ``daemon`` or ``bin``), else as the unprivileged
account the worker was given (``--run-as``, default ``nobody``). A worker running
as anyone else runs jobs as itself.
Each job's sandbox belongs to its account with mode 0700, so a job cannot read
the sandbox of a job running as another account.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RUN_AS = "nobody"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    #: Supplementary groups (root's own are never kept).
    groups: tuple[int, ...]


class IdentityError(ValueError):
    """A ``--run-as`` account that does not exist or is privileged."""


class JobAccounts:
    def __init__(self, run_as: str = DEFAULT_RUN_AS, *, privileged: bool | None = None):
        #: Whether this worker runs as root, hence must pick an account per job.
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self.fallback: Account | None = None
        self.uid_min = _uid_min()
        if self.privileged:
            account = _account(run_as)
            if account is None:
                raise IdentityError(f"--run-as {run_as!r}: no such account on this machine")
            if account.uid == 0:
                raise IdentityError(f"--run-as {run_as!r} is root: jobs never run as root")
            self.fallback = account

    def for_owner(self, owner: str) -> Account | None:
        """The account a job of ``owner`` runs as; None: the worker's own."""
        if not self.privileged:
            return None
        account = _account(owner)
        if account is None or account.uid < self.uid_min:
            return self.fallback
        return account


def _uid_min(path: Path = Path("/etc/login.defs")) -> int:
    """The first uid of user accounts; those below belong to the system."""
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "UID_MIN":
                return max(1, int(words[1]))
    return 1000


def _account(name: str) -> Account | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)))
