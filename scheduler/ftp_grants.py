"""FTP logins as grants: who may touch which directories of the spool, until when.

Every login of the spool's FTP server is a :class:`Grant` issued by the scheduler
for one step (an upload, a job's run, a fetch), with a random user name and
password, an expiry, and rules naming the only directories it may touch and how.
:class:`GrantAuthorizer` is the pyftpdlib authorizer that checks them.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyftpdlib.authorizers import AuthenticationFailed

from scheduler.undo import UndoHook, no_undo

READ = "elr"
#: Uploads are stored under a temporary name, which the scheduler renames to their
#: hash (see :mod:`scheduler.arrivals`).
WRITE = "ew"
READ_WRITE = "elrmwadf"
#: A probe stores, reads and deletes its one file, then its directory.
PROBE_PERMS = "elrwd"
#: Directory of the spool where ``dfarm doctor`` tries the data channel.
PROBE_DIR = "probe"


@dataclass(frozen=True)
class Rule:
    """Permissions (pyftpdlib letters) on a directory and everything below it."""

    directory: str
    perms: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", os.path.normpath(self.directory))

    def covers(self, path: str) -> bool:
        d = self.directory
        return path == d or path.startswith(d if d.endswith(os.sep) else d + os.sep)


@dataclass(frozen=True)
class Grant:
    user: str
    password: str
    #: The grant's home directory, as the FTP server takes it.
    root: str
    rules: tuple[Rule, ...]
    expires: float
    #: Bytes this grant may upload in all (None: no limit).
    max_bytes: int | None = None
    #: Whether an upload may replace an existing file (rewriting it in place).
    replace: bool = True
    #: The folder the grant's ``<root>/input`` stands for (a DAG's inputs, read by
    #: the jobs of its nodes' clusters); None: its own.
    inputs: str | None = None
    #: For a fetch: the owners of the jobs whose results it reads.
    owners: tuple[str, ...] = ()


class GrantAuthorizer:
    """A pyftpdlib authorizer whose users are short-lived grants."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        #: What grants expire by (see :meth:`Spool.use_clock`).
        self.clock = clock
        #: Where :meth:`extend` registers its undo (the scheduler's store: see
        #: :mod:`scheduler.undo`); grants added or revoked return theirs instead.
        self.undo: UndoHook = no_undo
        self._grants: dict[str, Grant] = {}
        #: When each grant expires, kept apart so that a heartbeat extends a worker's
        #: grants in place (a 16-slot worker with full chains holds hundreds).
        self._expires: dict[str, float] = {}
        #: Bytes each grant has uploaded, counted as they arrive in all its transfers
        #: together (parallel uploads share one budget).
        self._uploaded: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, grant: Grant) -> None:
        with self._lock:
            self._grants[grant.user] = grant
            self._expires[grant.user] = grant.expires

    def revoke(self, user: str) -> Callable[[], None]:
        """End ``user``'s grant; returns what gives it back as it was (the undo of a
        unit of work that revoked it and failed)."""
        with self._lock:
            grant = self._grants.pop(user, None)
            expires = self._expires.pop(user, None)
            uploaded = self._uploaded.pop(user, None)

        def restore() -> None:
            with self._lock:
                if grant is not None and expires is not None:
                    self._grants[user] = grant
                    self._expires[user] = expires
                if uploaded is not None:
                    self._uploaded[user] = uploaded

        return restore

    def upload_room(self, user: str) -> int | None:
        """Bytes ``user`` may still upload (None: no limit)."""
        with self._lock:
            grant = self._grants.get(user)
            if grant is None or grant.max_bytes is None:
                return None
            return grant.max_bytes - self._uploaded.get(user, 0)

    def may_replace(self, user: str) -> bool:
        with self._lock:
            grant = self._grants.get(user)
        return grant is not None and grant.replace

    def received(self, user: str, size: int) -> int | None:
        """``user`` received ``size`` more bytes; returns the bytes it may still
        upload (negative: over its budget; None: no limit)."""
        with self._lock:
            grant = self._grants.get(user)
            if grant is None:
                return -1  # revoked while it uploaded
            self._uploaded[user] = self._uploaded.get(user, 0) + size
            if grant.max_bytes is None:
                return None
            return grant.max_bytes - self._uploaded[user]

    def extend(self, users: list[str], expires: float) -> None:
        """Make these grants valid until ``expires`` (the gone ones stay gone); a
        unit of work that fails gives them back the expiries they had."""
        with self._lock:
            old = {user: self._expires[user] for user in users if user in self._expires}
            self._expires.update(dict.fromkeys(old, expires))
        if old:
            self.undo(lambda: self._restore_expiries(old))

    def _restore_expiries(self, old: dict[str, float]) -> None:
        """The undo of :meth:`extend`: the grants still held expire as they did."""
        with self._lock:
            for user, expires in old.items():
                if user in self._expires:
                    self._expires[user] = expires

    def expire(self, now: float) -> int:
        """Forget expired grants; returns how many."""
        with self._lock:
            old = [u for u, end in self._expires.items() if end <= now]
            for user in old:
                del self._grants[user]
                del self._expires[user]
                self._uploaded.pop(user, None)
        return len(old)

    def grant_of(self, user: str) -> Grant | None:
        """``user``'s grant while it is valid, else None."""
        try:
            return self._grant(user)
        except AuthenticationFailed:
            return None

    def _grant(self, user: str) -> Grant:
        with self._lock:
            grant = self._grants.get(user)
            expires = self._expires.get(user, 0.0)
        if grant is None or expires <= self.clock():
            raise AuthenticationFailed("Authentication failed.")
        return grant

    # -- the interface pyftpdlib calls -------------------------------------

    def validate_authentication(self, username: str, password: str, handler: object) -> None:
        grant = self._grant(username)
        if not hmac.compare_digest(grant.password.encode(), password.encode()):
            raise AuthenticationFailed("Authentication failed.")

    def inputs_of(self, username: str) -> str | None:
        """The folder ``username``'s ``<root>/input`` stands for, if another."""
        with self._lock:
            grant = self._grants.get(username)
        return None if grant is None else grant.inputs

    def get_home_dir(self, username: str) -> str:
        return self._grant(username).root

    def has_user(self, username: str) -> bool:
        with self._lock:
            return username in self._grants

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        try:
            grant = self._grant(username)
        except AuthenticationFailed:
            return False
        if path is None:
            return any(perm in rule.perms for rule in grant.rules)
        target = os.path.realpath(path)
        best: Rule | None = None
        for rule in grant.rules:
            if rule.covers(target) and (best is None or len(rule.directory) > len(best.directory)):
                best = rule
        if best is not None:
            return perm in best.perms
        # Directories on the way to a rule may be entered, nothing more.
        on_the_way = Rule(target, "")
        return perm == "e" and any(on_the_way.covers(r.directory) for r in grant.rules)

    def get_perms(self, username: str) -> str:
        try:
            return "".join(sorted({p for r in self._grant(username).rules for p in r.perms}))
        except AuthenticationFailed:
            return ""

    def get_msg_login(self, username: str) -> str:
        return "Welcome to the dfarm spool."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass
