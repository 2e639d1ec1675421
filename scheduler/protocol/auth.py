"""The handshake's cryptography (SCRAM-SHA-256, see :mod:`scram`): nonces, proofs,
tokens, worker credentials and the pool secret."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from scheduler.protocol.messages import Auth, Challenge, Error, Hello, Message, Welcome
from scheduler.protocol.records import PROTOCOL_VERSION
from scheduler.protocol.scram import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    client_keys,
    client_proof,
    password_key,
    server_signature,
)

__all__ = [
    "HandshakeError",
    "answer_challenge",
    "auth_message",
    "new_nonce",
    "read_secret",
    "token_user",
    "user_key",
    "verify_welcome",
]


def new_nonce() -> str:
    return secrets.token_hex(16)


def auth_message(hello: Hello, challenge: Challenge) -> bytes:
    """SCRAM's AuthMessage: the protocol version, role, name, both nonces, the salt
    and iterations. A proof opens one role and name, on one connection only."""
    return (
        f"dfarm/{PROTOCOL_VERSION}|{hello.role}|{hello.name}|{hello.nonce}|"
        f"{challenge.nonce}|{challenge.salt}|{challenge.iterations}"
    ).encode()


class HandshakeError(Exception):
    """The scheduler refused the peer, or could not prove it holds the key.

    ``code`` is the refusal's error code: ``auth`` only when the scheduler checked
    the peer's proof and found it wrong (the secret is not the one it knows)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def _salt(challenge: Challenge) -> bytes:
    if not MIN_ITERATIONS <= challenge.iterations <= MAX_ITERATIONS:
        raise HandshakeError(
            f"the scheduler asks for {challenge.iterations} iterations (accepted:"
            f" {MIN_ITERATIONS} to {MAX_ITERATIONS})"
        )
    try:
        return bytes.fromhex(challenge.salt)
    except ValueError:
        raise HandshakeError("the scheduler sent a malformed salt") from None


def answer_challenge(key: bytes, hello: Hello, reply: Message) -> Auth:
    """The peer's answer (its SCRAM proof, under password key ``key``) to the
    scheduler's reply to ``hello``."""
    if isinstance(reply, Error):
        raise HandshakeError(reply.message, reply.code)
    if not isinstance(reply, Challenge):
        raise HandshakeError(f"expected challenge, got {reply.type}")
    proof = client_proof(key, _salt(reply), reply.iterations, auth_message(hello, reply))
    return Auth(digest=proof.hex())


def verify_welcome(key: bytes, hello: Hello, challenge: Challenge, reply: Message) -> Welcome:
    """Check that the scheduler accepted us and proved it holds our ServerKey."""
    if isinstance(reply, Error):
        raise HandshakeError(reply.message, reply.code)
    if not isinstance(reply, Welcome):
        raise HandshakeError(f"expected welcome, got {reply.type}")
    _, server_key = client_keys(key, _salt(challenge), challenge.iterations)
    expected = server_signature(server_key, auth_message(hello, challenge)).hex()
    if not hmac.compare_digest(reply.digest.encode(), expected.encode()):
        raise HandshakeError("the scheduler could not prove that it holds the key")
    return reply


def user_key(token: str) -> bytes:
    """The password key of a user token (or worker credential): its SHA-256."""
    return password_key(token)


def token_user(token: str) -> str:
    """The user name a token belongs to (tokens read ``NAME:SECRET``)."""
    name, sep, secret = token.strip().rpartition(":")
    if not sep or not name or not secret:
        raise ValueError("malformed token (expected NAME:SECRET)")
    return name


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """A secret (the pool secret, a worker credential) from a file (surrounding
    whitespace ignored)."""
    data = Path(path).read_bytes().strip()
    if not data:
        raise ValueError(f"secret file {path} is empty")
    return data
