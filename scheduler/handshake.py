"""The scheduler's side of the handshake: who a new connection is, proven by SCRAM.

A peer sends ``hello`` (its role, name and nonce), gets a fresh nonce with the salt
and iterations of its secret, and answers with its SCRAM proof (see
:mod:`scheduler.protocol.scram`). The scheduler checks the proof against the
verifier it stores: the user's (from their token), the worker's (from its own
credential, ``dfarm worker add``) or, for a worker name without one, the pool
secret's. A name without a verifier gets a salt derived from the name, the same
at every try, so that a challenge does not tell which names exist. Role and name
are part of what is proven, so a secret opens one identity only, and a recorded
answer is worthless on a new connection. Failures are logged with the peer's
address and counted by :class:`HandshakeGuard` per address and per identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable

from scheduler import protocol as p
from scheduler.connection import Connection
from scheduler.handshake_guard import identity
from scheduler.protocol import Role
from scheduler.protocol.scram import Verifier, make_verifier, password_key
from scheduler.state import SchedulerState

log = logging.getLogger("scheduler.server")

#: Reads the next message from a connection within a timeout (None: no limit).
Reader = Callable[[float | None], Awaitable[p.Message]]
#: How a peer proved who it is (shown by ``dstat`` for workers).
BY_TOKEN, BY_CREDENTIAL, BY_POOL_SECRET = "token", "credential", "pool secret"


def pool_verifier(secret: bytes) -> Verifier:
    """The pool secret's verifier (its salt derived from it: the same at every start)."""
    salt = hmac.new(secret, b"dfarm pool salt", hashlib.sha256).digest()[:16]
    return make_verifier(password_key(secret), salt)


async def handshake(state: SchedulerState, conn: Connection, read: Reader) -> bool:
    """Prove who ``conn`` is (messages read with ``read``, within the handshake
    timeout); a user's connection joins the state's controls."""
    timeout = state.config.handshake_timeout
    try:
        hello = await read(timeout)
    except TimeoutError:
        if not state.guard.blocked_for(conn.address):  # else the block was logged
            log.warning("handshake from %s: nothing received in %.0f s", conn.peer, timeout)
        state.guard.failed(conn.address)
        return False
    if not isinstance(hello, p.Hello):
        raise p.ProtocolError(f"expected hello, got {hello.type}")
    if hello.version != p.PROTOCOL_VERSION:
        conn.send(
            p.Error(
                message=f"protocol version {hello.version} is not supported: this "
                f"scheduler speaks version {p.PROTOCOL_VERSION}; run the same dfarm"
                " version here and on the scheduler",
                code="version",
            )
        )
        return False
    verifier, method = _verifier_for(state, hello)
    challenge = p.Challenge(
        nonce=p.new_nonce(), salt=verifier.salt.hex(), iterations=verifier.iterations
    )
    conn.send(challenge)
    who = identity(hello.role, hello.name)
    try:
        auth = await read(timeout)
    except TimeoutError:
        log.warning("handshake from %s: no answer to the challenge", conn.peer)
        state.guard.failed(conn.address, who)
        return False
    message = p.auth_message(hello, challenge)
    if method is None or not _proven(verifier, message, auth):
        await _refuse(state, conn, hello, who)
        return False
    conn.role, conn.name = Role(hello.role), hello.name
    conn.auth, conn.stored_key = method, verifier.stored_key
    conn.send(
        p.Welcome(
            digest=p.server_signature(verifier.server_key, message).hex(),
            server_name=state.config.client_host(),
            server_time=state.clock(),
        )
    )
    if conn.role is Role.CONTROL:
        conn.admin = state.store.accounts.is_admin(conn.name)
        state.controls[conn.id] = conn
    log.debug("%s %s authenticated (%s) from %s", conn.role.value, conn.name, method, conn.peer)
    return True


async def _refuse(state: SchedulerState, conn: Connection, hello: p.Hello, who: str) -> None:
    """A wrong proof: counted, answered slowly; once the address or identity has
    failed too often, one log line per block instead of one per attempt."""
    blocked = state.guard.blocked_for(conn.address, who)
    state.guard.failed(conn.address, who)
    if not blocked:
        log.warning(
            "authentication failed for %s %r from %s",
            hello.role[:20].encode("unicode_escape").decode(),
            hello.name[:100],
            conn.peer,
        )
    await asyncio.sleep(0.2)  # slows down guessing
    if blocked:
        conn.send(
            p.Error(
                message=f"too many failed handshakes from {conn.address} or for this"
                f" name: try again in {blocked:.0f} s",
                code="blocked",
            )
        )
        return
    what = "worker credential" if hello.role == Role.WORKER.value else "user token"
    conn.send(p.Error(message=f"authentication failed: wrong {what}", code="auth"))


def _verifier_for(state: SchedulerState, hello: p.Hello) -> tuple[Verifier, str | None]:
    """The verifier to check ``hello``'s proof against, and how it authenticates
    (None: no secret can pass; the verifier is then a decoy)."""
    if hello.role == Role.WORKER.value:
        verifier = state.store.accounts.worker_verifier(hello.name)
        if verifier is not None:
            return verifier, BY_CREDENTIAL
        return state.pool_verifier, BY_POOL_SECRET
    if hello.role == Role.CONTROL.value:
        verifier = state.store.accounts.user_verifier(hello.name)
        if verifier is not None:
            return verifier, BY_TOKEN
    text = f"dfarm decoy salt|{hello.role}|{hello.name}".encode()
    salt = hmac.new(state.secret, text, hashlib.sha256).digest()[:16]
    stored = secrets.token_bytes(32)
    return Verifier(salt, p.ITERATIONS, stored, stored), None


def _proven(verifier: Verifier, message: bytes, auth: p.Message) -> bool:
    if not isinstance(auth, p.Auth):
        return False
    try:
        proof = bytes.fromhex(auth.digest)
    except ValueError:
        return False
    return p.proof_matches(verifier, message, proof)
