"""SCRAM-SHA-256 keys (RFC 5802, RFC 7677): what the scheduler stores is a verifier,
not a key.

Every secret (a user's token, a worker's credential, the pool secret) enters as
its 32-byte SHA-256, the *password key* (:func:`password_key`). From it and a salt::

    SaltedPassword = PBKDF2-HMAC-SHA256(password key, salt, iterations)
    ClientKey      = HMAC(SaltedPassword, "Client Key")
    StoredKey      = SHA-256(ClientKey)
    ServerKey      = HMAC(SaltedPassword, "Server Key")

The scheduler keeps salt, iterations, StoredKey and ServerKey. A peer proves it
knows ClientKey with ``ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)``;
the scheduler recovers ClientKey from the proof and checks its hash against
StoredKey, then proves it holds ServerKey with ``HMAC(ServerKey, AuthMessage)``.
Neither stored value lets its reader compute a proof.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "ITERATIONS",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "Verifier",
    "client_keys",
    "client_proof",
    "holds",
    "make_verifier",
    "password_key",
    "proof_matches",
    "server_signature",
]

#: PBKDF2 rounds of new verifiers (RFC 7677's minimum).
ITERATIONS = 4096
#: Bounds a peer accepts in a challenge: a scheduler cannot make it spin for ever.
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 1_000_000


def password_key(secret: str | bytes) -> bytes:
    """The SCRAM password of a secret: its SHA-256 (what ``users.key_hash`` held)."""
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


@dataclass(frozen=True)
class Verifier:
    """What the scheduler stores of one secret."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hmac(key: bytes, text: bytes) -> bytes:
    return hmac.new(key, text, hashlib.sha256).digest()


@functools.lru_cache(maxsize=256)
def client_keys(key: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(ClientKey, ServerKey) of a password key (cached: PBKDF2 costs milliseconds)."""
    salted = hashlib.pbkdf2_hmac("sha256", key, salt, iterations)
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


def make_verifier(key: bytes, salt: bytes | None = None, iterations: int = ITERATIONS) -> Verifier:
    """The verifier of password key ``key`` (a fresh random salt unless given)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    client_key, server_key = client_keys(key, salt, iterations)
    return Verifier(salt, iterations, hashlib.sha256(client_key).digest(), server_key)


def holds(verifier: Verifier, key: bytes) -> bool:
    """Whether password key ``key`` is the one behind ``verifier`` (for callers that
    hold the secret itself: a web request's bearer token, a token file)."""
    mine = make_verifier(key, verifier.salt, verifier.iterations)
    return hmac.compare_digest(mine.stored_key, verifier.stored_key)


def client_proof(key: bytes, salt: bytes, iterations: int, auth_message: bytes) -> bytes:
    """The peer's proof: ClientKey XOR HMAC(StoredKey, AuthMessage)."""
    client_key, _ = client_keys(key, salt, iterations)
    signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


def proof_matches(verifier: Verifier, auth_message: bytes, proof: bytes) -> bool:
    """Whether ``proof`` shows knowledge of the ClientKey behind ``verifier``."""
    if len(proof) != 32:
        return False
    signature = _hmac(verifier.stored_key, auth_message)
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key)


def server_signature(server_key: bytes, auth_message: bytes) -> bytes:
    """The scheduler's proof that it holds ServerKey."""
    return _hmac(server_key, auth_message)
