"""The scheduler's side of the handshake: who a new connection is, proven by HMAC.

A peer sends ``hello`` (its role, name and nonce), gets a fresh nonce, and answers
with an HMAC of both under its key: the pool secret for a worker, the hash of the
user's token for a user. The role is part of what is signed, so a key opens one
role only, and a recorded answer is worthless on a new connection. Failures are
logged with the peer's address and counted by :class:`HandshakeGuard`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from scheduler import protocol as p
from scheduler.connection import Connection
from scheduler.protocol import Role

log = logging.getLogger("scheduler.server")


class HandshakeHandlers:
    """Mixed into :class:`scheduler.server.Scheduler`."""

    async def _handshake(self, conn: Connection) -> bool:
        timeout = self.config.handshake_timeout
        try:
            hello = await self._read(conn, timeout)
        except TimeoutError:
            log.warning("handshake from %s: nothing received in %.0f s", conn.peer, timeout)
            self.guard.failed(conn.address, time.monotonic())
            return False
        if not isinstance(hello, p.Hello):
            raise p.ProtocolError(f"expected hello, got {hello.type}")
        if hello.version != p.PROTOCOL_VERSION:
            conn.send(
                p.Error(
                    message=f"protocol version {hello.version} is not supported: this "
                    f"scheduler speaks version {p.PROTOCOL_VERSION}; upgrade dfarm",
                    code="version",
                )
            )
            return False
        key = self._key_for(hello)
        server_nonce = p.new_nonce()
        conn.send(p.Challenge(nonce=server_nonce))
        try:
            auth = await self._read(conn, timeout)
        except TimeoutError:
            log.warning("handshake from %s: no answer to the challenge", conn.peer)
            self.guard.failed(conn.address, time.monotonic())
            return False
        expected = p.handshake_digest(key or secrets.token_bytes(32), "peer", hello, server_nonce)
        if (
            not isinstance(auth, p.Auth)
            or key is None
            or not secrets.compare_digest(auth.digest.encode(), expected.encode())
        ):
            log.warning(
                "authentication failed for %s %r from %s",
                hello.role[:20].encode("unicode_escape").decode(),
                hello.name,
                conn.peer,
            )
            self.guard.failed(conn.address, time.monotonic())
            await asyncio.sleep(0.2)  # slows down guessing
            what = "worker secret" if hello.role == Role.WORKER.value else "user token"
            conn.send(p.Error(message=f"authentication failed: wrong {what}", code="auth"))
            return False
        conn.role, conn.name = Role(hello.role), hello.name
        conn.send(
            p.Welcome(
                digest=p.handshake_digest(key, "scheduler", hello, server_nonce),
                server_name=self.config.client_host(),
                server_time=time.time(),
            )
        )
        if conn.role is Role.CONTROL:
            conn.admin = self.store.is_admin(conn.name)
            self.controls[conn.id] = conn
        log.debug("%s %s authenticated from %s", conn.role.value, conn.name, conn.peer)
        return True

    def _key_for(self, hello: p.Hello) -> bytes | None:
        if hello.role == Role.WORKER.value:
            return self.secret
        if hello.role == Role.CONTROL.value:
            return self.store.user_key(hello.name)
        return None
