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
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RUN_AS = "nobody"
#: How long an owner's account (or its absence) is remembered, as ``nscd`` would:
#: looking it up reads /etc/passwd and /etc/group, a cost per job otherwise.
ACCOUNT_TTL = 60.0


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    #: Supplementary groups (root's own are never kept).
    groups: tuple[int, ...]
    #: A slot uid: no process of it but the slot's job (and launcher) ever runs.
    dedicated: bool = False


class IdentityError(ValueError):
    """A ``--run-as`` account that does not exist or is privileged."""


class JobAccounts:
    def __init__(
        self,
        run_as: str = DEFAULT_RUN_AS,
        *,
        slot_uids: int = 0,
        slots: int = 1,
    ):
        #: Whether this worker runs as root, hence must pick an account per job.
        self.privileged = os.geteuid() == 0
        self.fallback: Account | None = None
        self.uid_min = _uid_min()
        self._owners: dict[str, tuple[float, Account | None]] = {}
        if self.privileged:
            account = _account(run_as)
            if account is None:
                raise IdentityError(f"--run-as {run_as!r}: no such account on this machine")
            if account.uid == 0:
                raise IdentityError(f"--run-as {run_as!r} is root: jobs never run as root")
            self.fallback = account
        #: With ``--slot-uids BASE``: slot N's fallback jobs run as uid and gid BASE+N,
        #: ids of no account (HTCondor's slot users), so they are isolated from each other.
        self.slot_uids = slot_uids
        if self.privileged and slot_uids:
            for uid in range(slot_uids, slot_uids + slots):
                if uid < self.uid_min or uid >= 2**31 - 1:
                    raise IdentityError(f"--slot-uids {slot_uids}: uid {uid} is not a user's")
                with contextlib.suppress(KeyError):
                    taken = pwd.getpwuid(uid).pw_name
                    raise IdentityError(f"--slot-uids {slot_uids}: uid {uid} is {taken}'s")

    def for_owner(self, owner: str, slot: int = 0) -> Account | None:
        """The account a job of ``owner`` runs as in ``slot`` (0, 1, ...); None: the
        worker's own."""
        if not self.privileged:
            return None
        now = time.monotonic()
        known = self._owners.get(owner)
        if known is None or now - known[0] > ACCOUNT_TTL:
            known = self._owners[owner] = (now, _account(owner))
        account = known[1]
        if account is not None and account.uid >= self.uid_min:
            return account
        if self.slot_uids:
            uid = self.slot_uids + slot
            return Account(f"dfarm-slot{slot + 1}", uid, uid, (uid,), dedicated=True)
        return self.fallback


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
