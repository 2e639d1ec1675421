"""TLS for the socket protocol and FTP: peers pin the scheduler's certificate.

The scheduler's certificate is usually self-signed, so peers do not ask a
certificate authority: they compare the SHA-256 fingerprint of the certificate
the scheduler presents with the one they were given (from the access record,
``DFARM_TLS_FINGERPRINT`` or a worker's ``--tls-fingerprint``). A mismatch ends
the connection before a byte of the protocol is sent.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from scheduler.protocol.records import ProtocolError

if TYPE_CHECKING:
    import ssl  # imported where a context is made: a command without TLS starts without it

__all__ = ["TlsError", "check_pin", "client_context", "fingerprint", "normalize_fingerprint"]


class TlsError(ProtocolError):
    """The scheduler's certificate is not the pinned one, or TLS failed."""


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``AB:CD:...``."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD...``, ``abcd...`` or ``SHA256:...``; raises ValueError."""
    raw = text.strip().removeprefix("SHA256:").removeprefix("sha256:").replace(":", "").upper()
    if len(raw) != 64 or any(c not in "0123456789ABCDEF" for c in raw):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return ":".join(raw[i : i + 2] for i in range(0, 64, 2))


def client_context() -> ssl.SSLContext:
    """A client context that checks the certificate by its pin, not by a CA."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin below is the check
    return context


def check_pin(sock: ssl.SSLSocket | ssl.SSLObject, pinned: str) -> None:
    """Raise :class:`TlsError` unless the peer's certificate has fingerprint ``pinned``."""
    der = sock.getpeercert(binary_form=True)
    got = fingerprint(der) if der else "none"
    if got != normalize_fingerprint(pinned):
        raise TlsError(
            f"the scheduler's TLS certificate ({got}) is not the pinned one "
            f"({normalize_fingerprint(pinned)}): refusing to talk to it"
        )
