"""What both ends of a local read of results share (see :mod:`scheduler.result_fds`)."""

from __future__ import annotations

import hashlib
import hmac

#: Paths (and so descriptors) in one request: under the kernel's limit of 253 a message.
MOST_PATHS = 64


def proof(password: str, nonce: str, by: str = "client") -> str:
    """What one end sends (``by``: ``client`` or ``scheduler``) to show the other that
    it holds a grant's ``password`` without sending it: the client, so that nothing it
    sends is of use to whoever answers in the scheduler's place; the scheduler, so
    that the client takes nothing from such an impostor."""
    message = by.encode() + b":" + bytes.fromhex(nonce)
    return hmac.new(password.encode(), message, hashlib.sha256).hexdigest()
