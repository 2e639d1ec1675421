"""Users and their tokens, worker credentials and the ids of workers (the ``users``,
``worker_credentials`` and ``workers`` tables)."""

from __future__ import annotations

import re
import secrets
from typing import TypedDict

from scheduler.database import Database
from scheduler.protocol import user_key
from scheduler.protocol.scram import Verifier, make_verifier

USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
WORKER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def new_secret(name: str) -> str:
    """A fresh token or worker credential for ``name``: ``NAME:SECRET``."""
    return f"{name}:{secrets.token_urlsafe(24)}"


def _columns(v: Verifier) -> tuple[bytes, int, bytes, bytes]:
    return v.salt, v.iterations, v.stored_key, v.server_key


class UserRow(TypedDict):
    """A user as ``dfarm users`` lists them."""

    name: str
    email: str | None
    admin: bool
    created: float


class CredentialRow(TypedDict):
    """A worker credential as ``dfarm workers`` lists them."""

    name: str
    created: float


class StoreError(Exception):
    """A request the store refuses (unknown user, duplicate name, ...)."""


class Accounts:
    """Who may connect: users, worker credentials, and the ids workers are known by."""

    def __init__(self, database: Database):
        self._database = database

    def add_user(self, name: str, *, email: str | None = None, admin: bool = False) -> str:
        """Create a user and return their token (shown once; only a verifier is kept)."""
        if not USER_NAME.fullmatch(name):
            raise StoreError(
                f"invalid user name {name!r}: use lower-case letters, digits, '_', '.', '-'"
            )
        token = new_secret(name)
        v = make_verifier(user_key(token))
        with self._database.transaction() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise StoreError(f"user {name!r} already exists")
            db.execute(
                "INSERT INTO users (name, salt, iterations, stored_key, server_key, email,"
                " admin, created) VALUES (?,?,?,?,?,?,?,?)",
                (name, *_columns(v), email, int(admin), self._database.clock()),
            )
        return token

    def new_token(self, name: str) -> str:
        """Replace a user's token; the old one stops working."""
        token = new_secret(name)
        with self._database.transaction() as db:
            cur = db.execute(
                "UPDATE users SET salt=?, iterations=?, stored_key=?, server_key=? WHERE name=?",
                (*_columns(make_verifier(user_key(token))), name),
            )
            if cur.rowcount == 0:
                raise StoreError(f"no user {name!r}")
        return token

    def remove_user(self, name: str) -> None:
        with self._database.transaction() as db:
            if db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount == 0:
                raise StoreError(f"no user {name!r}")

    def user_verifier(self, name: str) -> Verifier | None:
        """The verifier of ``name``'s token, or None for no such user."""
        return self._verifier("users", name)

    def _verifier(self, table: str, name: str) -> Verifier | None:
        rows = self._database.query(
            f"SELECT salt, iterations, stored_key, server_key FROM {table} WHERE name=?",
            (name,),
        )
        if not rows:
            return None
        r = rows[0]
        return Verifier(
            bytes(r["salt"]), r["iterations"], bytes(r["stored_key"]), bytes(r["server_key"])
        )

    def stored_keys(self) -> dict[tuple[str, str], bytes]:
        """The StoredKey of every user ``("control", name)`` and worker credential
        ``("worker", name)``: a changed or missing one ends that identity's sessions."""
        rows = self._database.query(
            "SELECT 'control' AS role, name, stored_key FROM users"
            " UNION ALL SELECT 'worker', name, stored_key FROM worker_credentials"
        )
        return {(r["role"], r["name"]): bytes(r["stored_key"]) for r in rows}

    # ------------------------------------------------------------------ worker credentials

    def add_worker_credential(self, name: str, *, replace: bool = False) -> str:
        """Create worker ``name``'s credential and return it (shown once; only a
        verifier is kept); with ``replace``, one it had stops working."""
        if not WORKER_NAME.fullmatch(name):
            raise StoreError(
                f"invalid worker name {name!r}: use letters, digits, '_', '.', '-' (at most 64)"
            )
        credential = new_secret(name)
        v = make_verifier(user_key(credential))
        with self._database.transaction() as db:
            if (
                not replace
                and db.execute("SELECT 1 FROM worker_credentials WHERE name=?", (name,)).fetchone()
            ):
                raise StoreError(
                    f"worker {name!r} already has a credential (revoke it first to issue another)"
                )
            db.execute(
                "INSERT OR REPLACE INTO worker_credentials (name, salt, iterations, stored_key,"
                " server_key, created) VALUES (?,?,?,?,?,?)",
                (name, *_columns(v), self._database.clock()),
            )
            # The worker's id is given now, so that ids follow the order credentials
            # were issued in (w1 = ID 1), not the order of the first registrations.
            db.execute(
                "INSERT OR IGNORE INTO workers (name, first_seen, last_seen) VALUES (?,?,?)",
                (name, self._database.clock(), self._database.clock()),
            )
        return credential

    def revoke_worker_credential(self, name: str) -> None:
        with self._database.transaction() as db:
            if db.execute("DELETE FROM worker_credentials WHERE name=?", (name,)).rowcount == 0:
                raise StoreError(f"no worker credential {name!r}")

    def worker_verifier(self, name: str) -> Verifier | None:
        """The verifier of worker ``name``'s credential, or None."""
        return self._verifier("worker_credentials", name)

    def worker_credentials(self) -> list[CredentialRow]:
        rows = self._database.query("SELECT name, created FROM worker_credentials ORDER BY name")
        return [CredentialRow(name=row["name"], created=row["created"]) for row in rows]

    def is_admin(self, name: str) -> bool:
        rows = self._database.query("SELECT admin FROM users WHERE name=?", (name,))
        return bool(rows and rows[0]["admin"])

    def users(self) -> list[UserRow]:
        rows = self._database.query("SELECT name, email, admin, created FROM users ORDER BY name")
        return [
            UserRow(name=r["name"], email=r["email"], admin=bool(r["admin"]), created=r["created"])
            for r in rows
        ]

    def worker_id(self, name: str, now: float) -> int:
        """The stable id of a worker name, assigned when its credential was issued
        (:meth:`add_worker_credential`), else at its first registration."""
        with self._database.transaction() as db:
            row = db.execute("SELECT id FROM workers WHERE name=?", (name,)).fetchone()
            if row:
                db.execute("UPDATE workers SET last_seen=? WHERE id=?", (now, row["id"]))
                return int(row["id"])
            cur = db.execute(
                "INSERT INTO workers (name, first_seen, last_seen) VALUES (?,?,?)", (name, now, now)
            )
            return int(cur.lastrowid or 0)

    def swap_incarnation(self, worker_id: int, incarnation: str) -> str:
        """Record ``incarnation`` (the worker process now registering) as worker
        ``worker_id``'s; returns the one recorded before ("" if none)."""
        with self._database.transaction() as db:
            row = db.execute("SELECT incarnation FROM workers WHERE id=?", (worker_id,)).fetchone()
            db.execute("UPDATE workers SET incarnation=? WHERE id=?", (incarnation, worker_id))
            return str(row["incarnation"]) if row else ""
