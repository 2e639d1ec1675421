"""Web passwords: set with ``dfarm user password NAME``, an alternative to pasting the
token into the login form.

Only a salted scrypt hash is kept, with the StoredKey of the user's token at the time
(see :mod:`scheduler.protocol.scram`): a new token (``dfarm user token``) or a removed
user makes the password void, as it ends the sessions opened with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from scheduler.accounts import StoreError
from scheduler.store import Store

#: scrypt's cost (about 50 ms and 16 MiB a check).
N, R, P = 2**14, 8, 1
MIN_LENGTH = 8


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=64 << 20)


def set_password(store: Store, name: str, password: str) -> None:
    """Set ``name``'s web password; StoreError for an unknown user or a short password."""
    verifier = store.accounts.user_verifier(name)
    if verifier is None:
        raise StoreError(f"no user {name!r}")
    if len(password) < MIN_LENGTH:
        raise StoreError(f"a password has at least {MIN_LENGTH} characters")
    salt = secrets.token_bytes(16)
    with store.transaction() as db:
        db.execute(
            "INSERT OR REPLACE INTO web_passwords (name, stored_key, salt, hash, time)"
            " VALUES (?,?,?,?,?)",
            (name, verifier.stored_key, salt, _hash(password, salt), store.clock()),
        )


def lookup(store: Store, name: str) -> tuple[bytes, bytes, bytes] | None:
    """(salt, hash, token's StoredKey) of ``name``'s valid web password, or None."""
    rows = store.query(
        "SELECT w.salt, w.hash, u.stored_key FROM web_passwords w JOIN users u"
        " ON u.name = w.name AND u.stored_key = w.stored_key WHERE w.name = ?",
        (name,),
    )
    return (
        (bytes(rows[0]["salt"]), bytes(rows[0]["hash"]), bytes(rows[0]["stored_key"]))
        if rows
        else None
    )


def verify(record: tuple[bytes, bytes, bytes] | None, password: str) -> bytes | None:
    """The StoredKey of a :func:`lookup` record if ``password`` matches it, else None
    (slow on purpose, also without a record: no hint who exists; run it off the loop)."""
    salt, expected, key = record or (b"\0" * 16, b"", b"")
    matches = hmac.compare_digest(_hash(password, salt), expected)
    return key if matches and record is not None else None
