"""The handshake's cryptography: nonces, HMAC digests, tokens and the pool secret."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from scheduler.protocol.messages import Auth, Challenge, Error, Hello, Message, Welcome
from scheduler.protocol.records import PROTOCOL_VERSION

__all__ = [
    "HandshakeError",
    "answer_challenge",
    "handshake_digest",
    "new_nonce",
    "read_secret",
    "token_user",
    "user_key",
    "verify_welcome",
]


def new_nonce() -> str:
    return secrets.token_hex(16)


def handshake_digest(key: bytes, side: str, hello: Hello, server_nonce: str) -> str:
    """HMAC-SHA256 binding the side ("peer" or "scheduler"), role, name and both nonces."""
    text = f"dfarm/{PROTOCOL_VERSION}|{side}|{hello.role}|{hello.name}|{hello.nonce}|{server_nonce}"
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


class HandshakeError(Exception):
    """The scheduler refused the peer, or could not prove it holds the key."""


def answer_challenge(key: bytes, hello: Hello, reply: Message) -> Auth:
    """The peer's answer to the scheduler's reply to ``hello``."""
    if isinstance(reply, Error):
        raise HandshakeError(reply.message)
    if not isinstance(reply, Challenge):
        raise HandshakeError(f"expected challenge, got {reply.type}")
    return Auth(digest=handshake_digest(key, "peer", hello, reply.nonce))


def verify_welcome(key: bytes, hello: Hello, challenge: Challenge, reply: Message) -> Welcome:
    """Check that the scheduler accepted us and proved it holds the key too."""
    if isinstance(reply, Error):
        raise HandshakeError(reply.message)
    if not isinstance(reply, Welcome):
        raise HandshakeError(f"expected welcome, got {reply.type}")
    expected = handshake_digest(key, "scheduler", hello, challenge.nonce)
    if not hmac.compare_digest(reply.digest.encode(), expected.encode()):
        raise HandshakeError("the scheduler could not prove that it holds the key")
    return reply


def user_key(token: str) -> bytes:
    """The HMAC key of a user token; the scheduler stores only this hash."""
    return hashlib.sha256(token.encode()).digest()


def token_user(token: str) -> str:
    """The user name a token belongs to (tokens read ``NAME:SECRET``)."""
    name, sep, secret = token.strip().rpartition(":")
    if not sep or not name or not secret:
        raise ValueError("malformed token (expected NAME:SECRET)")
    return name


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The worker pool secret from a file (surrounding whitespace ignored)."""
    data = Path(path).read_bytes().strip()
    if not data:
        raise ValueError(f"secret file {path} is empty")
    return data
